import type { Collection } from 'mongodb';
import type { SegmentSchedule } from '../domain/segments';
import { insertKeyed, type Store } from './db';
import { ScheduleSyncs, type ScheduleSyncMark } from './scheduleSyncs';

export const LOOKALIKE_COLLECTIONS = {
  /** One per lookalike run: what it was asked, where it stands, and what it found. */
  runs: 'lookalike_runs',
} as const;

export interface LookalikeRunDoc {
  _id: string;
  seedId: string;
  /** Started under an Idempotency-Key: what tells a repeat of its request from another (api/idempotency). */
  createdWith?: string;
  /** `all` or a segment id. */
  base: string;
  reach: number | null;
  accuracy: number | null;
  state: 'running' | 'completed' | 'failed';
  auc: number | null;
  holdoutSize: number;
  trainingSize: number;
  threshold: number | null;
  reachFound: number | null;
  segmentId: string | null;
  topFeatures: Array<{ feature: string; weight: number }>;
  excluded: string[];
  error: string | null;
  /** The schedule this run re-trains on (null: none, or stopped). */
  retrain?: SegmentSchedule | null;
  /** For a re-train: the run whose schedule started it. */
  retrainOf?: string | null;
  /** For a run with a schedule: its newest completed re-train. */
  latestRetrain?: string | null;
  /** A change of `retrain` whose schedule update is still owed (see ScheduleSyncs). */
  scheduleSync?: ScheduleSyncMark;
  startedAt: Date;
  finishedAt: Date | null;
}

/** What training finds (or why it failed): written once the run ends. */
export type LookalikeOutcome = Pick<LookalikeRunDoc, 'state' | 'error' | 'finishedAt'> &
  Partial<Pick<LookalikeRunDoc, 'auc' | 'holdoutSize' | 'trainingSize' | 'threshold' | 'reachFound' | 'segmentId' | 'topFeatures' | 'excluded'>>;

/** Lookalike runs, read and written by `_id` only. */
export class LookalikeRunStore {
  readonly runs: Collection<LookalikeRunDoc>;
  readonly scheduleSyncs: ScheduleSyncs<LookalikeRunDoc>;

  constructor(store: Store) {
    this.runs = store.db.collection<LookalikeRunDoc>(LOOKALIKE_COLLECTIONS.runs);
    this.scheduleSyncs = new ScheduleSyncs(store, this.runs);
  }

  get(id: string): Promise<LookalikeRunDoc | null> {
    return this.runs.findOne({ _id: id });
  }

  /** Records a run once: asking again within the same second finds the same run. */
  /** False when a run of its id is there already (the same request again). */
  async create(doc: LookalikeRunDoc): Promise<boolean> {
    return (await insertKeyed(this.runs, [doc])).size === 0;
  }

  /** Records how a run ended. Only these fields: a schedule stopped while it trained stays stopped. */
  async saveOutcome(id: string, outcome: LookalikeOutcome): Promise<void> {
    await this.update(id, outcome);
  }

  /**
   * Runs the API started (under `lookalikeWorkflowId`; a re-train runs inside its schedule's
   * workflow) recorded as running since before `before`: one scan of the runs.
   */
  async apiRunsRunningBefore(before: Date): Promise<string[]> {
    const running = await this.runs.find({ state: 'running' }, { projection: { _id: 1, startedAt: 1, retrainOf: 1 } }).toArray();
    return running.filter((run) => !run.retrainOf && run.startedAt < before).map((run) => run._id);
  }

  /** Records a run still recorded as running as failed; a run that ended meanwhile keeps its outcome. */
  async failRunning(id: string, error: string, at: Date): Promise<void> {
    await this.scheduleSyncs.exclusive(id, () => this.runs.updateOne({ _id: id, state: 'running' }, { $set: { state: 'failed', error, finishedAt: at } }));
  }

  /** Sets fields of a run (its schedule stopped, its newest re-train). */
  async set(id: string, fields: Partial<Pick<LookalikeRunDoc, 'retrain' | 'latestRetrain' | 'scheduleSync'>>): Promise<void> {
    await this.update(id, fields);
  }

  /** A training's end and the API's stop of a schedule may write one run at once: on FerretDB, in turn (store/versionClaims). */
  private async update(id: string, fields: Partial<LookalikeRunDoc>): Promise<void> {
    await this.scheduleSyncs.exclusive(id, () => this.runs.updateOne({ _id: id }, { $set: fields }));
  }
}
