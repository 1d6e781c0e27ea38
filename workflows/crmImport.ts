import { ActivityFailure, ApplicationFailure, continueAsNew, defineQuery, proxyActivities, setHandler, upsertMemo, workflowInfo } from '@temporalio/workflow';
import type { ImportProgress, UploadActivities } from '../activities/uploads';

export const crmImportProgressQuery = defineQuery<ImportProgress | null>('progress');

export interface CrmImportInput {
  uploadId: string;
  sourceId: string;
  /** Carried across continue-as-new; the activities resume from the checkpoint saved in the store either way. */
  progress?: ImportProgress;
}

const { importUploadChunks } = proxyActivities<UploadActivities>({
  startToCloseTimeout: '10 minutes',
  // A killed worker's step is taken over within this and resumes at the last saved checkpoint.
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

const { completeImport, failImport } = proxyActivities<UploadActivities>({
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

/**
 * The import of one CRM upload, under an id derived from the upload: append its staged rows to the
 * source log a step at a time (each step saves a checkpoint after every chunk), report progress,
 * then complete the upload. The source's own workflow drains the rows into profiles as they land.
 */
export async function crmImport(input: CrmImportInput): Promise<{ state: 'completed'; rowsImported: number; rowsRejected: number }> {
  const { uploadId, sourceId } = input;
  let progress = input.progress ?? null;
  setHandler(crmImportProgressQuery, () => progress);
  try {
    while (!progress?.done) {
      if (workflowInfo().continueAsNewSuggested) break;
      progress = await importUploadChunks({ uploadId });
      upsertMemo({ uploadId, sourceId, progress });
    }
    if (progress?.done) return await completeImport({ uploadId });
  } catch (error) {
    const reason = error instanceof ActivityFailure ? (error.cause?.message ?? error.message) : String(error);
    await failImport({ uploadId, error: reason });
    throw ApplicationFailure.nonRetryable(`import of upload ${uploadId} failed: ${reason}`, 'ImportFailed');
  }
  return continueAsNew<typeof crmImport>({ ...input, progress: progress ?? undefined });
}
