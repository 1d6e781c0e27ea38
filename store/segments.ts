import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { Rule, SegmentDefinition } from '../domain/segmentRules';
import type { SegmentSchedule } from '../domain/segments';
import type { Store } from './db';

export const SEGMENTS = 'segments';

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

/**
 * Segment definitions: a small collection (tens to hundreds of documents), read whole. Every write is
 * by `_id`. Writers and readers read the definitions afresh each time: a new segment counts at once.
 */
export class SegmentStore {
  readonly segments: Collection<SegmentDoc>;

  constructor(store: Store) {
    this.segments = store.db.collection<SegmentDoc>(SEGMENTS);
  }

  list(): Promise<SegmentDoc[]> {
    return this.segments.find({}).toArray();
  }

  get(id: string): Promise<SegmentDoc | null> {
    return this.segments.findOne({ _id: id });
  }

  async create(doc: SegmentDoc): Promise<void> {
    await this.segments.insertOne(doc);
  }

  /** Replaces a segment if it is still at `version`: a concurrent edit makes this return false. */
  async replace(doc: SegmentDoc, expectedVersion: number): Promise<boolean> {
    const result = await this.segments.replaceOne({ _id: doc._id, version: expectedVersion }, doc);
    return result.matchedCount === 1;
  }

  async remove(id: string): Promise<boolean> {
    return (await this.segments.deleteOne({ _id: id })).deletedCount === 1;
  }

  /** Records a run's state on a segment, unless a run started later is recorded there already. */
  async setLastRun(id: string, lastRun: RunSummary): Promise<void> {
    const doc = await this.get(id);
    if (!doc || (doc.lastRun && doc.lastRun.runId !== lastRun.runId && doc.lastRun.startedAt > lastRun.startedAt)) return;
    await this.segments.updateOne({ _id: id }, { $set: { lastRun } });
  }

  /**
   * Points a segment at a completed run, unless it was edited since the run read it (its own run
   * follows) or a run that started later has already been made its snapshot (runs may overlap).
   */
  async flip(id: string, current: CurrentRun): Promise<boolean> {
    const doc = await this.get(id);
    if (!doc || doc.version !== current.version || (doc.current && doc.current.startedAt > current.startedAt)) return false;
    const result = await this.segments.updateOne({ _id: id, version: current.version }, { $set: { current } });
    return result.matchedCount === 1;
  }
}
