import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { APPENDS_IN_FLIGHT } from '../../activities/uploads';
import { crmEventId } from '../../domain/uploads';
import { crmImportWorkflowId, sourceWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { UploadStore } from '../../store/uploads';
import { call } from '../support/http';
import { eventsFolded, latestProfiles } from '../support/profiles';
import { freeze, killHard, spawnWorker, thaw } from '../support/processes';
import { sourceLogEventIds } from '../support/sourceLog';
import { baseConfig, startApi, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor, type RunningApi } from '../support/services';

const ROWS = 60_000;
const CHUNK_ROWS = 1_000;
/** Rows with an email that is none: refused at the edge, never staged. */
const isBad = (i: number) => i % 1000 === 3;

describe('a worker killed mid-import of a CRM upload', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  const taskQueue = uniqueName('uploadkill');
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    store = await testStore('uploadkill');
    temporal = await testTemporal();
    api = await startApi({ store, temporal, taskQueue, config: { DMP_CHUNK_MAX_EVENTS: CHUNK_ROWS } });
  });
  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) thaw(child);
      await killHard(child);
    }
    await api?.close();
    await stopPartitionWriters(temporal, store);
    await store.close();
    await temporal.connection.close();
  });

  it('imports every row exactly once after another worker resumes at the checkpoint, and folds each into its profile once', async () => {
    const mapping = { identities: { crm_id: 'customer_id', email: 'email' }, traits: { tier: 'tier' } };
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'CRM', kind: 'crm', party: 'first', mapping, consent: { mode: 'not_required' } } });
    const sourceId = created.body.id as string;

    const env = { DMP_TASK_QUEUE: taskQueue };
    const first = spawnWorker(store, env);
    children.push(first);
    const lines = Array.from({ length: ROWS }, (_, i) => `c-${i},${isBad(i) ? 'nobody' : `customer${i}@example.com`},${i % 2 ? 'gold' : 'silver'}`);
    const answer = await call(`${api.url}/v1/sources/${sourceId}/uploads`, { key: api.adminKey, rawBody: ['customer_id,email,tier', ...lines].join('\n'), contentType: 'text/csv' });
    expect(answer.status).toBe(202);
    const uploadId = answer.body.uploadId as string;
    const valid = Array.from({ length: ROWS }, (_, i) => i).filter((i) => !isBad(i));
    expect(answer.body).toMatchObject({ rowsReceived: ROWS, rowsRejected: ROWS - valid.length });

    // Killed once the checkpoint shows a few chunks appended: mid-step, with most of the file to go.
    const uploads = new UploadStore(store);
    const atKill = await waitFor('the import to be under way', async () => {
      const doc = await uploads.get(uploadId);
      return doc && doc.imported.chunks >= 5 ? doc : undefined;
    }, 180_000, 20);
    await killHard(first);
    expect(atKill.chunks).toBe(Math.ceil(ROWS / CHUNK_ROWS));
    expect(atKill.imported.chunks).toBeLessThan(atKill.chunks / 2);

    children.push(spawnWorker(store, env));
    const result = await temporal.workflow.getHandle(crmImportWorkflowId(store.db.databaseName, uploadId)).result();
    expect(result).toEqual({ state: 'completed', rowsImported: valid.length, rowsRejected: ROWS - valid.length });
    const done = await uploads.get(uploadId);
    expect(done).toMatchObject({ state: 'completed', imported: { chunks: atKill.chunks, rows: valid.length } });
    // Resumed at the checkpoint: only the chunks in flight at the kill were appended again.
    expect(done?.imported.resumed).toBeLessThanOrEqual(APPENDS_IN_FLIGHT * CHUNK_ROWS);

    const logged = await sourceLogEventIds(store, sourceId);
    expect(logged).toHaveLength(valid.length);
    expect([...logged].sort()).toEqual(valid.map((i) => crmEventId(uploadId, i + 2)).sort());

    await waitFor('the source to fold every row', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= valid.length, 240_000, 1000);
    expect(await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)).toBe(valid.length);
    const profiles = await latestProfiles(store);
    expect(profiles).toHaveLength(valid.length);
    expect(profiles.every((profile) => profile.counters.crm_record?.count === 1)).toBe(true);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  }, 600_000);

  it('a worker that hangs mid-import has its step taken over; when it comes back it changes nothing the import finished with', async () => {
    for (const child of children.splice(0)) await killHard(child);
    const mapping = { identities: { crm_id: 'customer_id' }, traits: { tier: 'tier' } };
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'CRM 2', kind: 'crm', party: 'first', mapping, consent: { mode: 'not_required' } } });
    const sourceId = created.body.id as string;
    const hungLog: string[] = [];
    const hung = spawnWorker(store, { DMP_TASK_QUEUE: taskQueue }, hungLog);
    children.push(hung);
    const lines = Array.from({ length: ROWS }, (_, i) => `h-${i},${i % 2 ? 'gold' : 'silver'}`);
    const answer = await call(`${api.url}/v1/sources/${sourceId}/uploads`, { key: api.adminKey, rawBody: ['customer_id,tier', ...lines].join('\n'), contentType: 'text/csv' });
    expect(answer.status).toBe(202);
    const uploadId = answer.body.uploadId as string;
    const uploads = new UploadStore(store);
    await waitFor('the import to be under way', async () => ((await uploads.get(uploadId))?.imported.chunks ?? 0) >= 5, 180_000, 20);
    freeze(hung); // no heartbeat reaches Temporal: its step is given up on and retried elsewhere

    children.push(spawnWorker(store, { DMP_TASK_QUEUE: taskQueue }));
    const result = await temporal.workflow.getHandle(crmImportWorkflowId(store.db.databaseName, uploadId)).result();
    expect(result).toEqual({ state: 'completed', rowsImported: ROWS, rowsRejected: 0 });
    const done = await uploads.get(uploadId);
    expect(done).toMatchObject({ state: 'completed', imported: { chunks: ROWS / CHUNK_ROWS, rows: ROWS, duplicates: 0 } });

    // The hung worker comes back: its appends in flight finish, and its next checkpoint write is refused.
    thaw(hung);
    // It did come back, and was refused: a checkpoint write lost to the attempt that took over, or an append to a chunk its drain fenced.
    await waitFor('the hung worker refused', async () => new RegExp(`another attempt imports upload ${uploadId}|was sealed by its drain before this append finished`).test(hungLog.join('')), 60_000, 100);
    expect(await uploads.get(uploadId)).toEqual(done);
    const logged = await sourceLogEventIds(store, sourceId);
    expect(logged).toHaveLength(ROWS);
    expect(new Set(logged).size).toBe(ROWS);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  }, 600_000);
});
