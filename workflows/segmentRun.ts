import { ApplicationFailure, executeChild, patched, proxyActivities, upsertMemo, workflowInfo } from '@temporalio/workflow';
import { defineSearchAttributeKey, SearchAttributeType, WorkflowExecutionAlreadyStartedError, WorkflowIdReusePolicy } from '@temporalio/common';
import { scheduledSegmentRunWorkflowId } from '../domain/workflowIds';
import type { SegmentationActivities } from '../activities/segmentation';
import { runEverySegment } from './everySegment';

const { prepareSegmentRun, completeSegmentRun, failSegmentRun, claimScheduledPass } = proxyActivities<SegmentationActivities>({
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
  /** For a scheduled run, once its schedules have met: the nominal time (epoch ms) they fired for. */
  nominalTime?: number;
}

/** Scheduled passes claim their turn first (histories from before replay without the claim). */
const SCHEDULED_PASSES_TAKE_TURNS = 'scheduled-passes-take-turns';

/** Set by Temporal on each workflow a schedule starts: the time the schedule was due, not when the workflow ran. */
const SCHEDULED_START = defineSearchAttributeKey('TemporalScheduledStartTime', SearchAttributeType.DATETIME);

/**
 * One batch segmentation run: evaluate every segment of the run over every profile in one pass,
 * store the membership as a new snapshot, then flip the segments to it — readers see the previous
 * snapshot until the run is complete, never a half run. Its id derives from the segment versions and
 * the second evaluated (domain/segments `segmentRunId`).
 */
export async function segmentRun(input: SegmentRunInput = {}): Promise<{ runId: string | null; runIds?: string[]; evaluated: number }> {
  if (!input.runId && input.nominalTime === undefined) {
    // A segment schedule fired. Distinct schedules fire at the same nominal time (an hourly cron
    // and an interval; a store's one-per-segment schedules until retention removes them), and
    // their workflows start over seconds: each preparing a run of every segment (a run per second)
    // buried the store. So they meet in one workflow per nominal time; only the first starts it,
    // and a schedule firing late finds it started or done.
    const nominalTime = workflowInfo().typedSearchAttributes.get(SCHEDULED_START) ?? new Date(Date.now());
    // Each schedule skips its own firings while its pass runs; a firing of another schedule skips its turn here.
    if (patched(SCHEDULED_PASSES_TAKE_TURNS) && !(await claimScheduledPass({ nominalTime: nominalTime.getTime(), by: workflowInfo().workflowId }))) return { runId: null, evaluated: 0 };
    try {
      return await executeChild(segmentRun, {
        workflowId: scheduledSegmentRunWorkflowId(input.databaseName ?? '', nominalTime),
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        args: [{ databaseName: input.databaseName, nominalTime: nominalTime.getTime() }],
      });
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) return { runId: null, evaluated: 0 };
      throw error;
    }
  }
  if (!input.runId) {
    // The scheduled run of a nominal time: the runs of every segment as they are now (several past
    // DMP_SEGMENTS_PER_RUN). One that fails leaves the others to run.
    const { runIds, evaluated, failed } = await runEverySegment(input.databaseName ?? '', (after) => prepareSegmentRun({ evaluatedAt: Date.now(), after }), { awaitStarted: false });
    if (failed.length > 0) throw ApplicationFailure.nonRetryable(`segment runs ${failed.join(', ')} failed`, 'SegmentRunFailed');
    return { runId: runIds[0] ?? null, runIds, evaluated };
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

