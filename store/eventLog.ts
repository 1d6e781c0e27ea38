import type { Binary, Collection } from 'mongodb';
import type { StoredEvent } from '../domain/event';
import { COLLECTIONS, isDuplicateKeyError, type Store } from './db';
import { EventIdGenerations } from './eventIds';
import { VersionClaims } from './versionClaims';

/** How long an event id stays a duplicate when nothing else is said (DMP_DEDUPE_WINDOW_HOURS). */
export const DEFAULT_DEDUPE_WINDOW_HOURS = 168;
export const DEFAULT_RAW_EVENT_TTL_HOURS = 24;
import { decodeEventsWithBytes, encodeEvents } from './deflatedBson';
import { firstAbsent } from './keyedSequence';

/**
 * One group commit of one source. A chunk is written with every candidate event, then (for imports)
 * the event ids are claimed, then a seal is written beside it (same `_id`) naming the indexes that
 * turned out to be duplicates. A chunk without a seal is pending: its writer is mid-append, or died there.
 */
export interface EventChunk {
  _id: string;
  sourceId: string;
  seq: number;
  createdAt: Date;
  events: StoredEvent[];
  /**
   * False when the appender claimed no event ids (the tracking channels): such a chunk is complete
   * once written, the seal names only repeats within it, and the profile writer drops a later repeat
   * (domain/profile `applyEvent`). Absent on chunks whose ids were claimed.
   */
  claimed?: false;
}

/** As stored: the events as one binary value (see store/deflatedBson). */
export interface StoredChunk extends Omit<EventChunk, 'events'> {
  events: Binary;
}

export function encodeChunk(chunk: EventChunk): StoredChunk {
  return { ...chunk, events: encodeEvents(chunk.events) };
}

/**
 * The most a chunk's events may take as stored (deflated). A document holds 16 MB, and a chunk's
 * events are also read back into one routed batch (see activities/collection `readLog`).
 */
export const CHUNK_STORED_BYTES_MAX = 8 * 1024 * 1024;

/** The events of one append cannot be stored as one chunk (see CHUNK_STORED_BYTES_MAX): append fewer at a time. */
export class ChunkTooLarge extends Error {}

/**
 * The events encoded as a chunk stores them, or ChunkTooLarge — also when their BSON alone passes
 * what the serializer can hold (~17 MB before deflating), which it reports as a RangeError.
 */
function encodeWithin(events: StoredEvent[]): Binary {
  let encoded: Binary;
  try {
    encoded = encodeEvents(events);
  } catch (error) {
    // By name: the serializer's RangeError may come from another realm (Node's own, under a test runner's sandbox).
    if ((error as { name?: unknown } | null)?.name === 'RangeError') throw new ChunkTooLarge(`${events.length} events pass the ~17 MB one document can hold before deflating`);
    throw error;
  }
  if (encoded.length() > CHUNK_STORED_BYTES_MAX) throw new ChunkTooLarge(`${events.length} events take ${encoded.length()} bytes deflated, past ${CHUNK_STORED_BYTES_MAX}`);
  return encoded;
}

/** Written once, never updated: FerretDB reads a whole table to update one document, but not to insert. */
interface ChunkSeal {
  _id: string;
  duplicates: number[];
  /** Events in the chunk that are not duplicates; with `chunkCreatedAt`, lets status read seals only. */
  accepted: number;
  chunkCreatedAt: Date;
  sealedAt: Date;
  /** Sealed by a drain that gave up waiting for the writer (see EventLog.fence), not by the writer. */
  fenced?: true;
}

export interface ReadChunk extends EventChunk {
  /** Each event's bytes as stored: routing stores each again with its target added (see deflatedBson.ExtendedEvent). */
  eventBytes: Uint8Array[];
  state: 'pending' | 'sealed';
  duplicates: number[];
  /** Sealed by a drain, not by its writer (see EventLog.fence). */
  fenced: boolean;
}

export class AckDeadlineExceeded extends Error {}

/** The append's chunk was sealed by a drain that gave up on it: nothing of it is acknowledged (see EventLog.fence). */
export class ChunkFenced extends Error {}

/** Appends that look for the head first after another process took a slot (see EventLog.contended). */
const CONTENDED_APPENDS = 100;

/** The indexes of events whose id an earlier event of the same list carries. */
function repeatsWithin(events: StoredEvent[]): Set<number> {
  const seen = new Set<string>();
  const repeats = new Set<number>();
  events.forEach((event, index) => {
    if (seen.has(event.id)) repeats.add(index);
    seen.add(event.id);
  });
  return repeats;
}

/** The claim keys a fenced chunk skipped: an id also applied from it (a repeat within it) is not the retry's to take back. */
function takeBackIds(chunk: EventChunk, skipped: Set<number>): string[] {
  const applied = new Set(chunk.events.filter((_, index) => !skipped.has(index)).map((event) => event.id));
  return [...new Set(chunk.events.filter((event, index) => skipped.has(index) && !applied.has(event.id)).map((event) => eventIdKey(chunk.sourceId, event.id)))];
}

export function chunkId(sourceId: string, seq: number): string {
  return `${sourceId}:${seq.toString().padStart(12, '0')}`;
}

export function eventIdKey(sourceId: string, eventId: string): string {
  return `${sourceId}:${eventId}`;
}

export interface AppendResult {
  seq: number;
  duplicateIndexes: Set<number>;
}

/**
 * The source log: an append-only sequence of chunks whose `_id`s are `<sourceId>:<seq>`, so both the
 * writer (claiming the next slot by inserting it) and the reader (reading slot after slot) touch
 * documents only by exact `_id` — the one lookup FerretDB's SQLite backend does not answer by scanning.
 */
export class EventLog {
  private readonly chunks: Collection<StoredChunk>;
  private readonly seals: Collection<ChunkSeal>;
  private readonly drainPositions: Collection<{ _id: string; cursor: number }>;
  private readonly eventIds: EventIdGenerations;
  private readonly versionClaims: VersionClaims;
  /** Where this process expects the next free slot of each source, and when it last took a slot there; a hint, corrected on conflict. */
  private readonly nextSlot = new Map<string, { seq: number; at: number }>();
  /**
   * Per source another process appends to as well (it took a slot from under this one lately): how
   * many more appends look for the head before inserting. One read by `_id` is far cheaper than an
   * insert of a whole chunk refused for its key — and with two writers taking turns, this process's
   * hint is otherwise always one slot behind.
   */
  private readonly contended = new Map<string, number>();

  constructor(store: Store, private readonly options: { ackDeadlineMs?: number; now?: () => number; dedupeWindowHours?: number; rawEventTtlHours?: number } = {}) {
    this.chunks = store.db.collection<StoredChunk>(COLLECTIONS.events);
    this.seals = store.db.collection<ChunkSeal>(COLLECTIONS.eventSeals);
    this.drainPositions = store.db.collection(COLLECTIONS.drainPositions);
    this.eventIds = new EventIdGenerations(store.db, options.dedupeWindowHours ?? DEFAULT_DEDUPE_WINDOW_HOURS);
    this.versionClaims = new VersionClaims(store);
  }

  private now(): number {
    return this.options.now ? this.options.now() : Date.now();
  }

  /**
   * Durably appends events and reports which were duplicates. Resolves only when the chunk is sealed
   * within the acknowledgement deadline; a drain treats a chunk still pending after its (longer) grace
   * period as abandoned and applies exactly the events whose ids it claimed.
   *
   * With `claimIds: false` no id is claimed — two fewer inserts per event before the answer — and only
   * repeats within the chunk are reported: the profile writer drops repeats of earlier chunks.
   *
   * Events too large for one chunk are a ChunkTooLarge before anything is written.
   */
  async append(sourceId: string, events: StoredEvent[], options: { claimIds?: boolean } = {}): Promise<AppendResult> {
    const started = this.now();
    const claimIds = options.claimIds ?? true;
    const seq = await this.claimSlot(sourceId, { createdAt: new Date(started), events: encodeWithin(events), ...(claimIds ? {} : { claimed: false as const }) });
    const duplicateIndexes = claimIds ? await this.claimEventIds(sourceId, seq, events, started) : repeatsWithin(events);
    try {
      await this.seals.insertOne({
        _id: chunkId(sourceId, seq),
        duplicates: [...duplicateIndexes],
        accepted: events.length - duplicateIndexes.size,
        chunkCreatedAt: new Date(started),
        sealedAt: new Date(this.now()),
      });
    } catch (error) {
      // Only a drain seals a chunk besides its writer: it skipped what was not claimed in time.
      if (isDuplicateKeyError(error)) throw new ChunkFenced(`chunk ${seq} of ${sourceId} was sealed by its drain before this append finished: append it again`);
      throw error;
    }
    const deadlineMs = this.options.ackDeadlineMs ?? 10_000;
    if (this.now() - started > deadlineMs) {
      throw new AckDeadlineExceeded(`chunk ${seq} of ${sourceId} took longer than ${deadlineMs} ms to seal`);
    }
    return { seq, duplicateIndexes };
  }

  private async claimSlot(sourceId: string, body: Omit<StoredChunk, '_id' | 'sourceId' | 'seq'>): Promise<number> {
    const hint = this.nextSlot.get(sourceId);
    let seq = hint && body.createdAt.getTime() - hint.at < this.hintTrustMs() ? hint.seq : await this.findHead(sourceId, await this.drainedUpTo(sourceId));
    const probesLeft = this.contended.get(sourceId) ?? 0;
    if (probesLeft > 0) {
      this.contended.set(sourceId, probesLeft - 1);
      seq = await this.findHead(sourceId, seq);
    }
    for (;;) {
      try {
        await this.chunks.insertOne({ _id: chunkId(sourceId, seq), sourceId, seq, ...body });
        this.nextSlot.set(sourceId, { seq: seq + 1, at: body.createdAt.getTime() });
        return seq;
      } catch (error) {
        if (!isDuplicateKeyError(error)) throw error;
        this.contended.set(sourceId, CONTENDED_APPENDS);
        // Another writer took this slot: jump to the current head rather than stepping one by one.
        seq = await this.findHead(sourceId, seq + 1);
      }
    }
  }

  /**
   * How long a hint is trusted. Once others have appended after it, the drain may pass the slots they
   * took and retention remove them, leaving the hinted slot free behind the drain: a chunk written
   * there would never be read. Retention removes only chunks older than the raw event time to live,
   * so a hint younger than that (half of it, for clocks that differ) cannot point into removed slots;
   * an older one is found again from the drain's cursor.
   */
  private hintTrustMs(): number {
    return ((this.options.rawEventTtlHours ?? DEFAULT_RAW_EVENT_TTL_HOURS) * 3_600_000) / 2;
  }

  /**
   * The drain's saved cursor: every slot below it is drained and may already be expired, so a writer
   * that probed from 0 would find a free slot the drain never reads again and lose what it acknowledged.
   * Retention only removes chunks below this cursor, so the probe from here finds the true head.
   */
  private async drainedUpTo(sourceId: string): Promise<number> {
    return (await this.drainPositions.findOne({ _id: sourceId }, { projection: { cursor: 1 } }))?.cursor ?? 0;
  }

  /** The indexes of events whose ids an earlier chunk already claimed (and did not skip): the duplicates. */
  private async claimEventIds(sourceId: string, seq: number, events: StoredEvent[], at: number): Promise<Set<number>> {
    const docs = events.map((event) => ({ _id: eventIdKey(sourceId, event.id), chunk: seq }));
    const held = await this.eventIds.claim(docs, at);
    await this.eventIds.takeBack(sourceId, docs, held, at, (fenced) => this.skippedByFence(sourceId, fenced), this.versionClaims);
    return held;
  }

  async exists(sourceId: string, seq: number): Promise<boolean> {
    return (await this.chunks.findOne({ _id: chunkId(sourceId, seq) }, { projection: { _id: 1 } })) !== null;
  }

  /** The first free slot at or after `from`. */
  findHead(sourceId: string, from: number): Promise<number> {
    return firstAbsent((seq) => this.exists(sourceId, seq), from);
  }

  /**
   * A chunk with its events and what to skip. A chunk that claims no ids is complete once written
   * (one insert): it reads as sealed, seal or not, and its repeats are found in it — its seal is
   * not read, and a writer that died before sealing it delays nothing.
   */
  async read(sourceId: string, seq: number): Promise<ReadChunk | null> {
    const id = chunkId(sourceId, seq);
    const chunk = await this.chunks.findOne({ _id: id });
    if (!chunk) return null;
    const { events, bytes: eventBytes } = decodeEventsWithBytes<StoredEvent>(chunk.events);
    if (chunk.claimed === false) return { ...chunk, events, eventBytes, state: 'sealed', duplicates: [...repeatsWithin(events)], fenced: false };
    const seal = await this.seals.findOne({ _id: id });
    return { ...chunk, events, eventBytes, state: seal ? 'sealed' : 'pending', duplicates: seal?.duplicates ?? [], fenced: seal?.fenced === true };
  }

  /**
   * Whether the chunk at `seq` can be drained: sealed, claiming no ids (see `read`), or pending for
   * longer than `graceMs` (its writer is gone). When it is pending, `retryInMs` says when it will count as abandoned; null when absent.
   * Reads the small seal, and only the chunk's creation time, never its events.
   */
  async readiness(sourceId: string, seq: number, graceMs: number): Promise<{ ready: boolean; retryInMs: number | null }> {
    const id = chunkId(sourceId, seq);
    if (await this.seals.findOne({ _id: id }, { projection: { _id: 1 } })) return { ready: true, retryInMs: null };
    const chunk = await this.chunks.findOne({ _id: id }, { projection: { createdAt: 1, claimed: 1 } });
    if (!chunk) return { ready: false, retryInMs: null };
    if (chunk.claimed === false) return { ready: true, retryInMs: null };
    const waited = this.now() - chunk.createdAt.getTime();
    return waited >= graceMs ? { ready: true, retryInMs: null } : { ready: false, retryInMs: graceMs - waited };
  }

  /** A sealed chunk's counts without its events (null while the chunk is pending or absent). */
  async readSeal(sourceId: string, seq: number): Promise<{ accepted: number; chunkCreatedAt: Date } | null> {
    return this.seals.findOne({ _id: chunkId(sourceId, seq) }, { projection: { accepted: 1, chunkCreatedAt: 1 } });
  }

  /** The chunk that claimed an event id around time `at`, or null: tells a resumed append's own events from earlier appends'. */
  async claimingChunk(sourceId: string, eventId: string, at: number): Promise<number | null> {
    return (await this.eventIds.owner(eventIdKey(sourceId, eventId), at))?.chunk ?? null;
  }

  /**
   * For a chunk pending past the drain's grace: seals it in its writer's place, so that what the
   * drain skips is fixed — the events whose ids the chunk had not claimed yet. The writer's own seal
   * then fails and its append is not acknowledged (ChunkFenced); the skipped ids are recorded so that
   * the append's retry takes their claims back. Returns the indexes to skip; when the writer sealed
   * first, its duplicates. A chunk read already fenced is passed again (after a crash in between).
   */
  async fence(chunk: ReadChunk): Promise<Set<number>> {
    if (chunk.state === 'sealed') {
      const skipped = new Set(chunk.duplicates);
      if (chunk.fenced) await this.confirmFence(chunk, skipped);
      return skipped;
    }
    const unclaimed = await this.unclaimedIndexes(chunk);
    const fence = { _id: chunk._id, sourceId: chunk.sourceId, chunk: chunk.seq, at: chunk.createdAt };
    // Recorded before the seal: the writer's retry may come as soon as its own seal is refused.
    await this.eventIds.recordFence(fence);
    try {
      await this.seals.insertOne({ _id: chunk._id, duplicates: [...unclaimed], accepted: chunk.events.length - unclaimed.size, chunkCreatedAt: chunk.createdAt, sealedAt: new Date(this.now()), fenced: true });
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
      const seal = await this.seals.findOne({ _id: chunk._id });
      if (!seal) throw new Error(`the seal of chunk ${chunk._id} was refused as a duplicate but cannot be read`);
      if (seal.fenced) return this.fence({ ...chunk, state: 'sealed', duplicates: seal.duplicates, fenced: true });
      await this.eventIds.dropFence(chunk._id);
      return new Set(seal.duplicates);
    }
    await this.confirmFence(chunk, unclaimed);
    return unclaimed;
  }

  private confirmFence(chunk: EventChunk, skipped: Set<number>): Promise<void> {
    return this.eventIds.confirmFence({ _id: chunk._id, sourceId: chunk.sourceId, chunk: chunk.seq, at: chunk.createdAt, ids: takeBackIds(chunk, skipped) });
  }

  /** For a fence not confirmed yet: the ids its chunk skipped, from the drain's seal and the chunk; null when the seal is the writer's (or the chunk is gone). */
  private async skippedByFence(sourceId: string, seq: number): Promise<string[] | null> {
    const id = chunkId(sourceId, seq);
    const seal = await this.seals.findOne({ _id: id }, { projection: { duplicates: 1, fenced: 1 } });
    if (seal?.fenced !== true) return null;
    const chunk = await this.chunks.findOne({ _id: id });
    return chunk && takeBackIds({ ...chunk, events: decodeEventsWithBytes<StoredEvent>(chunk.events).events }, new Set(seal.duplicates));
  }

  /** For a chunk abandoned while pending: the indexes of events whose ids this chunk did not claim. */
  async unclaimedIndexes(chunk: EventChunk): Promise<Set<number>> {
    const owners = await Promise.all(
      chunk.events.map((event) => this.eventIds.owner(eventIdKey(chunk.sourceId, event.id), chunk.createdAt.getTime())),
    );
    const unclaimed = new Set<number>();
    const seen = new Set<string>();
    owners.forEach((owner, index) => {
      const id = chunk.events[index].id;
      if (owner?.chunk !== chunk.seq || seen.has(id)) unclaimed.add(index);
      seen.add(id);
    });
    return unclaimed;
  }
}
