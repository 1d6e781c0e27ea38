import { proxyActivities, upsertMemo } from '@temporalio/workflow';
import type { AudienceReportActivities, AudienceReportsResult } from '../activities/audienceReports';

const { writeAudienceReports } = proxyActivities<AudienceReportActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute' },
});

/**
 * Audience reports: every segment's insights counted in one pass over the profiles, and a point of
 * each segment's trend for the day. Runs daily on the store's schedule, and when an insight is asked
 * of a segment whose report predates its last run.
 */
export async function audienceReports(): Promise<AudienceReportsResult> {
  const result = await writeAudienceReports({ at: Date.now() });
  upsertMemo({ result });
  return result;
}
