import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { sha256Hex } from '../../domain/identity';
import { feedPullWorkflowId, sourceWorkflowId } from '../../domain/workflowIds';
import { COLLECTIONS, type Store } from '../../store/db';
import { UploadStore } from '../../store/uploads';
import { FeedStore, newFeedPull, newPullId } from '../../store/feeds';
import { FeedServer } from '../support/feeds';
import { call } from '../support/http';
import { freeze, killHard, spawnWorker, thaw } from '../support/processes';
import { sourceLogEventIds } from '../support/sourceLog';
import { startApi, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor, type RunningApi } from '../support/services';

const ROWS = 60_000;
const CHUNK_ROWS = 1_000;

/**
 * A worker that hangs mid-fetch (SIGSTOP: no heartbeat reaches Temporal) has its attempt given up
 * on and retried by another worker; when the hung worker comes back, its attempt runs on, with
 * nobody waiting for it. It must not undo or spoil what the attempt that took over did.
 */
describe('a feed fetch attempt given up on that runs on', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  let server: FeedServer;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    store = await testStore('feedtakeover');
    temporal = await testTemporal();
    server = await new FeedServer({ throttleBytes: 64 * 1024, throttleMs: 40 }).start();
  });
  afterAll(async () => {
    for (const child of children) {
      thaw(child);
      await killHard(child);
    }
    await api?.close();
    await server.stop();
    await stopPartitionWriters(temporal, store);
    await store.close();
    await temporal.connection.close();
  });

  it('stops at its next chunk once a later attempt failed its upload, leaves nothing staged, and leaves the pull as the later attempt made it', async () => {
    const taskQueue = uniqueName('feedtakeover');
    api = await startApi({ store, temporal, taskQueue, config: { DMP_CHUNK_MAX_EVENTS: CHUNK_ROWS, DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } });
    const lines = Array.from({ length: ROWS }, (_, i) => `c-${i},${sha256Hex(`customer${i}@example.com`)},${i}`);
    server.publish('/customers.csv', ['customer_id,email_hash,seq', ...lines].join('\n') + '\n');
    const feed = {
      url: `${server.url}/customers.csv`,
      schedule: { cron: '0 0 1 1 *' },
      mapping: { identities: { crm_id: 'customer_id', email_sha256: 'email_hash' }, traits: {} },
      cursorColumn: 'seq',
    };
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'Partner customers', kind: 'feed', party: 'second', consent: { mode: 'not_required' }, feed } });
    expect(created.status).toBe(201);
    const sourceId = created.body.id as string;

    // A body that stalls while the worker hangs is not given up on by the worker itself.
    const env = { DMP_TASK_QUEUE: taskQueue, DMP_CHUNK_MAX_EVENTS: String(CHUNK_ROWS), DMP_DESTINATION_ALLOWLIST: '127.0.0.1', DMP_DESTINATION_TIMEOUT_SECONDS: '900' };
    const hungLog: string[] = [];
    const hung = spawnWorker(store, env, hungLog);
    children.push(hung);
    const started = await call(`${api.url}/v1/sources/${sourceId}/pulls`, { key: api.adminKey, method: 'POST' });
    expect(started.status).toBe(202);
    const pullId = started.body.pullId as string;
    const uploads = new UploadStore(store);
    const staged = store.db.collection(COLLECTIONS.uploadRows);
    const stagedOf = (uploadId: string) => staged.countDocuments({ uploadId });
    const first = `${pullId}_1`;

    await waitFor('the file half staged', async () => (await staged.findOne({ _id: `${first}:2` } as never)) !== null, 600_000, 20);
    freeze(hung);

    // Past the fetch's heartbeat timeout another worker fetches again, imports and completes the
    // pull. The hung worker's open polls may take the next attempts first (the server hands them
    // to a connection that is still up): those time out too, and run only when it comes back.
    children.push(spawnWorker(store, env));
    const outcome = await temporal.workflow.getHandle(feedPullWorkflowId(store.db.databaseName, sourceId)).result();
    expect(outcome).toEqual({ pullId, state: 'completed', rowsImported: ROWS, rowsDuplicate: 0 });
    const pullView = async () => (await call(`${api.url}/v1/sources/${sourceId}/pulls/${pullId}`, { key: api.adminKey })).body;
    const before = await pullView();
    const took = Number(/_(\d+)$/.exec(before.uploadId)?.[1]);
    expect(took).toBeGreaterThanOrEqual(2);
    expect(before).toMatchObject({ state: 'completed', cursor: String(ROWS - 1), rowsReceived: ROWS, rowsImported: ROWS, attempts: [] });
    expect(await uploads.get(first)).toMatchObject({ state: 'failed' });
    expect(await stagedOf(first)).toBe(0);

    // The hung worker comes back: its first attempt reads on until its upload tells it another attempt
    // took over (checked before a chunk is written, at once after a long gap) and stops there…
    thaw(hung);
    await waitFor('the first attempt told its upload was taken over', async () => hungLog.join('').includes(`upload ${first} is no longer receiving: a later attempt took its place`), 120_000, 100);
    // …leaving nothing staged, and the upload as the later attempt failed it.
    expect(await stagedOf(first)).toBe(0);
    expect(await uploads.get(first)).toMatchObject({ state: 'failed', error: 'a later attempt of its pull read the file again' });

    // Nothing the hung worker's attempts do afterwards shows: none fetches again, stages, or touches the pull.
    const settled = Date.now() + 5_000;
    while (Date.now() < settled) {
      expect(await pullView()).toEqual(before);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    for (let attempt = 1; attempt < took; attempt++) {
      const upload = await uploads.get(`${pullId}_${attempt}`);
      if (upload) expect(upload.state).toBe('failed');
      expect(await stagedOf(`${pullId}_${attempt}`)).toBe(0);
    }
    expect(server.requests.filter((request) => request.status === 200)).toHaveLength(2);
    // The whole response is matched, so a failure shows its status and problem too.
    expect(await call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey })).toMatchObject({
      status: 200,
      body: { feed: { cursor: String(ROWS - 1), lastPull: { pullId, state: 'completed', uploadId: before.uploadId } } },
    });
    expect(await sourceLogEventIds(store, sourceId)).toHaveLength(ROWS);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  }, 1_800_000);

  it('keeps a pull failed while a fetch attempt given up on writes to it, and a claim taken once, when they race', async () => {
    const feeds = new FeedStore(store);
    for (let round = 0; round < 5; round++) {
      const pullId = newPullId();
      expect(await feeds.createPull(newFeedPull(pullId, 'src_racing', 'schedule', { from: null, to: null }, new Date()))).toBe(true);
      const zombie = { runId: 'run-a', attempt: 1 };
      expect(await feeds.claimFetch(pullId, zombie)).toBe(true);
      // The zombie's writes and the retention run's fail at once: the fail lands, and whatever the zombie writes after it misses.
      const [failed] = await Promise.all([
        feeds.failRunning(pullId, 'abandoned: its workflow ended before it finished', new Date()),
        ...Array.from({ length: 20 }, (_, n) => feeds.recordFetched(pullId, zombie, { rowsSkipped: n })),
      ]);
      expect(failed).toBe(true);
      expect(await feeds.getPull(pullId)).toMatchObject({ state: 'failed', error: 'abandoned: its workflow ended before it finished' });
      // A write of the zombie's after the fail misses too, and leaves nothing of it.
      expect(await feeds.recordFetched(pullId, zombie, { rowsSkipped: 99 })).toBe(false);
      expect((await feeds.getPull(pullId))?.rowsSkipped).not.toBe(99);
      // Two later attempts claiming at once: one owns the pull.
      const racing = `${pullId}-claims`;
      expect(await feeds.createPull(newFeedPull(racing, 'src_racing', 'schedule', { from: null, to: null }, new Date()))).toBe(true);
      const claims = await Promise.all(Array.from({ length: 6 }, (_, n) => feeds.claimFetch(racing, { runId: `run-${n}`, attempt: 1 })));
      const owner = (await feeds.getPull(racing))?.fetchedBy;
      // Each claim takes the pull from the one before it: the last to win owns it, and every win was in turn.
      expect(claims.filter(Boolean).length).toBeGreaterThanOrEqual(1);
      expect(claims[Number(owner!.runId.slice('run-'.length))]).toBe(true);
      expect(await Promise.all(Array.from({ length: 6 }, (_, n) => feeds.recordFetched(racing, { runId: `run-${n}`, attempt: 1 }, { rowsSkipped: n })))).toEqual(Array.from({ length: 6 }, (_, n) => `run-${n}` === owner!.runId));
    }
  });
});
