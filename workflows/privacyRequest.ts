import { ActivityFailure, ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { PrivacyActivities } from '../activities/privacy';
import type { PrivacyRequestType } from '../domain/privacy';

const { resolvePrivacySubject, collectAccessExport, completePrivacyRequest, failPrivacyRequest } = proxyActivities<PrivacyActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '5 minutes' },
});

/**
 * A data subject's privacy request: find their profile through the identity graph, carry out the
 * request, and close it with its result. Every step is recorded on the request with an audit entry.
 */
export async function privacyRequest(input: { requestId: string; type: PrivacyRequestType }): Promise<void> {
  try {
    await resolvePrivacySubject(input);
    const result = await collectAccessExport(input);
    await completePrivacyRequest({ requestId: input.requestId, result });
  } catch (error) {
    const cause = error instanceof ActivityFailure && error.cause instanceof ApplicationFailure ? error.cause.message : String(error);
    await failPrivacyRequest({ requestId: input.requestId, error: cause });
    throw error;
  }
}
