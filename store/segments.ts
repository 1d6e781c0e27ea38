import { randomBytes, randomUUID } from 'node:crypto';
import type { Collection, Filter } from 'mongodb';
import { referencedSegments, type Rule, type SegmentDefinition } from '../domain/segmentRules';
import { scheduleKey, type SegmentSchedule } from '../domain/segments';
import { COLLECTIONS, forEachConcurrently, type Store } from './db';

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
  current: CurrentRun | null;
  lastRun: RunSummary | null;
  /** The segments the rule refers to, written by the store with the rule: finds a segment's dependents by exact match. */
  refersTo?: string[];
}

/** A document as stored: with the segments its rule refers to. */
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

/** Segment documents written at once when a run's state is recorded on all of them. */
const LAST_RUN_WRITES_AT_ONCE = 8;

/**
 * A filter matching a segment whose `field` names no run started after `run` (or names `run` itself).
 * A run shown as running never replaces itself shown as ended: a request that found the run running
 * (preparing the same run again) may write after the run completed, and no later write would mend it.
 */
function noLaterRun(field: 'current' | 'lastRun', run: { runId: string; startedAt: Date; state?: RunSummary['state'] }): Filter<SegmentDoc> {
  const [runId, startedAt] = [`${field}.runId`, `${field}.startedAt`];
  const sameRun = run.state === 'running' ? { [runId]: run.runId, [`${field}.state`]: 'running' } : { [runId]: run.runId };
  const earlierRun = run.state === 'running' ? { [runId]: { $ne: run.runId }, [startedAt]: { $lte: run.startedAt } } : { [startedAt]: { $lte: run.startedAt } };
  return { $or: [{ [field]: null }, sameRun, earlierRun] } as Filter<SegmentDoc>;
}

interface DefinitionsStamp {
  _id: 'definitions';
  token: string;
}

/**
 * Segment definitions, one document per segment. Every write is by `_id`. Readers read the
 * definitions afresh each time, or check the stamp (`definitions`): a new segment counts at once.
 * Reading them all costs a read per segment, so what one segment's change needs is read by id
 * (`withReferences`, `dependentsOf`).
 */
export class SegmentStore {
  readonly segments: Collection<SegmentDoc>;
  private readonly stamp: Collection<DefinitionsStamp>;
  /** The definitions as of a stamp: `definitions` reads them again only when the stamp changed. */
  private kept: { token: string | null; docs: SegmentDoc[]; at: number } | null = null;

  constructor(store: Store) {
    this.segments = store.db.collection<SegmentDoc>(SEGMENTS);
    this.stamp = store.db.collection<DefinitionsStamp>(COLLECTIONS.segmentDefinitionsStamp);
  }

  list(): Promise<SegmentDoc[]> {
    return this.segments.find({}).toArray();
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
    await this.stamp.replaceOne({ _id: 'definitions' }, { token: randomUUID() }, { upsert: true });
  }

  /** The schedules segments have, by key (domain/segments `scheduleKey`): one Temporal Schedule each. */
  async schedules(): Promise<Map<string, SegmentSchedule>> {
    const docs = await this.segments.find({}, { projection: { schedule: 1 } }).toArray();
    return new Map(docs.flatMap((doc) => (doc.schedule ? [[scheduleKey(doc.schedule), doc.schedule] as const] : [])));
  }

  get(id: string): Promise<SegmentDoc | null> {
    return this.segments.findOne({ _id: id });
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
    return [...found.values()];
  }

  /** Writes `refersTo` on segments stored without it (before it was kept); run when a worker starts. */
  async indexReferences(): Promise<number> {
    const unindexed = await this.segments.find({ refersTo: { $exists: false } }).toArray();
    for (const doc of unindexed) await this.segments.updateOne({ _id: doc._id }, { $set: { refersTo: withRefersTo(doc).refersTo } });
    return unindexed.length;
  }

  async create(doc: SegmentDoc): Promise<void> {
    await this.segments.insertOne(withRefersTo(doc));
    await this.changed();
  }

  /** Replaces a segment if it is still at `version`: a concurrent edit makes this return false. */
  async replace(doc: SegmentDoc, expectedVersion: number): Promise<boolean> {
    const result = await this.segments.replaceOne({ _id: doc._id, version: expectedVersion }, withRefersTo(doc));
    if (result.matchedCount === 1) await this.changed();
    return result.matchedCount === 1;
  }

  async remove(id: string): Promise<boolean> {
    const removed = (await this.segments.deleteOne({ _id: id })).deletedCount === 1;
    if (removed) await this.changed();
    return removed;
  }

  /**
   * Records a run's state on a segment, unless a run started later is recorded there already. The
   * condition is in the write: judged from an earlier read, a run superseded could overwrite the
   * completion of the run that superseded it, written in between, and stay the segment's last (see
   * noLaterRun, also for a run shown running after it ended).
   */
  private async setLastRun(id: string, lastRun: RunSummary): Promise<void> {
    await this.segments.updateOne({ _id: id, ...noLaterRun('lastRun', lastRun) }, { $set: { lastRun } });
  }

  /** Records a run's state on each of its segments (one conditional write each, a few at a time, as a run may hold thousands). */
  setLastRuns(ids: string[], lastRun: RunSummary): Promise<void> {
    return forEachConcurrently(ids, LAST_RUN_WRITES_AT_ONCE, (id) => this.setLastRun(id, lastRun));
  }

  /**
   * Points a segment at a completed run, unless it was edited since the run read it (its own run
   * follows) or a run that started later has already been made its snapshot (runs may overlap);
   * and records the run as its last, unless a later one is recorded. Each condition is in its
   * write, as runs complete concurrently; one read and usually one write, as a run may complete
   * thousands of segments. Returns whether it was made the snapshot.
   */
  async completeRun(id: string, current: CurrentRun, lastRun: RunSummary): Promise<boolean> {
    const doc = await this.get(id);
    if (!doc) return false;
    if (doc.version === current.version && !(doc.current && doc.current.startedAt > current.startedAt)) {
      const both = await this.segments.updateOne({ _id: id, version: current.version, $and: [noLaterRun('current', current), noLaterRun('lastRun', lastRun)] }, { $set: { current, lastRun } });
      if (both.matchedCount === 1) return true;
      // A later run is recorded (or the segment changed) since the read: each part on its own.
      const flipped = await this.segments.updateOne({ _id: id, version: current.version, ...noLaterRun('current', current) }, { $set: { current } });
      await this.setLastRun(id, lastRun);
      return flipped.matchedCount === 1;
    }
    // Not the snapshot: the run may still be its last.
    await this.setLastRun(id, lastRun);
    return false;
  }
}
