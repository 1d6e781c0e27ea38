import { Client, Connection, isGrpcServiceError, ServiceError, type WorkflowHandle, type ScheduleOptions, type ScheduleOptionsAction, ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type ScheduleSpec } from '@temporalio/client';
import type { QueryDefinition, SignalDefinition } from '@temporalio/common';
import { audienceReportsWorkflowId, itemModelWorkflowId, lookalikeScheduleId, lookalikeWorkflowId, privacyRequestWorkflowId, crmImportWorkflowId, destinationExportWorkflowId, destinationScheduleId, feedPullWorkflowId, feedScheduleId, identityGraphWorkflowId, profilePartitionWorkflowId, retentionScheduleId, segmentRunWorkflowId, segmentScheduleId, sourceWorkflowId } from '../domain/workflowIds';
import type { DestinationDefinition, DestinationDoc } from '../store/destinations';
import type { LookalikeRunDoc } from '../store/lookalikeRuns';
import type { ScheduleSyncMark, ScheduleSyncs } from '../store/scheduleSyncs';
import { failRun, prepareRun, type SegmentRunStore } from '../store/segmentRuns';
import type { SegmentStore } from '../store/segments';
import { startGateKey, type StartGates } from '../store/startGates';
import { destinationExport, type DestinationExportInput } from '../workflows/destinationExport';
import { durationMs } from '../domain/segmentRules';
import { scheduleKey, type SegmentSchedule } from '../domain/segments';
import { SA } from '../domain/searchAttributes';
import type { Config } from '../config';
import type { SourceDoc } from '../store/sources';
import { crmImport } from '../workflows/crmImport';
import { feedPull, scheduledFeedPull, type FeedPullInput } from '../workflows/feedPull';
import { identityGraph, unlinkRequestedSignal } from '../workflows/identityUnlink';
import { eventsRoutedSignal, expiryRequestedSignal, profilePartition, splitRequestedSignal } from '../workflows/profilePartition';
import { sourceConnection, sourceLogGrewSignal } from '../workflows/sourceConnection';
import { segmentRun } from '../workflows/segmentRun';
import { storeRetention } from '../workflows/storeRetention';
import { audienceReports } from '../workflows/audienceReports';
import { itemModel } from '../workflows/itemModel';
import { lookalike, lookalikeRetrain } from '../workflows/lookalike';
import { privacyRequest } from '../workflows/privacyRequest';
import type { PrivacyRequestType } from '../domain/privacy';

export async function connectTemporal(config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>): Promise<Client> {
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  return new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
}

export type SourceWorkflowConfig = Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_DRAIN_BATCH_EVENTS' | 'DMP_SOURCE_IDLE_POLL_SECONDS'>;
type SourceIdentity = Pick<SourceDoc, '_id' | 'kind' | 'party'>;
export type PartitionWorkflowConfig = Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_DRAIN_BATCH_EVENTS' | 'DMP_PROFILE_PARTITIONS' | 'DMP_IDENTITY_BLOCKLIST' | 'DMP_IDENTITY_CAPS'>;

/** Starts the source's workflow under its deterministic id; finding it already running is success. */
export async function ensureSourceWorkflow(client: Client, source: SourceIdentity, config: SourceWorkflowConfig): Promise<void> {
  try {
    await client.workflow.start(sourceConnection, {
      workflowId: sourceWorkflowId(source._id),
      taskQueue: config.DMP_TASK_QUEUE,
      args: [{ sourceId: source._id, party: source.party, drainBatchEvents: config.DMP_DRAIN_BATCH_EVENTS, idlePollMs: config.DMP_SOURCE_IDLE_POLL_SECONDS * 1000 }],
      typedSearchAttributes: [
        { key: SA.sourceId, value: source._id },
        { key: SA.sourceKind, value: source.kind },
        { key: SA.party, value: source.party },
        { key: SA.state, value: 'active' },
        { key: SA.eventsProcessed, value: 0 },
      ],
      memo: { sourceId: source._id, kind: source.kind, party: source.party },
    });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/**
 * Tells a source's workflow that its log grew. A workflow that is gone (e.g. terminated by an
 * operator) is started again first; it resumes from the position its drain saved.
 */
export async function wakeSourceWorkflow(
  client: Client,
  sourceId: string,
  loadSource: (id: string) => Promise<SourceIdentity | null>,
  config: SourceWorkflowConfig,
): Promise<void> {
  const handle = client.workflow.getHandle(sourceWorkflowId(sourceId));
  try {
    await handle.signal(sourceLogGrewSignal);
  } catch (error) {
    if (!(error instanceof WorkflowNotFoundError)) throw error;
    const source = await loadSource(sourceId);
    if (!source) return;
    await ensureSourceWorkflow(client, source, config);
    await handle.signal(sourceLogGrewSignal);
  }
}

/** Signals a partition's writer, starting it when it is not running. */
async function signalPartition(client: Client, databaseName: string, partition: number, signal: SignalDefinition<[string]>, arg: string, config: PartitionWorkflowConfig): Promise<void> {
  await client.workflow.signalWithStart(profilePartition, {
    workflowId: profilePartitionWorkflowId(databaseName, partition),
    taskQueue: config.DMP_TASK_QUEUE,
    args: [{ partition, foldBatchEvents: config.DMP_DRAIN_BATCH_EVENTS }],
    signal,
    signalArgs: [arg],
    memo: { partition },
  });
}

/** Tells a partition's writer that `sourceId` routed events to it. */
export function wakeProfilePartition(client: Client, databaseName: string, partition: number, sourceId: string, config: PartitionWorkflowConfig): Promise<void> {
  return signalPartition(client, databaseName, partition, eventsRoutedSignal, sourceId, config);
}

/** Asks a partition's writer to make an unlink's splits of its documents. */
export function requestPartitionSplit(client: Client, databaseName: string, partition: number, unlinkId: string, config: PartitionWorkflowConfig): Promise<void> {
  return signalPartition(client, databaseName, partition, splitRequestedSignal, unlinkId, config);
}

/** Asks a partition's writer to expire the documents of inactive people an expiry planned there. */
export function requestPartitionExpiry(client: Client, databaseName: string, partition: number, expiryId: string, config: PartitionWorkflowConfig): Promise<void> {
  return signalPartition(client, databaseName, partition, expiryRequestedSignal, expiryId, config);
}

/** Queues an unlink on the store's identity graph workflow, starting it when it is not running. */
export async function requestUnlink(client: Client, databaseName: string, unlinkId: string, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  await client.workflow.signalWithStart(identityGraph, {
    workflowId: identityGraphWorkflowId(databaseName),
    taskQueue: config.DMP_TASK_QUEUE,
    args: [{ databaseName }],
    signal: unlinkRequestedSignal,
    signalArgs: [unlinkId],
  });
}

/**
 * The store's retention schedule: a run every `DMP_RETENTION_EVERY_MINUTES`, never two at once.
 * Created once; an existing schedule is left as it is (an operator may have paused or changed it;
 * a changed interval is set on the schedule itself).
 */
export async function ensureRetentionSchedule(
  client: Client,
  databaseName: string,
  config: Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_RETENTION_EVERY_MINUTES'>,
): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: retentionScheduleId(databaseName),
      spec: { intervals: [{ every: `${config.DMP_RETENTION_EVERY_MINUTES}m` }] },
      action: {
        type: 'startWorkflow',
        workflowType: storeRetention,
        workflowId: retentionScheduleId(databaseName),
        taskQueue: config.DMP_TASK_QUEUE,
        // No ages here: each run's activities read them from the workers' configuration, so a changed setting counts.
        args: [{}],
      },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    });
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
  }
}

/** A store-wide pass on a schedule of its own (never two at once); created once, like the retention schedule. */
async function ensurePassSchedule(client: Client, workflow: typeof audienceReports | typeof itemModel, workflowId: string, everyMs: number, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: workflowId,
      spec: { intervals: [{ every: everyMs }] },
      action: { type: 'startWorkflow', workflowType: workflow, workflowId, taskQueue: config.DMP_TASK_QUEUE, args: [] },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    });
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
  }
}

/** The store's daily audience reports (insights and trend points of every segment) and its item model builds. */
export async function ensurePassSchedules(client: Client, databaseName: string, config: Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_ITEM_MODEL_REFRESH_MINUTES'>): Promise<void> {
  await ensurePassSchedule(client, audienceReports, audienceReportsWorkflowId(databaseName), 86_400_000, config);
  await ensurePassSchedule(client, itemModel, itemModelWorkflowId(databaseName), config.DMP_ITEM_MODEL_REFRESH_MINUTES * 60_000, config);
}

/** Starts an audience report now, or finds the one running (asked for by another insight). */
export async function requestAudienceReports(client: Client, databaseName: string, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<WorkflowHandle<typeof audienceReports>> {
  return client.workflow.start(audienceReports, { workflowId: audienceReportsWorkflowId(databaseName), taskQueue: config.DMP_TASK_QUEUE, workflowIdConflictPolicy: 'USE_EXISTING', args: [] });
}

/** Starts a recorded lookalike run under its deterministic id; finding it started is success. */
export async function startLookalike(client: Client, databaseName: string, runId: string, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  try {
    await client.workflow.start(lookalike, { workflowId: lookalikeWorkflowId(databaseName, runId), taskQueue: config.DMP_TASK_QUEUE, args: [{ runId }] });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/**
 * Makes a lookalike's re-training schedule match its run: each firing re-trains on the seed and base
 * as they are then (never two at once); none (`null`) stops it.
 */
export async function syncLookalikeSchedule(client: Client, databaseName: string, firstRunId: string, schedule: SegmentSchedule | null, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  const scheduleId = lookalikeScheduleId(databaseName, firstRunId);
  await putSchedule(client, scheduleId, schedule && { spec: scheduleSpec(schedule), action: { workflowType: lookalikeRetrain, workflowId: scheduleId, taskQueue: config.DMP_TASK_QUEUE, args: [{ firstRunId }] } });
}

/** Makes a lookalike's re-training schedule match its saved run and removes the change's mark (ScheduleSyncs.settle). A failed run re-trains nothing. */
export function settleLookalikeSchedule(client: Client, databaseName: string, runs: ScheduleSyncs<LookalikeRunDoc>, runId: string, mark: ScheduleSyncMark, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<{ exists: boolean }> {
  const retrainOf = (run: LookalikeRunDoc | null) => (run && run.state !== 'failed' ? (run.retrain ?? null) : null);
  return runs.settle(runId, mark, (run) => syncLookalikeSchedule(client, databaseName, runId, retrainOf(run), config), (run) => [retrainOf(run)]);
}

/** Starts a recorded privacy request under its deterministic id; finding it started is success. */
export async function startPrivacyRequest(client: Client, databaseName: string, requestId: string, type: PrivacyRequestType, config: Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN'>): Promise<void> {
  try {
    await client.workflow.start(privacyRequest, {
      workflowId: privacyRequestWorkflowId(databaseName, requestId),
      taskQueue: config.DMP_TASK_QUEUE,
      args: [{ requestId, type, databaseName, removalRoundsPerRun: config.DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN }],
      memo: { requestId, type },
    });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/** Starts an item model update now (a full build, or a refresh with what folds recorded), or finds the one running. */
export async function requestItemModel(client: Client, databaseName: string, full: boolean, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<WorkflowHandle<typeof itemModel>> {
  return client.workflow.start(itemModel, { workflowId: itemModelWorkflowId(databaseName), taskQueue: config.DMP_TASK_QUEUE, workflowIdConflictPolicy: 'USE_EXISTING', args: [{ full }] });
}

/** A schedule of ours (`{every}` or `{cron}`) as a Temporal Schedule spec. */
function scheduleSpec(schedule: SegmentSchedule): ScheduleSpec {
  return 'every' in schedule ? { intervals: [{ every: durationMs(schedule.every) }] } : { cronExpressions: [schedule.cron] };
}

/**
 * Makes a schedule match what it should be: created, its spec, action and pause replaced, or
 * deleted (`null`). Its runs never overlap (a turn is skipped while one runs); one missed while the
 * cluster was down is caught up within the hour.
 */
async function putSchedule(
  client: Client,
  scheduleId: string,
  wanted: { spec: ScheduleSpec; action: Omit<ScheduleOptionsAction, 'type'>; paused?: boolean; typedSearchAttributes?: ScheduleOptions['typedSearchAttributes'] } | null,
): Promise<void> {
  const handle = client.schedule.getHandle(scheduleId);
  if (!wanted) {
    try {
      await handle.delete();
    } catch (error) {
      if (!(error instanceof ScheduleNotFoundError)) throw error;
    }
    return;
  }
  const { spec, action, paused = false, typedSearchAttributes } = wanted;
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' as const };
  try {
    await client.schedule.create({ scheduleId, spec, action: { ...action, type: 'startWorkflow' }, policies, state: { paused }, ...(typedSearchAttributes && { typedSearchAttributes }) });
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
    await handle.update((previous) => ({ ...previous, spec, action: { ...action, type: 'startWorkflow' }, state: { ...previous.state, paused } }));
  }
}

/** gRPC status codes. */
const CANCELLED = 1;
const DEADLINE_EXCEEDED = 4;

/**
 * A workflow's answer to a query within `ms`, or null when it did not come: a query waits for the
 * workflow's task, which its local activities may hold for a while. A call the deadline ends comes
 * back as DEADLINE_EXCEEDED — or as CANCELLED when the client's own retry had begun another attempt.
 */
export async function queryWithin<T>(client: Client, handle: WorkflowHandle, query: QueryDefinition<T>, ms: number): Promise<T | null> {
  const deadline = Date.now() + ms;
  try {
    return await client.connection.withDeadline(deadline, () => handle.query(query));
  } catch (error) {
    const code = error instanceof ServiceError && isGrpcServiceError(error.cause) ? error.cause.code : undefined;
    if (code === DEADLINE_EXCEEDED || (code === CANCELLED && Date.now() >= deadline)) return null;
    throw error;
  }
}

/**
 * Whether a workflow is alive. Only a workflow Temporal does not know (never started, or its history
 * gone) counts as ended without a status; any other error is thrown, for the caller's retry.
 */
export async function workflowIsRunning(client: Client, workflowId: string): Promise<boolean> {
  return (await latestWorkflowRun(client, workflowId))?.closedAt === null;
}

/** Terminates a workflow's run if it runs (safe to repeat). */
export async function terminateIfRunning(client: Client, workflowId: string, reason: string): Promise<void> {
  try {
    await client.workflow.getHandle(workflowId).terminate(reason);
  } catch (error) {
    // Not found: never started, or already closed.
    if (!(error instanceof WorkflowNotFoundError)) throw error;
  }
}

/**
 * The latest run of a workflow id: its memo (which of several pieces of work under one id it is
 * on) and when it closed (null while it runs); null when Temporal does not know the id.
 */
export async function latestWorkflowRun(client: Client, workflowId: string): Promise<{ memo: Record<string, unknown>; closedAt: Date | null } | null> {
  try {
    const description = await client.workflow.getHandle(workflowId).describe();
    return { memo: description.memo ?? {}, closedAt: description.status.name === 'RUNNING' ? null : (description.closeTime ?? new Date(0)) };
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return null;
    throw error;
  }
}

/** Starts a prepared batch segmentation run under its deterministic id; finding it started is success. */
export async function startSegmentRun(client: Client, databaseName: string, runId: string, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  try {
    await client.workflow.start(segmentRun, { workflowId: segmentRunWorkflowId(databaseName, runId), taskQueue: config.DMP_TASK_QUEUE, args: [{ runId }], memo: { runId } });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/**
 * Prepares a run of `segmentIds` and of what their change touches (dependents, and what they refer
 * to), and starts it behind its start gate; returns its id. A run that never starts is recorded
 * failed, so it neither stands for its segments nor supersedes another.
 */
export async function startRunOfSegments(
  client: Client,
  databaseName: string,
  stores: { segments: SegmentStore; runs: SegmentRunStore; gates: StartGates },
  segmentIds: readonly string[],
  config: Pick<Config, 'DMP_TASK_QUEUE'>,
): Promise<string> {
  const at = new Date();
  const run = await prepareRun(stores.segments, stores.runs, at, at, segmentIds);
  await startGated(
    stores.gates,
    startGateKey.segmentRun(run._id),
    () => startSegmentRun(client, databaseName, run._id, config),
    (error) => failRun(stores.segments, stores.runs, run._id, `could not start: ${String(error)}`, new Date()),
  );
  return run._id;
}

/**
 * Creates the schedule of batch runs the segments with `schedule` share, unless it exists (as an
 * operator may have paused it). Each firing evaluates every segment in one pass (never two at once;
 * a run missed while the cluster was down is caught up within the hour). Returns whether it created it.
 */
export async function ensureSegmentSchedule(client: Client, databaseName: string, schedule: SegmentSchedule, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<boolean> {
  const scheduleId = segmentScheduleId(databaseName, scheduleKey(schedule));
  try {
    await client.schedule.create({
      scheduleId,
      spec: scheduleSpec(schedule),
      action: { type: 'startWorkflow', workflowType: segmentRun, workflowId: scheduleId, taskQueue: config.DMP_TASK_QUEUE, args: [{ databaseName }] },
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
    });
    return true;
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
    return false;
  }
}

/**
 * Removes the shared segment schedule of `key` unless a segment has that schedule. The segments are
 * read again after the removal: a segment given the schedule meanwhile, whose request found the
 * schedule still there, gets it back. Returns whether it removed the schedule for good.
 */
export async function releaseSegmentSchedule(
  client: Client,
  databaseName: string,
  key: string,
  schedules: () => Promise<Map<string, SegmentSchedule>>,
  config: Pick<Config, 'DMP_TASK_QUEUE'>,
): Promise<boolean> {
  if ((await schedules()).has(key)) return false;
  let removed = true;
  try {
    await client.schedule.getHandle(segmentScheduleId(databaseName, key)).delete();
  } catch (error) {
    if (!(error instanceof ScheduleNotFoundError)) throw error;
    removed = false;
  }
  const wanted = (await schedules()).get(key);
  if (wanted) await ensureSegmentSchedule(client, databaseName, wanted, config);
  return removed && !wanted;
}

/** The keys of the segment schedules Temporal holds for the store (as its visibility lists them, a little behind). */
export async function listSegmentSchedules(client: Client, databaseName: string): Promise<string[]> {
  const prefix = segmentScheduleId(databaseName, '');
  const keys: string[] = [];
  for await (const summary of client.schedule.list()) if (summary.scheduleId.startsWith(prefix)) keys.push(summary.scheduleId.slice(prefix.length));
  return keys;
}

/**
 * Starts the workflow of work the API recorded. A start call that fails may still have started it,
 * its answer lost: the start gate decides. Begun by the workflow, the start stands; otherwise the
 * gate is abandoned (the workflow, should it run, does nothing) and `fail` records the work as
 * failed before the error goes on. Finding the workflow id taken is the caller's to judge.
 */
export async function startGated(gates: StartGates, key: string, start: () => Promise<void>, fail: (error: unknown) => Promise<unknown>): Promise<void> {
  try {
    await start();
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) throw error;
    if (!(await gates.abandon(key))) return;
    await fail(error);
    throw error;
  }
}

/** Starts an export the API recorded, under its deterministic id; finding it started is success. */
export async function startDestinationExport(client: Client, databaseName: string, destinationId: string, exportId: string, full: boolean, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  try {
    await client.workflow.start(destinationExport, {
      workflowId: destinationExportWorkflowId(databaseName, exportId),
      taskQueue: config.DMP_TASK_QUEUE,
      args: [{ destinationId, exportId, full, trigger: 'api', databaseName }],
      typedSearchAttributes: [{ key: SA.destinationId, value: destinationId }],
      memo: { destinationId, exportId },
    });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/**
 * Makes a destination's schedule match it: every minute for near-real-time (a run with nothing
 * changed records nothing), else its own schedule, else none. Never two exports of it at once; runs
 * missed while the cluster was down are caught up within the hour. Paused with the destination.
 */
export async function syncDestinationSchedule(
  client: Client,
  databaseName: string,
  destination: Pick<DestinationDoc, '_id' | 'schedule' | 'nearRealTime' | 'state' | 'connector'>,
  config: Pick<Config, 'DMP_TASK_QUEUE'>,
): Promise<string | null> {
  const scheduleId = destinationScheduleId(databaseName, destination._id);
  const schedule = destination.schedule;
  if (!destination.nearRealTime && !schedule) {
    await putSchedule(client, scheduleId, null);
    return null;
  }
  const spec: ScheduleSpec = destination.nearRealTime || !schedule ? { intervals: [{ every: '1 minute' }] } : scheduleSpec(schedule);
  const trigger: DestinationExportInput['trigger'] = destination.nearRealTime ? 'near_real_time' : 'schedule';
  const typedSearchAttributes = [{ key: SA.destinationId, value: destination._id }];
  const args: [DestinationExportInput] = [{ destinationId: destination._id, trigger, databaseName }];
  const action = { workflowType: destinationExport, workflowId: scheduleId, taskQueue: config.DMP_TASK_QUEUE, args, typedSearchAttributes };
  await putSchedule(client, scheduleId, { spec, action, paused: destination.state === 'paused', typedSearchAttributes });
  return scheduleId;
}

export function deleteDestinationSchedule(client: Client, databaseName: string, destinationId: string): Promise<void> {
  return putSchedule(client, destinationScheduleId(databaseName, destinationId), null);
}

/** Makes a destination's schedule match its saved definition (none once it is gone) and removes the change's mark (ScheduleSyncs.settle). */
export function settleDestinationSchedule(client: Client, databaseName: string, destinations: ScheduleSyncs<DestinationDefinition>, destinationId: string, mark: ScheduleSyncMark, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<{ exists: boolean }> {
  return destinations.settle(
    destinationId,
    mark,
    (doc) => (doc ? syncDestinationSchedule(client, databaseName, doc, config) : deleteDestinationSchedule(client, databaseName, destinationId)),
    (doc) => [doc.schedule, doc.nearRealTime, doc.state],
  );
}

/** Starts the import of a received CRM upload under its deterministic id; finding it started is success. */
export async function startCrmImport(client: Client, databaseName: string, uploadId: string, source: SourceIdentity, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  try {
    await client.workflow.start(crmImport, {
      workflowId: crmImportWorkflowId(databaseName, uploadId),
      taskQueue: config.DMP_TASK_QUEUE,
      args: [{ uploadId, sourceId: source._id }],
      typedSearchAttributes: [
        { key: SA.sourceId, value: source._id },
        { key: SA.sourceKind, value: source.kind },
        { key: SA.party, value: source.party },
      ],
      memo: { uploadId, sourceId: source._id },
    });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}

/**
 * Makes a feed source's schedule match it: a pull at its interval or cron, paused while the source
 * is; nothing for other kinds. Pulls never overlap (the schedule skips a turn while one runs, and
 * every pull of a feed runs under one workflow id); one missed while the cluster was down is caught
 * up within the hour.
 */
export async function syncFeedSchedule(
  client: Client,
  databaseName: string,
  source: Pick<SourceDoc, '_id' | 'kind' | 'party' | 'feed' | 'state'>,
  config: Pick<Config, 'DMP_TASK_QUEUE'>,
): Promise<void> {
  if (!source.feed) return;
  const scheduleId = feedScheduleId(databaseName, source._id);
  const spec = scheduleSpec(source.feed.schedule);
  const searchAttributes = [
    { key: SA.sourceId, value: source._id },
    { key: SA.sourceKind, value: source.kind },
    { key: SA.party, value: source.party },
  ];
  const action = { workflowType: scheduledFeedPull, workflowId: scheduleId, taskQueue: config.DMP_TASK_QUEUE, args: [{ sourceId: source._id, databaseName }], typedSearchAttributes: searchAttributes };
  await putSchedule(client, scheduleId, { spec, action, paused: source.state === 'paused', typedSearchAttributes: searchAttributes });
}

export function deleteFeedSchedule(client: Client, databaseName: string, sourceId: string): Promise<void> {
  return putSchedule(client, feedScheduleId(databaseName, sourceId), null);
}

/** Makes a feed source's schedule match it as saved (none once it is gone) and removes the change's mark (ScheduleSyncs.settle). */
export function settleFeedSchedule(client: Client, databaseName: string, sources: ScheduleSyncs<SourceDoc>, sourceId: string, mark: ScheduleSyncMark, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<{ exists: boolean }> {
  return sources.settle(
    sourceId,
    mark,
    (doc) => (doc ? syncFeedSchedule(client, databaseName, doc, config) : deleteFeedSchedule(client, databaseName, sourceId)),
    (doc) => [doc.feed?.schedule, doc.state],
  );
}

/**
 * Starts a pull of a feed under the feed's one pull id. A pull of the feed already running is a
 * WorkflowExecutionAlreadyStartedError: pulls of a feed never overlap.
 */
export async function startFeedPull(client: Client, source: Pick<SourceDoc, '_id' | 'kind' | 'party'>, input: FeedPullInput, config: Pick<Config, 'DMP_TASK_QUEUE'>): Promise<void> {
  await client.workflow.start(feedPull, {
    workflowId: feedPullWorkflowId(input.databaseName, source._id),
    taskQueue: config.DMP_TASK_QUEUE,
    args: [input],
    typedSearchAttributes: [
      { key: SA.sourceId, value: source._id },
      { key: SA.sourceKind, value: source.kind },
      { key: SA.party, value: source.party },
    ],
    memo: { sourceId: source._id, pullId: input.pullId },
  });
}
