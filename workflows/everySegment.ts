import { ChildWorkflowFailure, executeChild, proxyActivities } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { segmentRunWorkflowId } from '../domain/workflowIds';
import type { SegmentationActivities } from '../activities/segmentation';
import type { PreparedRun } from '../store/segmentRuns';
import type { segmentRun } from './segmentRun';

const { awaitSegmentRun } = proxyActivities<SegmentationActivities>({
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

/**
 * Executes the runs of every segment one after the other, each under its own id and prepared only
 * once the one before it has ended (see prepareNextRun); a run another caller started (the API's run
 * of the same versions and second) is waited for. Returns the runs, what they evaluated, and those
 * that failed. (Not a workflow: a step of the scheduled run's and of an export's.)
 */
export async function runEverySegment(databaseName: string, prepare: (after: string | null) => Promise<PreparedRun | null>): Promise<{ runIds: string[]; evaluated: number; failed: string[] }> {
  const result = { runIds: [] as string[], evaluated: 0, failed: [] as string[] };
  for (let after: string | null = null; ; ) {
    // A history recorded before runs were split holds one run id, and no key.
    const prepared = (await prepare(after)) as PreparedRun | string | null;
    if (prepared === null) return result;
    const { runId, key } = typeof prepared === 'string' ? { runId: prepared, key: null } : prepared;
    result.runIds.push(runId);
    try {
      result.evaluated += (await executeChild<typeof segmentRun>('segmentRun', { workflowId: segmentRunWorkflowId(databaseName, runId), args: [{ runId }] })).evaluated;
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) await awaitSegmentRun({ runId });
      else if (error instanceof ChildWorkflowFailure) result.failed.push(runId);
      else throw error;
    }
    if (key === null) return result;
    after = key;
  }
}
