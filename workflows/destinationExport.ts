import { ApplicationFailure, proxyActivities, upsertMemo, workflowInfo } from '@temporalio/workflow';
import type { ExportActivities } from '../activities/exports';
import { runEverySegment } from './everySegment';

const { openExport, attachExport, prepareExportRun } = proxyActivities<ExportActivities>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

const { finishExport } = proxyActivities<ExportActivities>({
  startToCloseTimeout: '1 hour',
  // Heartbeats: a killed worker's finish is taken over promptly, never run twice at once.
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

const { planExport } = proxyActivities<ExportActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '30 seconds',
  // Also how an export waits for another export of the same destination to end (`DestinationBusy`):
  // ~8 hours of tries, longer than one attempt of a live delivery may take (6 hours, below).
  retry: { initialInterval: '5 seconds', maximumInterval: '30 seconds', maximumAttempts: 1000 },
});

const { deliverExport } = proxyActivities<ExportActivities>({
  startToCloseTimeout: '6 hours',
  // A killed worker's delivery is taken over within this and resumes after the last receipt.
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

export interface DestinationExportInput {
  destinationId: string;
  /** An export the API recorded; a scheduled run records its own from its start time. */
  exportId?: string;
  full?: boolean;
  trigger: 'api' | 'schedule' | 'near_real_time' | 'privacy';
  /** For running a segmentation pass first, under its own id. */
  databaseName: string;
}

/**
 * One export of a destination: plan the delta of each segment against what the partner confirmed
 * holding (after a batch run, when the segments' snapshot does not carry export facts yet), deliver
 * it in receipted batches, then advance the partner's state by what it confirmed. The workflow id is
 * fixed per destination and window, so a repeated start finds the running export.
 */
export async function destinationExport(input: DestinationExportInput): Promise<{ exportId: string | null; state: string }> {
  const info = workflowInfo();
  const exportId = input.exportId ?? (await openExport({ destinationId: input.destinationId, at: info.startTime.getTime(), full: input.full, trigger: input.trigger, openedBy: info.workflowId }));
  if (!exportId) return { exportId: null, state: 'skipped' };
  upsertMemo({ exportId, destinationId: input.destinationId });
  await attachExport({ exportId, workflowId: info.workflowId });
  try {
    for (let pass = 0; !(await planExport({ exportId })).ready; pass++) {
      if (pass >= 3) throw ApplicationFailure.nonRetryable('the segments have no snapshot with export facts after three batch runs', 'NoSnapshot');
      // The runs of every segment, one after the other; planning then tells whether this destination's segments have their facts.
      await runEverySegment(input.databaseName, (after) => prepareExportRun({ after }), { awaitStarted: true });
    }
    const delivered = await deliverExport({ exportId });
    const result = await finishExport({ exportId, error: delivered.error });
    upsertMemo({ exportId, destinationId: input.destinationId, ...result });
    return { exportId, state: result.state };
  } catch (error) {
    await finishExport({ exportId, error: error instanceof Error ? error.message : String(error) });
    throw ApplicationFailure.nonRetryable(`export ${exportId} failed`, 'ExportFailed');
  }
}
