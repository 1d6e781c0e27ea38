import { ActivityFailure, ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { LookalikeActivities } from '../activities/lookalike';

const { trainLookalike, failLookalike, beginRetrain } = proxyActivities<LookalikeActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute', maximumAttempts: 5 },
});

/** A lookalike run: train on the seed against the base, measure on a holdout, and create the extension segment. */
export async function lookalike(input: { runId: string }): Promise<void> {
  try {
    await trainLookalike(input);
  } catch (error) {
    const cause = error instanceof ActivityFailure && error.cause instanceof ApplicationFailure ? error.cause.message : String(error);
    await failLookalike({ runId: input.runId, error: cause });
    throw error;
  }
}

/** A scheduled re-train of a lookalike: a new run on the seed as it is now, whose model replaces the extension's. */
export async function lookalikeRetrain(input: { firstRunId: string }): Promise<void> {
  const runId = await beginRetrain({ firstRunId: input.firstRunId, at: Date.now() });
  if (runId) await lookalike({ runId });
}
