import type { Client } from '@temporalio/client';
import type { FoldStep } from '../../activities/profileWriter';
import { sourceWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { ensureSourceWorkflow } from '../../temporal/client';
import { sourceStatusQuery } from '../../workflows/sourceConnection';
import { appendToLog } from '../support/appendEvents';
import { expectedProfiles, userEvent } from '../support/audience';
import { eventsFolded, profileDifferences } from '../support/profiles';
import { baseConfig, startWorker, testStore, testTemporal, uniqueName, waitFor, type RunningWorker } from '../support/services';

describe('draining a source into profiles', () => {
  let store: Store;
  let temporal: Client;
  let worker: RunningWorker | undefined;

  beforeAll(async () => {
    store = await testStore('drain');
    temporal = await testTemporal();
  });
  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
  });
  afterAll(async () => {
    await store.close();
    await temporal.connection.close();
  });

  it('converges to the clean result when an activity fails after writing half a batch and is retried', async () => {
    const taskQueue = uniqueName('drain-retry');
    const sourceId = uniqueName('src');
    const generated = Array.from({ length: 1500 }, (_, n) => userEvent(n % 300, Math.floor(n / 300)));
    // Every id is sent twice, in different chunks: the repeats must count once.
    await appendToLog(store, sourceId, [...generated, ...generated.slice(0, 200)], 250);

    const injected: FoldStep[] = [];
    worker = await startWorker({
      store,
      temporal,
      taskQueue,
      activityOverrides: {
        profileWriteBatch: 40,
        onFoldStep: (step) => {
          if (step === 'profiles-partly-written' && injected.length < 2) {
            injected.push(step);
            throw new Error('injected failure after a partial profile write');
          }
        },
      },
    });
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue });
    const handle = temporal.workflow.getHandle(sourceWorkflowId(sourceId));
    const progress = await waitFor('the drain to finish', async () => {
      const status = await handle.query(sourceStatusQuery);
      return status.eventsProcessed + status.duplicatesSkipped >= 1700 ? status : undefined;
    });
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= 1500);

    expect(injected).toHaveLength(2);
    expect(progress.eventsProcessed).toBe(1500);
    expect(progress.duplicatesSkipped).toBe(200);
    expect(progress.lastError).toBeNull();
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    await handle.terminate('test finished');
  });
});
