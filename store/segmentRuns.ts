import { Binary, BSON, type Collection } from 'mongodb';
import { dayKey } from '../domain/profile';
import { Bitmap, runGroups, segmentRunId, windowStart } from '../domain/segments';
import type { SegmentSubject } from '../domain/profile';
import type { ChangeSet } from '../domain/segmentChanges';
import type { PackedFacts } from '../domain/destinations';
import type { Rule } from '../domain/segmentRules';
import { forEachConcurrently, insertKeyed, type Store } from './db';
import { deflateSequence, inflateDocument, inflateSequence } from './deflatedBson';
import type { SegmentDoc, SegmentStore } from './segments';
import { VersionClaims } from './versionClaims';

export const SEGMENT_COLLECTIONS = {
  /** One per batch run: the definitions it evaluated, its progress, and the index of its chunks. */
  runs: 'segment_runs',
  /** A run's membership, in chunks of consecutive profile ids: `<runId>:<n>`, ids once and a bitmap per segment. */
  snapshots: 'segment_snapshots',
  /** Real-time membership changes, one document per partition fold that changed any. */
  changes: 'segment_changes',
  /** Entered/exited counts: one per segment and batch run, and one per segment and past day of real-time changes. */
  history: 'segment_history',
  /** The uniform sample of profiles the latest run kept for estimates. */
  samples: 'segment_samples',
  /** Scheduled passes of every segment, by nominal time: which schedule's firing claimed each, and whether it went. */
  scheduledPasses: 'segment_scheduled_passes',
  /** The turn of scheduled passes: one document, the firing whose pass went last. */
  passTurns: 'segment_pass_turns',
} as const;

/**
 * A scheduled pass of every segment (`_id`: its nominal time, ISO): the firing that claimed it (its
 * workflow), and whether it went or was skipped for a pass still running (absent while it decides).
 */
interface ScheduledPassDoc {
  _id: string;
  by: string;
  went?: boolean;
  at: Date;
}

/** The turn of scheduled passes (`_id: 'turn'`): the firing whose pass went last, as version n of the turn. */
interface PassTurnDoc {
  _id: 'turn';
  version: number;
  by: string;
  at: Date;
}

/** How long claims of scheduled passes are kept: far longer than any pass runs. */
const SCHEDULED_PASSES_KEPT_MS = 7 * 86_400_000;

export interface RunChunk {
  first: string;
  last: string;
  /** Members per segment, in the order of the run's `segments`. */
  counts: ArrayLike<number>;
}

/**
 * A chunk's entry in a run's stored index: its counts packed as 16-bit integers (32-bit should a
 * chunk ever hold more people than that counts), not as an array of numbers — ~10 bytes each, which
 * put a run of 1,000 chunks (10M profiles) and 1,600 segments past a document's 16 MB. Under a field
 * of their own: a worker of a version before reads no `counts` and fails (and its activity is tried
 * again) instead of reading every chunk as empty. Runs stored before hold `counts` arrays.
 */
type StoredRunChunk = { first: string; last: string } & ({ packed: Binary } | { counts: number[] });

/** A run as stored: its index packed (see StoredRunChunk). */
export type StoredRun = Omit<RunDoc, 'chunks'> & { chunks: StoredRunChunk[] };

/** Binary subtypes (user-defined range) telling the width of packed counts. */
const COUNTS_16 = 0x82;
const COUNTS_32 = 0x83;

export function storedRun(run: RunDoc): StoredRun {
  return { ...run, chunks: run.chunks.map(({ first, last, counts }) => ({ first, last, packed: packCounts(counts) })) };
}

export function runOfStored<T extends Partial<StoredRun>>(stored: T): Omit<T, 'chunks'> & Pick<RunDoc, 'chunks'> {
  return { ...stored, chunks: (stored.chunks ?? []).map((chunk) => ({ first: chunk.first, last: chunk.last, counts: 'packed' in chunk ? unpackCounts(chunk.packed) : chunk.counts })) };
}

function packCounts(counts: ArrayLike<number>): Binary {
  const wide = Array.prototype.some.call(counts, (count: number) => count > 0xffff);
  const packed = wide ? Uint32Array.from(counts) : Uint16Array.from(counts);
  return new Binary(new Uint8Array(packed.buffer, packed.byteOffset, packed.byteLength), wide ? COUNTS_32 : COUNTS_16);
}

function unpackCounts(binary: Binary): Uint16Array | Uint32Array {
  if (binary.sub_type !== COUNTS_16 && binary.sub_type !== COUNTS_32) throw new Error(`packed segment counts of an unknown kind (binary subtype ${binary.sub_type})`);
  // A copy of its own (the driver's bytes can be a view into a larger, shared buffer, at any offset).
  const bytes = Uint8Array.from(binary.buffer.subarray(0, binary.length()));
  return binary.sub_type === COUNTS_32 ? new Uint32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
}

export interface RunDoc {
  _id: string;
  segments: Array<{ id: string; version: number; ruleJson: string }>;
  now: Date;
  /** `superseded`: a later run of the same or newer versions of all its segments was prepared before this one began its pass. */
  state: 'running' | 'completed' | 'failed' | 'superseded';
  startedAt: Date;
  finishedAt: Date | null;
  documentsScanned: number;
  evaluated: number;
  chunks: RunChunk[];
  members: Record<string, number>;
  entered: Record<string, number>;
  exited: Record<string, number>;
  error: string | null;
  /** Segments whose members carry export facts in the chunks (those some destination exports). */
  factsFor?: string[];
  /** When its pass over the profiles began (not superseded by then); absent before. */
  passStartedAt?: Date;
  /** The attempt now making the pass: an earlier one still going (given up on, not stopped) writes nothing more. */
  passToken?: string;
  /** Prepared of every segment (a scheduled or an export's run), not for an edit: edits leave it be. */
  ofEverySegment?: boolean;
}

export interface SnapshotChunk {
  ids: string[];
  /** Per segment of the run, the bitmap over `ids`. */
  bits: Uint8Array[];
  /** The export facts of the ids that are members of an exported segment (domain/destinations). */
  facts?: PackedFacts;
}

function int32Binary(values: Int32Array): Binary {
  return new Binary(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}

function fromInt32Binary(binary: Binary): Int32Array {
  // Copied: the decoded bytes need not sit at a 4-byte aligned offset.
  const bytes = new Uint8Array(binary.buffer);
  return new Int32Array(bytes.slice().buffer);
}

/** A snapshot chunk as one binary value (ids, bitmaps and fact columns: the store converts nothing). */
export function encodeSnapshotChunk(chunk: SnapshotChunk): Binary {
  const facts = chunk.facts && { ...chunk.facts, consentOf: int32Binary(chunk.facts.consentOf), sourcesOf: int32Binary(chunk.facts.sourcesOf) };
  return new Binary(BSON.serialize({ ids: chunk.ids, bits: chunk.bits.map((bits) => new Binary(bits)), ...(facts && { facts }) }));
}

export function decodeSnapshotChunk(stored: Binary): SnapshotChunk {
  const body = BSON.deserialize(stored.buffer) as { ids: string[]; bits: Binary[]; facts?: Omit<PackedFacts, 'consentOf' | 'sourcesOf'> & { consentOf: Binary; sourcesOf: Binary } };
  const facts = body.facts && { ...body.facts, consentOf: fromInt32Binary(body.facts.consentOf), sourcesOf: fromInt32Binary(body.facts.sourcesOf) };
  return { ids: body.ids, bits: body.bits.map((bits) => new Uint8Array(bits.buffer)), ...(facts && { facts }) };
}

interface StoredChunk {
  _id: string;
  runId: string;
  body: Binary;
}

/** One fold's real-time changes (domain/segmentChanges). */
export interface ChangeDoc {
  _id: string;
  at: Date;
  changes: ChangeSet;
  /** Profiles whose ids, consent or sources changed without a membership change: exports read them afresh. */
  touched?: string[];
}

/**
 * A change record as stored: its touched profiles and each segment's changes as one deflated value
 * (nothing queries inside them; a fold's record names hundreds of segments, read field by field by
 * the store they cost eight times as much), each serialized on its own: a fold that relinks thousands
 * of people states each of them in every segment, more than one BSON document holds before deflating.
 * Records written before hold them as one deflated document, or as fields.
 */
export type StoredChange = Pick<ChangeDoc, '_id' | 'at'> & ({ parts: Binary } | { body: Binary } | Pick<ChangeDoc, 'changes' | 'touched'>);

type ChangePart = { touched: string[] } | { segment: string; change: ChangeSet[string] };

export function storedChange({ _id, at, changes, touched }: ChangeDoc): StoredChange {
  return { _id, at, parts: deflateSequence([...(touched ? [{ touched }] : []), ...Object.entries(changes).map(([segment, change]) => ({ segment, change }))]) };
}

export function changeDoc(stored: StoredChange): ChangeDoc {
  if ('body' in stored) return { _id: stored._id, at: stored.at, ...inflateDocument<Pick<ChangeDoc, 'changes' | 'touched'>>(stored.body) };
  if (!('parts' in stored)) return stored;
  const doc: ChangeDoc = { _id: stored._id, at: stored.at, changes: {} };
  for (const part of inflateSequence<ChangePart>(stored.parts)) {
    if ('segment' in part) doc.changes[part.segment] = part.change;
    else doc.touched = part.touched;
  }
  return doc;
}

export interface HistoryDoc {
  _id: string;
  segment: string;
  day: string;
  entered: number;
  exited: number;
}

/** The header (`latest`: its run and how many parts) or one part (`<runId>:<n>`) of the estimate's sample. */
interface StoredSample {
  _id: string;
  runId: string;
  population: number;
  parts?: number;
  /** On the header: when the run's pass began (absent on headers written before). */
  at?: Date;
  /** On the header: the highest sample rank kept (domain/segments `sampleRank`). */
  maxRank?: number;
  body?: Binary;
}

const SAMPLE_PART = 200;

/**
 * Segment membership as stored. A run's snapshot is compact — per chunk of up to CHUNK_PROFILES
 * consecutive profile ids, the ids once and one bitmap per segment — so 1M profiles × 50 segments is
 * ~100 documents of a few hundred kilobytes, not 50M pair documents the store could not insert in
 * minutes. Chunks are found through the run's index (their first and last ids), by exact `_id`.
 */
export class SegmentRunStore {
  readonly runs: Collection<StoredRun>;
  readonly snapshots: Collection<StoredChunk>;
  readonly changes: Collection<StoredChange>;
  readonly history: Collection<HistoryDoc>;
  readonly samples: Collection<StoredSample>;
  private readonly passes: Collection<ScheduledPassDoc>;
  private readonly turns: Collection<PassTurnDoc>;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.claims = new VersionClaims(store);
    this.runs = store.db.collection<StoredRun>(SEGMENT_COLLECTIONS.runs);
    this.snapshots = store.db.collection<StoredChunk>(SEGMENT_COLLECTIONS.snapshots);
    this.changes = store.db.collection<StoredChange>(SEGMENT_COLLECTIONS.changes);
    this.history = store.db.collection<HistoryDoc>(SEGMENT_COLLECTIONS.history);
    this.samples = store.db.collection<StoredSample>(SEGMENT_COLLECTIONS.samples);
    this.passes = store.db.collection<ScheduledPassDoc>(SEGMENT_COLLECTIONS.scheduledPasses);
    this.turns = store.db.collection<PassTurnDoc>(SEGMENT_COLLECTIONS.passTurns);
  }

  /**
   * Claims the scheduled pass of `nominalTime` for the firing `by` (its workflow, running from before
   * the claim until its pass ends): true when it is to run. The first firing to claim a time owns it
   * (schedules firing together meet in one pass); its owner goes unless the firing whose pass went
   * last is still running (`running`) — passes of different schedules, whatever their times, never
   * overlap. The turn moves by a conditional write of its next version, so of two owners deciding at
   * once one goes. Repeated by the same firing, it answers the same.
   */
  async claimScheduledPass(nominalTime: Date, by: string, running: (by: string) => Promise<boolean>): Promise<boolean> {
    const _id = nominalTime.toISOString();
    await insertKeyed(this.passes, [{ _id, by, at: new Date() }]);
    const claimed = await this.passes.findOne({ _id });
    if (claimed?.by !== by) return false;
    if (claimed.went !== undefined) return claimed.went;
    for (;;) {
      const turn = await this.turns.findOne({ _id: 'turn' });
      // Taken by this firing's earlier attempt, which stopped before recording it.
      const went = turn?.by === by || !(turn && (await running(turn.by)));
      if (!went || turn?.by === by) {
        await this.passes.updateOne({ _id }, { $set: { went } });
        return went;
      }
      const next: PassTurnDoc = { _id: 'turn', version: (turn?.version ?? 0) + 1, by, at: new Date() };
      const taken = turn
        ? await this.claims.hold(`${SEGMENT_COLLECTIONS.passTurns}/turn@${turn.version}`, async () => (await this.turns.replaceOne({ _id: 'turn', version: turn.version }, next)).modifiedCount === 1)
        : { value: (await insertKeyed(this.turns, [next])).size === 0 };
      // Lost to another owner deciding at once: read the turn again (its firing runs now).
      if (!taken?.value) continue;
      await this.passes.updateOne({ _id }, { $set: { went: true } });
      await this.passes.deleteMany({ _id: { $lt: new Date(nominalTime.getTime() - SCHEDULED_PASSES_KEPT_MS).toISOString() } });
      return true;
    }
  }

  async getRun(runId: string): Promise<RunDoc | null> {
    const stored = await this.runs.findOne({ _id: runId });
    return stored && runOfStored(stored);
  }

  /** Records a run's start; a retried start finds the record of the first and keeps it. */
  async startRun(run: RunDoc): Promise<RunDoc> {
    await insertKeyed(this.runs, [storedRun(run)]);
    return (await this.getRun(run._id)) as RunDoc;
  }

  async saveRun(run: RunDoc): Promise<void> {
    await this.runs.replaceOne({ _id: run._id }, storedRun(run));
  }

  /** Writes a chunk under its fixed id; a retry writes the same id again, and the last attempt's content stands. */
  async writeChunk(runId: string, n: number, chunk: SnapshotChunk): Promise<void> {
    await this.snapshots.replaceOne({ _id: `${runId}:${n}` }, { runId, body: encodeSnapshotChunk(chunk) }, { upsert: true });
  }

  async readChunk(runId: string, n: number): Promise<SnapshotChunk | null> {
    const stored = await this.snapshots.findOne({ _id: `${runId}:${n}` });
    return stored && decodeSnapshotChunk(stored.body);
  }

  /**
   * Records a run of `segments` as they are now, evaluated at `evaluatedAt`. Its id derives from the
   * segment versions and the second (see segmentRunId), so preparing the same run twice while it runs
   * finds the first.
   */
  async prepare(segments: SegmentDoc[], evaluatedAt: Date, startedAt: Date, ofEverySegment = false): Promise<RunDoc> {
    const definitions = segments.map((segment) => ({ id: segment._id, version: segment.version, ruleJson: segment.ruleJson })).sort((a, b) => (a.id < b.id ? -1 : 1));
    for (let now = windowStart(evaluatedAt); ; now = new Date(now.getTime() + 1000)) {
      const run = await this.startRun({ ...this.newRun(definitions, now, startedAt), ...(ofEverySegment ? { ofEverySegment } : {}) });
      // A run of the same versions that already ended in this second read the profiles before this request: the next second is a new run.
      if (run.state === 'running' || run.startedAt.getTime() >= startedAt.getTime()) return run;
    }
  }

  private newRun(definitions: RunDoc['segments'], now: Date, startedAt: Date): RunDoc {
    return {
      _id: segmentRunId(definitions, now),
      segments: definitions,
      now,
      state: 'running',
      startedAt,
      finishedAt: null,
      documentsScanned: 0,
      evaluated: 0,
      chunks: [],
      members: {},
      entered: {},
      exited: {},
      error: null,
    };
  }

  /**
   * The segments of the edits' runs whose pass over the profiles has not begun yet. Not those of a
   * run of every segment: an edit taking them all in would write thousands of segments (and its run
   * complete them all again) for a run that evaluates them anyway — what a burst of edits did while
   * the hourly run of hundreds of scheduled segments waited to begin.
   */
  async runningSegmentIds(): Promise<Set<string>> {
    const running = await this.runs.find({ state: 'running' }, { projection: { segments: 1, passStartedAt: 1, ofEverySegment: 1 } }).toArray();
    return new Set(running.filter((run) => !run.passStartedAt && !run.ofEverySegment).flatMap((run) => run.segments.map((segment) => segment.id)));
  }

  /** Ids of the runs recorded as running that started before `before` (by the `state` index). */
  async runningSince(before: Date): Promise<string[]> {
    const running = await this.runs.find({ state: 'running' }, { projection: { _id: 1, startedAt: 1 } }).toArray();
    return running.filter((run) => run.startedAt < before).map((run) => run._id);
  }

  /**
   * Marks a run's pass as begun (later runs no longer take in its segments, see prepareRun) by the
   * attempt holding `token`: the latest to begin, which an earlier attempt still going gives way to.
   */
  async markPassStarted(runId: string, at: Date, token: string): Promise<void> {
    await this.runs.updateOne({ _id: runId }, { $set: { passStartedAt: at, passToken: token } });
  }

  /** Whether the attempt holding `token` still makes the run's pass (one read by `_id`). */
  async holdsPass(runId: string, token: string): Promise<boolean> {
    return (await this.runs.findOne({ _id: runId }, { projection: { passToken: 1, state: 1 } }))?.passToken === token;
  }

  /**
   * Saves the pass's result if the attempt holding `token` still makes it and the run is still
   * running (under a claim on FerretDB, whose conditional writes are not atomic). Chunks past its
   * last, which an attempt given up on wrote when it found more people, go: nothing would read them.
   */
  async savePass(run: RunDoc, token: string): Promise<boolean> {
    const save = () => this.runs.replaceOne({ _id: run._id, state: 'running', passToken: token }, { ...storedRun(run), passToken: token });
    const saved = await this.claims.hold(`${SEGMENT_COLLECTIONS.runs}/${run._id}@pass`, save);
    if (saved?.value.matchedCount !== 1) return false;
    for (let n = run.chunks.length; (await this.snapshots.findOne({ _id: `${run._id}:${n}` }, { projection: { _id: 1 } })) !== null; n++) {
      await this.snapshots.deleteOne({ _id: `${run._id}:${n}` });
    }
    return true;
  }

  /** A run prepared later that evaluates every segment of `run` at the same or a newer version, if any. */
  async supersededBy(run: RunDoc): Promise<string | null> {
    const later = await this.runs.find({ state: 'running' }, { projection: { _id: 1, segments: 1, startedAt: 1, now: 1 } }).toArray();
    const newer = later.find(
      (other) =>
        other._id !== run._id &&
        (other.now > run.now || (other.now.getTime() === run.now.getTime() && other._id > run._id)) &&
        run.segments.every((segment) => other.segments.some((o) => o.id === segment.id && o.version >= segment.version)),
    );
    return newer?._id ?? null;
  }

  /** Removes a run's chunks (by exact id, from its index); its record stays, for its counts. */
  async dropChunks(run: { _id: string; chunks: readonly unknown[] }): Promise<void> {
    await forEachConcurrently(
      run.chunks.map((_, n) => n),
      8,
      async (n) => void (await this.snapshots.deleteOne({ _id: `${run._id}:${n}` })),
    );
    await this.runs.updateOne({ _id: run._id }, { $set: { chunks: [] } });
  }

  /**
   * Drops the snapshot chunks of ended runs no segment reads (`segments` is every segment), removes
   * the records of runs that ended before `forgetBefore` and that no segment reads or shows as its
   * last run (their counts stay in `history`), and folds real-time changes of past days into history
   * once every segment's snapshot, or first run under way, is newer than them. Records are kept
   * bounded because every edit and every run looks among them for the live ones. Safe to repeat: a
   * record goes only after its chunks.
   */
  async releaseUnread(segments: SegmentDoc[], now: Date, forgetBefore: Date): Promise<{ released: number; forgotten: number }> {
    const read = new Set(segments.flatMap((segment) => (segment.current ? [segment.current.runId] : [])));
    const shown = new Set(segments.flatMap((segment) => (segment.lastRun ? [segment.lastRun.runId] : [])));
    const result = { released: 0, forgotten: 0 };
    for (const run of await this.runs.find({ state: { $ne: 'running' } }, { projection: { _id: 1, chunks: 1, finishedAt: 1 } }).toArray()) {
      if (read.has(run._id)) continue;
      if (run.chunks.length > 0) {
        await this.dropChunks(run);
        result.released++;
      }
      if (!shown.has(run._id) && run.finishedAt && run.finishedAt < forgetBefore) {
        await this.runs.deleteOne({ _id: run._id });
        result.forgotten++;
      }
    }
    // Changes since the oldest snapshot a segment reads, or a first run under way will read, stay. A
    // segment never evaluated, with no run under way, reads none: its first run starts after the
    // hour's margin below.
    const since = (segment: SegmentDoc) => segment.current?.startedAt ?? (segment.lastRun?.state === 'running' ? segment.lastRun.startedAt : now);
    const cutoff = segments.reduce((min, segment) => (since(segment) < min ? since(segment) : min), now);
    await this.foldChangesIntoHistory(new Date(cutoff.getTime() - 3_600_000));
    return result;
  }

  /**
   * Counts the real-time changes of whole days before `before` into per-day history entries, then
   * removes them. An entry is inserted once (a retry that finds it leaves it: it was counted from all
   * of that day's changes, which are only removed after every entry is in).
   */
  async foldChangesIntoHistory(before: Date): Promise<void> {
    const endOfDays = new Date(Math.floor(before.getTime() / 86_400_000) * 86_400_000);
    const old = (await this.changes.find({}).toArray()).filter((doc) => doc.at < endOfDays).map(changeDoc);
    if (old.length === 0) return;
    const totals = new Map<string, HistoryDoc>();
    for (const doc of old) {
      const day = dayKey(doc.at);
      for (const [segment, change] of Object.entries(doc.changes)) {
        const id = `${segment}:rt:${day}`;
        const entry = totals.get(id) ?? { _id: id, segment, day, entered: 0, exited: 0 };
        entry.entered += change.entered.length;
        entry.exited += change.exited.length;
        totals.set(id, entry);
      }
    }
    await insertKeyed(this.history, [...totals.values()]);
    await forEachConcurrently(old, 8, async (doc) => void (await this.changes.deleteOne({ _id: doc._id })));
  }

  /** One fold's changes, under an id fixed by where the fold started: a retried fold replaces its own. */
  async recordChanges(doc: ChangeDoc): Promise<void> {
    await this.changes.replaceOne({ _id: doc._id }, storedChange(doc), { upsert: true });
  }

  /** Whether a fold's changes are recorded under its write group (one read by `_id`). */
  async hasChanges(id: string): Promise<boolean> {
    return (await this.changes.findOne({ _id: id }, { projection: { _id: 1 } })) !== null;
  }

  /**
   * Real-time changes since `since`, oldest first: only those are sent and inflated (by the index on
   * `at`; a scan on FerretDB), while the collection holds every change since the oldest snapshot began.
   */
  async changesSince(since: Date): Promise<ChangeDoc[]> {
    const docs = await this.changes.find({ at: { $gte: since } }).toArray();
    return docs.map(changeDoc).sort((a, b) => a.at.getTime() - b.at.getTime() || (a._id < b._id ? -1 : 1));
  }

  async writeHistory(docs: HistoryDoc[]): Promise<void> {
    for (const doc of docs) await this.history.replaceOne({ _id: doc._id }, doc, { upsert: true });
  }

  /** History entries of a segment; a scan of a collection of one entry per segment and run or day. */
  historyOf(segmentId: string): Promise<HistoryDoc[]> {
    return this.history.find({ segment: segmentId }).toArray();
  }

  /**
   * The estimate's sample, in parts of SAMPLE_PART profiles (a busy profile's behaviour is tens of
   * kilobytes; one document of them all could pass the store's 16 MB), then the header naming them —
   * unless a run whose pass began later (`at`) wrote its own: the newer sample stands. Runs ending at
   * once replace the header one at a time, each from the one it read (store/versionClaims), and the
   * writer whose sample is not named removes its parts, or the one it replaced removes the old.
   */
  async writeSample(runId: string, at: Date, population: number, subjects: SegmentSubject[], maxRank?: number): Promise<void> {
    const parts = Math.ceil(subjects.length / SAMPLE_PART);
    for (let part = 0; part < parts; part++) {
      const body = new Binary(BSON.serialize({ subjects: subjects.slice(part * SAMPLE_PART, (part + 1) * SAMPLE_PART) }));
      await this.samples.replaceOne({ _id: `${runId}:${part}` }, { runId, population, body }, { upsert: true });
    }
    const header: StoredSample = { _id: 'latest', runId, at, population, parts, ...(maxRank !== undefined && { maxRank }) };
    for (;;) {
      const current = await this.samples.findOne({ _id: 'latest' });
      if (current?.runId === runId) return; // a retry: written before
      if (current?.at && current.at > at) return this.dropSampleParts(runId, parts);
      const replace = async () =>
        current ? (await this.samples.replaceOne({ _id: 'latest', runId: current.runId }, header)).matchedCount === 1 : (await insertKeyed(this.samples, [header])).size === 0;
      const held = await this.claims.hold(`${SEGMENT_COLLECTIONS.samples}/latest@${current?.runId ?? ''}`, replace);
      if (!held?.value) continue;
      if (current) await this.dropSampleParts(current.runId, current.parts ?? 0);
      return;
    }
  }

  private async dropSampleParts(runId: string, parts: number): Promise<void> {
    for (let part = 0; part < parts; part++) await this.samples.deleteOne({ _id: `${runId}:${part}` });
  }

  async readSample(): Promise<{ runId: string; population: number; subjects: SegmentSubject[] } | null> {
    const header = await this.samples.findOne({ _id: 'latest' });
    if (!header) return null;
    const subjects: SegmentSubject[] = [];
    for (let part = 0; part < (header.parts ?? 0); part++) {
      const stored = await this.samples.findOne({ _id: `${header.runId}:${part}` });
      if (stored?.body) subjects.push(...(BSON.deserialize(stored.body.buffer) as { subjects: SegmentSubject[] }).subjects);
    }
    return { runId: header.runId, population: header.population, subjects };
  }
}

/** A run's snapshot read by profile id: finds the chunk by the run's index, caches chunks read. */
export class SnapshotReader {
  /** Read once, however many ask at the same time. */
  private readonly cache = new Map<number, Promise<SnapshotChunk | null>>();
  private readonly indexes: Map<string, number>;

  constructor(
    private readonly store: SegmentRunStore,
    readonly run: RunDoc,
  ) {
    // A run of every segment names hundreds: found by id, not by a walk per profile asked.
    this.indexes = new Map(run.segments.map((segment, index) => [segment.id, index]));
  }

  segmentIndex(segmentId: string): number {
    return this.indexes.get(segmentId) ?? -1;
  }

  /** The first chunk whose last id does not satisfy `before` (chunks hold ascending, disjoint ranges). */
  private firstChunk(before: (last: string) => boolean): number {
    let low = 0;
    let high = this.run.chunks.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (before(this.run.chunks[middle].last)) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** The first chunk that may hold ids after `after`. */
  chunkAfter(after: string): number {
    return this.firstChunk((last) => last <= after);
  }

  chunk(n: number): Promise<SnapshotChunk | null> {
    let chunk = this.cache.get(n);
    if (!chunk) {
      this.cache.set(n, (chunk = this.store.readChunk(this.run._id, n)));
      chunk.catch(() => this.cache.delete(n)); // a failed read is tried again by the next to ask
    }
    return chunk;
  }

  /** The chunk `profileId` would be in (the run's chunk count when it is past them all). */
  chunkOf(profileId: string): number {
    return this.firstChunk((last) => last < profileId);
  }

  async isMember(segmentId: string, profileId: string): Promise<boolean> {
    const index = this.segmentIndex(segmentId);
    const n = this.chunkOf(profileId);
    const chunk = index >= 0 && n < this.run.chunks.length ? await this.chunk(n) : null;
    if (!chunk) return false;
    const at = binarySearch(chunk.ids, profileId);
    return at >= 0 && new Bitmap(chunk.bits[index]).has(at);
  }
}

export function binarySearch(sorted: string[], value: string): number {
  let low = 0;
  let high = sorted.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (sorted[middle] === value) return middle;
    if (sorted[middle] < value) low = middle + 1;
    else high = middle - 1;
  }
  return -1;
}

/** A run of every segment prepared for a workflow to execute, and its group's key (see prepareNextRun). */
export interface PreparedRun {
  runId: string;
  key: string;
}

/**
 * Prepares the next run of every segment as they are now: the segments fall into groups of at most
 * `perRun` (runGroups), evaluated one after the other, and each group's run is prepared only once the
 * one before it has ended (a run prepared long before its pass begins would be failed as abandoned).
 * `after` is the key of the group prepared before (null: the first); the key returned is this one's
 * (see runGroups). Null once none is left. Shown on its segments.
 */
export async function prepareNextRun(segments: SegmentStore, runs: SegmentRunStore, evaluatedAt: Date, startedAt: Date, perRun: number, after: string | null): Promise<{ run: RunDoc; key: string } | null> {
  const [group] = runGroups(await segments.list(), perRun, after);
  if (!group) return null;
  return { run: await prepareRunOf(segments, runs, group.segments, evaluatedAt, startedAt, true), key: group.key };
}

/**
 * Prepares a run of those segments a change of `only` touches — the segments named, those whose
 * rules lead to them, and what all of those refer to (read by id, not by reading every segment) —
 * and shows it on each.
 */
export async function prepareRun(segments: SegmentStore, runs: SegmentRunStore, evaluatedAt: Date, startedAt: Date, only: readonly string[]): Promise<RunDoc> {
  // The segments of runs whose pass has not begun join this one, so it supersedes them: edits in
  // quick succession still cost one pass over the profiles, not one each. Runs already passing are
  // left to finish: taking them in too would chain every run of a steady stream of edits to the
  // first run of every segment, and make each hold them all.
  const touched = [...only, ...(await segments.dependentsOf(only)).map((doc) => doc._id), ...(await runs.runningSegmentIds())];
  const all = touched.length > RUN_BY_ID_AT_MOST ? await segments.list() : undefined;
  return prepareRunOf(segments, runs, await segments.withReferences(touched, all), evaluatedAt, startedAt);
}

/** Past this many segments, a run reads them all at once rather than each by id. */
const RUN_BY_ID_AT_MOST = 64;

/** Prepares a run of exactly `docs` (which must hold every segment their rules refer to) and shows it on each. */
export async function prepareRunOf(segments: SegmentStore, runs: SegmentRunStore, docs: SegmentDoc[], evaluatedAt: Date, startedAt: Date, ofEverySegment = false): Promise<RunDoc> {
  const run = await runs.prepare(docs, evaluatedAt, startedAt, ofEverySegment);
  if (run.state === 'running') {
    await segments.setLastRuns(run.segments, { runId: run._id, state: 'running', startedAt: run.startedAt, finishedAt: null });
  }
  return run;
}

/**
 * Records a run that could not finish; its segments keep reading their previous snapshot. Safe to
 * repeat: a run recorded failed by an attempt cut short before its segments is recorded on them.
 */
export async function failRun(segments: SegmentStore, runs: SegmentRunStore, runId: string, error: string, finishedAt: Date): Promise<void> {
  const run = await runs.getRun(runId);
  if (!run || (run.state !== 'running' && run.state !== 'failed')) return;
  const failed = run.state === 'failed' ? run : { ...run, state: 'failed' as const, finishedAt, error: error.slice(0, 2000) };
  if (run.state === 'running') await runs.saveRun(failed);
  await segments.setLastRuns(run.segments, { runId: run._id, state: 'failed', startedAt: run.startedAt, finishedAt: failed.finishedAt ?? finishedAt });
}

export function rulesOfRun(run: Pick<RunDoc, 'segments'>): Array<{ id: string; rule: Rule }> {
  return run.segments.map((segment) => ({ id: segment.id, rule: JSON.parse(segment.ruleJson) as Rule }));
}
