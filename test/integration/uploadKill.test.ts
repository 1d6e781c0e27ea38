import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { APPENDS_IN_FLIGHT } from '../../activities/uploads';
import { crmEventId } from '../../domain/uploads';
import { crmImportWorkflowId, sourceWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { UploadStore } from '../../store/uploads';
import { call } from '../support/http';
import { eventsFolded, latestProfiles } from '../support/profiles';
import { killHard, spawnWorker } from '../support/processes';
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
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    store = await testStore('uploadkill');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await api?.close();
    await stopPartitionWriters(temporal, store);
    await store.close();
    await temporal.connection.close();
  });

  it('imports every row exactly once after another worker resumes at the checkpoint, and folds each into its profile once', async () => {
    const taskQueue = uniqueName('uploadkill');
    api = await startApi({ store, temporal, taskQueue, config: { DMP_CHUNK_MAX_EVENTS: CHUNK_ROWS } });
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
});
