import { patched, proxyActivities, sleep, upsertMemo, uuid4 } from '@temporalio/workflow';
import type { InactiveExpiryResult, RetentionActivities } from '../activities/retention';

const {
  expireEventIds,
  expireRawChunks,
  expireRoutedEvents,
  releaseSegmentSnapshots,
  reconcileSegmentSchedules,
  failAbandonedSegmentRuns,
  resumeLostStarts,
  failAbandonedWork,
  resyncSchedules,
  expireSourceRecords,
  startOwedSegmentRuns,
  expireExportRecords,
  expireStartGates,
  dropLeftovers,
  planInactiveExpiry,
  requestExpiries,
  pendingExpiries,
  finishInactiveExpiry,
  expireMatches,
} = proxyActivities<RetentionActivities>({
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
  sourceHistoryTtlMs?: number;
  /** People last seen longer ago than this leave the store (0: nobody). */
  inactiveProfileTtlMs?: number;
  /** How old the snapshot of a segment without a schedule may grow before the run evaluates it again. */
  snapshotMaxAgeMs?: number;
  /** How long after the last sweep of the match tables the next is made (default: a day). */
  matchSweepEveryMs?: number;
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
  /** People found inactive and planned to leave, and what their partitions' writers removed of them. */
  inactivePeoplePlanned: number;
  inactiveDocumentsExpired: number;
  /** Planned documents an event reached before their writer came to them: kept. */
  inactiveDocumentsKept: number;
  inactiveIdentitiesReleased: number;
  inactiveLinksRemoved: number;
  /** Privacy requests whose workflow never started or stopped short, started again; unlinks asked for again. */
  privacyRequestsResumed: number;
  unlinksResumed: number;
  /** What ended (or never recorded) privacy requests kept of their subjects, removed. */
  privacySubjectsForgotten: number;
  /** Work the API recorded whose workflow never started, or ended without recording how: failed. */
  exportsAbandoned: number;
  importsAbandoned: number;
  feedPullsAbandoned: number;
  lookalikesAbandoned: number;
  /** Destination and feed schedules a saved change was never made to (the API stopped in between): made to match. */
  schedulesResynced: number;
  /** Destinations and feed sources whose create was never answered (the API stopped in between): removed, as a failed create is. */
  unansweredCreatesUndone: number;
  /** Records of feed pulls and uploads past DMP_SOURCE_HISTORY_DAYS. */
  feedPullRecordsRemoved: number;
  uploadRecordsRemoved: number;
  /** Segments whose definition no run had evaluated or was evaluating (a run the API never started): one run started for them. */
  owedSegmentsRun: number;
  /** Cookie-sync match keys whose every entry was past DMP_MATCH_TTL_DAYS (swept at most daily). */
  matchKeysRemoved: number;
}

/** How often an expiry asks again for shares its partitions have not finished (a writer may have restarted). */
const ASK_AGAIN_EVERY = 10;
/** Rounds of waiting for the partitions (about an hour): what is left then goes on, reported by its partitions' status. */
const MAX_EXPIRY_ROUNDS = 1_200;

/**
 * People last seen before the cutoff leave: planned from one pass over the profiles, removed by each
 * partition's writer (the only one that writes its documents), then the links between them.
 */
async function expireInactivePeople(ttlMs: number | undefined): Promise<{ people: number } & InactiveExpiryResult> {
  const plan = await planInactiveExpiry({ expiryId: `x${uuid4().replace(/-/g, '').slice(0, 11)}`, ttlMs });
  if (plan.partitions.length === 0) return { people: 0, documentsExpired: 0, documentsSkipped: 0, identitiesReleased: 0, linksRemoved: 0 };
  let pending = plan.partitions;
  for (let round = 0; pending.length > 0 && round < MAX_EXPIRY_ROUNDS; round++) {
    if (round % ASK_AGAIN_EVERY === 0) await requestExpiries({ expiryId: plan.expiryId, partitions: pending });
    await sleep(round < ASK_AGAIN_EVERY ? 300 : 3000);
    pending = await pendingExpiries(plan.expiryId);
  }
  return { people: plan.people, ...(await finishInactiveExpiry(plan.expiryId)) };
}

/**
 * One retention run, started by the store's schedule: what has aged out leaves the store — event-id
 * generations past the dedupe window, drained raw chunks past their TTL, folded routed events past
 * the history window, snapshots of segment runs no segment reads, records of runs past
 * DMP_SEGMENT_RUN_DAYS, segment schedules no segment has (those segments have are made sure of);
 * runs whose workflow ended without recording it are marked failed; records of exports past
 * DMP_EXPORT_HISTORY_DAYS leave with their receipts, week-old start gates, and what writers stopped
 * half way left behind (stalled uploads are failed), and people inactive past DMP_INACTIVE_PROFILE_DAYS
 * (expireInactivePeople); privacy requests and unlinks the API recorded but never started are
 * started, exports, imports, feed pulls and lookalike runs it never started are failed, and destination and
 * feed schedules a saved change never reached are made to match, records of feed pulls and uploads
 * past DMP_SOURCE_HISTORY_DAYS leave, segments whose definition no run evaluated get one, and (daily) cookie-sync match
 * keys past DMP_MATCH_TTL_DAYS leave — and the run reports how much
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
  const inactive = patched('inactive-people') ? await expireInactivePeople(input.inactiveProfileTtlMs) : null;
  const resumed = patched('lost-starts') ? await resumeLostStarts({ graceMs: input.runStartGraceMs }) : null;
  const failedWork = patched('abandoned-work') ? await failAbandonedWork({ graceMs: input.runStartGraceMs }) : null;
  const resynced = patched('resync-schedules') ? await resyncSchedules({ graceMs: input.runStartGraceMs }) : null;
  const sourceRecords = patched('source-history') ? await expireSourceRecords({ ttlMs: input.sourceHistoryTtlMs }) : null;
  const owedRuns = patched('source-history') ? await startOwedSegmentRuns({ graceMs: input.runStartGraceMs, snapshotMaxAgeMs: input.snapshotMaxAgeMs }) : null;
  const matches = patched('match-sweep') ? await expireMatches({ everyMs: input.matchSweepEveryMs }) : null;
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
    inactivePeoplePlanned: inactive?.people ?? 0,
    inactiveDocumentsExpired: inactive?.documentsExpired ?? 0,
    inactiveDocumentsKept: inactive?.documentsSkipped ?? 0,
    inactiveIdentitiesReleased: inactive?.identitiesReleased ?? 0,
    inactiveLinksRemoved: inactive?.linksRemoved ?? 0,
    privacyRequestsResumed: resumed?.privacyRequests ?? 0,
    unlinksResumed: resumed?.unlinks ?? 0,
    privacySubjectsForgotten: resumed?.privacySubjects ?? 0,
    exportsAbandoned: failedWork?.exports ?? 0,
    importsAbandoned: failedWork?.imports ?? 0,
    feedPullsAbandoned: failedWork?.feedPulls ?? 0,
    lookalikesAbandoned: failedWork?.lookalikes ?? 0,
    schedulesResynced: resynced?.schedules ?? 0,
    unansweredCreatesUndone: resynced?.createsUndone ?? 0,
    feedPullRecordsRemoved: sourceRecords?.feedPulls ?? 0,
    uploadRecordsRemoved: sourceRecords?.uploads ?? 0,
    owedSegmentsRun: owedRuns?.segments ?? 0,
    matchKeysRemoved: matches?.keys ?? 0,
  };
  upsertMemo({ report });
  return report;
}
