import type { Collection } from 'mongodb';
import { insertKeyed, type Store } from './db';

export const START_GATES = 'start_gates';

type Outcome = 'begun' | 'abandoned';

interface GateDoc {
  _id: string;
  outcome: Outcome;
  at: Date;
}

/** The gate of the workflow that runs a record the API wrote (an export, an upload's import, a segment run, a feed pull, a lookalike run). */
export const startGateKey = {
  export: (exportId: string) => `export:${exportId}`,
  import: (uploadId: string) => `import:${uploadId}`,
  segmentRun: (runId: string) => `segment-run:${runId}`,
  feedPull: (pullId: string) => `feed-pull:${pullId}`,
  lookalike: (runId: string) => `lookalike:${runId}`,
};

/**
 * Settles what a failed start call leaves open: the workflow may have started, its answer lost on
 * the way back. The API, when its start fails, abandons the gate before it records the work as
 * failed; the workflow begins it before its first effect. The first keyed insert wins on every
 * store, so exactly one of them acts: an abandoned record is the API's to fail and its workflow does
 * nothing, a begun one is the workflow's and the API answers as if the start had gone through.
 */
export class StartGates {
  private readonly gates: Collection<GateDoc>;

  constructor(store: Store) {
    this.gates = store.db.collection<GateDoc>(START_GATES);
  }

  /** Whether the workflow may go on: false once the API gave its start up. Safe to repeat. */
  async begin(key: string): Promise<boolean> {
    return (await this.settle(key, 'begun')) === 'begun';
  }

  /** Whether the API may record the work as failed: false when its workflow began it after all. */
  async abandon(key: string): Promise<boolean> {
    return (await this.settle(key, 'abandoned')) === 'abandoned';
  }

  /** Read-only: how the gate was settled, or null while it is not (or no longer kept). */
  async outcome(key: string): Promise<Outcome | null> {
    return (await this.gates.findOne({ _id: key }))?.outcome ?? null;
  }

  /**
   * Removes gates settled before `before` (a scan of the gates: one small document per started piece
   * of work). An abandoned start's workflow, if it ever runs after its gate is gone, still finds its
   * record failed; a begun one is no longer in question.
   */
  async expire(before: Date): Promise<number> {
    return (await this.gates.deleteMany({ at: { $lt: before } })).deletedCount;
  }

  private async settle(key: string, outcome: Outcome): Promise<Outcome> {
    if ((await insertKeyed(this.gates, [{ _id: key, outcome, at: new Date() }])).size === 0) return outcome;
    const settled = await this.gates.findOne({ _id: key });
    // Removed by retention between the two calls: only long after both sides settled it, so it stands as asked.
    return settled?.outcome ?? outcome;
  }
}
