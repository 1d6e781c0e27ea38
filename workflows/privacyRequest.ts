import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, executeChild, proxyActivities, sleep, workflowInfo } from '@temporalio/workflow';
import type { PrivacyActivities } from '../activities/privacy';
import type { PrivacyRequestType, PrivacyResult } from '../domain/privacy';
import { destinationExport } from './destinationExport';

const { resolvePrivacySubject, collectAccessExport, markOptOut, findRemovals, recordRemoval, removalPending, removalsDone, completePrivacyRequest, failPrivacyRequest } = proxyActivities<PrivacyActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '5 minutes' },
});

export interface PrivacyRequestInput {
  requestId: string;
  type: PrivacyRequestType;
  /** The store's database: the removal exports name their segmentation runs with it. */
  databaseName: string;
}

/** Seconds before a failed removal is sent again: 15 s, doubling, at most an hour. */
const retryAfter = (round: number) => Math.min(3600, 15 * 2 ** (round - 1));

const reason = (error: unknown) =>
  (error instanceof ActivityFailure || error instanceof ChildWorkflowFailure) && error.cause instanceof ApplicationFailure ? error.cause.message : error instanceof Error ? error.message : String(error);

/**
 * One destination's removal of the subject: an export of the destination (the subject withheld, so
 * its delta removes them) per round, until the partner's confirmed state no longer holds them. The
 * ledger line says where it stands.
 */
async function removeAt(input: PrivacyRequestInput, destinationId: string): Promise<void> {
  for (let round = 1; ; round++) {
    await recordRemoval({ requestId: input.requestId, destinationId, state: 'sent', round, exportId: null, error: null });
    let exportId: string | null = null;
    let error: string | null = null;
    try {
      const exported = await executeChild(destinationExport, {
        workflowId: `${workflowInfo().workflowId}:${destinationId}:r${round}`,
        args: [{ destinationId, trigger: 'privacy', databaseName: input.databaseName }],
      });
      exportId = exported.exportId;
      if (exported.state !== 'completed') error = `export ${exported.exportId} ended ${exported.state}`;
    } catch (failure) {
      error = reason(failure);
    }
    if (!error && !(await removalPending({ requestId: input.requestId, destinationId }))) {
      await recordRemoval({ requestId: input.requestId, destinationId, state: 'acknowledged', round, exportId, error: null });
      return;
    }
    await recordRemoval({ requestId: input.requestId, destinationId, state: 'failed_retrying', round, exportId, error: error ?? 'the partner has not confirmed the removal' });
    await sleep(retryAfter(round) * 1000);
  }
}

/**
 * A data subject's privacy request: find their profile through the identity graph, carry out the
 * request, and close it with its result. Every step is recorded on the request with an audit entry.
 * - access: everything held about them, written as the request's download;
 * - opt_out: their documents marked (no more profiling, segments or exports), then a removal at every
 *   partner that held them, each tracked on the ledger until the partner confirms it.
 */
export async function privacyRequest(input: PrivacyRequestInput): Promise<void> {
  try {
    const resolved = await resolvePrivacySubject(input);
    let result: PrivacyResult;
    if (input.type === 'access') {
      result = await collectAccessExport(input);
    } else if (input.type === 'opt_out') {
      const marked = await markOptOut(input);
      const holders = await findRemovals(input);
      await Promise.all(holders.map((destinationId) => removeAt(input, destinationId)));
      await removalsDone(input);
      result = { found: resolved.found, profiles: marked.profiles, identities: 0, events: 0, segments: marked.segments, destinations: holders.length, exportUrl: null };
    } else {
      throw ApplicationFailure.nonRetryable(`${input.type} requests are not carried out yet`);
    }
    await completePrivacyRequest({ requestId: input.requestId, result });
  } catch (error) {
    await failPrivacyRequest({ requestId: input.requestId, error: reason(error) });
    throw error;
  }
}
