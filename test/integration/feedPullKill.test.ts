import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { APPENDS_IN_FLIGHT } from '../../activities/uploads';
import { FeedConfigSchema, feedRowEventId, readFeedHeader, type FeedColumns } from '../../domain/feeds';
import { sha256Hex } from '../../domain/identity';
import { feedPullWorkflowId, sourceWorkflowId } from '../../domain/workflowIds';
import { COLLECTIONS, type Store } from '../../store/db';
import { UploadStore } from '../../store/uploads';
import { FeedServer } from '../support/feeds';
import { call } from '../support/http';
import { killHard, spawnWorker } from '../support/processes';
import { eventsFolded, latestProfiles } from '../support/profiles';
import { sourceLogEventIds } from '../support/sourceLog';
import { baseConfig, startApi, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor, type RunningApi } from '../support/services';

const ROWS = 60_000;
const CHUNK_ROWS = 1_000;
/** Rows whose email hash is none: refused at the edge, never staged. */
const isBad = (i: number) => i % 1000 === 3;

describe('a worker killed mid-pull of a feed', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  let server: FeedServer;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    store = await testStore('feedkill');
    temporal = await testTemporal();
    // A steady partner: the file takes a few seconds to arrive, so a kill finds it half staged.
    server = await new FeedServer({ throttleBytes: 64 * 1024, throttleMs: 40 }).start();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await api?.close();
    await server.stop();
    await stopPartitionWriters(temporal, store);
    await store.close();
    await temporal.connection.close();
  });

  it('imports every row exactly once after a kill while the file is staged and another while it is imported, and folds each once', async () => {
    const taskQueue = uniqueName('feedkill');
    api = await startApi({ store, temporal, taskQueue, config: { DMP_CHUNK_MAX_EVENTS: CHUNK_ROWS, DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] } });
    const lines = Array.from({ length: ROWS }, (_, i) => `c-${i},${isBad(i) ? 'not-a-hash' : sha256Hex(`customer${i}@example.com`)},${i % 2 ? 'gold' : 'silver'},${i}`);
    server.publish('/customers.csv', ['customer_id,email_hash,tier,seq', ...lines].join('\n') + '\n');
    const feed = {
      url: `${server.url}/customers.csv`,
      schedule: { cron: '0 0 1 1 *' },
      mapping: { identities: { crm_id: 'customer_id', email_sha256: 'email_hash' }, traits: { tier: 'tier' } },
      cursorColumn: 'seq',
    };
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'Partner customers', kind: 'feed', party: 'second', consent: { mode: 'not_required' }, feed } });
    expect(created.status).toBe(201);
    const sourceId = created.body.id as string;
    const valid = Array.from({ length: ROWS }, (_, i) => i).filter((i) => !isBad(i));

    const env = { DMP_TASK_QUEUE: taskQueue, DMP_CHUNK_MAX_EVENTS: String(CHUNK_ROWS), DMP_DESTINATION_ALLOWLIST: '127.0.0.1' };
    const first = spawnWorker(store, env);
    children.push(first);
    const started = await call(`${api.url}/v1/sources/${sourceId}/pulls`, { key: api.adminKey, method: 'POST' });
    expect(started.status).toBe(202);
    const pullId = started.body.pullId as string;
    const uploads = new UploadStore(store);
    const staged = store.db.collection(COLLECTIONS.uploadRows);

    // Killed while its first attempt stages the file: three chunks in, most of the file still arriving.
    await waitFor('the file half staged', async () => (await staged.findOne({ _id: `${pullId}_1:2` } as never)) !== null, 600_000, 20);
    await killHard(first);
    expect(await uploads.get(`${pullId}_1`)).toMatchObject({ state: 'receiving' });

    // The next worker fetches the file again, whole, and its import is killed a few chunks in.
    const second = spawnWorker(store, env);
    children.push(second);
    const atKill = await waitFor('the import under way', async () => {
      const doc = await uploads.get(`${pullId}_2`);
      return doc && doc.imported.chunks >= 5 ? doc : undefined;
    }, 600_000, 20);
    await killHard(second);
    expect(atKill.chunks).toBe(Math.ceil(valid.length / CHUNK_ROWS));
    expect(atKill.imported.chunks).toBeLessThan(atKill.chunks / 2);

    children.push(spawnWorker(store, env));
    const outcome = await temporal.workflow.getHandle(feedPullWorkflowId(store.db.databaseName, sourceId)).result();
    expect(outcome).toEqual({ pullId, state: 'completed', rowsImported: valid.length, rowsDuplicate: 0 });
    const view = (await call(`${api.url}/v1/sources/${sourceId}/pulls/${pullId}`, { key: api.adminKey })).body;
    expect(view).toMatchObject({ state: 'completed', uploadId: `${pullId}_2`, cursor: String(ROWS - 1), rowsReceived: ROWS, rowsImported: valid.length, rowsDuplicate: 0, rowsRejected: ROWS - valid.length });
    // The interrupted staging left nothing; the import resumed at its checkpoint, appending again only the chunks in flight.
    expect(await uploads.get(`${pullId}_1`)).toMatchObject({ state: 'failed' });
    expect(await staged.countDocuments({ uploadId: { $in: [`${pullId}_1`, `${pullId}_2`] } })).toBe(0);
    const imported = await uploads.get(`${pullId}_2`);
    expect(imported?.imported).toMatchObject({ chunks: atKill.chunks, rows: valid.length, duplicates: 0 });
    expect(imported?.imported.resumed).toBeLessThanOrEqual(APPENDS_IN_FLIGHT * CHUNK_ROWS);

    const { columns } = readFeedHeader(['customer_id', 'email_hash', 'tier', 'seq'], FeedConfigSchema.parse(feed)) as { columns: FeedColumns };
    const logged = await sourceLogEventIds(store, sourceId);
    expect(logged).toHaveLength(valid.length);
    expect([...logged].sort()).toEqual(valid.map((i) => feedRowEventId(lines[i].split(','), columns)).sort());
    expect((await call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey })).body.feed).toMatchObject({ cursor: String(ROWS - 1), lastPull: { pullId } });

    await waitFor('the source to fold every row', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= valid.length, 300_000, 1000);
    expect(await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)).toBe(valid.length);
    const profiles = await latestProfiles(store);
    expect(profiles).toHaveLength(valid.length);
    expect(profiles.every((profile) => profile.counters.feed_record?.count === 1)).toBe(true);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  }, 1_800_000);
});
