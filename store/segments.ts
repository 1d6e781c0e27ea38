import { randomBytes, randomUUID } from 'node:crypto';
import type { Collection } from 'mongodb';
import { referencedSegments, type Rule, type SegmentDefinition } from '../domain/segmentRules';
import { scheduleKey, type SegmentSchedule } from '../domain/segments';
import { COLLECTIONS, findByParents, forEachConcurrently, insertKeyed, isDuplicateKeyError, upsertRacing, type Store } from './db';
import { VersionClaims } from './versionClaims';

export const SEGMENTS = COLLECTIONS.segments;

/** Where a segment's membership stands: the batch run whose snapshot it reads. */
export interface CurrentRun {
  runId: string;
  /** The segment version the run evaluated. */
  version: number;
  /** The snapshot's member count. */
  size: number;
  /** The time the run evaluated rules at, and when it started (real-time changes after it apply on top). */
  now: Date;
  startedAt: Date;
  finishedAt: Date;
}

export interface RunSummary {
  runId: string;
  state: 'running' | 'completed' | 'failed' | 'superseded';
  startedAt: Date;
  finishedAt: Date | null;
  /** The segment version the run evaluates (absent on summaries stored before it was kept). */
  version?: number;
}

export interface SegmentDoc {
  _id: string;
  name: string;
  description: string | null;
  taxonomyPath: string | null;
  /** Stored as JSON text: rule values are the client's, and the store has rules of its own about keys and nested lists. */
  ruleJson: string;
  schedule: SegmentSchedule | null;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  /**
   * Run state, derived on reading from the segment's run states (`runStateOf`); stored on the
   * document only by segments written before those were kept apart, read when none exists.
   */
  current: CurrentRun | null;
  lastRun: RunSummary | null;
  /** The segments the rule refers to, written by the store with the rule: finds a segment's dependents by exact match. */
  refersTo?: string[];
  /** The fingerprint of the request that created it under an Idempotency-Key (api/idempotency). */
  createdWith?: string;
}

/** A document as stored: with the segments its rule refers to. */
/** What an edit may change of a segment's definition; `version` goes up with the rule. */
export type SegmentEdit = Partial<Pick<SegmentDoc, 'name' | 'description' | 'taxonomyPath' | 'schedule' | 'ruleJson' | 'version' | 'updatedAt'>>;

function withRefersTo(doc: SegmentDoc): SegmentDoc {
  return { ...doc, refersTo: referencedSegments(JSON.parse(doc.ruleJson) as Rule) };
}

export function newSegmentId(): string {
  return `seg_${randomBytes(8).toString('hex')}`;
}

export function ruleOf(doc: Pick<SegmentDoc, 'ruleJson'>): Rule {
  return JSON.parse(doc.ruleJson) as Rule;
}

/** What the evaluator takes: each segment's id and rule. */
export function definitionsOf(docs: SegmentDoc[]): SegmentDefinition[] {
  return docs.map((doc) => ({ id: doc._id, rule: ruleOf(doc) }));
}

/** The longest `SegmentStore.definitions` answers from what it read before without reading the segments again. */
const DEFINITIONS_KEPT_MS = 30_000;

/** Run states written at once when a run's state is recorded on all its segments. */
const RUN_STATE_WRITES_AT_ONCE = 8;
/** How long an edit waits for other edits of the same version before it answers that the segment changed. */
const EDIT_WAIT_MS = 10_000;

/**
 * A run's state on one of its segments (`<segmentId>:<runId>`). Only that run writes it, one step
 * after another (prepared, then completed, superseded or failed): no two writers ever update one
 * document at once, which the store's updates need (they read, change and write back, so a
 * concurrent write is lost — two runs completing one segment lost one's record so). Once it is
 * completed, only an erasure changes it (the size, without the subject).
 */
export interface RunStateDoc {
  _id: string;
  segment: string;
  runId: string;
  /** The segment version the run evaluates. */
  version: number;
  state: RunSummary['state'];
  startedAt: Date;
  finishedAt: Date | null;
  /** Once completed: the snapshot's member count and the time the run evaluated rules at. */
  size?: number;
  now?: Date;
}

export function runStateId(segmentId: string, runId: string): string {
  return `${segmentId}:${runId}`;
}

function runStateDoc(segment: { id: string; version: number }, run: RunSummary, snapshot?: Pick<CurrentRun, 'size' | 'now'>): RunStateDoc {
  return {
    _id: runStateId(segment.id, run.runId),
    segment: segment.id,
    runId: run.runId,
    version: segment.version,
    state: run.state,
    startedAt: run.startedAt,
    finishedAt: run.finishedAt,
    ...(snapshot && { size: snapshot.size, now: snapshot.now }),
  };
}

const startedLater = (a: RunStateDoc, b: RunStateDoc) => a.startedAt.getTime() - b.startedAt.getTime() || (a.runId < b.runId ? -1 : a.runId > b.runId ? 1 : 0);

/** The completed run a segment reads: of the newest version it has one for, the one started last. */
function snapshotOf(states: RunStateDoc[], version: number): RunStateDoc | null {
  let best: RunStateDoc | null = null;
  for (const state of states) {
    if (state.state !== 'completed' || state.version > version) continue;
    if (!best || state.version > best.version || (state.version === best.version && startedLater(state, best) > 0)) best = state;
  }
  return best;
}

/**
 * A segment with its run state: its last run is the run started last, and it reads the snapshot
 * of `snapshotOf` — a run that completes after a later-started one (runs overlap) never replaces it.
 */
export function runStateOf(doc: SegmentDoc, states: RunStateDoc[]): SegmentDoc {
  if (states.length === 0) return doc;
  const last = states.reduce((a, b) => (startedLater(b, a) > 0 ? b : a));
  const read = snapshotOf(states, doc.version);
  return {
    ...doc,
    lastRun: { runId: last.runId, state: last.state, startedAt: last.startedAt, finishedAt: last.finishedAt, version: last.version },
    current: read
      ? { runId: read.runId, version: read.version, size: read.size ?? 0, now: read.now ?? read.startedAt, startedAt: read.startedAt, finishedAt: read.finishedAt ?? read.startedAt }
      : doc.current,
  };
}

interface DefinitionsStamp {
  _id: 'definitions';
  token: string;
}

/** A DELETE checks and removes within seconds; a mark older than this was left by one that stopped. */
const DELETION_MARK_STALE_MS = 2 * 60_000;

/** One DELETE's mark on its segment (`_id`: `<segment>:<random>`): two DELETEs of one segment never clear each other's. */
interface DeletionMark {
  _id: string;
  segment: string;
  at: Date;
}

/**
 * Segment definitions, one document per segment, written by the API's edits; runs record their
 * state in run states of their own, read with the segments. Every write is by `_id`. Readers read
 * the definitions afresh each time, or check the stamp (`definitions`): a new segment counts at
 * once. Reading them all costs a read per segment, so what one segment's change needs is read by
 * id (`withReferences`, `dependentsOf`).
 */
export class SegmentStore {
  readonly segments: Collection<SegmentDoc>;
  private readonly runStates: Collection<RunStateDoc>;
  private readonly stamp: Collection<DefinitionsStamp>;
  private readonly deletions: Collection<DeletionMark>;
  private readonly claims: VersionClaims;
  /** The definitions as of a stamp: `definitions` reads them again only when the stamp changed. */
  private kept: { token: string | null; docs: SegmentDoc[]; at: number } | null = null;

  constructor(store: Store) {
    this.segments = store.db.collection<SegmentDoc>(SEGMENTS);
    this.runStates = store.db.collection<RunStateDoc>(COLLECTIONS.segmentRunStates);
    this.stamp = store.db.collection<DefinitionsStamp>(COLLECTIONS.segmentDefinitionsStamp);
    this.deletions = store.db.collection<DeletionMark>(COLLECTIONS.segmentDeletions);
    this.claims = new VersionClaims(store);
  }

  async list(): Promise<SegmentDoc[]> {
    return this.withRunStates(await this.segments.find({}).toArray());
  }

  /** `docs` with their run state (a segment keeps a few run states). */
  private async withRunStates(docs: SegmentDoc[]): Promise<SegmentDoc[]> {
    if (docs.length === 0) return docs;
    const bySegment = await findByParents(this.runStates, 'segment', docs.map((doc) => doc._id));
    return docs.map((doc) => runStateOf(doc, bySegment.get(doc._id) ?? []));
  }

  /**
   * Every segment, current as of this call for what counts to a reader of definitions (rules,
   * versions), for the price of one read by `_id` while none changed: each definition change
   * replaces the stamp after writing the segment, so a stamp seen unchanged means no definition was
   * changed before this call began reading. Run state (`current`, `lastRun`) may be older. They are
   * read again at least every `DEFINITIONS_KEPT_MS` all the same: a writer that died between a
   * change and its stamp is missed for that long at most.
   */
  async definitions(): Promise<SegmentDoc[]> {
    const token = (await this.stamp.findOne({ _id: 'definitions' }))?.token ?? null;
    if (this.kept?.token !== token || Date.now() - this.kept.at > DEFINITIONS_KEPT_MS) this.kept = { token, docs: await this.list(), at: Date.now() };
    return this.kept.docs;
  }

  /** After a definition changed: readers that keep the definitions read them again. */
  private async changed(): Promise<void> {
    await upsertRacing(() => this.stamp.replaceOne({ _id: 'definitions' }, { token: randomUUID() }, { upsert: true }));
  }

  /** The schedules segments have, by key (domain/segments `scheduleKey`): one Temporal Schedule each. */
  async schedules(): Promise<Map<string, SegmentSchedule>> {
    const docs = await this.segments.find({}, { projection: { schedule: 1 } }).toArray();
    return new Map(docs.flatMap((doc) => (doc.schedule ? [[scheduleKey(doc.schedule), doc.schedule] as const] : [])));
  }

  async get(id: string): Promise<SegmentDoc | null> {
    const doc = await this.segments.findOne({ _id: id });
    return doc && (await this.withRunStates([doc]))[0];
  }

  /**
   * The segments `ids` name and, transitively, those their rules refer to, read by exact id: what a
   * new segment's rule needs checked and evaluated, without reading every segment. Ids that name no
   * segment are left out. Given `all` (every segment, read at once), they are looked up there.
   */
  async withReferences(ids: readonly string[], all?: readonly SegmentDoc[]): Promise<SegmentDoc[]> {
    const byId = all && new Map(all.map((doc) => [doc._id, doc]));
    const read = (id: string) => (byId ? Promise.resolve(byId.get(id) ?? null) : this.get(id));
    const found = new Map<string, SegmentDoc>();
    const seen = new Set<string>();
    let next = [...new Set(ids)];
    while (next.length > 0) {
      next.forEach((id) => seen.add(id));
      const docs = (await Promise.all(next.map(read))).filter((doc): doc is SegmentDoc => doc !== null);
      docs.forEach((doc) => found.set(doc._id, doc));
      next = [...new Set(docs.flatMap((doc) => referencedSegments(JSON.parse(doc.ruleJson) as Rule)))].filter((id) => !seen.has(id));
    }
    return [...found.values()];
  }

  /**
   * The segments whose rules lead to any of `ids` (refer to one, or to a segment that does), found
   * by exact match on `refersTo`, one query per segment reached: no read of every segment.
   */
  async dependentsOf(ids: readonly string[]): Promise<SegmentDoc[]> {
    const found = new Map<string, SegmentDoc>();
    const seen = new Set(ids);
    let next = [...seen];
    while (next.length > 0) {
      const users = (await Promise.all(next.map((id) => this.segments.find({ refersTo: id }).toArray()))).flat();
      next = [];
      for (const user of users) {
        if (found.has(user._id)) continue;
        found.set(user._id, user);
        if (!seen.has(user._id)) next.push(user._id);
        seen.add(user._id);
      }
    }
    return this.withRunStates([...found.values()]);
  }

  /** Writes `refersTo` on segments stored without it (before it was kept); run when a worker starts. */
  async indexReferences(): Promise<number> {
    const unindexed = await this.segments.find({ refersTo: { $exists: false } }).toArray();
    // An edit of the rule meanwhile writes `refersTo` itself; one of other fields leaves the rule this read.
    for (const doc of unindexed) await this.setBeside(doc._id, { refersTo: withRefersTo(doc).refersTo }, { refersTo: { $exists: false } });
    return unindexed.length;
  }

  /**
   * Lowers the size a segment shows for an ended run, once an erasure took members out of its
   * snapshot. Erasures of one run write in any order, so only a smaller size is written, in turn on
   * FerretDB (where a conditional update is a read and a write back).
   */
  async lowerRunSize(id: string, runId: string, size: number): Promise<void> {
    const stateId = runStateId(id, runId);
    await this.claims.exclusive(`${COLLECTIONS.segmentRunStates}/${stateId}`, () => this.runStates.updateOne({ _id: stateId, state: 'completed', size: { $gt: size } }, { $set: { size } }));
    // Segments stored before run states were kept apart hold it themselves.
    await this.setBeside(id, { 'current.size': size }, { 'current.runId': runId, 'current.size': { $gt: size } });
  }

  /**
   * Sets fields of a segment beside its definition while `where` holds, without writing back over
   * an edit made meanwhile: under the claim of the version read, as edits are (store/versionClaims).
   */
  private async setBeside(id: string, set: Record<string, unknown>, where: Record<string, unknown>): Promise<void> {
    for (;;) {
      const doc = await this.segments.findOne({ _id: id, ...where } as never, { projection: { version: 1 } });
      if (!doc) return;
      const held = await this.claims.hold(`${SEGMENTS}/${id}@${doc.version}`, () => this.segments.updateOne({ _id: id, version: doc.version, ...where } as never, { $set: set }));
      if (held?.value.matchedCount === 1) return;
    }
  }

  /** Whether it was created: false when its id is taken (a create repeated under its Idempotency-Key). */
  async create(doc: SegmentDoc): Promise<boolean> {
    const created = (await insertKeyed(this.segments, [withRefersTo(doc)])).size === 0;
    // Also for a repeat: the first may have stopped before it said the definitions changed.
    await this.changed();
    return created;
  }

  /**
   * Changes the given fields of a segment's definition if it is still at `expectedVersion` (a
   * concurrent rule change makes this return false). Only those fields are written: an edit of the
   * name never writes back a rule, or a run state, it read before another edit.
   */
  async edit(id: string, expectedVersion: number, change: SegmentEdit): Promise<boolean> {
    const set = change.ruleJson === undefined ? change : { ...change, refersTo: referencedSegments(JSON.parse(change.ruleJson) as Rule) };
    // Edits of one version take turns (store/versionClaims): on FerretDB two could otherwise both pass the version check.
    for (const deadline = Date.now() + EDIT_WAIT_MS; ; ) {
      const held = await this.claims.hold(`${SEGMENTS}/${id}@${expectedVersion}`, () => this.segments.updateOne({ _id: id, version: expectedVersion }, { $set: set }));
      if (!held && Date.now() < deadline) continue;
      const edited = held?.value.matchedCount === 1;
      if (edited) await this.changed();
      return edited;
    }
  }

  /**
   * Marks a segment as being deleted, before its DELETE looks for segments that refer to it. A
   * create or edit that stored a reference checks afterwards that its segments are there and not
   * marked (`gone`): one of the two always sees the other, so no rule is left naming a deleted segment.
   */
  async markDeleting(id: string): Promise<string> {
    const mark = { _id: `${id}:${randomUUID()}`, segment: id, at: new Date() };
    await this.deletions.insertOne(mark);
    return mark._id;
  }

  async unmarkDeleting(markId: string): Promise<void> {
    await this.deletions.deleteOne({ _id: markId });
  }

  /**
   * Of `ids`, those that no longer exist (`missing`) and those a DELETE under way marked
   * (`deleting`): one read by `_id` each, and one of the marks (a handful of documents, read whole).
   */
  async gone(ids: readonly string[]): Promise<{ missing: string[]; deleting: string[] }> {
    // A mark this old is a DELETE that stopped half way (its segment still there): it deletes nothing now.
    const since = new Date(Date.now() - DELETION_MARK_STALE_MS);
    const marked = new Set((await this.deletions.find({ at: { $gt: since } }).toArray()).map((mark) => mark.segment));
    const unique = [...new Set(ids)];
    const exists = await Promise.all(unique.map(async (id) => (await this.segments.findOne({ _id: id }, { projection: { _id: 1 } })) !== null));
    return { missing: unique.filter((_, n) => !exists[n]), deleting: unique.filter((id, n) => exists[n] && marked.has(id)) };
  }

  /** Removes a segment, then its run states (a run completing it meanwhile may leave one: `forgetOrphanRunStates`). */
  async remove(id: string): Promise<boolean> {
    const removed = (await this.segments.deleteOne({ _id: id })).deletedCount === 1;
    if (removed) {
      await this.changed();
      await this.runStates.deleteMany({ segment: id });
    }
    return removed;
  }

  /**
   * Records a run's state on each of its segments, a few at a time (a run may hold thousands). A
   * run shown running is recorded only where it is not recorded yet: a request that found the run
   * running (preparing the same run again) may write after it ended, and must not undo that.
   */
  async setLastRuns(segments: ReadonlyArray<{ id: string; version: number }>, lastRun: RunSummary): Promise<void> {
    const states = segments.map((segment) => runStateDoc(segment, lastRun));
    if (lastRun.state === 'running') await insertKeyed(this.runStates, states);
    else if (lastRun.state === 'completed') await forEachConcurrently(states, RUN_STATE_WRITES_AT_ONCE, async (state) => void (await this.runStates.replaceOne({ _id: state._id }, state, { upsert: true })));
    else {
      // A run that fails after completing some of its segments (its completion cut short) fails
      // only the rest: those it completed read its snapshot, and would lose it to a failed state.
      await forEachConcurrently(states, RUN_STATE_WRITES_AT_ONCE, async (state) => {
        try {
          await this.runStates.replaceOne({ _id: state._id, state: { $ne: 'completed' } }, state, { upsert: true });
        } catch (error) {
          if (!isDuplicateKeyError(error)) throw error;
        }
      });
    }
  }

  /**
   * Records a run completed on a segment, then forgets the segment's ended runs it makes unread
   * and not last (so each segment keeps a few). Returns whether the segment now reads its snapshot
   * (`runStateOf`): not when a run started later completed first.
   */
  async completeRun(id: string, current: CurrentRun, lastRun: RunSummary): Promise<boolean> {
    const mine = runStateDoc({ id, version: current.version }, lastRun, current);
    await this.runStates.replaceOne({ _id: mine._id }, mine, { upsert: true });
    const states = await this.runStates.find({ segment: id }).toArray();
    const superseded = states.filter(
      (state) => state.state !== 'running' && startedLater(mine, state) > 0 && (state.state !== 'completed' || state.version <= mine.version),
    );
    for (const state of superseded) await this.runStates.deleteOne({ _id: state._id });
    return snapshotOf(states, Number.MAX_SAFE_INTEGER)?.runId === mine.runId;
  }

  /** Removes the run states of segments that are gone (a run that completed one as it was removed); returns how many. */
  async forgetOrphanRunStates(): Promise<number> {
    const ids = new Set((await this.segments.find({}, { projection: { _id: 1 } }).toArray()).map((doc) => doc._id));
    const orphans = (await this.runStates.find({}, { projection: { _id: 1, segment: 1 } }).toArray()).filter((state) => !ids.has(state.segment));
    await forEachConcurrently(orphans, RUN_STATE_WRITES_AT_ONCE, async (state) => void (await this.runStates.deleteOne({ _id: state._id })));
    return orphans.length;
  }
}
