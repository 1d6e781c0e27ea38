import { ChildWorkflowFailure, executeChild, patched, proxyActivities } from '@temporalio/workflow';
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
export async function runEverySegment(
  databaseName: string,
  prepare: (after: string | null) => Promise<PreparedRun | null>,
  before: { awaitStarted: boolean },
): Promise<{ runIds: string[]; evaluated: number; failed: string[] }> {
  const result = { runIds: [] as string[], evaluated: 0, failed: [] as string[] };
  if (!patched('segment-run-groups')) {
    // A history recorded before runs were split: its one run, as its code ran it (a failed run failed the caller).
    const runId = (await prepare(null)) as unknown as string;
    result.runIds.push(runId);
    try {
      result.evaluated = (await executeChild<typeof segmentRun>('segmentRun', { workflowId: segmentRunWorkflowId(databaseName, runId), args: [{ runId }] })).evaluated;
    } catch (error) {
      if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
      if (before.awaitStarted) await awaitSegmentRun({ runId });
    }
    return result;
  }
  for (let after: string | null = null; ; ) {
    const prepared = await prepare(after);
    if (prepared === null) return result;
    const { runId, key } = prepared;
    result.runIds.push(runId);
    try {
      result.evaluated += (await executeChild<typeof segmentRun>('segmentRun', { workflowId: segmentRunWorkflowId(databaseName, runId), args: [{ runId }] })).evaluated;
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) await awaitSegmentRun({ runId });
      else if (error instanceof ChildWorkflowFailure) result.failed.push(runId);
      else throw error;
    }
    after = key;
  }
}
