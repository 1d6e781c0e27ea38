import { call } from '../support/http';
import { newSource } from '../support/sourceClient';
import { startApi, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor } from '../support/services';

describe('a source’s status when its workflow cannot answer a query at once', () => {
  it('shows the progress the workflow last reported instead of waiting for its task', async () => {
    const store = await testStore('source_status');
    const temporal = await testTemporal();
    const taskQueue = uniqueName('source-status');
    const worker = await startWorker({ store, temporal, taskQueue });
    let workerStopped = false;
    const api = await startApi({ store, temporal, taskQueue });
    try {
      const { sourceId, send, folded } = await newSource(api, 'status');
      await send(Array.from({ length: 20 }, (_, n) => ({ id: `s${n}`, type: 'page_view', identities: { cookie_id: `ck-${n}` } })));
      await folded(20);
      const status = () => call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey });
      const live = await waitFor('the drain to report its progress', async () => {
        const body = (await status()).body;
        return body.progress?.eventsProcessed === 20 ? body : null;
      });

      // No worker answers queries now: the answer comes within the query's wait, from the last report.
      await stopPartitionWriters(temporal, store);
      await worker.stop();
      workerStopped = true;
      const started = Date.now();
      const response = await status();
      expect(response.status).toBe(200);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(response.body).toMatchObject({ workflowStatus: 'RUNNING', progress: { eventsProcessed: 20, cursor: live.progress.cursor } });
    } finally {
      await api.close();
      if (!workerStopped) await worker.stop();
      await store.close();
      await temporal.connection.close();
    }
  }, 120_000);
});
