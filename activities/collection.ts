import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import type { StoredEvent } from '../domain/event';
import { byTypePriority, identityKey, withoutReadingMark, type Identity } from '../domain/identity';
import { identityBlocklist } from '../domain/identityBlocklist';
import type { IdentityClaim } from '../domain/identityResolution';
import { partitionOf } from '../domain/partition';
import { INITIAL_DRAIN_POSITION } from '../domain/drainPosition';
import type { DrainPosition, Party, SourceState } from '../domain/schemas';
import { forEachConcurrently, type Store } from '../store/db';
import { ExtendedEvent } from '../store/deflatedBson';
import { EventLog, type ReadChunk } from '../store/eventLog';
import { IdentityCapStore, type RefusalDoc } from '../store/identityCaps';
import { IdentityIndex, type IdentityLinkDoc } from '../store/identities';
import { UnlinkStore } from '../store/identityUnlinks';
import { PrivacyMarks } from '../store/privacyMarks';
import { ProfileEventLog, routedBatchId, type RoutedBatchToWrite } from '../store/profileEvents';
import { Refreshed } from '../store/refreshed';
import { SourceStore } from '../store/sources';
import { wakeProfilePartition, type PartitionWorkflowConfig } from '../temporal/client';
import { heartbeat, withHeartbeats } from './heartbeat';
import { createIdentityResolver, linkDocs, severedLinkKeys, type BatchResolution } from './identityResolver';

export interface DrainInput {
  sourceId: string;
  party: Party;
  /** Where the drain stands before this batch; saved, advanced, once the batch is routed. */
  position: DrainPosition;
  maxEvents: number;
}

export interface DrainResult {
  /** Where the drain stands after this batch (as saved in the store). */
  position: DrainPosition;
  chunks: number;
  /** Events routed to their profiles' partitions. */
  routed: number;
  /** Events that carried only blocklisted identities (see domain/identityBlocklist). */
  refused: number;
  /** Blocklisted identities dropped from events, those refused included. */
  blocked: number;
  duplicates: number;
  /** Events their source's consent policy keeps from profiling, per reason. */
  nonProfiling: Record<string, number>;
  /** Profile documents this batch created, merges (identity links) it found, and joins the caps refused. */
  newProfiles: number;
  links: number;
  capRefusals: number;
  /** True when the batch stopped at its size limit, so more is ready now. */
  more: boolean;
  /**
   * When the drain stopped at a pending chunk (its writer mid-append): how long until it counts as
   * abandoned, also when that chunk follows a batch that stopped at its size limit. Null otherwise.
   */
  retryInMs: number | null;
}

/** Named points inside a drain where tests may interrupt it, to prove a retry converges. */
export type DrainStep = 'events-read' | 'identities-claimed' | 'events-routed' | 'position-saved';

export interface CollectionDeps {
  store: Store;
  temporal: Client;
  config: PartitionWorkflowConfig & Pick<Config, 'DMP_DEDUPE_WINDOW_HOURS' | 'DMP_RAW_EVENT_TTL_HOURS' | 'DMP_DRAIN_CONCURRENCY' | 'DMP_PRIVACY_SALT' | 'DMP_DEFAULT_PHONE_REGION'>;
  now?: () => Date;
  /** How long a chunk may stay pending (its writer mid-append) before the drain treats it as abandoned. */
  pendingGraceMs?: number;
  onDrainStep?: (step: DrainStep) => void | Promise<void>;
}

/** Sums counts kept per key. */
function addCounts(counts: Array<Record<string, number>>): Record<string, number> {
  const total: Record<string, number> = {};
  for (const count of counts) for (const [key, n] of Object.entries(count)) total[key] = (total[key] ?? 0) + n;
  return total;
}

/** Log chunks read in parallel by a drain. */
const READ_AHEAD = 8;
/** How long a drain uses the severances it read (see unsevered in identityResolver): one read of them all per period, and only when a batch makes links. */
const SEVERANCES_REFRESH_MS = 5_000;

/**
 * The most a range's events may take as BSON (after one chunk, which may hold up to ~17 MB): all of
 * them may go to one partition, and its routed batch, one document, holds 16 MB.
 */
const RANGE_BYTES_MAX = 12 * 1024 * 1024;

interface LogBatch {
  /** With the bytes each is stored as in the log: routing stores it again, its target added, by copying them. */
  events: Array<{ seq: number; event: StoredEvent; bytes: Uint8Array }>;
  /** The chunk after the last one read. */
  end: number;
  duplicates: number;
  nonProfiling: Record<string, number>;
  /** Non-profiling events with a consent signal: it reaches the profiles they already belong to. */
  consentOnly: Array<{ seq: number; event: StoredEvent }>;
  /** Whether a ready chunk follows `end` (the batch stopped at its size limit). */
  more: boolean;
  /** When the batch stopped at a pending chunk: how long until it counts as abandoned. */
  retryInMs: number | null;
}

/** The activities of a source's workflow: where its drain stands, and routing its log to the profile partitions. */
export function createCollectionActivities(deps: CollectionDeps) {
  const now = deps.now ?? (() => new Date());
  const log = new EventLog(deps.store, { now: () => now().getTime(), dedupeWindowHours: deps.config.DMP_DEDUPE_WINDOW_HOURS, rawEventTtlHours: deps.config.DMP_RAW_EVENT_TTL_HOURS });
  const identities = new IdentityIndex(deps.store, undefined, () => now().getTime());
  const capStore = new IdentityCapStore(deps.store);
  const routedEvents = new ProfileEventLog(deps.store);
  const sources = new SourceStore(deps.store);
  const pendingGraceMs = deps.pendingGraceMs ?? 60_000;
  const partitions = deps.config.DMP_PROFILE_PARTITIONS;
  const blocked = identityBlocklist(deps.config.DMP_IDENTITY_BLOCKLIST, deps.config.DMP_DEFAULT_PHONE_REGION);
  const unlinks = new UnlinkStore(deps.store);
  const severed = new Refreshed(SEVERANCES_REFRESH_MS, async () => severedLinkKeys(await unlinks.allSeverances()));
  const resolver = createIdentityResolver({ identities, capStore, caps: deps.config.DMP_IDENTITY_CAPS, blocked, now, severed: () => severed.get() });
  const marks = new PrivacyMarks(deps.store, deps.config.DMP_PRIVACY_SALT);

  /** Reads chunks from `from` on: up to `maxEvents`, or exactly up to `until` when the range is fixed. */
  async function readLog(sourceId: string, from: number, limit: { maxEvents: number } | { until: number }): Promise<LogBatch> {
    const batch: LogBatch = { events: [], end: from, duplicates: 0, nonProfiling: {}, consentOnly: [], more: false, retryInMs: null };
    await marks.refresh();
    // Chunks are read a few at a time, in parallel: one by one, the round trips were most of a drain.
    let ahead: Array<Promise<ReadChunk | null>> = [];
    let bytes = 0;
    let full = false;
    for (;;) {
      if ('until' in limit ? batch.end >= limit.until : full || batch.events.length >= limit.maxEvents) {
        // A pending chunk right after a full batch says when to come back, as one met mid-batch does.
        const next = await log.readiness(sourceId, batch.end, pendingGraceMs);
        batch.more = next.ready;
        batch.retryInMs = next.retryInMs;
        return batch;
      }
      if (ahead.length === 0) {
        const count = 'until' in limit ? Math.min(READ_AHEAD, limit.until - batch.end) : READ_AHEAD;
        ahead = Array.from({ length: count }, (_, k) => {
          const read = log.read(sourceId, batch.end + k);
          // Handled here: reads a full batch drops (the next range reads them again) are never awaited.
          read.catch(() => undefined);
          return read;
        });
      }
      const chunk = await (ahead.shift() as Promise<ReadChunk | null>);
      if (!chunk) break;
      const chunkBytes = chunk.eventBytes.reduce((sum, event) => sum + event.length, 0);
      // A fixed range was cut by this rule when it was first read.
      if (!('until' in limit) && batch.end > from && bytes + chunkBytes > RANGE_BYTES_MAX) {
        full = true;
        continue;
      }
      bytes += chunkBytes;
      let skip: Set<number>;
      const waited = now().getTime() - chunk.createdAt.getTime();
      if (chunk.state === 'sealed' && !chunk.fenced) skip = new Set(chunk.duplicates ?? []);
      else if (chunk.state === 'sealed' || waited >= pendingGraceMs) skip = await log.fence(chunk);
      else {
        batch.retryInMs = pendingGraceMs - waited;
        break;
      }
      const lateHere = new Map<string, number>();
      chunk.events.forEach((event, index) => {
        // An erased subject's events go nowhere: not the placeholders an erasure left, nor late ones.
        const erasedBy = event.erased ? null : marks.erasedBy(event.identities);
        if (skip.has(index)) batch.duplicates++;
        else if (event.erased) return;
        else if (erasedBy) lateHere.set(erasedBy, (lateHere.get(erasedBy) ?? 0) + 1);
        else if (event.nonProfiling) {
          batch.nonProfiling[event.nonProfiling] = (batch.nonProfiling[event.nonProfiling] ?? 0) + 1;
          if (event.consent) batch.consentOnly.push({ seq: batch.end, event });
        }
        else batch.events.push({ seq: batch.end, event, bytes: chunk.eventBytes[index] });
      });
      // Counted once per chunk: a retried turn reads the same chunks again.
      if (lateHere.size > 0) await marks.countLateOnce(chunk._id, lateHere);
      batch.end++;
      heartbeat({ seq: batch.end });
    }
    await Promise.allSettled(ahead); // reads past the end are dropped, but not left unawaited
    if ('until' in limit && batch.end < limit.until) throw new Error(`chunk ${batch.end} of ${sourceId} was routed once but cannot be read now`);
    return batch;
  }

  /**
   * Where the consent signals of non-profiling events go: the document owning the event's
   * highest-priority identity, if one does already — such an event never creates a profile, links
   * documents or claims an identity. Owners come from the index's cache, else one read by `_id` per key.
   */
  async function consentUpdates(events: LogBatch['consentOnly']): Promise<Array<{ seq: number; event: StoredEvent; profileId: string; evidence: Identity[] }>> {
    if (events.length === 0) return [];
    const keysOf = (event: StoredEvent) =>
      [...event.identities].sort((a, b) => byTypePriority(a.type, b.type)).map(identityKey).filter((key) => !blocked(key));
    const { owners, missing } = identities.cached([...new Set(events.flatMap(({ event }) => keysOf(event)))]);
    for (const [key, owner] of await identities.reload(missing)) owners.set(key, owner);
    // The evidence of whose it is: what the event named, and those readings of an id of unknown type that someone holds.
    const evidenceOf = (event: StoredEvent) => event.identities.filter((identity) => !identity.previous || owners.has(identityKey(identity))).map(withoutReadingMark);
    return events.flatMap(({ seq, event }) => {
      const owned = keysOf(event).find((key) => owners.has(key));
      return owned ? [{ seq, event, profileId: owners.get(owned) as string, evidence: evidenceOf(event) }] : [];
    });
  }

  /** What a range wrote that an erasure begun meanwhile may have to take back (see withoutErasedSince). */
  interface RangeWrites {
    from: number;
    /** Each event routed, with the document it went to. */
    events: Array<{ event: StoredEvent; profileId: string | null }>;
    /** Claims, links and refusals this range inserted (not those it found there already). */
    claims: IdentityClaim[];
    links: IdentityLinkDoc[];
    refusals: RefusalDoc[];
  }

  /** A range's share of a drain's counts, the partitions that got events, and what it wrote. */
  type RangeResult = Pick<DrainResult, 'routed' | 'refused' | 'blocked' | 'duplicates' | 'nonProfiling' | 'newProfiles' | 'links' | 'capRefusals'> & { woken: number[]; writes: RangeWrites };

  /** Routes one fixed range of a source's log, its identities resolved: write one routed batch per partition. */
  async function routeRange(sourceId: string, party: Party, from: number, to: number, batch: LogBatch, resolution: BatchResolution): Promise<RangeResult> {
    const events = batch.events.map(({ event }) => event);
    const createdAt = now();
    const links = await identities.addLinks(linkDocs(resolution.links, sourceId, createdAt));
    const refusals = await capStore.record(resolution.refusals.map((refusal) => ({ ...refusal, cap: deps.config.DMP_IDENTITY_CAPS[refusal.type], sourceId })), createdAt);
    await deps.onDrainStep?.('identities-claimed');

    const routed: RoutedBatchToWrite[] = Array.from({ length: partitions }, (_, partition) => ({
      _id: routedBatchId(partition, sourceId, from),
      partition,
      sourceId,
      party,
      from,
      to,
      events: [],
      profiles: [],
      createdAt,
    }));
    for (const link of resolution.links) {
      for (const end of link.profiles) {
        const target = routed[partitionOf(end, partitions)];
        target.linked = [...new Set([...(target.linked ?? []), end])];
      }
    }
    let refused = 0;
    let blockedIdentities = 0;
    // A refused identity stays off the event (the document it would have joined is full of its
    // type), as does a reading of an id of unknown type that joins nothing.
    const leftOff = new Map<number, Set<string>>();
    for (const { event, key } of [...resolution.refusals, ...resolution.unmatched]) leftOff.set(event, (leftOff.get(event) ?? new Set()).add(key));
    /** The identities an event keeps; counts the blocklisted ones, an id of unknown type as one when all its readings are. */
    const keptOf = (index: number, identities: Identity[]): Identity[] => {
      const left = leftOff.get(index);
      const kept: Identity[] = [];
      let readings = 0;
      let readingsBlocked = 0;
      for (const identity of identities) {
        const key = identityKey(identity);
        if (identity.previous) readings++;
        if (!blocked(key)) {
          if (!left?.has(key)) kept.push(identity);
        } else if (identity.previous) readingsBlocked++;
        else blockedIdentities++;
      }
      if (readings > 0 && readingsBlocked === readings) blockedIdentities++;
      return kept;
    };
    // A document's batch, found once: a range holds tens of thousands of events of a few thousand
    // documents (a batch's list searched per event took ~1 µs of each event's routing).
    const batchOf = new Map<string, RoutedBatchToWrite>();
    const targetOf = (profileId: string): RoutedBatchToWrite => {
      let target = batchOf.get(profileId);
      if (!target) {
        target = routed[partitionOf(profileId, partitions)];
        target.profiles.push(profileId);
        batchOf.set(profileId, target);
      }
      return target;
    };
    batch.events.forEach(({ seq, event, bytes }, index) => {
      const profileId = resolution.targets[index];
      const kept = keptOf(index, event.identities);
      if (profileId === null) {
        refused++; // only blocklisted identities: nothing to attach it to
        return;
      }
      const asStored = kept.length === event.identities.length && !kept.some((identity) => identity.previous);
      targetOf(profileId).events.push(asStored ? new ExtendedEvent(bytes, { seq, profileId }) : { ...event, identities: kept.map(withoutReadingMark), seq, profileId });
    });
    const consent = await consentUpdates(batch.consentOnly);
    for (const { seq, event, profileId, evidence } of consent) {
      const { id, type, timestamp, receivedAt, consent } = event;
      targetOf(profileId).events.push({ id, type, timestamp, receivedAt, identities: [], evidence, consent, consentOnly: true, seq, profileId });
    }
    const created = new Set(resolution.created);
    for (const target of routed) {
      const made = target.profiles.filter((profileId) => created.has(profileId));
      if (made.length > 0) target.created = made;
    }
    await routedEvents.write(routed);
    await deps.onDrainStep?.('events-routed');
    return {
      routed: events.length - refused,
      refused,
      blocked: blockedIdentities,
      duplicates: batch.duplicates,
      nonProfiling: batch.nonProfiling,
      newProfiles: resolution.newProfiles,
      links: resolution.links.length,
      capRefusals: resolution.refusals.length,
      woken: routed.filter((target) => target.events.length > 0).map((target) => target.partition),
      writes: { from, events: [...events.map((event, index) => ({ event, profileId: resolution.targets[index] })), ...consent.map(({ event, profileId }) => ({ event, profileId }))], claims: resolution.claimed, links, refusals },
    };
  }

  /**
   * A turn reads its events, stalls (its worker paused), and routes them after a whole erasure of
   * their subject ran meanwhile: the erasure rewrote the raw chunks and checked the store before the
   * turn wrote. So, as a fold does (activities/profileWriter), the turn looks after writing. When
   * marks arrived since it began and tombstone an identity of an event it routed, it takes back
   * what those events made: they leave its routed batches (with the documents only they went to),
   * tombstoned identities lose their claims, the other identities it claimed for them alone lose
   * theirs while still held by the same document, and their links and refusals go. Then it fails
   * before its position is saved; the retry knows the tombstones from the start and routes without
   * them. One read of the next mark slot per turn; nothing more while no mark arrives.
   */
  async function withoutErasedSince(marksRead: number, sourceId: string, ranges: RangeWrites[]): Promise<void> {
    await marks.refresh(true);
    if (marks.slotsRead === marksRead) return;
    const erased = new Set<string>();
    const tombstoned = new Set<string>();
    const named = new Set<string>();
    const theirs = new Set<string>();
    const others = new Set<string>();
    const othersKeys = new Set<string>();
    for (const { event, profileId } of ranges.flatMap((range) => range.events)) {
      if (marks.erasedBy(event.identities) === null) {
        if (profileId !== null) others.add(profileId);
        for (const identity of event.identities) othersKeys.add(identityKey(identity));
        continue;
      }
      erased.add(event.id);
      if (profileId !== null) theirs.add(profileId);
      for (const identity of event.identities) (marks.erasedBy([identity]) === null ? named : tombstoned).add(identityKey(identity));
    }
    if (erased.size === 0) return;
    // Not deleted: another attempt of this turn may have saved the position past them already.
    const subject = { keys: tombstoned, documents: new Set([...theirs].filter((id) => !others.has(id))) };
    const batches = ranges.flatMap(({ from }) => Array.from({ length: partitions }, (_, partition) => routedBatchId(partition, sourceId, from)));
    await forEachConcurrently(batches, 8, async (id) => void (await routedEvents.eraseSubject(id, subject)));
    // A claim another person's event of this turn relies on stays: their event went to its document.
    const claimed = ranges.flatMap((range) => range.claims.filter((claim) => named.has(claim.key) && !othersKeys.has(claim.key)));
    await identities.removeClaims([...[...tombstoned].map((key) => ({ key })), ...claimed]);
    await identities.removeLinks(ranges.flatMap((range) => range.links.filter((link) => erased.has(link.eventId)).map((link) => link._id)));
    await capStore.removeRefusals(ranges.flatMap((range) => range.refusals.filter((refusal) => erased.has(refusal.eventId)).map((refusal) => refusal._id)));
    throw new Error(`${sourceId}: an erasure began while this turn routed ${erased.size} of its subject's events: what they made is taken back, and the retry routes without them`);
  }

  /**
   * Routes the next chunks of a source's log to the partitions that own their profiles: up to
   * `DMP_DRAIN_CONCURRENCY` consecutive ranges of up to `maxEvents` each, read one after the other
   * and routed at once (a range's identities are resolved while the next is read). Safe to retry:
   * each range is fixed by its first attempt, identity claims and links are keyed inserts whose
   * outcome a retry reads back, new profile ids derive from the event, routed batches have
   * predictable ids, and the saved position is replaced by the same values.
   */
  async function routeBatch(input: DrainInput): Promise<DrainResult> {
    const { sourceId } = input;
    const start = input.position.cursor;
    await marks.refresh();
    const marksRead = marks.slotsRead;
    const ranges: Array<Promise<RangeResult>> = [];
    let cursor = start;
    let more = false;
    let retryInMs: number | null = null;
    // Ranges resolve their identities one after the other — a person new in two of them then gets
    // one document, not two linked — while the next range is read and the one before is written.
    let resolved: Promise<unknown> = Promise.resolve();
    /**
     * The ranges' results once every one has settled. When one failed (or the turn did), what the
     * others wrote is first checked against erasures begun meanwhile, as a whole turn's is below: a
     * retry skips the batches they wrote, so nothing would check them again.
     */
    async function routedRanges(failed?: { error: unknown }): Promise<RangeResult[]> {
      const settled = await Promise.allSettled(ranges);
      const results = settled.flatMap((range) => (range.status === 'fulfilled' ? [range.value] : []));
      const rejected = settled.find((range) => range.status === 'rejected');
      if (!failed && !rejected) return results;
      await withoutErasedSince(marksRead, sourceId, results.map((range) => range.writes));
      throw failed ? failed.error : rejected?.reason;
    }
    try {
      while (ranges.length < deps.config.DMP_DRAIN_CONCURRENCY) {
        const from = cursor;
        let batch = await readLog(sourceId, from, { maxEvents: input.maxEvents });
        more = batch.more;
        retryInMs = batch.retryInMs;
        if (batch.end === from) break;
        await deps.onDrainStep?.('events-read');
        const to = await routedEvents.fixRange(sourceId, from, batch.end);
        if (to !== batch.end) batch = await readLog(sourceId, from, { until: to });
        const read = batch;
        const resolution = resolved.catch(() => undefined).then(() => resolver.resolve(sourceId, read.events.map(({ event }) => event)));
        resolved = resolution;
        const routing = resolution.then((done) => routeRange(sourceId, input.party, from, to, read, done));
        routing.catch(() => undefined); // seen once all ranges settle (routedRanges), not as an unhandled rejection meanwhile
        ranges.push(routing);
        cursor = to;
        if (!batch.more) break;
      }
    } catch (error) {
      await routedRanges({ error });
    }
    const results = await routedRanges();
    const sum = (field: Exclude<keyof RangeResult, 'woken' | 'nonProfiling' | 'writes'>) => results.reduce((total, result) => total + result[field], 0);
    const nonProfiling = addCounts([...results.map((range) => range.nonProfiling)]);
    const result: DrainResult = {
      position: input.position,
      chunks: cursor - start,
      routed: sum('routed'),
      refused: sum('refused'),
      blocked: sum('blocked'),
      duplicates: sum('duplicates'),
      nonProfiling,
      newProfiles: sum('newProfiles'),
      links: sum('links'),
      capRefusals: sum('capRefusals'),
      more,
      retryInMs,
    };
    // Wake-ups a turn that saved its position and died before sending them left owed: this turn sends them.
    const owed = await sources.owedWakes(sourceId);
    if (results.length === 0) {
      if (owed) await wakePartitions(sourceId, owed.cursor, owed.partitions);
      // Nothing at this turn's cursor, yet a turn saved a later one (it died before answering, or a stalled one
      // saved past it): the workflow goes on from there — retention may have removed the chunks between.
      const saved = await sources.loadPosition(sourceId);
      if (saved && saved.cursor > start) return { ...result, position: saved, more: true, retryInMs: null };
      return result;
    }
    await withoutErasedSince(marksRead, sourceId, results.map((range) => range.writes));
    result.position = {
      cursor,
      eventsProcessed: input.position.eventsProcessed + result.routed,
      eventsRefused: input.position.eventsRefused + result.refused,
      // A position saved before this count existed has none.
      identitiesBlocked: (input.position.identitiesBlocked ?? 0) + result.blocked,
      // A position carried from before per-reason counts existed has none.
      eventsNonProfiling: addCounts([input.position.eventsNonProfiling ?? {}, nonProfiling]),
      duplicatesSkipped: input.position.duplicatesSkipped + result.duplicates,
      batchesApplied: input.position.batchesApplied + results.length,
      lastDrainAt: now().toISOString(),
    };
    // Saved before the partitions are woken, which the position records until they are: a wake-up
    // must never point past what a restart would redo, and one lost with a dying worker is sent by the next turn.
    const woken = [...new Set([...(owed?.partitions ?? []), ...results.flatMap((range) => range.woken)])];
    await sources.savePosition(sourceId, result.position, woken);
    await deps.onDrainStep?.('position-saved');
    await wakePartitions(sourceId, cursor, woken);
    return result;
  }

  async function wakePartitions(sourceId: string, cursor: number, partitions: number[]): Promise<void> {
    if (partitions.length === 0) return;
    await Promise.all(partitions.map((partition) => wakeProfilePartition(deps.temporal, deps.store.db.databaseName, partition, sourceId, deps.config)));
    await sources.wakesSent(sourceId, cursor);
  }

  return {
    /** Read-only; safe to retry. Where the source's drain stands, as saved, and whether it is paused. */
    async loadDrainPosition(sourceId: string): Promise<{ position: DrainPosition; state: SourceState }> {
      const [position, source] = await Promise.all([sources.loadPosition(sourceId), sources.get(sourceId)]);
      return {
        // Positions saved before a field existed get its initial value.
        position: { ...INITIAL_DRAIN_POSITION, ...position },
        state: source?.state ?? 'active',
      };
    },

    /** Read-only; safe to retry. Whether the source is paused or active, as saved (one read by `_id`). */
    async loadSourceState(sourceId: string): Promise<SourceState> {
      return (await sources.get(sourceId))?.state ?? 'active';
    },

    /** Read-only; safe to retry. Whether the chunk at `cursor` can be drained now, or when to look again. */
    checkSourceLog(input: { sourceId: string; cursor: number }): Promise<{ ready: boolean; retryInMs: number | null }> {
      return log.readiness(input.sourceId, input.cursor, pendingGraceMs);
    },

    /** See routeBatch. */
    routeSourceBatch(input: DrainInput): Promise<DrainResult> {
      return withHeartbeats(() => routeBatch(input));
    },
  };
}

export type CollectionActivities = ReturnType<typeof createCollectionActivities>;
