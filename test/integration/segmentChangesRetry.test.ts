import type { Client } from '@temporalio/client';
import type { FoldStep } from '../../activities/profileWriter';
import { identityKey } from '../../domain/identity';
import { sourceWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { IdentityIndex } from '../../store/identities';
import { ItemModelStore } from '../../store/itemModel';
import { SegmentRunStore } from '../../store/segmentRuns';
import { SegmentStore } from '../../store/segments';
import { ensureSourceWorkflow } from '../../temporal/client';
import { appendToLog } from '../support/appendEvents';
import { userEvent, type GeneratedEvent } from '../support/audience';
import { eventsFolded } from '../support/profiles';
import { segmentDoc } from '../support/segmentFixtures';
import { baseConfig, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor, type RunningWorker } from '../support/services';

const USERS = 24;

describe('the real-time segment and item model changes of a fold cut short after writing its versions', () => {
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
   * Appends the events to a new source's log, in a store with a segment of pro users, and drains them
   * by a worker whose first fold in each partition fails at `step`.
   */
  async function drainFailingAt(step: FoldStep, generated: GeneratedEvent[], before: (store: Store) => Promise<void> = async () => {}): Promise<{ store: Store; sourceId: string }> {
    const store = await testStore(uniqueName('segchg').replace(/-/g, '_').slice(0, 40));
    stores.push(store);
    await new SegmentStore(store).create(segmentDoc('pro', { trait: 'plan.tier', op: 'eq', value: 'pro' }));
    await before(store);
    const sourceId = uniqueName('src');
    await appendToLog(store, sourceId, generated, generated.length);
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
    await waitFor('every event folded', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= generated.length);
    expect(failed.size).toBeGreaterThan(0);
    return { store, sourceId };
  }

  /** Counts, with each read again once the writers had time for more folds: nothing is recorded a second time. */
  async function settledCounts(what: string, count: () => Promise<Map<string, number>>, expected: number): Promise<Map<string, number>> {
    // Each partition's retry records the cut-short fold's changes as it starts: once the last fold has.
    const counted = await waitFor(what, async () => {
      const counts = await count();
      return counts.size >= expected ? counts : null;
    }, 30_000, 200);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(await count()).toEqual(counted);
    return counted;
  }

  const ownerOf = async (store: Store, cookie: string) => (await new IdentityIndex(store, 0).reload([identityKey({ type: 'cookie_id', value: cookie })])).get(identityKey({ type: 'cookie_id', value: cookie })) as string;

  it.each<FoldStep>(['versions-written', 'position-saved'])('records the segment changes once when it failed at %s and was retried', async (step) => {
    // Every user's first event makes a profile; odd users are on the pro plan.
    const { store, sourceId } = await drainFailingAt(step, Array.from({ length: USERS }, (_, user) => userEvent(user, 1, 'sc')));
    const pro: string[] = [];
    for (let user = 1; user < USERS; user += 2) pro.push(await ownerOf(store, `c-${user}`));
    const runs = new SegmentRunStore(store);
    const entered = await settledCounts('the segment changes recorded', async () => {
      const counts = new Map<string, number>();
      for (const change of await runs.changesSince(new Date(0))) for (const id of change.changes.pro?.entered ?? []) counts.set(id, (counts.get(id) ?? 0) + 1);
      return counts;
    }, pro.length);
    expect([...entered.keys()].sort()).toEqual([...pro].sort());
    expect([...entered.values()].every((count) => count === 1)).toBe(true);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  });

  it.each<FoldStep>(['versions-written', 'position-saved'])("records the item model's changes once when it failed at %s and was retried", async (step) => {
    // Every user buys one item: a person of one document, whose items the item model takes in as a change.
    const purchases = Array.from({ length: USERS }, (_, user) => ({ ...userEvent(user, 1, 'it'), type: 'purchase', properties: { item: `sku-${user % 3}` } }));
    // An item model built (empty) a minute ago: its next refresh takes in what folds record from now on.
    const built = (store: Store) => new ItemModelStore(store).publish({ _id: 'current', buildId: 'empty', at: new Date(Date.now() - 60_000), chunks: 0, items: 0, people: 0, eventTypes: ['purchase'], applied: [], previous: null });
    const { store, sourceId } = await drainFailingAt(step, purchases, built);
    const buyers = await Promise.all(purchases.map((_, user) => ownerOf(store, `c-${user}`)));
    const models = new ItemModelStore(store);
    const changed = await settledCounts('the item changes recorded', async () => {
      const counts = new Map<string, number>();
      for (const record of await models.pendingChanges()) for (const { personId } of record.people) counts.set(personId, (counts.get(personId) ?? 0) + 1);
      return counts;
    }, buyers.length);
    expect([...changed.keys()].sort()).toEqual([...buyers].sort());
    expect([...changed.values()].every((count) => count === 1)).toBe(true);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  });
});
