/**
 * Workflow ids are derived from what they run for, so a repeated start finds the running one.
 * (Kept apart from `ids.ts`: workflows import this, and it must use nothing but plain code.)
 */
export function sourceWorkflowId(sourceId: string): string {
  return `source:${sourceId}`;
}

/** The writer of one partition of a store's profiles (see domain/partition). */
export function profilePartitionWorkflowId(databaseName: string, partition: number): string {
  return `profile-partition:${databaseName}:${partition}`;
}

/** The queue that runs a store's unlinks one at a time (two splits of one component must not overlap). */
export function identityGraphWorkflowId(databaseName: string): string {
  return `identity-graph:${databaseName}`;
}

export function identityUnlinkWorkflowId(databaseName: string, unlinkId: string): string {
  return `identity-unlink:${databaseName}:${unlinkId}`;
}

/** The schedule of a store's retention runs, and the id its runs start under. */
export function retentionScheduleId(databaseName: string): string {
  return `store-retention:${databaseName}`;
}

/** A batch segmentation run (`runId` derives from the segment versions and the second it evaluates). */
export function segmentRunWorkflowId(databaseName: string, runId: string): string {
  return `segment-run:${databaseName}:${runId}`;
}

/**
 * The schedule of batch runs every segment with that schedule shares (`key`: domain/segments
 * `scheduleKey`); each firing evaluates every segment in one pass. With an empty key: the prefix of
 * every segment schedule of the store.
 */
export function segmentScheduleId(databaseName: string, key: string): string {
  return `segment-schedule:${databaseName}:${key}`;
}

/**
 * The one scheduled run of a moment: every segment schedule firing at that nominal time (hourly
 * crons, intervals aligned to the epoch) starts it under this id, and only the first does.
 */
export function scheduledSegmentRunWorkflowId(databaseName: string, nominalTime: Date): string {
  return `segment-scheduled:${databaseName}:${nominalTime.toISOString()}`;
}

/** One export of a destination, asked for through the API (`exportId` derives from the destination and the second). */
export function destinationExportWorkflowId(databaseName: string, exportId: string): string {
  return `destination-export:${databaseName}:${exportId}`;
}

/** The schedule of a destination's exports; its runs start under this id and their time. */
export function destinationScheduleId(databaseName: string, destinationId: string): string {
  return `destination-schedule:${databaseName}:${destinationId}`;
}

/** The import of one CRM upload into its source's log. */
export function crmImportWorkflowId(databaseName: string, uploadId: string): string {
  return `crm-import:${databaseName}:${uploadId}`;
}

/** A feed's pulls, one at a time: scheduled, asked for and backfill pulls all run under this id. */
export function feedPullWorkflowId(databaseName: string, sourceId: string): string {
  return `feed-pull:${databaseName}:${sourceId}`;
}

/** The schedule of a feed's pulls; its runs start under this id and their time, and each starts the feed's pull. */
export function feedScheduleId(databaseName: string, sourceId: string): string {
  return `feed-schedule:${databaseName}:${sourceId}`;
}

/** A store's audience reports: the daily schedule, and the run an insight asks for (one at a time). */
export function audienceReportsWorkflowId(databaseName: string): string {
  return `audience-reports:${databaseName}`;
}

/** A store's item model builds: the schedule, and the build an operator asks for (one at a time). */
export function itemModelWorkflowId(databaseName: string): string {
  return `item-model:${databaseName}`;
}

/** A lookalike's re-training schedule, and the re-trains it starts (one at a time). */
export function lookalikeScheduleId(databaseName: string, firstRunId: string): string {
  return `lookalike-retrain:${databaseName}:${firstRunId}`;
}

/** One privacy request (its id derives from the subject's salted hash, the type and the request's place). */
export function privacyRequestWorkflowId(databaseName: string, requestId: string): string {
  return `privacy-request:${databaseName}:${requestId}`;
}

/** A privacy request's removal at one destination (its rounds' exports are `<request workflow>:<destination>:r<round>`). */
export function privacyRemovalWorkflowId(requestWorkflowId: string, destinationId: string): string {
  return `${requestWorkflowId}:removal:${destinationId}`;
}

/** One lookalike run (`runId` derives from the seed, the request and the second). */
export function lookalikeWorkflowId(databaseName: string, runId: string): string {
  return `lookalike:${databaseName}:${runId}`;
}
