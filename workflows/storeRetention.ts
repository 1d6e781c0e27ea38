import { proxyActivities, upsertMemo } from '@temporalio/workflow';
import type { RetentionActivities } from '../activities/retention';

const { expireEventIds, expireRawChunks, expireRoutedEvents, releaseSegmentSnapshots, reconcileSegmentSchedules, failAbandonedSegmentRuns, expireExportRecords, expireStartGates, dropLeftovers } = proxyActivities<RetentionActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute' },
});

/** Ages to keep, for a run started by hand; the schedule's runs take them from the workers' configuration. */
export interface RetentionInput {
  rawEventTtlMs?: number;
  eventHistoryTtlMs?: number;
  segmentRunTtlMs?: number;
  /** How old a run recorded as running must be before its workflow's absence makes it failed. */
  runStartGraceMs?: number;
  exportHistoryTtlMs?: number;
}

export interface RetentionReport {
  eventIdGenerationsDropped: number;
  eventIdsRemoved: number;
  rawChunksRemoved: number;
  rawEventsRemoved: number;
  routedBatchesRemoved: number;
  segmentRunsReleased: number;
  segmentRunRecordsRemoved: number;
  /** Run states of segments removed while a run completed them. */
  segmentRunStatesRemoved: number;
  segmentSchedulesCreated: number;
  segmentSchedulesRemoved: number;
  segmentRunsAbandoned: number;
  exportRecordsRemoved: number;
  exportReceiptsRemoved: number;
  startGatesRemoved: number;
  /** Uploads still receiving whose reader stopped long ago, now failed. */
  stalledUploadsFailed: number;
  /** Staged chunks and planned batches left by writers stopped half way, and claims left by writers that died. */
  uploadChunksRemoved: number;
  exportBatchesRemoved: number;
  versionClaimsRemoved: number;
}

/**
 * One retention run, started by the store's schedule: what has aged out leaves the store — event-id
 * generations past the dedupe window, drained raw chunks past their TTL, folded routed events past
 * the history window, snapshots of segment runs no segment reads, records of runs past
 * DMP_SEGMENT_RUN_DAYS, segment schedules no segment has (those segments have are made sure of);
 * runs whose workflow ended without recording it are marked failed; records of exports past
 * DMP_EXPORT_HISTORY_DAYS leave with their receipts, week-old start gates, and what writers stopped
 * half way left behind (stalled uploads are failed) — and the run reports how much
 * (its result, and its memo in the Temporal UI). Superseded profile versions leave through the
 * partition writers' compaction, not here.
 */
export async function storeRetention(input: RetentionInput = {}): Promise<RetentionReport> {
  const ids = await expireEventIds();
  const raw = await expireRawChunks({ ttlMs: input.rawEventTtlMs });
  const routed = await expireRoutedEvents({ ttlMs: input.eventHistoryTtlMs });
  const snapshots = await releaseSegmentSnapshots({ ttlMs: input.segmentRunTtlMs });
  const schedules = await reconcileSegmentSchedules();
  // Steps added later come after those before them, so a run started before a step existed replays its history unchanged.
  const abandoned = await failAbandonedSegmentRuns({ graceMs: input.runStartGraceMs });
  const exports = await expireExportRecords({ ttlMs: input.exportHistoryTtlMs });
  const gates = await expireStartGates();
  const leftovers = await dropLeftovers();
  const report: RetentionReport = {
    eventIdGenerationsDropped: ids.generations,
    eventIdsRemoved: ids.ids,
    rawChunksRemoved: raw.chunks,
    rawEventsRemoved: raw.events,
    routedBatchesRemoved: routed.batches,
    segmentRunsReleased: snapshots.runs,
    segmentRunRecordsRemoved: snapshots.records,
    segmentRunStatesRemoved: snapshots.runStates ?? 0,
    segmentSchedulesCreated: schedules.created,
    segmentSchedulesRemoved: schedules.removed,
    segmentRunsAbandoned: abandoned.runs,
    exportRecordsRemoved: exports.exports,
    exportReceiptsRemoved: exports.receipts,
    startGatesRemoved: gates.gates,
    stalledUploadsFailed: leftovers.uploadsFailed,
    uploadChunksRemoved: leftovers.uploadChunks,
    exportBatchesRemoved: leftovers.exportBatches,
    versionClaimsRemoved: leftovers.versionClaims,
  };
  upsertMemo({ report });
  return report;
}
