import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, executeChild, ParentClosePolicy, proxyActivities, uuid4, workflowInfo } from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type { FeedActivities, FeedPullOutcome } from '../activities/feeds';
import type { CursorWindow, FeedTrigger } from '../domain/feeds';
import { crmImportWorkflowId, feedPullWorkflowId } from '../domain/workflowIds';
import { crmImport } from './crmImport';

const { openFeedPull, finishFeedPull, failFeedPull } = proxyActivities<FeedActivities>({
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 20 },
});

const { fetchFeed } = proxyActivities<FeedActivities>({
  startToCloseTimeout: '2 hours',
  // A killed worker's fetch is taken over within this; the new attempt stages the file afresh.
  heartbeatTimeout: '20 seconds',
  // A 5xx, a timeout, a transfer or file cut short: fetched again with backoff (or after the partner's Retry-After).
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 8 },
});

export interface FeedPullInput {
  sourceId: string;
  pullId: string;
  trigger: FeedTrigger;
  /** A backfill's cursor window; other pulls read from the feed's cursor. */
  window: CursorWindow | null;
  /** For the import's workflow id. */
  databaseName: string;
}

function reasonOf(error: unknown): string {
  if (error instanceof ActivityFailure || error instanceof ChildWorkflowFailure) return error.cause?.message ?? error.message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * One pull of a feed, under the feed's one pull id (so two pulls of a feed never overlap): open
 * it, fetch the partner's file and stage its rows (retried with backoff until a whole file is
 * read), import the staged rows with the upload import, then move the feed's cursor and validators
 * on. A pull that fails leaves the feed where it was, for the next one.
 */
export async function feedPull(input: FeedPullInput): Promise<FeedPullOutcome> {
  const { sourceId, pullId } = input;
  await openFeedPull({ sourceId, pullId, trigger: input.trigger, window: input.window });
  try {
    const { uploadId } = await fetchFeed({ pullId });
    if (uploadId) await executeChild(crmImport, { workflowId: crmImportWorkflowId(input.databaseName, uploadId), args: [{ uploadId, sourceId }], memo: { uploadId, sourceId, pullId } });
    return await finishFeedPull({ pullId, uploadId });
  } catch (error) {
    const reason = reasonOf(error);
    await failFeedPull({ pullId, error: reason });
    throw ApplicationFailure.nonRetryable(`pull ${pullId} of source ${sourceId} failed: ${reason}`, 'FeedPullFailed');
  }
}

/**
 * What a feed's schedule starts: the feed's pull, unless one (asked for through the API, or a
 * backfill) is running — then this turn is skipped. The pull goes on if this run is ended.
 */
export async function scheduledFeedPull(input: { sourceId: string; databaseName: string }): Promise<FeedPullOutcome | { state: 'skipped' }> {
  const pullId = `pul_${uuid4().replace(/-/g, '').slice(0, 16)}`;
  try {
    return await executeChild(feedPull, {
      workflowId: feedPullWorkflowId(input.databaseName, input.sourceId),
      args: [{ sourceId: input.sourceId, pullId, trigger: 'schedule', window: null, databaseName: input.databaseName }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      // The schedule's search attributes (source id, kind, party) find the pull too.
      typedSearchAttributes: workflowInfo().typedSearchAttributes,
      memo: { sourceId: input.sourceId, pullId },
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) return { state: 'skipped' };
    throw error;
  }
}
