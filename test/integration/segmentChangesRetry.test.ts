import type { Client } from '@temporalio/client';
import type { FoldStep } from '../../activities/profileWriter';
import { identityKey } from '../../domain/identity';
import { sourceWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { IdentityIndex } from '../../store/identities';
import { SegmentRunStore } from '../../store/segmentRuns';
import { SegmentStore } from '../../store/segments';
import { ensureSourceWorkflow } from '../../temporal/client';
import { appendToLog } from '../support/appendEvents';
import { userEvent } from '../support/audience';
import { eventsFolded } from '../support/profiles';
import { segmentDoc } from '../support/segmentFixtures';
import { baseConfig, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor, type RunningWorker } from '../support/services';

const USERS = 24;

describe('real-time segment changes of a fold cut short after writing its versions', () => {
  let temporal: Client;
  let worker: RunningWorker | undefined;
  const stores: Store[] = [];

  beforeAll(async () => {
    temporal = await testTemporal();
  });
  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
    for (const store of stores.splice(0)) {
      await stopPartitionWriters(temporal, store);
      await store.close();
    }
  });
  afterAll(async () => {
    await temporal.connection.close();
  });

  /**
   * Drains every user's first event (each makes a profile; odd users are on the pro plan) by a worker
   * whose first fold in each partition fails at `step`, and returns the pro users' profile ids and
   * the ids recorded as entering the segment of pro users, with how often each was.
   */
  async function drainFailingAt(step: FoldStep): Promise<{ pro: string[]; entered: Map<string, number> }> {
    const store = await testStore(uniqueName('segchg').replace(/-/g, '_').slice(0, 40));
    stores.push(store);
    await new SegmentStore(store).create(segmentDoc('pro', { trait: 'plan.tier', op: 'eq', value: 'pro' }));
    const sourceId = uniqueName('src');
    const generated = Array.from({ length: USERS }, (_, user) => userEvent(user, 1, 'sc'));
    await appendToLog(store, sourceId, generated, USERS);
    const failed = new Set<string>();
    const taskQueue = uniqueName('segchg');
    worker = await startWorker({
      store,
      temporal,
      taskQueue,
      activityOverrides: {
        onFoldStep: async (reached, group) => {
          const partition = group.slice(0, group.indexOf('-'));
          if (reached !== step || failed.has(partition)) return;
          failed.add(partition);
          throw new Error(`injected failure at ${step}`);
        },
      },
    });
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue });
    await waitFor('every event folded', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= USERS);
    expect(failed.size).toBeGreaterThan(0);
    const identities = new IdentityIndex(store, 0);
    const pro: string[] = [];
    for (let user = 1; user < USERS; user += 2) {
      const owner = (await identities.reload([identityKey({ type: 'cookie_id', value: `c-${user}` })])).get(identityKey({ type: 'cookie_id', value: `c-${user}` }));
      pro.push(owner as string);
    }
    const runs = new SegmentRunStore(store);
    // Each partition's retry records the cut-short fold's changes as it starts: once the last fold has.
    const entered = await waitFor('the changes recorded', async () => {
      const counts = new Map<string, number>();
      for (const change of await runs.changesSince(new Date(0))) for (const id of change.changes.pro?.entered ?? []) counts.set(id, (counts.get(id) ?? 0) + 1);
      return counts.size >= pro.length ? counts : null;
    }, 30_000, 200);
    // Read again once the writers had time for more folds: nothing is recorded a second time.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const again = new Map<string, number>();
    for (const change of await runs.changesSince(new Date(0))) for (const id of change.changes.pro?.entered ?? []) again.set(id, (again.get(id) ?? 0) + 1);
    expect(again).toEqual(entered);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
    return { pro, entered };
  }

  it.each<FoldStep>(['versions-written', 'position-saved'])('records them once when it failed at %s and was retried', async (step) => {
    const { pro, entered } = await drainFailingAt(step);
    expect([...entered.keys()].sort()).toEqual([...pro].sort());
    expect([...entered.values()].every((count) => count === 1)).toBe(true);
  });
});
