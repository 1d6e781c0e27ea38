import { Client, ServiceError, type WorkflowClientInterceptor, type WorkflowStartInput } from '@temporalio/client';
import { crmImportWorkflowId, destinationExportWorkflowId, destinationScheduleId, feedPullWorkflowId, feedScheduleId, lookalikeScheduleId, lookalikeWorkflowId, segmentRunWorkflowId } from '../../domain/workflowIds';
import { LOOKALIKE_COLLECTIONS, LookalikeRunStore, type LookalikeRunDoc } from '../../store/lookalikeRuns';
import { newScheduleSyncMark } from '../../store/scheduleSyncs';
import { storeRetention } from '../../workflows/storeRetention';
import { PRIVACY_COLLECTIONS, type SubjectDoc } from '../../store/privacy';
import { START_GATES, StartGates, startGateKey } from '../../store/startGates';
import { UploadStore } from '../../store/uploads';
import { FeedServer } from '../support/feeds';
import { FeedStore, newFeedPull, newPullId } from '../../store/feeds';
import { call } from '../support/http';
import { PartnerServer } from '../support/partners';
import { sourceLogEventIds } from '../support/sourceLog';
import { baseConfig, startApi, startPlatform, startWorker, uniqueName, waitFor, type RunningApi, type RunningPlatform, type RunningWorker } from '../support/services';
import { newSource } from '../support/sourceClient';

const PEOPLE = 6;
const cookies = Array.from({ length: PEOPLE }, (_, i) => `ck-${i}`).sort();
const MAPPING = { identities: { crm_id: 'customer_id' }, traits: { Tier: 'tier' } };
const CSV = ['customer_id,Tier', ...Array.from({ length: 40 }, (_, i) => `c-${i},gold`)].join('\n') + '\n';

/**
 * The start gate of an export's, an import's, a feed pull's or a lookalike's workflow start; the API's other starts
 * (and signals) go through untouched.
 */
function gateOf(input: WorkflowStartInput): string | null {
  const [args] = input.options.args as [Record<string, string>];
  if (input.workflowType === 'destinationExport') return startGateKey.export(args.exportId);
  if (input.workflowType === 'crmImport') return startGateKey.import(args.uploadId);
  if (input.workflowType === 'lookalike') return startGateKey.lookalike(args.runId);
  if (input.workflowType === 'feedPull') return startGateKey.feedPull(args.pullId);
  return null;
}

/** The platform's Temporal client with one workflow client interceptor: the API's view of Temporal in these tests. */
function clientWith(platform: RunningPlatform, interceptor: WorkflowClientInterceptor): Client {
  return new Client({ connection: platform.temporal.connection, namespace: baseConfig.TEMPORAL_NAMESPACE, interceptors: { workflow: [interceptor] } });
}

/**
 * A Temporal client whose gated starts reach the server but whose answers are lost:
 * once `meanwhile` is done the call fails as a dropped connection makes it fail.
 */
function losingStartAnswers(platform: RunningPlatform, meanwhile: (gate: string) => Promise<unknown>): Client {
  return clientWith(platform, {
    async startWithDetails(input, next) {
      const gate = gateOf(input);
      const started = await next(input);
      if (gate === null) return started;
      await meanwhile(gate);
      throw new ServiceError('Failed to start Workflow: the connection closed before the answer');
    },
  });
}

/** A Temporal client through which privacy requests' starts and unlinks' signals never arrive, as from an API that died before sending them. */
function droppingUngatedStarts(platform: RunningPlatform): Client {
  const lost = () => new ServiceError('the API stopped before it started the workflow');
  return clientWith(platform, {
    async startWithDetails(input, next) {
      if (input.workflowType === 'privacyRequest') throw lost();
      return next(input);
    },
    async signalWithStart(input, next) {
      if (input.workflowType === 'identityGraph') throw lost();
      return next(input);
    },
  });
}

/** The messages along an error's chain of causes. */
function failureMessages(error: unknown): string {
  const messages: string[] = [];
  for (let at = error as { message?: string; cause?: unknown } | undefined; at; at = at.cause as typeof at) messages.push(at.message ?? '');
  return messages.join(' / ');
}

describe('starts whose answer is lost: the work either runs and is accepted, or is failed and never runs', () => {
  let platform: RunningPlatform;
  let segmentId: string;
  let crmSourceId: string;
  const partners: PartnerServer[] = [];
  const feedServers: FeedServer[] = [];
  const apis: RunningApi[] = [];
  const workers: RunningWorker[] = [];
  const admin = (api: RunningApi, path: string, options: Parameters<typeof call>[1] = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const gates = () => platform.store.db.collection<{ _id: string; outcome: string }>(START_GATES);

  /** A destination of the segment, to its own webhook partner. */
  async function newDestination(): Promise<{ id: string; partner: PartnerServer }> {
    const partner = await new PartnerServer({ kind: 'webhook', secret: 'webhook-secret-0123456789' }).start();
    partners.push(partner);
    const created = await admin(platform.api, '/v1/destinations', {
      body: { name: 'partner', segments: [segmentId], connector: 'webhook', idType: 'cookie_id', config: { url: `${partner.url}/dmp`, secret: 'webhook-secret-0123456789' } },
    });
    expect(created.status).toBe(201);
    return { id: created.body.id, partner };
  }

  /** A feed source pulling `path` from `server`, on a schedule that does not fire during the test. */
  async function newFeed(server: FeedServer, path: string): Promise<string> {
    const created = await admin(platform.api, '/v1/sources', {
      body: { name: 'broker', kind: 'feed', party: 'third', consent: { mode: 'not_required' }, feed: { url: `${server.url}${path}`, schedule: { cron: '0 0 1 1 *' }, mapping: MAPPING } },
    });
    expect(created.status).toBe(201);
    return created.body.id;
  }

  async function losingApi(meanwhile: (gate: string) => Promise<unknown>, taskQueue = platform.taskQueue): Promise<RunningApi> {
    const api = await startApi({ store: platform.store, temporal: losingStartAnswers(platform, meanwhile), taskQueue, config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } });
    apis.push(api);
    return api;
  }

  /** The view at `path` once its state is no longer `under way`. */
  const ended = (path: string, underWay: string) =>
    waitFor(
      `${path} to end`,
      async () => {
        const view = (await admin(platform.api, path)).body;
        return view.state === underWay ? null : view;
      },
      120_000,
    );

  /** Waits until the workflow behind `gate` has begun its work (after 30 s the answer is lost anyway). */
  const untilBegun = (gate: string) => waitFor(`${gate} to begin`, async () => (await gates().findOne({ _id: gate }))?.outcome === 'begun', 30_000).catch((error) => console.warn(String(error)));

  beforeAll(async () => {
    platform = await startPlatform('lost-starts', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] });
    const shop = await newSource(platform.api, 'shop');
    await shop.send(Array.from({ length: PEOPLE }, (_, i) => ({ id: `e${i}`, type: 'visit', identities: { cookie_id: `ck-${i}` }, traits: { plan: 'gold' } })));
    await shop.folded(PEOPLE);
    segmentId = (await admin(platform.api, '/v1/segments', { body: { name: 'Gold', rule: { trait: 'plan', op: 'eq', value: 'gold' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(platform.api, `/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed');
    const crm = await admin(platform.api, '/v1/sources', { body: { name: 'CRM', kind: 'crm', party: 'first', mapping: MAPPING, consent: { mode: 'not_required' } } });
    expect(crm.status).toBe(201);
    crmSourceId = crm.body.id;
  }, 120_000);
  afterAll(async () => {
    for (const api of apis) await api.close();
    for (const worker of workers) await worker.stop();
    for (const partner of partners) await partner.stop();
    for (const server of feedServers) await server.stop();
    await platform.stop();
  });

  it('accepts (202) an export whose workflow began before the start call failed, and delivers it', async () => {
    const { id, partner } = await newDestination();
    const api = await losingApi(untilBegun);
    const started = await admin(api, `/v1/destinations/${id}/exports`, { body: {} });
    expect(started.status).toBe(202);
    const done = await ended(`/v1/destinations/${id}/exports/${started.body.exportId}`, 'running');
    expect(done).toMatchObject({ state: 'completed', adds: PEOPLE, batchesConfirmed: 1, error: null });
    expect(partner.audience(segmentId)).toEqual(cookies);
  }, 180_000);

  it('accepts (202) an upload whose import began before the start call failed, and imports every row once', async () => {
    const api = await losingApi(untilBegun);
    const uploaded = await admin(api, `/v1/sources/${crmSourceId}/uploads`, { method: 'POST', rawBody: CSV, contentType: 'text/csv' });
    expect(uploaded.status).toBe(202);
    const done = await ended(`/v1/sources/${crmSourceId}/uploads/${uploaded.body.uploadId}`, 'importing');
    expect(done).toMatchObject({ state: 'completed', rowsReceived: 40, rowsImported: 40, rowsDuplicate: 0 });
    expect(new Set(await sourceLogEventIds(platform.store, crmSourceId)).size).toBe(40);
  }, 180_000);

  it('records as failed (503) work whose start it gave up before the workflow began, and the workflow, once it runs, does none of it', async () => {
    // Its workflows wait on a task queue no worker polls yet: the API's failed start settles first.
    const later = uniqueName('lost-starts-later');
    const api = await losingApi(async () => undefined, later);
    const { id, partner } = await newDestination();
    const logged = (await sourceLogEventIds(platform.store, crmSourceId)).length;

    const exported = await admin(api, `/v1/destinations/${id}/exports`, { body: {} });
    expect(exported.status).toBe(503);
    const [exportRecord] = (await admin(platform.api, `/v1/destinations/${id}/exports`)).body.exports;
    expect(exportRecord).toMatchObject({ state: 'failed', error: 'its workflow could not be started' });

    const uploaded = await admin(api, `/v1/sources/${crmSourceId}/uploads`, { method: 'POST', rawBody: CSV.replace(/c-/g, 'd-'), contentType: 'text/csv' });
    expect(uploaded.status).toBe(503);
    const [uploadRecord] = (await admin(platform.api, `/v1/sources/${crmSourceId}/uploads`)).body.uploads;
    expect(uploadRecord).toMatchObject({ state: 'failed', error: 'its import workflow could not be started' });

    const keyed = { body: {}, headers: { 'idempotency-key': 'lookalike-lost-1' } };
    const lookalike = await admin(api, `/v1/segments/${segmentId}/lookalike`, keyed);
    expect(lookalike.status).toBe(503);
    const run = await platform.store.db.collection<LookalikeRunDoc>(LOOKALIKE_COLLECTIONS.runs).findOne({ seedId: segmentId });
    expect(run).toMatchObject({ state: 'failed', error: 'its workflow could not be started' });
    // Sent again under its key, it is not answered as started: that run never runs.
    const again = await admin(platform.api, `/v1/segments/${segmentId}/lookalike`, keyed);
    expect(again.status).toBe(409);
    expect(again.body.errors).toEqual([expect.objectContaining({ path: 'headers.idempotency-key', message: expect.stringContaining('new key') })]);
    const segmentsBefore = (await admin(platform.api, '/v1/segments')).body.segments.length;

    workers.push(await startWorker({ store: platform.store, temporal: platform.temporal, taskQueue: later, config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } }));
    const databaseName = platform.store.db.databaseName;
    // The lookalike's workflow ends without training: its run is no longer running.
    await platform.temporal.workflow.getHandle(lookalikeWorkflowId(databaseName, (run as LookalikeRunDoc)._id)).result();
    expect((await admin(platform.api, `/v1/segments/${segmentId}/lookalike/${(run as LookalikeRunDoc)._id}`)).body).toMatchObject({ state: 'failed', segmentId: null });
    expect((await admin(platform.api, '/v1/segments')).body.segments.length).toBe(segmentsBefore);
    for (const workflowId of [destinationExportWorkflowId(databaseName, exportRecord.exportId), crmImportWorkflowId(databaseName, uploadRecord.uploadId)]) {
      const outcome = await platform.temporal.workflow.getHandle(workflowId).result().then(
        () => 'completed',
        (error: unknown) => failureMessages(error),
      );
      // Stopped by its gate, or (an import) by its record, failed before the import's first step.
      expect({ workflowId, outcome }).toEqual({ workflowId, outcome: expect.stringMatching(/the API gave this start up|is failed, not importing/) });
    }
    expect(partner.requests).toBe(0);
    expect((await admin(platform.api, `/v1/destinations/${id}/exports/${exportRecord.exportId}`)).body).toMatchObject({ state: 'failed', batches: 0 });
    expect((await admin(platform.api, `/v1/sources/${crmSourceId}/uploads/${uploadRecord.uploadId}`)).body).toMatchObject({ state: 'failed', rowsImported: 0 });
    expect((await sourceLogEventIds(platform.store, crmSourceId)).length).toBe(logged);
  }, 180_000);
  it('starts at the next retention run a privacy request and an unlink the API recorded but never started (it stopped in between)', async () => {
    const api = await startApi({ store: platform.store, temporal: droppingUngatedStarts(platform), taskQueue: platform.taskQueue, config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } });
    apis.push(api);
    const web = await newSource(platform.api, 'web');
    await web.send([
      { id: 'j1', type: 'visit', identities: { cookie_id: 'ck-joined', crm_id: 'crm-joined' } },
      { id: 'j2', type: 'visit', identities: { cookie_id: 'ck-joined' } },
      { id: 'j3', type: 'purchase', identities: { crm_id: 'crm-joined' } },
    ]);
    await web.folded(3);
    const ownerOf = async (type: string, value: string) => (await admin(platform.api, `/v1/profiles/lookup?type=${type}&value=${value}`)).body.id as string;
    expect(await ownerOf('cookie_id', 'ck-joined')).toBe(await ownerOf('crm_id', 'crm-joined'));
    const access = await admin(api, '/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'ck-0' } } });
    const unlink = await admin(api, '/v1/identity/unlink', { body: { identities: [{ type: 'cookie_id', value: 'ck-joined' }, { type: 'crm_id', value: 'crm-joined' }] } });
    expect([access.status, unlink.status]).toEqual([503, 503]);
    const [request] = (await admin(platform.api, '/v1/privacy/requests')).body.requests;
    expect(request).toMatchObject({ type: 'access', state: 'received' });

    const report = await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] });
    expect(report).toMatchObject({ privacyRequestsResumed: 1, unlinksResumed: 1 });
    expect(await ended(`/v1/privacy/requests/${request.id}`, 'received').then(() => ended(`/v1/privacy/requests/${request.id}`, 'running'))).toMatchObject({ state: 'completed', result: { found: true } });
    await waitFor('the unlink to split the profile', async () => (await ownerOf('cookie_id', 'ck-joined')) !== (await ownerOf('crm_id', 'crm-joined')), 120_000);
    // A run that finds them started starts nothing.
    expect(await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] })).toMatchObject({ privacyRequestsResumed: 0, unlinksResumed: 0 });
  }, 180_000);

  it('fails at the next retention run an export, an import, a feed pull and a lookalike the API recorded and never started (it stopped in between), and none of it runs', async () => {
    // The API's gated starts hang until the retention run is over, as an API process that stopped
    // between recording the work and starting it; then they fail, as its next attempt would.
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const api = await startApi({
      store: platform.store,
      temporal: clientWith(platform, {
        async startWithDetails(input, next) {
          if (gateOf(input) === null) return next(input);
          await released;
          throw new ServiceError('the API stopped before it started the workflow');
        },
      }),
      taskQueue: platform.taskQueue,
      config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] },
    });
    apis.push(api);
    const { id, partner } = await newDestination();
    const feedServer = await new FeedServer().start();
    feedServers.push(feedServer);
    feedServer.publish('/rows.csv', CSV);
    const feedId = await newFeed(feedServer, '/rows.csv');
    const logged = (await sourceLogEventIds(platform.store, crmSourceId)).length;
    const calls = [
      admin(api, `/v1/destinations/${id}/exports`, { body: {} }),
      admin(api, `/v1/sources/${crmSourceId}/uploads`, { method: 'POST', rawBody: CSV.replace(/c-/g, 'f-'), contentType: 'text/csv' }),
      admin(api, `/v1/sources/${feedId}/pulls`, { method: 'POST' }),
      admin(api, `/v1/segments/${segmentId}/lookalike`, { body: { reach: 2 } }),
    ];
    const recorded = await waitFor('the four records', async () => {
      const [exportRecord] = (await admin(platform.api, `/v1/destinations/${id}/exports`)).body.exports;
      const upload = (await admin(platform.api, `/v1/sources/${crmSourceId}/uploads`)).body.uploads.find((view: { state: string }) => view.state === 'importing');
      const [pull] = (await admin(platform.api, `/v1/sources/${feedId}/pulls`)).body.pulls;
      const run = await platform.store.db.collection<LookalikeRunDoc>(LOOKALIKE_COLLECTIONS.runs).findOne({ seedId: segmentId, reach: 2 });
      return exportRecord && upload && pull && run && { exportId: exportRecord.exportId as string, uploadId: upload.uploadId as string, pullId: pull.pullId as string, runId: run._id };
    });

    const report = await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] });
    expect(report).toMatchObject({ exportsAbandoned: 1, importsAbandoned: 1, feedPullsAbandoned: 1, lookalikesAbandoned: 1 });
    const never = 'abandoned: its workflow never started';
    expect((await admin(platform.api, `/v1/destinations/${id}/exports/${recorded.exportId}`)).body).toMatchObject({ state: 'failed', error: never });
    expect((await admin(platform.api, `/v1/sources/${crmSourceId}/uploads/${recorded.uploadId}`)).body).toMatchObject({ state: 'failed', error: never });
    expect((await admin(platform.api, `/v1/sources/${feedId}/pulls/${recorded.pullId}`)).body).toMatchObject({ state: 'failed', error: never });
    expect((await admin(platform.api, `/v1/segments/${segmentId}/lookalike/${recorded.runId}`)).body).toMatchObject({ state: 'failed', error: never });
    expect(await new UploadStore(platform.store).readChunk(recorded.uploadId, 0)).toBeNull();

    // The API's start, failing at last, finds the work given up and answers 503; nothing of it ever ran.
    release();
    expect((await Promise.all(calls)).map((response) => response.status)).toEqual([503, 503, 503, 503]);
    const databaseName = platform.store.db.databaseName;
    for (const workflowId of [
      destinationExportWorkflowId(databaseName, recorded.exportId),
      crmImportWorkflowId(databaseName, recorded.uploadId),
      feedPullWorkflowId(databaseName, feedId),
      lookalikeWorkflowId(databaseName, recorded.runId),
    ]) {
      await expect(platform.temporal.workflow.getHandle(workflowId).describe()).rejects.toThrow(/not found/i);
    }
    expect(partner.requests).toBe(0);
    expect(feedServer.requests).toEqual([]);
    expect((await sourceLogEventIds(platform.store, crmSourceId)).length).toBe(logged);
  }, 180_000);

  it('fails, from its workflow, work whose start the API gave up but never recorded as failed (it stopped in between), and does none of it', async () => {
    // Started for real on a task queue no worker polls yet; then each gate is given up as an API
    // would whose start call failed, before it could record the failure.
    const later = uniqueName('lost-starts-unrecorded');
    const api = await startApi({ store: platform.store, temporal: platform.temporal, taskQueue: later, config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } });
    apis.push(api);
    const { id, partner } = await newDestination();
    const logged = (await sourceLogEventIds(platform.store, crmSourceId)).length;
    const segmentsBefore = (await admin(platform.api, '/v1/segments')).body.segments.length;
    const exported = await admin(api, `/v1/destinations/${id}/exports`, { body: {} });
    const uploaded = await admin(api, `/v1/sources/${crmSourceId}/uploads`, { method: 'POST', rawBody: CSV.replace(/c-/g, 'e-'), contentType: 'text/csv' });
    const lookalike = await admin(api, `/v1/segments/${segmentId}/lookalike`, { body: { reach: 3 } });
    const run = await admin(api, `/v1/segments/${segmentId}/runs`, { method: 'POST' });
    expect([exported.status, uploaded.status, lookalike.status, run.status]).toEqual([202, 202, 202, 202]);
    const gates = new StartGates(platform.store);
    const keys = [startGateKey.export(exported.body.exportId), startGateKey.import(uploaded.body.uploadId), startGateKey.lookalike(lookalike.body.runId), startGateKey.segmentRun(run.body.runId)];
    for (const key of keys) expect({ key, abandoned: await gates.abandon(key) }).toEqual({ key, abandoned: true });

    workers.push(await startWorker({ store: platform.store, temporal: platform.temporal, taskQueue: later, config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } }));
    const databaseName = platform.store.db.databaseName;
    const workflowIds = [
      destinationExportWorkflowId(databaseName, exported.body.exportId),
      crmImportWorkflowId(databaseName, uploaded.body.uploadId),
      lookalikeWorkflowId(databaseName, lookalike.body.runId),
    ];
    for (const workflowId of workflowIds) {
      const outcome = await platform.temporal.workflow.getHandle(workflowId).result().then(
        () => 'completed',
        (error: unknown) => failureMessages(error),
      );
      expect({ workflowId, outcome }).toEqual({ workflowId, outcome: expect.stringContaining('the API gave this start up') });
    }
    // A segment run's workflow names its run only; the run's record says why.
    await expect(platform.temporal.workflow.getHandle(segmentRunWorkflowId(databaseName, run.body.runId)).result()).rejects.toThrow();
    expect(partner.requests).toBe(0);
    expect((await admin(platform.api, `/v1/destinations/${id}/exports/${exported.body.exportId}`)).body).toMatchObject({ state: 'failed', batches: 0, error: 'its workflow could not be started' });
    expect((await admin(platform.api, `/v1/sources/${crmSourceId}/uploads/${uploaded.body.uploadId}`)).body).toMatchObject({ state: 'failed', rowsImported: 0 });
    expect((await sourceLogEventIds(platform.store, crmSourceId)).length).toBe(logged);
    expect((await admin(platform.api, `/v1/segments/${segmentId}/lookalike/${lookalike.body.runId}`)).body).toMatchObject({ state: 'failed', segmentId: null });
    expect((await admin(platform.api, '/v1/segments')).body.segments.length).toBe(segmentsBefore);
    expect((await admin(platform.api, `/v1/segments/${segmentId}/runs/${run.body.runId}`)).body).toMatchObject({ state: 'failed', error: 'could not start: its workflow could not be started', evaluated: 0 });
  }, 180_000);
  it('fails at the next retention run a feed pull whose workflow was terminated, and one recorded while another ran, and leaves the pull its workflow is on alone', async () => {
    // A slow but steady partner: the pull's fetch is still reading when the retention runs come.
    const slow = await new FeedServer({ throttleBytes: 8, throttleMs: 1_000 }).start();
    feedServers.push(slow);
    slow.publish('/slow.csv', CSV);
    const feedId = await newFeed(slow, '/slow.csv');
    const started = await admin(platform.api, `/v1/sources/${feedId}/pulls`, { method: 'POST' });
    expect(started.status).toBe(202);
    const pullPath = `/v1/sources/${feedId}/pulls/${started.body.pullId}`;
    await waitFor('the partner to be asked for the file', async () => slow.requests.length > 0);
    // Recorded by an API that stopped before starting it, while the other pull of the feed ran.
    const feeds = new FeedStore(platform.store);
    const lost = newFeedPull(newPullId(), feedId, 'api', { from: null, to: null }, new Date());
    await feeds.createPull(lost);
    const retention = () => platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] });

    expect(await retention()).toMatchObject({ feedPullsAbandoned: 1 });
    expect((await admin(platform.api, `/v1/sources/${feedId}/pulls/${lost._id}`)).body).toMatchObject({ state: 'failed', error: 'abandoned: its workflow never started' });
    expect((await admin(platform.api, pullPath)).body).toMatchObject({ state: 'running' });

    await platform.temporal.workflow.getHandle(feedPullWorkflowId(platform.store.db.databaseName, feedId)).terminate('stopped from the Temporal UI');
    expect(await retention()).toMatchObject({ feedPullsAbandoned: 1 });
    expect((await admin(platform.api, pullPath)).body).toMatchObject({ state: 'failed', error: 'abandoned: its workflow ended before it finished' });
    expect(await retention()).toMatchObject({ feedPullsAbandoned: 0 });
  }, 180_000);

  it("makes at the next retention run the schedules of changes an API saved and stopped before making (a pause, a lookalike's re-training), undoes creates it never answered (a feed, a destination), and leaves a schedule paused from the Temporal UI alone", async () => {
    const databaseName = platform.store.db.databaseName;
    const hourly = async () => {
      const created = await admin(platform.api, '/v1/destinations', {
        body: { name: 'hourly', segments: [segmentId], connector: 'webhook', idType: 'cookie_id', schedule: { every: 'PT1H' }, config: { url: 'http://127.0.0.1:9/dmp', secret: 'webhook-secret-0123456789' } },
      });
      expect(created.status).toBe(201);
      return created.body.id as string;
    };
    const paused = await hourly();
    const operatorPaused = await hourly();
    const schedule = (scheduleId: string) => platform.temporal.schedule.getHandle(scheduleId).describe();
    await platform.temporal.schedule.getHandle(destinationScheduleId(databaseName, operatorPaused)).pause('paused by an operator');

    // Schedule updates hang until the retention run is over, as an API that stopped after saving the
    // change. Its workflows wait on a task queue no worker polls: the lookalike stays running.
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const api = await startApi({
      store: platform.store,
      temporal: new Client({ connection: platform.temporal.connection, namespace: baseConfig.TEMPORAL_NAMESPACE, interceptors: { schedule: [{ create: async (input, next) => (await released, next(input)) }] } }),
      taskQueue: uniqueName('lost-schedules'),
      config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] },
    });
    apis.push(api);
    const feedServer = await new FeedServer().start();
    feedServers.push(feedServer);
    const calls = [
      admin(api, `/v1/destinations/${paused}/pause`, { method: 'POST' }),
      admin(api, '/v1/sources', { body: { name: 'unscheduled', kind: 'feed', party: 'third', consent: { mode: 'not_required' }, feed: { url: `${feedServer.url}/rows.csv`, schedule: { every: 'PT1H' }, mapping: MAPPING } } }),
      admin(api, '/v1/destinations', {
        body: { name: 'unanswered', segments: [segmentId], connector: 'webhook', idType: 'cookie_id', schedule: { every: 'PT1H' }, config: { url: 'http://127.0.0.1:9/dmp', secret: 'webhook-secret-0123456789' } },
      }),
      admin(api, `/v1/segments/${segmentId}/lookalike`, { body: { reach: 4, retrain: { every: 'P1D' } } }),
    ];
    const { feedId, destinationId, runId } = await waitFor('the pause, the feed, the destination and the lookalike saved', async () => {
      const feed = (await admin(platform.api, '/v1/sources')).body.sources.find((source: { name: string }) => source.name === 'unscheduled');
      const destination = (await admin(platform.api, '/v1/destinations')).body.destinations.find((view: { name: string }) => view.name === 'unanswered');
      const run = await platform.store.db.collection<LookalikeRunDoc>(LOOKALIKE_COLLECTIONS.runs).findOne({ seedId: segmentId, reach: 4 });
      const pausedSaved = (await admin(platform.api, `/v1/destinations/${paused}`)).body.state === 'paused';
      return pausedSaved && feed && destination && run ? { feedId: feed.id as string, destinationId: destination.id as string, runId: run._id } : null;
    });
    expect((await schedule(destinationScheduleId(databaseName, paused))).state.paused).toBe(false);
    for (const scheduleId of [feedScheduleId(databaseName, feedId), destinationScheduleId(databaseName, destinationId), lookalikeScheduleId(databaseName, runId)]) {
      await expect(schedule(scheduleId)).rejects.toThrow(/not found/i);
    }

    // The changes' schedules are made; the creates never answered are undone, as a failed create is.
    const retention = () => platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] });
    expect(await retention()).toMatchObject({ schedulesResynced: 4, unansweredCreatesUndone: 2 });
    expect((await schedule(destinationScheduleId(databaseName, paused))).state.paused).toBe(true);
    expect((await schedule(lookalikeScheduleId(databaseName, runId))).state.paused).toBe(false);
    expect((await schedule(destinationScheduleId(databaseName, operatorPaused))).state).toMatchObject({ paused: true, note: 'paused by an operator' });
    expect((await admin(platform.api, `/v1/sources/${feedId}`)).status).toBe(404);
    expect((await admin(platform.api, `/v1/destinations/${destinationId}`)).status).toBe(404);
    for (const scheduleId of [feedScheduleId(databaseName, feedId), destinationScheduleId(databaseName, destinationId)]) {
      await expect(schedule(scheduleId)).rejects.toThrow(/not found/i);
    }
    expect(await retention()).toMatchObject({ schedulesResynced: 0, unansweredCreatesUndone: 0 });

    // The API, going on at last, makes the same schedules, and answers the undone creates with a 503.
    release();
    expect((await Promise.all(calls)).map((response) => response.status)).toEqual([200, 503, 503, 202]);
    expect((await schedule(destinationScheduleId(databaseName, paused))).state.paused).toBe(true);
    for (const scheduleId of [feedScheduleId(databaseName, feedId), destinationScheduleId(databaseName, destinationId)]) {
      await expect(schedule(scheduleId)).rejects.toThrow(/not found/i);
    }
    expect(await retention()).toMatchObject({ schedulesResynced: 0 });

    // A re-training stopped by an API that stopped right after saving that: its schedule goes at the next run.
    await new LookalikeRunStore(platform.store).set(runId, { retrain: null, scheduleSync: newScheduleSyncMark() });
    expect((await schedule(lookalikeScheduleId(databaseName, runId))).state.paused).toBe(false);
    expect(await retention()).toMatchObject({ schedulesResynced: 1 });
    await expect(schedule(lookalikeScheduleId(databaseName, runId))).rejects.toThrow(/not found/i);
  }, 180_000);
  it('starts, for the same file sent again under its Idempotency-Key, an import its API stopped before starting; a key whose import was given up passes to the file sent again', async () => {
    const keyed = (api: RunningApi, key: string, csv: string) => admin(api, `/v1/sources/${crmSourceId}/uploads`, { method: 'POST', rawBody: csv, contentType: 'text/csv', headers: { 'idempotency-key': key } });
    const logged = async (uploadId: string) => (await sourceLogEventIds(platform.store, crmSourceId)).filter((id) => id.startsWith(`${uploadId}:`)).length;
    // An API whose import starts hang (as one that stopped after staging the file), then fail.
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const stopping = await startApi({
      store: platform.store,
      temporal: clientWith(platform, {
        async startWithDetails(input, next) {
          if (input.workflowType !== 'crmImport') return next(input);
          await released;
          throw new ServiceError('the API stopped before it started the workflow');
        },
      }),
      taskQueue: platform.taskQueue,
    });
    apis.push(stopping);
    const csv = CSV.replace(/c-/g, 'k-');
    const first = keyed(stopping, 'lost-start-file', csv);
    const staged = await waitFor('the file staged', async () => (await admin(platform.api, `/v1/sources/${crmSourceId}/uploads`)).body.uploads.find((view: { state: string }) => view.state === 'importing'));
    const again = await keyed(platform.api, 'lost-start-file', csv);
    expect(again.status).toBe(202);
    expect(again.body.uploadId).toBe(staged.uploadId);
    expect(await ended(`/v1/sources/${crmSourceId}/uploads/${staged.uploadId}`, 'importing')).toMatchObject({ state: 'completed', rowsImported: 40 });
    // The stopped API's start, failing at last, finds the import begun and answers as if it had started it.
    release();
    expect((await first).status).toBe(202);
    expect(await logged(staged.uploadId)).toBe(40);

    // An import given up (503): nothing of it ran, and the same key makes a new upload of the file.
    const later = uniqueName('lost-starts-keyed');
    const losing = await losingApi(async () => undefined, later);
    const given = await keyed(losing, 'given-up-file', csv.replace(/k-/g, 'g-'));
    expect(given.status).toBe(503);
    const [givenUp] = (await admin(platform.api, `/v1/sources/${crmSourceId}/uploads`)).body.uploads;
    expect(givenUp).toMatchObject({ state: 'failed', error: 'its import workflow could not be started' });
    const retried = await keyed(platform.api, 'given-up-file', csv.replace(/k-/g, 'g-'));
    expect(retried.status).toBe(202);
    expect(retried.body.uploadId).not.toBe(givenUp.uploadId);
    expect(await ended(`/v1/sources/${crmSourceId}/uploads/${retried.body.uploadId}`, 'importing')).toMatchObject({ state: 'completed', rowsImported: 40 });
    expect(await logged(retried.body.uploadId)).toBe(40);
    expect(await logged(givenUp.uploadId)).toBe(0);
  }, 180_000);

  it('answers 202 a lookalike whose run started though its re-training schedule could not be made (asking again would start another), and the next retention run makes the schedule', async () => {
    const databaseName = platform.store.db.databaseName;
    const refusing = new Client({
      connection: platform.temporal.connection,
      namespace: baseConfig.TEMPORAL_NAMESPACE,
      interceptors: { schedule: [{ create: async () => Promise.reject(new ServiceError('Temporal is unavailable')) }] },
    });
    // Its workflow waits on a task queue no worker polls: the run stays running.
    const api = await startApi({ store: platform.store, temporal: refusing, taskQueue: uniqueName('lost-retrain'), config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } });
    apis.push(api);
    const answered = await admin(api, `/v1/segments/${segmentId}/lookalike`, { body: { reach: 5, retrain: { every: 'P1D' } } });
    expect(answered.status).toBe(202);
    const runId = answered.body.runId as string;
    expect((await admin(platform.api, `/v1/segments/${segmentId}/lookalike/${runId}`)).body).toMatchObject({ state: 'running', retrain: { every: 'P1D' } });
    const schedule = () => platform.temporal.schedule.getHandle(lookalikeScheduleId(databaseName, runId)).describe();
    await expect(schedule()).rejects.toThrow(/not found/i);

    const retention = () => platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] });
    expect(await retention()).toMatchObject({ schedulesResynced: 1 });
    expect((await schedule()).state.paused).toBe(false);
    expect(await retention()).toMatchObject({ schedulesResynced: 0 });
  }, 120_000);
  it('keeps a destination\'s schedule in step with it when pauses and resumes arrive at once, leaving no change owed', async () => {
    const created = await admin(platform.api, '/v1/destinations', {
      body: { name: 'contended', segments: [segmentId], connector: 'webhook', idType: 'cookie_id', schedule: { every: 'PT1H' }, config: { url: 'http://127.0.0.1:9/dmp', secret: 'webhook-secret-0123456789' } },
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    const scheduleHandle = platform.temporal.schedule.getHandle(destinationScheduleId(platform.store.db.databaseName, id));
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(Array.from({ length: 8 }, (_, k) => admin(platform.api, `/v1/destinations/${id}/${k % 2 === 0 ? 'pause' : 'resume'}`, { method: 'POST' })));
      expect(answers.map((answer) => answer.status)).toEqual(Array(8).fill(200));
      const state = (await admin(platform.api, `/v1/destinations/${id}`)).body.state;
      expect({ round, paused: (await scheduleHandle.describe()).state.paused }).toEqual({ round, paused: state === 'paused' });
      expect(await platform.store.db.collection('destinations').findOne({ _id: id as never })).not.toHaveProperty('scheduleSync');
    }
  }, 180_000);
  it('removes at the next retention run what an ended privacy request, or one never recorded, kept of its subject', async () => {
    const asked = await admin(platform.api, '/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'ck-1' } } });
    expect(asked.status).toBe(202);
    const requestId = asked.body.id as string;
    expect(await ended(`/v1/privacy/requests/${requestId}`, 'received').then(() => ended(`/v1/privacy/requests/${requestId}`, 'running'))).toMatchObject({ state: 'completed' });
    const subjects = platform.store.db.collection<SubjectDoc>(PRIVACY_COLLECTIONS.subjects);
    expect(await subjects.findOne({ _id: requestId })).toBeNull();
    // A finish cut short between its two writes, and an API stopped between the subject's insert and the request's.
    // One an API is about to record its request for stays.
    await subjects.insertMany([
      { _id: requestId, key: 'cookie_id:ck-1' },
      { _id: 'prq_never_recorded', key: 'cookie_id:ck-2', at: new Date(Date.now() - 60_000) },
      { _id: 'prq_being_recorded', key: 'cookie_id:ck-3', at: new Date(Date.now() + 60_000) },
    ]);
    const report = await platform.temporal.workflow.execute(storeRetention, { workflowId: uniqueName('retention'), taskQueue: platform.taskQueue, args: [{ runStartGraceMs: 0 }] });
    expect(report).toMatchObject({ privacySubjectsForgotten: 2 });
    expect((await subjects.find({ _id: { $in: [requestId, 'prq_never_recorded', 'prq_being_recorded'] } }).toArray()).map((subject) => subject._id)).toEqual(['prq_being_recorded']);
  }, 180_000);
  it('answers a source create sent again under its Idempotency-Key with the same source and write key, finishing one whose first request stopped half way', async () => {
    const body = { name: 'sent twice', kind: 'events', party: 'first', consent: { mode: 'not_required' } };
    const under = { 'idempotency-key': 'source-sync-1' };
    // The first request stalls at its workflow's start, after storing the source; its write key's lookup is lost, as if it stopped between the two.
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const stalling: WorkflowClientInterceptor = { start: async (input, next) => (input.workflowType === 'sourceConnection' && (await released), next(input)) };
    const stalled = await startApi({ store: platform.store, temporal: new Client({ connection: platform.temporal.connection, namespace: baseConfig.TEMPORAL_NAMESPACE, interceptors: { workflow: [stalling] } }), taskQueue: platform.taskQueue });
    apis.push(stalled);
    const lost = admin(stalled, '/v1/sources', { body, headers: under });
    try {
      const saved = await waitFor('the first create saved', async () => (await admin(platform.api, '/v1/sources')).body.sources.find((view: { name: string }) => view.name === 'sent twice'));
      expect((await platform.store.db.collection('source_keys').deleteMany({ sourceId: saved.id })).deletedCount).toBe(1);

      const resent = await admin(platform.api, '/v1/sources', { body, headers: under });
      expect(resent.status).toBe(201);
      expect(resent.body.id).toBe(saved.id);
      // The write key it answers with is the source's: collected events reach profiles.
      const sent = await call(`${platform.api.url}/v1/collect`, { key: resent.body.writeKey, body: { events: [{ id: 'twice-1', type: 'visit', identities: { cookie_id: 'ck-twice' } }] } });
      expect(sent.status).toBe(202);
      await waitFor('the event folded', async () => (await admin(platform.api, `/v1/sources/${saved.id}`)).body.profiles?.eventsApplied === 1, 60_000);
      release();
      expect(await lost).toMatchObject({ status: 201, body: { id: saved.id, writeKey: resent.body.writeKey } });
    } finally {
      release();
    }
    expect((await admin(platform.api, '/v1/sources')).body.sources.filter((view: { name: string }) => view.name === 'sent twice')).toHaveLength(1);
    // Another request under the key is refused; without a key, each create makes its own source and key.
    const other = await admin(platform.api, '/v1/sources', { body: { ...body, name: 'another' }, headers: under });
    expect(other.status).toBe(409);
    expect(other.body.errors).toEqual([expect.objectContaining({ path: 'headers.idempotency-key' })]);
    const [a, b] = [await admin(platform.api, '/v1/sources', { body }), await admin(platform.api, '/v1/sources', { body })];
    expect(a.body.id).not.toBe(b.body.id);
    expect(a.body.writeKey).not.toBe(b.body.writeKey);
  }, 120_000);

  it('answers a create sent again under its Idempotency-Key with what the first made, finishing one that stopped half way; another request under the key is a 409', async () => {
    const databaseName = platform.store.db.databaseName;
    const segment = { name: 'Gold again', rule: { trait: 'plan', op: 'eq', value: 'gold' } };
    const under = (key: string) => ({ 'idempotency-key': key });
    const first = await admin(platform.api, '/v1/segments', { body: segment, headers: under('segment-sync-1') });
    expect(first.status).toBe(201);
    const again = await admin(platform.api, '/v1/segments', { body: segment, headers: under('segment-sync-1') });
    expect([again.status, again.body.id]).toEqual([201, first.body.id]);
    expect((await admin(platform.api, '/v1/segments')).body.segments.filter((view: { name: string }) => view.name === 'Gold again')).toHaveLength(1);
    const other = await admin(platform.api, '/v1/segments', { body: { ...segment, name: 'Silver' }, headers: under('segment-sync-1') });
    expect(other.status).toBe(409);
    expect(other.body.errors).toEqual([expect.objectContaining({ path: 'headers.idempotency-key' })]);
    // Deleted, what a key made is not made again under it.
    expect((await admin(platform.api, `/v1/segments/${first.body.id}`, { method: 'DELETE' })).status).toBe(204);
    const afterDelete = await admin(platform.api, '/v1/segments', { body: segment, headers: under('segment-sync-1') });
    expect(afterDelete.status).toBe(409);
    expect(afterDelete.body.errors).toEqual([expect.objectContaining({ path: 'headers.idempotency-key', message: expect.stringContaining('deleted') })]);
    const badKey = await admin(platform.api, '/v1/segments', { body: segment, headers: under('with space') });
    expect(badKey.status).toBe(400);
    expect(badKey.body.errors).toEqual([expect.objectContaining({ path: 'headers.idempotency-key' })]);

    // A destination create whose API stalls before making its schedule, sent again to another API.
    let release = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const stalled = await startApi({
      store: platform.store,
      temporal: new Client({ connection: platform.temporal.connection, namespace: baseConfig.TEMPORAL_NAMESPACE, interceptors: { schedule: [{ create: async (input, next) => (await released, next(input)) }] } }),
      taskQueue: platform.taskQueue,
      config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] },
    });
    apis.push(stalled);
    const destination = {
      body: { name: 'sent twice', segments: [segmentId], connector: 'webhook', idType: 'cookie_id', schedule: { every: 'PT1H' }, config: { url: 'http://127.0.0.1:9/dmp', secret: 'webhook-secret-0123456789' } },
      headers: under('destination-sync-1'),
    };
    const lost = admin(stalled, '/v1/destinations', destination);
    const saved = await waitFor('the first create saved', async () => (await admin(platform.api, '/v1/destinations')).body.destinations.find((view: { name: string }) => view.name === 'sent twice'));
    await expect(platform.temporal.schedule.getHandle(destinationScheduleId(databaseName, saved.id)).describe()).rejects.toThrow(/not found/i);
    const resent = await admin(platform.api, '/v1/destinations', destination);
    expect([resent.status, resent.body.id]).toEqual([201, saved.id]);
    expect((await platform.temporal.schedule.getHandle(destinationScheduleId(databaseName, saved.id)).describe()).state.paused).toBe(false);
    expect(await platform.store.db.collection('destinations').findOne({ _id: saved.id })).not.toHaveProperty('scheduleSync');
    release();
    expect(await lost).toMatchObject({ status: 201, body: { id: saved.id } });
    expect((await admin(platform.api, '/v1/destinations')).body.destinations.filter((view: { name: string }) => view.name === 'sent twice')).toHaveLength(1);

    // A first request whose schedule call fails after a repeat finished the create leaves it standing.
    let fail = () => {};
    const failing = new Promise<void>((resolve) => (fail = resolve));
    const doomed = await startApi({
      store: platform.store,
      temporal: new Client({
        connection: platform.temporal.connection,
        namespace: baseConfig.TEMPORAL_NAMESPACE,
        interceptors: { schedule: [{ create: async () => (await failing, Promise.reject(new ServiceError('the schedule call timed out'))) }] },
      }),
      taskQueue: platform.taskQueue,
      config: { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] },
    });
    apis.push(doomed);
    const kept = { ...destination, body: { ...destination.body, name: 'kept' }, headers: under('destination-sync-2') };
    const failed = admin(doomed, '/v1/destinations', kept);
    const keptId = (await waitFor('the first create saved', async () => (await admin(platform.api, '/v1/destinations')).body.destinations.find((view: { name: string }) => view.name === 'kept'))).id;
    expect(await admin(platform.api, '/v1/destinations', kept)).toMatchObject({ status: 201, body: { id: keptId } });
    fail();
    expect((await failed).status).toBe(503);
    expect((await admin(platform.api, `/v1/destinations/${keptId}`)).status).toBe(200);
    expect((await platform.temporal.schedule.getHandle(destinationScheduleId(databaseName, keptId)).describe()).state.paused).toBe(false);
  }, 180_000);
});
