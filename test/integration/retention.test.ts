import { ScheduleOverlapPolicy } from '@temporalio/client';
import { scheduleKey } from '../../domain/segments';
import { retentionScheduleId, segmentScheduleId } from '../../domain/workflowIds';
import { COLLECTIONS } from '../../store/db';
import { batchId, DestinationStore, type ExportDoc } from '../../store/destinations';
import { EventIdGenerations } from '../../store/eventIds';
import { ProfileEventLog } from '../../store/profileEvents';
import { MatchTableStore } from '../../store/matchTables';
import { matchLimits } from '../../domain/partners';
import { failRun, prepareRunOf, SEGMENT_COLLECTIONS, SegmentRunStore } from '../../store/segmentRuns';
import { newSegmentId, SegmentStore } from '../../store/segments';
import { StartGates, startGateKey } from '../../store/startGates';
import { FeedStore, newFeedPull, type FeedPullDoc } from '../../store/feeds';
import { UploadStore, type UploadDoc } from '../../store/uploads';
import { UploadKeys } from '../../store/uploadKeys';
import { VERSION_CLAIMS } from '../../store/versionClaims';
import { newUpload } from '../../activities/uploadStaging';
import { ensureRetentionSchedule } from '../../temporal/client';
import { storeRetention, type RetentionInput } from '../../workflows/storeRetention';
import { call } from '../support/http';
import { baseConfig, startPlatform, testStore, uniqueName, waitFor, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

describe('retention: what has aged out leaves the store, whole or by key, and the run says how much', () => {
  let platform: RunningPlatform;
  let source: SourceClient;

  beforeAll(async () => {
    // Owed runs start at most three segments at a time.
    platform = await startPlatform('retention', { DMP_SEGMENTS_PER_RUN: 3 });
    source = await newSource(platform.api);
  });
  afterAll(() => platform.stop());

  const send = (ids: string[]) => source.send(ids.map((id) => ({ id, type: 'page_view', timestamp: '2026-08-01T10:00:00Z', identities: { cookie_id: 'kept-1' } })));
  const folded = (count: number) => source.folded(count);
  const retain = (ttlMs: number, segmentRunTtlMs?: number, runStartGraceMs?: number, more: Partial<RetentionInput> = {}) =>
    platform.temporal.workflow.execute(storeRetention, {
      workflowId: uniqueName('retention'),
      taskQueue: platform.taskQueue,
      args: [{ rawEventTtlMs: ttlMs, eventHistoryTtlMs: ttlMs, segmentRunTtlMs, runStartGraceMs, ...more }],
    });
  const lookup = async () => (await source.lookup('cookie_id', 'kept-1')).body;

  it('removes drained raw chunks and folded routed events past their age, leaves profiles whole, and the drain goes on after it', async () => {
    for (const batch of [['r1', 'r2', 'r3'], ['r4', 'r5'], ['r6']]) await send(batch);
    await folded(6);
    // Events an unlink moved to another document leave after the same window, counted with the routed ones.
    const movedLeft = () => platform.store.db.collection(COLLECTIONS.profileEvents).countDocuments({ sourceId: '~moved' });
    const event = { id: 'm1', type: 'page_view', timestamp: new Date('2026-08-01T10:00:00Z'), receivedAt: new Date(), identities: [{ type: 'cookie_id' as const, value: 'moved-1' }] };
    await new ProfileEventLog(platform.store).writeMoved(0, 'unlink_r:p_split', [{ ...event, profileId: 'p_part', sourceId: source.sourceId, party: 'first', seq: 0 }]);
    expect((await retain(3_600_000)).rawEventsRemoved).toBe(0); // nothing is an hour old yet
    expect(await movedLeft()).toBe(1);

    const report = await retain(0);
    expect(await movedLeft()).toBe(0);
    expect(report.rawEventsRemoved).toBe(6);
    expect(report.rawChunksRemoved).toBeGreaterThanOrEqual(1);
    expect(report.routedBatchesRemoved).toBeGreaterThanOrEqual(1);
    expect(await platform.store.db.collection(COLLECTIONS.events).countDocuments({ sourceId: source.sourceId })).toBe(0);
    // Partitions that only had empty batches of the source are woken to step over them; a later run removes those.
    const routedLeft = () => platform.store.db.collection(COLLECTIONS.profileEvents).countDocuments({ sourceId: source.sourceId });
    await waitFor('every routed batch to leave', async () => (await retain(0)) && (await routedLeft()) === 0, 30_000, 500);
    const profile = await lookup();
    expect(profile.counters.page_view.count).toBe(6);
    // The history window was zero: the profile keeps its counts, its events are gone.
    expect((await call(`${platform.api.url}/v1/profiles/${profile.id}/events`, { key: platform.api.adminKey })).body.events).toEqual([]);

    await send(['r7', 'r8']);
    await folded(8);
    expect((await lookup()).counters.page_view.count).toBe(8);
    const again = await retain(0);
    expect(again.rawEventsRemoved).toBe(2);
    // Retention removes raw events, not the profile's memory of their ids: a repeat is still dropped when it is folded.
    expect((await send(['r1'])).body).toMatchObject({ accepted: 1, duplicates: 0 });
    await folded(9);
    expect(await source.duplicatesDropped()).toBe(1);
    expect((await lookup()).counters.page_view.count).toBe(8);
  });

  it('lets go of the snapshots of segment runs no segment reads any more, and of their records past their age, and keeps the ones segments read', async () => {
    const admin = (path: string, init: { method?: string; body?: unknown } = {}) => call(`${platform.api.url}${path}`, { key: platform.api.adminKey, ...init });
    const own = await newSource(platform.api);
    await own.send([{ id: 'snap-1', type: 'snapshot_check', identities: { cookie_id: 'snap-1' } }]);
    await own.folded(1);
    const segment = (await admin('/v1/segments', { body: { name: 'Kept', rule: { event: 'snapshot_check' } } })).body;
    const completed = async (runId: string) =>
      waitFor('the run to complete', async () => (await admin(`/v1/segments/${segment.id}/runs/${runId}`)).body.state === 'completed', 30_000, 200);
    await completed(segment.lastRun.runId);
    const first = segment.lastRun.runId as string;
    const second = (await admin(`/v1/segments/${segment.id}/runs`, { method: 'POST' })).body.runId as string;
    await completed(second);
    const snapshots = platform.store.db.collection(SEGMENT_COLLECTIONS.snapshots);
    const chunksOf = (runId: string) => snapshots.countDocuments({ _id: { $regex: `^${runId}:` } } as never);
    expect(await chunksOf(first)).toBeGreaterThan(0);

    const report = await retain(3_600_000);
    expect(report.segmentRunsReleased).toBe(1);
    expect(await chunksOf(first)).toBe(0);
    expect(await chunksOf(second)).toBeGreaterThan(0);
    expect((await admin(`/v1/segments/${segment.id}/members`)).body.members).toHaveLength(1);
    expect((await retain(3_600_000)).segmentRunsReleased).toBe(0);
    // The records stay for DMP_SEGMENT_RUN_DAYS (30 by default); past it, those of runs no segment reads or shows as its last leave.
    expect(report.segmentRunRecordsRemoved).toBe(0);
    expect((await admin(`/v1/segments/${segment.id}/runs/${first}`)).status).toBe(200);
    expect((await retain(3_600_000, 0)).segmentRunRecordsRemoved).toBeGreaterThanOrEqual(1);
    expect((await admin(`/v1/segments/${segment.id}/runs/${first}`)).status).toBe(404);
    expect((await admin(`/v1/segments/${segment.id}/runs/${second}`)).body.state).toBe('completed');
    expect((await admin(`/v1/segments/${segment.id}`)).body.lastRun.runId).toBe(second);
    expect((await admin(`/v1/segments/${segment.id}/members`)).body.members).toHaveLength(1);
  });

  it('makes the shared segment schedules match the segments: one no segment has goes, one a segment has and lost comes back', async () => {
    const admin = (path: string, init: { method?: string; body?: unknown } = {}) => call(`${platform.api.url}${path}`, { key: platform.api.adminKey, ...init });
    const databaseName = platform.store.db.databaseName;
    const schedule = { cron: '7 5 * * *' };
    expect((await admin('/v1/segments', { body: { name: 'Early', rule: { event: 'dawn' }, schedule } })).status).toBe(201);
    const kept = platform.temporal.schedule.getHandle(segmentScheduleId(databaseName, scheduleKey(schedule)));
    await kept.delete();
    // A schedule of the store no segment has (as each segment had its own before they were shared).
    const strayId = segmentScheduleId(databaseName, 'seg_gone');
    await platform.temporal.schedule.create({
      scheduleId: strayId,
      spec: { cronExpressions: ['9 5 * * *'] },
      action: { type: 'startWorkflow', workflowType: 'segmentRun', workflowId: strayId, taskQueue: platform.taskQueue, args: [{ databaseName }] },
    });
    const stray = platform.temporal.schedule.getHandle(strayId);
    const exists = (handle: typeof stray) => handle.describe().then(() => true, () => false);
    // Temporal's list of schedules lags a little behind: a run may not see the latest yet.
    const counts = { created: 0, removed: 0 };
    await waitFor(
      'the schedules to match the segments',
      async () => {
        const report = await retain(3_600_000);
        counts.created += report.segmentSchedulesCreated;
        counts.removed += report.segmentSchedulesRemoved;
        return (await exists(kept)) && !(await exists(stray));
      },
      60_000,
      1000,
    );
    expect(counts).toEqual({ created: 1, removed: 1 });
    expect((await kept.describe()).spec.calendars).toEqual([expect.objectContaining({ hour: [{ start: 5, end: 5, step: 1 }] })]);
  });

  it('records as failed a segment run whose workflow ended without recording it, once past its start, and its segment keeps its snapshot', async () => {
    const admin = (path: string, init: { method?: string; body?: unknown } = {}) => call(`${platform.api.url}${path}`, { key: platform.api.adminKey, ...init });
    const own = await newSource(platform.api);
    await own.send([{ id: 'abandon-1', type: 'abandon_check', identities: { cookie_id: 'abandon-1' } }]);
    await own.folded(1);
    const created = (await admin('/v1/segments', { body: { name: 'Abandoned runs', rule: { event: 'abandon_check' } } })).body;
    const run = (runId: string) => admin(`/v1/segments/${created.id}/runs/${runId}`).then((response) => response.body);
    await waitFor('the first run to complete', async () => (await run(created.lastRun.runId)).state === 'completed', 30_000, 200);

    // A run recorded as the API records it, whose workflow never starts (as if terminated from the Temporal UI).
    const segments = new SegmentStore(platform.store);
    const runs = new SegmentRunStore(platform.store);
    // Evaluated a second on: the first run's second holds the run of these versions already.
    const abandoned = await prepareRunOf(segments, runs, [(await segments.get(created.id))!], new Date(Date.now() + 1000), new Date());
    expect((await admin(`/v1/segments/${created.id}`)).body.lastRun).toMatchObject({ runId: abandoned._id, state: 'running' });

    // Younger than the grace its workflow has to start: left running.
    expect((await retain(3_600_000)).segmentRunsAbandoned).toBe(0);
    expect((await run(abandoned._id)).state).toBe('running');

    expect((await retain(3_600_000, undefined, 0)).segmentRunsAbandoned).toBe(1);
    expect(await run(abandoned._id)).toMatchObject({ state: 'failed', error: 'abandoned: its workflow ended before it finished' });
    expect((await admin(`/v1/segments/${created.id}`)).body.lastRun).toMatchObject({ runId: abandoned._id, state: 'failed' });
    expect((await admin(`/v1/segments/${created.id}/members`)).body.members).toHaveLength(1);
    // A run the API started, its workflow alive or done, is left to it.
    const live = (await admin(`/v1/segments/${created.id}/runs`, { method: 'POST' })).body.runId as string;
    expect((await retain(3_600_000, undefined, 0)).segmentRunsAbandoned).toBe(0);
    await waitFor('the live run to complete', async () => (await run(live)).state === 'completed', 30_000, 200);
  });

  it('starts one run for the segments whose definition no run evaluated (the API stopped before starting it, or the run never began), and leaves one whose run began and failed', async () => {
    const admin = (path: string, init: { method?: string; body?: unknown } = {}) => call(`${platform.api.url}${path}`, { key: platform.api.adminKey, ...init });
    const own = await newSource(platform.api);
    await own.send([
      { id: 'owed-1', type: 'owed_check', identities: { cookie_id: 'owed-1' } },
      { id: 'owed-2', type: 'owed_change', identities: { cookie_id: 'owed-2' } },
    ]);
    await own.folded(2);
    const segments = new SegmentStore(platform.store);
    const runs = new SegmentRunStore(platform.store);
    const gates = new StartGates(platform.store);
    const saved = async (name: string): Promise<string> => {
      const at = new Date();
      const doc = { _id: newSegmentId(), name, description: null, taxonomyPath: null, ruleJson: JSON.stringify({ event: 'owed_check' }), schedule: null, version: 1, createdAt: at, updatedAt: at, current: null, lastRun: null };
      expect(await segments.create(doc)).toBe(true);
      return doc._id;
    };
    /** A run of the segment recorded, its gate settled as `outcome`, then failed as its start's failure or its workflow's end records it. */
    const failedRun = async (segmentId: string, outcome: 'begun' | 'abandoned'): Promise<string> => {
      const run = await prepareRunOf(segments, runs, [(await segments.get(segmentId))!], new Date(), new Date());
      expect(outcome === 'begun' ? await gates.begin(startGateKey.segmentRun(run._id)) : await gates.abandon(startGateKey.segmentRun(run._id))).toBe(true);
      await failRun(segments, runs, run._id, 'failed in the test', new Date());
      return run._id;
    };
    // Saved, and the API stopped before starting its run.
    const neverRun = await saved('Saved, never run');
    // Its rule changed and saved, and the API stopped before starting the new version's run.
    const changed = (await admin('/v1/segments', { body: { name: 'Changed, never rerun', rule: { event: 'owed_check' } } })).body.id as string;
    await waitFor('its first run to complete', async () => (await admin(`/v1/segments/${changed}`)).body.currentRun?.version === 1, 30_000, 200);
    expect(await segments.edit(changed, 1, { ruleJson: JSON.stringify({ event: 'owed_change' }), version: 2, updatedAt: new Date() })).toBe(true);
    // Its run's start was given up before the workflow began.
    const neverBegan = await saved('Run never began');
    await failedRun(neverBegan, 'abandoned');
    // Its run began and failed: it waits for its next edit or scheduled run.
    const beganAndFailed = await saved('Run began and failed');
    const failedRunId = await failedRun(beganAndFailed, 'begun');
    // Its run of version 1 began and failed, then its rule changed and the API stopped before starting version 2's run.
    const changedAfterFailure = await saved('Failed, then changed');
    await failedRun(changedAfterFailure, 'begun');
    expect(await segments.edit(changedAfterFailure, 1, { ruleJson: JSON.stringify({ event: 'owed_change' }), version: 2, updatedAt: new Date() })).toBe(true);

    // Saved less than the grace ago: the API may still be starting their runs.
    expect((await retain(3_600_000)).owedSegmentsRun).toBe(0);
    // Four are owed: a run's worth (three) now, the rest at the next retention run — whichever group
    // holds the segment run least recently goes first, and the segments' ids (random) decide the groups.
    const started = [(await retain(3_600_000, undefined, 0)).owedSegmentsRun, (await retain(3_600_000, undefined, 0)).owedSegmentsRun];
    expect(started.sort()).toEqual([1, 3]);
    const evaluated = (segmentId: string, version: number, size: number) =>
      waitFor(`${segmentId} evaluated`, async () => {
        const view = (await admin(`/v1/segments/${segmentId}`)).body;
        return view.currentRun?.version === version && view.currentRun.size === size;
      }, 60_000, 200);
    await evaluated(neverRun, 1, 1);
    await evaluated(changed, 2, 1);
    await evaluated(neverBegan, 1, 1);
    await evaluated(changedAfterFailure, 2, 1);
    expect((await admin(`/v1/segments/${changed}/members`)).body.members).toEqual([(await own.lookup('cookie_id', 'owed-2')).body.id]);
    expect((await admin(`/v1/segments/${beganAndFailed}`)).body).toMatchObject({ currentRun: null, lastRun: { runId: failedRunId, state: 'failed' } });
    // Nothing is owed any more.
    expect((await retain(3_600_000, undefined, 0)).owedSegmentsRun).toBe(0);
  });

  it('evaluates again a segment whose snapshot has grown older than its age (no schedule, or a monthly one), so the real-time changes it holds fold into history', async () => {
    const admin = (path: string, init: { method?: string; body?: unknown } = {}) => call(`${platform.api.url}${path}`, { key: platform.api.adminKey, ...init });
    const created = (await admin('/v1/segments', { body: { name: 'Never scheduled', rule: { event: 'owed_check' } } })).body.id as string;
    const monthly = (await admin('/v1/segments', { body: { name: 'Monthly', rule: { event: 'owed_check' }, schedule: { cron: '0 3 1 * *' } } })).body.id as string;
    const firstRun = async (id: string) => waitFor('its first run', async () => (await admin(`/v1/segments/${id}`)).body.currentRun?.runId as string | undefined, 30_000, 200);
    const firstRuns = new Map([[created, await firstRun(created)], [monthly, await firstRun(monthly)]]);
    // A day old by default: nothing yet.
    expect((await retain(3_600_000, undefined, 0)).owedSegmentsRun).toBe(0);
    // Every such segment is owed now, a run's worth (three) at a time, the oldest snapshots first.
    await waitFor('newer snapshots', async () => {
      const views = await Promise.all([created, monthly].map(async (id) => [id, (await admin(`/v1/segments/${id}`)).body.currentRun] as const));
      if (views.every(([id, current]) => current && current.runId !== firstRuns.get(id) && current.size === 1)) return true;
      expect((await retain(3_600_000, undefined, 0, { snapshotMaxAgeMs: 0 })).owedSegmentsRun).toBeLessThanOrEqual(3);
      return false;
    }, 120_000, 200);
  });

  it('removes the records of feed pulls and uploads ended past their age, and keeps running and recent ones, a feed\'s last pull with its upload and a source\'s newest ended upload', async () => {
    const feeds = new FeedStore(platform.store);
    const uploads = new UploadStore(platform.store);
    const day = 86_400_000;
    const ago = (days: number) => new Date(Date.now() - days * day);
    const pull = async (id: string, state: FeedPullDoc['state'], startedDaysAgo: number, finishedDaysAgo: number | null, uploadId: string | null) => {
      expect(await feeds.createPull({ ...newFeedPull(id, 'src_feed_aged', 'schedule', { from: null, to: null }, ago(startedDaysAgo)), state, uploadId, uploads: uploadId ? [uploadId] : [], finishedAt: finishedDaysAgo === null ? null : ago(finishedDaysAgo) })).toBe(true);
    };
    const upload = (id: string, sourceId: string, state: UploadDoc['state'], startedDaysAgo: number, finishedDaysAgo: number | null) =>
      uploads.create({ ...newUpload(id, sourceId, ago(startedDaysAgo)), state, finishedAt: finishedDaysAgo === null ? null : ago(finishedDaysAgo) });
    await pull('pul_aged_old', 'completed', 120, 120, 'upl_aged_pulled_old');
    await pull('pul_aged_failed', 'failed', 110, 110, null);
    await pull('pul_aged_shown', 'completed', 100, 100, 'upl_aged_pulled_shown');
    await pull('pul_aged_recent', 'completed', 2, 2, 'upl_aged_pulled_recent');
    await pull('pul_aged_running', 'running', 100, null, null);
    await feeds.saveState({ _id: 'src_feed_aged', cursor: null, etag: null, lastModified: null, files: [], lastPullId: 'pul_aged_shown', lastSuccessAt: ago(100) });
    await upload('upl_aged_pulled_old', 'src_feed_aged', 'completed', 120, 120);
    await upload('upl_aged_pulled_shown', 'src_feed_aged', 'completed', 100, 100);
    await upload('upl_aged_pulled_recent', 'src_feed_aged', 'completed', 2, 2);
    await uploads.create({ ...newUpload('upl_aged_crm_old', 'src_crm_aged', ago(200)), state: 'failed', finishedAt: ago(200), keyId: 'uplkey_aged' });
    const keys = new UploadKeys(platform.store);
    expect(await keys.claim('uplkey_aged', 'upl_aged_crm_old')).toBe('upl_aged_crm_old');
    await upload('upl_aged_crm_receiving', 'src_crm_aged', 'receiving', 0, null); // newer, but not ended
    await upload('upl_aged_crm_newest', 'src_crm_aged', 'completed', 140, 140);

    const report = await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ sourceHistoryTtlMs: 90 * day }] });
    expect(report).toMatchObject({ feedPullRecordsRemoved: 2, uploadRecordsRemoved: 2 });
    expect((await feeds.listPulls('src_feed_aged', 10)).map((doc) => doc._id).sort()).toEqual(['pul_aged_recent', 'pul_aged_running', 'pul_aged_shown']);
    expect((await uploads.listForSource('src_feed_aged', 10)).map((doc) => doc._id).sort()).toEqual(['upl_aged_pulled_recent', 'upl_aged_pulled_shown']);
    expect((await uploads.listForSource('src_crm_aged', 10)).map((doc) => doc._id).sort()).toEqual(['upl_aged_crm_newest', 'upl_aged_crm_receiving']);
    // The Idempotency-Key of a removed upload goes with it: free for a new upload.
    expect(await keys.claim('uplkey_aged', 'upl_aged_crm_next')).toBe('upl_aged_crm_next');
    // The default keeps 90 days: a run with it removes nothing more.
    expect(await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{}] })).toMatchObject({ feedPullRecordsRemoved: 0, uploadRecordsRemoved: 0 });
  });

  it('removes the records of exports ended past their age with their receipts, and keeps running, recent and shown ones', async () => {
    const destinations = new DestinationStore(platform.store);
    const day = 86_400_000;
    const ago = (days: number) => new Date(Date.now() - days * day);
    const record = (id: string, state: ExportDoc['state'], finishedAt: Date | null, batches: number): ExportDoc => ({
      _id: id,
      destinationId: 'dst_retained',
      state,
      full: false,
      trigger: 'schedule',
      plan: { id: `${id}:plan`, segments: [], batches, plannedAt: ago(200), resent: false, tookMs: 1 },
      batchesConfirmed: batches,
      rejected: 0,
      startedAt: ago(200),
      finishedAt,
      error: null,
    });
    const exports = [record('exp_old', 'completed', ago(100), 3), record('exp_failed', 'failed', ago(100), 2), record('exp_recent', 'completed', ago(1), 3), record('exp_running', 'running', null, 3), record('exp_shown', 'completed', ago(100), 1)];
    for (const doc of exports) {
      await destinations.openExport(doc);
      for (let n = 0; n < (doc.plan?.batches ?? 0); n++) await destinations.writeReceipt({ _id: batchId(doc._id, n), exportId: doc._id, destinationId: doc.destinationId, state: 'applied', attempts: 1, rejected: 0, status: 200, error: null, at: ago(100) });
    }
    // A failed export's batches stay until it is finished with; its record's expiry takes them.
    await destinations.writeBatch('exp_failed:plan', 0, { segmentId: 'seg', adds: ['a'], removes: [] });
    await destinations.saveLastExport('dst_retained', { exportId: 'exp_shown', state: 'completed', startedAt: ago(200), finishedAt: ago(100) });

    const report = await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ exportHistoryTtlMs: 90 * day }] });
    expect(report).toMatchObject({ exportRecordsRemoved: 2, exportReceiptsRemoved: 5 });
    for (const id of ['exp_old', 'exp_failed']) {
      expect(await destinations.getExport(id)).toBeNull();
      expect((await destinations.receiptsOf(id, 3)).size).toBe(0);
    }
    expect(await destinations.readBatch('exp_failed:plan', 0)).toBeNull();
    for (const id of ['exp_recent', 'exp_running', 'exp_shown']) {
      expect(await destinations.getExport(id)).not.toBeNull();
      expect((await destinations.receiptsOf(id, 3)).size).toBe(id === 'exp_shown' ? 1 : 3);
    }
    expect((await destinations.listExports('dst_retained', 10)).map((doc) => doc._id).sort()).toEqual(['exp_recent', 'exp_running', 'exp_shown']);
  });

  it('sweeps what writers stopped half way left: chunks of ended uploads, batches of unsaved plans, and fails uploads whose reader stopped', async () => {
    const uploads = new UploadStore(platform.store);
    const destinations = new DestinationStore(platform.store);
    const ago = (minutes: number) => new Date(Date.now() - minutes * 60_000);
    const upload = async (id: string, set: Partial<UploadDoc>, chunks: number) => {
      if (set.state !== undefined || set.startedAt !== undefined) await uploads.create({ ...newUpload(id, 'src_swept', ago(3 * 24 * 60)), ...set });
      for (let n = 0; n < chunks; n++) await uploads.stageChunk(id, n, [{ id: `${id}-${n}` } as never]);
    };
    await upload('upl_failed_old', { state: 'failed', finishedAt: ago(120) }, 3); // an import that could not start
    await upload('upl_failed_recent', { state: 'failed', finishedAt: ago(5) }, 2); // its writer may still be stopping
    await upload('upl_importing', { state: 'importing' }, 2);
    await upload('upl_gone', {}, 2); // its record went (its chunks did not)
    await upload('upl_stalled', { state: 'receiving' }, 2); // its API process was killed mid-file, days ago
    await upload('upl_slow', { state: 'receiving' }, 1);
    expect(await uploads.updateReceiving('upl_slow', { rowsReceived: 10 })).toBe(true); // still sending

    const record = (id: string, state: ExportDoc['state'], finishedAt: Date | null): ExportDoc => ({
      _id: id, destinationId: 'dst_swept', state, full: false, trigger: 'schedule', plan: null, batchesConfirmed: 0, rejected: 0, startedAt: ago(200), finishedAt, error: null,
    });
    for (const doc of [record('exp_swept_done', 'completed', ago(120)), record('exp_swept_fresh', 'failed', ago(5)), record('exp_swept_running', 'running', null)]) await destinations.openExport(doc);
    // Plan attempts that died before saving their plan: nothing records their plan ids.
    const planned = { exp_swept_done: 3, exp_swept_fresh: 1, exp_swept_running: 2, exp_swept_gone: 2 };
    for (const [exportId, count] of Object.entries(planned)) {
      for (let n = 0; n < count; n++) await destinations.writeBatch(`${exportId}:dead`, n, { segmentId: 'seg', adds: [`id-${n}`], removes: [] });
    }
    const claims = platform.store.db.collection<{ _id: string; at: Date }>(VERSION_CLAIMS);
    await claims.insertOne({ _id: 'docs/swept@1', at: ago(120) });

    const report = await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{}] });
    expect(report).toMatchObject({ stalledUploadsFailed: 1, uploadChunksRemoved: 5, exportBatchesRemoved: 5 });
    expect(report.versionClaimsRemoved).toBeGreaterThanOrEqual(1);
    expect(await claims.findOne({ _id: 'docs/swept@1' })).toBeNull();

    const chunksLeft = async (id: string, count: number) => (await Promise.all(Array.from({ length: count }, (_, n) => uploads.readChunk(id, n)))).filter(Boolean).length;
    expect(await chunksLeft('upl_failed_old', 3)).toBe(0);
    expect(await chunksLeft('upl_gone', 2)).toBe(0);
    expect(await chunksLeft('upl_failed_recent', 2)).toBe(2);
    expect(await chunksLeft('upl_importing', 2)).toBe(2);
    expect(await uploads.get('upl_stalled')).toMatchObject({ state: 'failed', error: expect.stringContaining('abandoned') });
    expect(await chunksLeft('upl_stalled', 2)).toBe(2); // failed just now: its chunks go an hour later
    expect(await uploads.get('upl_slow')).toMatchObject({ state: 'receiving' });

    const batchesLeft = async (exportId: string) => (await Promise.all(Array.from({ length: 3 }, (_, n) => new DestinationStore(platform.store).readBatch(`${exportId}:dead`, n)))).filter(Boolean).length;
    expect(await batchesLeft('exp_swept_done')).toBe(0);
    expect(await batchesLeft('exp_swept_gone')).toBe(0);
    expect(await batchesLeft('exp_swept_fresh')).toBe(1);
    expect(await batchesLeft('exp_swept_running')).toBe(2);
  });

  it('removes cookie-sync match keys whose every entry is past the TTL, at most once a day, and keeps those with a live entry', async () => {
    const day = 86_400_000;
    const matches = new MatchTableStore(platform.store, matchLimits(baseConfig));
    const old = new Date(Date.now() - (baseConfig.DMP_MATCH_TTL_DAYS + 10) * day);
    await matches.record('ttd', 'gone-user', 'ck-gone', old);
    await matches.record('ttd', 'kept-user', 'ck-kept');
    await matches.record('ttd', 'half-user', 'ck-half-old', old);
    await matches.record('ttd', 'half-user', 'ck-half-new');
    const keys = async () => ({
      byPartnerId: (await matches.byPartnerId.find({}).toArray()).map((doc) => doc._id).sort(),
      byCookie: (await matches.byCookie.find({}).toArray()).map((doc) => doc._id).sort(),
    });
    const sweep = (more: Partial<RetentionInput>) => platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [more] });
    // The gone pair's two keys, and the old cookie's key beside the partner id that has a newer one.
    expect((await sweep({ matchSweepEveryMs: 0 })).matchKeysRemoved).toBe(3);
    expect(await keys()).toEqual({ byPartnerId: ['ttd:half-user', 'ttd:kept-user'], byCookie: ['ck-half-new:ttd', 'ck-kept:ttd'] });
    expect(await matches.cookieIdsOf('ttd', 'half-user')).toEqual(['ck-half-new']);
    // Within a day of the sweep, the next run reads none of them.
    await matches.record('ttd', 'gone-again', 'ck-gone-again', old);
    expect((await sweep({})).matchKeysRemoved).toBe(0);
    expect((await keys()).byPartnerId).toContain('ttd:gone-again');
    // A pass stopped at its bounds (on each side) says so, and the next, from the start, removes the rest.
    await matches.record('ttd', 'gone-third', 'ck-gone-third', old);
    expect(await matches.sweepExpired({ limit: 10, ms: 0 })).toEqual({ keys: 0, complete: false });
    expect(await matches.sweepExpired({ limit: 1, ms: 3_600_000 })).toEqual({ keys: 2, complete: false });
    expect(await matches.sweepExpired({ limit: 10, ms: 3_600_000 })).toEqual({ keys: 2, complete: true });
    expect(await keys()).toEqual({ byPartnerId: ['ttd:half-user', 'ttd:kept-user'], byCookie: ['ck-half-new:ttd', 'ck-kept:ttd'] });
  });

  it('keeps an event id a duplicate for at least the dedupe window, and drops whole generations past it', async () => {
    const window = 3_600_000;
    // A store of its own: a generation written under another window counts as expired there.
    const store = await testStore('eventids');
    const ids = new EventIdGenerations(store.db, 1);
    const start = Math.ceil(Date.UTC(2030, 0, 1) / window) * window;
    const doc = { _id: 'src:dedupe-1', chunk: 0 };
    expect([...(await ids.claim([doc], start))]).toEqual([]);
    expect([...(await ids.claim([doc], start + window / 2))]).toEqual([0]);
    expect([...(await ids.claim([doc], start + 1.5 * window))]).toEqual([0]);
    expect([...(await ids.claim([doc], start + 2.5 * window))]).toEqual([]); // past twice the window: new again
    expect(await ids.dropExpired(start + 2.5 * window)).toEqual({ generations: 2, ids: 2 });
    expect((await ids.owner(doc._id, start + 2.5 * window))?.chunk).toBe(0);
    await store.db.dropDatabase();
    await store.close();
  });

  it('runs on a schedule of its own per store, created once and never twice at a time', async () => {
    const config = { DMP_TASK_QUEUE: platform.taskQueue, DMP_RETENTION_EVERY_MINUTES: 30 };
    await ensureRetentionSchedule(platform.temporal, platform.store.db.databaseName, config);
    await ensureRetentionSchedule(platform.temporal, platform.store.db.databaseName, config);
    const handle = platform.temporal.schedule.getHandle(retentionScheduleId(platform.store.db.databaseName));
    try {
      const described = await handle.describe();
      expect(described.spec.intervals?.[0].every).toBe(30 * 60_000);
      expect(described.policies.overlap).toBe(ScheduleOverlapPolicy.SKIP);
      expect(described.action).toMatchObject({ type: 'startWorkflow', workflowType: 'storeRetention', args: [{}] });
    } finally {
      await handle.delete();
    }
  });
});
