import { createHash, randomUUID } from 'node:crypto';
import { BSON, type Binary, type Collection } from 'mongodb';
import { eraseFromRoutedBatch, type ErasedSubject } from '../domain/erasure';
import { newestFirst } from '../domain/eventPages';
import type { StoredEvent } from '../domain/event';
import type { HeldEvent } from '../domain/identitySplit';
import type { Party } from '../domain/schemas';
import { compareText } from '../domain/text';
import { COLLECTIONS, insertKeyed, isDuplicateKeyError, type Store } from './db';
import { decodeEvents, encodeEvents, type ExtendedEvent } from './deflatedBson';
import { SharedRewrites } from './sharedRewrites';

/** An event as routed to its profile document's partition. */
export interface RoutedEvent extends StoredEvent {
  /** The source log chunk that held it: the retry guard of the document it is folded into. */
  seq: number;
  profileId: string;
  /**
   * The identities it was collected with, when it carries fewer: on consent-only events (see
   * StoredEvent.consentOnly), and on a late event whose severed co-occurrences leave some on another side.
   */
  evidence?: StoredEvent['identities'];
  /** Only on events moved to another document (see `writeMoved`): where they came from. */
  sourceId?: string;
  party?: Party;
}

/** Moved events are kept under their own chain name, which no source id can take (those start `src_`). */
const MOVED = '~moved';

/** A moved batch's registration: its `_id` and when it was written. */
export interface MovedBatchDoc {
  _id: string;
  createdAt: Date;
}

/** The most a moved batch's events take as BSON: a heavy person's whole history may move at once. */
const MOVED_BATCH_BYTES = 8 * 1024 * 1024;

/**
 * Moved events as the batches that keep them, each within MOVED_BATCH_BYTES (at least one event
 * each), in a fixed order: a retry cuts the same events into the same keyed pieces.
 */
function movedPieces(events: HeldEvent[]): HeldEvent[][] {
  const ordered = [...events].sort((a, b) => compareText(a.profileId, b.profileId) || compareText(a.sourceId, b.sourceId) || a.seq - b.seq || compareText(a.id, b.id));
  const pieces: HeldEvent[][] = [];
  let bytes = 0;
  for (const event of ordered) {
    const size = BSON.calculateObjectSize(event);
    if (pieces.length === 0 || bytes + size > MOVED_BATCH_BYTES) {
      pieces.push([]);
      bytes = 0;
    }
    pieces[pieces.length - 1].push(event);
    bytes += size;
  }
  return pieces;
}

/**
 * One source batch's events for one partition. Every batch writes one for every partition (empty
 * ones too), so a partition writer follows each source's batches as a gap-free chain: `_id`
 * `<partition>:<sourceId>:<from>`, the next one starting at `to`.
 */
export interface RoutedBatch {
  _id: string;
  partition: number;
  sourceId: string;
  party: Party;
  from: number;
  to: number;
  events: RoutedEvent[];
  /** The documents its events go to (indexed: a profile's event history is one indexed read). */
  profiles: string[];
  /** Documents of this partition that this batch's drain linked to another: their segments are evaluated over the whole profile from now on. */
  linked?: string[];
  /**
   * Documents this batch's drain made (no identity of theirs was owned before it): a first fold
   * attempt need not look for versions of them. Should one exist after all (an earlier attempt
   * wrote it, or another source's batch reached the document first), inserting its first version
   * again fails on its versioned `_id`, and the retry reads.
   */
  created?: string[];
  createdAt: Date;
}

/** A routed batch as a drain writes it: an event may be one read from the log, its target added (see deflatedBson.ExtendedEvent). */
export interface RoutedBatchToWrite extends Omit<RoutedBatch, 'events'> {
  events: Array<RoutedEvent | ExtendedEvent<Pick<RoutedEvent, 'seq' | 'profileId'>>>;
}

/** As stored: the events as one binary value (see store/deflatedBson). */
export interface RoutedBatchDoc extends Omit<RoutedBatch, 'events'> {
  events: Binary;
}

function encodeBatch(batch: RoutedBatchToWrite): RoutedBatchDoc {
  return { ...batch, events: encodeEvents(batch.events) };
}

function decodeBatch(doc: RoutedBatchDoc): RoutedBatch {
  return { ...doc, events: decodeEvents<RoutedEvent>(doc.events) };
}

interface RouteDoc {
  _id: string;
  to: number;
}

/** How far a partition's writer has folded each source's routed batches, and how many events. */
/** A write group's counts in its partition's position (see PartitionPosition.groups). */
export interface WriteGroupCounts {
  written: number;
  superseded: number;
  /** Empty versions of expired documents among those written, and when (they may go once the history window has passed). */
  expired?: number;
  expiredAt?: Date;
}

export interface PartitionPosition {
  cursors: Record<string, number>;
  applied: Record<string, number>;
  /** Per source, events dropped as repeats of events their documents had folded (ProfileDoc.recentEventIds). */
  duplicates: Record<string, number>;
  /**
   * The partition's profile write groups still in the store: versions written, and how many of
   * those a later version has replaced since. A fold records its group before writing to it, so
   * every group in the store is here; the counts are only a hint of when a group is worth
   * compacting — compaction checks each version itself.
   */
  groups: Record<string, WriteGroupCounts>;
  /**
   * A group among `groups` that no attempt has written to yet, recorded by the writer's last save
   * for its next fold or compaction: that one need not save the position before writing.
   */
  nextGroup?: string;
  /**
   * Groups among `groups` that an attempt recorded before writing to them and has not saved its
   * counts for since. An attempt that finds one here (or the reserved `nextGroup`, unless it takes
   * it) was preceded by one interrupted after it may have written: it settles their counts from the store.
   */
  writing?: string[];
  /**
   * The group of the last fold whose versions were written, saved with every save after that (a
   * compaction's, the fold's last) and before it records its real-time segment changes: a fold that
   * finds no record of them (an attempt cut short there) records them for it.
   */
  changesPending?: string;
  /**
   * Documents a link named before they had a version (the batch that makes one folded after the
   * link's, another source's), with when: their first version is written `linked`. Kept a day.
   */
  linkedAhead?: Record<string, string>;
  /** Superseded versions removed so far. */
  versionsRemoved: number;
  /** Set anew by every save (absent before the first): a save is refused unless the position it replaces is the one it was loaded as. */
  token?: string;
}

interface PartitionPositionDoc extends PartitionPosition {
  _id: string;
}

/** The range a source batch starting at chunk `from` routed (see ProfileEventLog.fixRange). */
export function routeId(sourceId: string, from: number): string {
  return `${sourceId}:${from}`;
}

export function routedBatchId(partition: number, sourceId: string, from: number): string {
  return `${partition}:${sourceId}:${from.toString().padStart(12, '0')}`;
}

/**
 * The routed event log between source drains and partition writers. Everything is keyed: a
 * batch's range is fixed by whoever routes it first, its documents are inserts with predictable
 * `_id`s, and a partition's position is one document replaced by its single writer.
 */
export class ProfileEventLog {
  private readonly routes: Collection<RouteDoc>;
  private readonly batches: Collection<RoutedBatchDoc>;
  private readonly positions: Collection<PartitionPositionDoc>;
  private readonly moved: Collection<MovedBatchDoc>;
  /** Routed batches hold many people, whose erasures may rewrite one batch at the same moment. */
  private readonly shared: SharedRewrites;

  constructor(store: Store) {
    this.routes = store.db.collection<RouteDoc>(COLLECTIONS.eventRoutes);
    this.batches = store.db.collection<RoutedBatchDoc>(COLLECTIONS.profileEvents);
    this.positions = store.db.collection<PartitionPositionDoc>(COLLECTIONS.partitionPositions);
    this.moved = store.db.collection<MovedBatchDoc>(COLLECTIONS.movedEventBatches);
    this.shared = new SharedRewrites(store);
  }

  /**
   * Fixes the chunk range of the source batch starting at `from`: the first caller's `to` stands,
   * so a retried drain that now sees more (or fewer) ready chunks routes exactly what it routed before.
   */
  async fixRange(sourceId: string, from: number, to: number): Promise<number> {
    const _id = routeId(sourceId, from);
    try {
      await this.routes.insertOne({ _id, to });
      return to;
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
      const fixed = await this.routes.findOne({ _id });
      if (!fixed) throw error;
      return fixed.to;
    }
  }

  /** Safe to repeat: documents an earlier attempt wrote are skipped as duplicates. */
  async write(batches: RoutedBatchToWrite[]): Promise<void> {
    await insertKeyed(this.batches, batches.map(encodeBatch));
  }

  /**
   * Rewrites a routed batch without a subject's events and documents, alongside other writers
   * doing the same (store/sharedRewrites). True when it held some. `read`: the batch as just read.
   */
  async eraseSubject(id: string, subject: ErasedSubject, read?: RoutedBatchDoc): Promise<boolean> {
    const rewritten = await this.shared.rewrite(
      this.batches,
      id,
      (current) => {
        const kept = eraseFromRoutedBatch({ events: decodeEvents<RoutedEvent>(current.events), profiles: current.profiles, linked: current.linked, created: current.created }, subject);
        return kept && { doc: { ...current, profiles: kept.profiles, ...(kept.linked && { linked: kept.linked }), ...(kept.created && { created: kept.created }), events: encodeEvents(kept.events) }, result: true };
      },
      read,
    );
    return rewritten === true;
  }

  async read(partition: number, sourceId: string, from: number): Promise<RoutedBatch | null> {
    const doc = await this.batches.findOne({ _id: routedBatchId(partition, sourceId, from) });
    return doc && decodeBatch(doc);
  }

  /**
   * Keeps events that now belong to another document than the one they were routed to (an unlink
   * split their document, or they arrived at it after the split): the event history of a document is
   * what was routed to it plus what was moved to it. `key` names the move, so a retry writes nothing twice.
   */
  async writeMoved(partition: number, key: string, events: HeldEvent[]): Promise<void> {
    const pieces = movedPieces(events);
    // Named by a hash of the move's key, which may hold a document's id: the name must not (an erasure keeps the batch's `_id`).
    const name = createHash('sha256').update(key).digest('hex').slice(0, 32);
    const batches = pieces.map((piece, n): RoutedBatch => ({
      _id: `${partition}:${MOVED}:${name}${n === 0 ? '' : `:${n}`}`,
      partition,
      sourceId: MOVED,
      party: 'first',
      from: 0,
      to: 0,
      events: piece,
      profiles: [...new Set(piece.map((event) => event.profileId))],
      createdAt: new Date(),
    }));
    if (batches.length === 0) return;
    // Registered first, so that no moved batch is ever in the store unregistered: retention finds them by it (RetentionStore.expireMovedBatches).
    await insertKeyed(this.moved, batches.map(({ _id, createdAt }) => ({ _id, createdAt })));
    await insertKeyed(this.batches, batches.map(encodeBatch));
  }

  /**
   * Every routed (or moved) event of the given documents, newest first. A repeat of an event routed
   * to the same document — acknowledged before it was known as one, dropped when folded — is left
   * out: the first copy, by log position, stands.
   */
  async eventsOf(profileIds: string[]): Promise<HeldEvent[]> {
    const wanted = new Set(profileIds);
    const seen = new Set<string>();
    const events = new Map<string, HeldEvent>();
    for (const profileId of profileIds) {
      for await (const doc of this.batches.find({ profiles: profileId })) {
        const batch = decodeBatch(doc);
        if (seen.has(batch._id)) continue;
        seen.add(batch._id);
        for (const event of batch.events) {
          if (!wanted.has(event.profileId)) continue;
          const held = { ...event, sourceId: event.sourceId ?? batch.sourceId, party: event.party ?? batch.party };
          const key = `${held.profileId}\0${held.sourceId}\0${held.id}`;
          const other = events.get(key);
          if (!other || held.seq < other.seq) events.set(key, held);
        }
      }
    }
    return [...events.values()].sort(newestFirst);
  }

  async loadPosition(partition: number): Promise<PartitionPosition> {
    const doc = await this.positions.findOne({ _id: String(partition) });
    return {
      cursors: doc?.cursors ?? {},
      applied: doc?.applied ?? {},
      duplicates: doc?.duplicates ?? {},
      groups: doc?.groups ?? {},
      ...(doc?.nextGroup && { nextGroup: doc.nextGroup }),
      ...(doc?.writing?.length && { writing: doc.writing }),
      ...(doc?.changesPending && { changesPending: doc.changesPending }),
      ...(doc?.linkedAhead && { linkedAhead: doc.linkedAhead }),
      versionsRemoved: doc?.versionsRemoved ?? 0,
      ...(doc?.token && { token: doc.token }),
    };
  }

  /** Partition positions 0 … `partitions - 1`: one read each. */
  loadPositions(partitions: number): Promise<PartitionPosition[]> {
    return Promise.all(Array.from({ length: partitions }, (_, partition) => this.loadPosition(partition)));
  }

  /** How many of a source's events the partition writers have folded into profiles. */
  async eventsApplied(sourceId: string, partitions: number): Promise<number> {
    return (await this.foldCounts(sourceId, partitions)).eventsApplied;
  }

  /** A source's events the partition writers have taken (`eventsApplied`), and those among them dropped as repeats. */
  async foldCounts(sourceId: string, partitions: number): Promise<{ eventsApplied: number; duplicatesDropped: number }> {
    const positions = await this.loadPositions(partitions);
    const sum = (counts: (position: PartitionPosition) => Record<string, number>) => positions.reduce((total, position) => total + (counts(position)[sourceId] ?? 0), 0);
    return { eventsApplied: sum((position) => position.applied), duplicatesDropped: sum((position) => position.duplicates) };
  }

  /**
   * Replaces the partition's position if the stored one is still the one `position` was loaded as
   * (its `token`), and returns the new token; null when another save came between. Only the
   * partition's writer saves it, but a writer taken over (a stalled worker's fold running on) must
   * not set back what its successor saved. On FerretDB the check and the write are not one atomic
   * step: it fences a writer that comes back late, not two saving in the same instant.
   */
  async savePosition(partition: number, position: PartitionPosition): Promise<string | null> {
    const { token: loaded, ...content } = position;
    const token = randomUUID();
    try {
      const result = await this.positions.replaceOne({ _id: String(partition), token: loaded ?? { $exists: false } }, { ...content, token }, { upsert: true });
      return result.matchedCount + result.upsertedCount > 0 ? token : null;
    } catch (error) {
      // No stored position matched, and the upsert found one there: saved by another writer.
      if (isDuplicateKeyError(error)) return null;
      throw error;
    }
  }
}
