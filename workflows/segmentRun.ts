import { ApplicationFailure, executeChild, proxyActivities, upsertMemo } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { segmentRunWorkflowId } from '../domain/workflowIds';
import type { SegmentationActivities } from '../activities/segmentation';

const { prepareSegmentRun, completeSegmentRun, failSegmentRun } = proxyActivities<SegmentationActivities>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

const { evaluateSegmentRun } = proxyActivities<SegmentationActivities>({
  startToCloseTimeout: '2 hours',
  // The pass heartbeats every few seconds: a killed worker's pass is taken over within this.
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

export interface SegmentRunInput {
  /** A run the API prepared; a scheduled run has none and prepares one of every segment as they are. */
  runId?: string;
  /** For a scheduled run: the store, to run the prepared run under its own id. */
  databaseName?: string;
}

/**
 * One batch segmentation run: evaluate every segment of the run over every profile in one pass,
 * store the membership as a new snapshot, then flip the segments to it — readers see the previous
 * snapshot until the run is complete, never a half run. Its id derives from the segment versions and
 * the second evaluated (domain/segments `segmentRunId`).
 */
export async function segmentRun(input: SegmentRunInput = {}): Promise<{ runId: string; evaluated: number }> {
  if (!input.runId) {
    // Scheduled: schedules of several segments firing together prepare the same run, which then
    // runs once, as the child under its own id; the others find it started.
    const runId = await prepareSegmentRun({ evaluatedAt: Date.now() });
    try {
      return await executeChild(segmentRun, { workflowId: segmentRunWorkflowId(input.databaseName ?? '', runId), args: [{ runId }] });
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) return { runId, evaluated: 0 };
      throw error;
    }
  }
  const runId = input.runId;
  upsertMemo({ runId });
  try {
    const { evaluated, documentsScanned } = await evaluateSegmentRun({ runId });
    upsertMemo({ runId, evaluated, documentsScanned });
    await completeSegmentRun({ runId });
    return { runId, evaluated };
  } catch (error) {
    await failSegmentRun({ runId, error: error instanceof Error ? error.message : String(error) });
    throw ApplicationFailure.nonRetryable(`segment run ${runId} failed`, 'SegmentRunFailed');
  }
}
