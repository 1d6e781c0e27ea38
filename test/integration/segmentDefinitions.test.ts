import type { Store } from '../../store/db';
import { SegmentStore, type SegmentDoc } from '../../store/segments';
import { segmentDoc } from '../support/segmentFixtures';
import { testStore } from '../support/services';

describe('segment definitions as a frequent reader keeps them', () => {
  let store: Store;
  /** The API's store and a partition writer's, as in two processes. */
  let writer: SegmentStore;
  let reader: SegmentStore;
  beforeAll(async () => {
    store = await testStore('segdefs');
    writer = new SegmentStore(store);
    reader = new SegmentStore(store);
  });
  afterAll(() => store.close());

  const rulesOf = (docs: SegmentDoc[]) => Object.fromEntries(docs.map((doc) => [doc._id, JSON.parse(doc.ruleJson)]));

  it('reads them again after every create, edit and removal, and keeps them while none changed', async () => {
    expect(await reader.definitions()).toEqual([]);
    await writer.create(segmentDoc('buyers', { event: 'purchase' }));
    const afterCreate = await reader.definitions();
    expect(rulesOf(afterCreate)).toEqual({ buyers: { event: 'purchase' } });
    // Unchanged: the same list, not read again.
    expect(await reader.definitions()).toBe(afterCreate);

    expect(await writer.replace(segmentDoc('buyers', { event: 'purchase', count: { op: 'gte', value: 2 } }, 2), 1)).toBe(true);
    const afterEdit = await reader.definitions();
    expect(rulesOf(afterEdit)).toEqual({ buyers: { event: 'purchase', count: { op: 'gte', value: 2 } } });
    expect(afterEdit[0].version).toBe(2);

    // An edit that lost its race changes nothing, and the kept list stands.
    expect(await writer.replace(segmentDoc('buyers', { event: 'page_view' }, 3), 1)).toBe(false);
    expect(await reader.definitions()).toBe(afterEdit);

    await writer.create(segmentDoc('gold', { trait: 'tier', op: 'eq', value: 'gold' }));
    expect(Object.keys(rulesOf(await reader.definitions())).sort()).toEqual(['buyers', 'gold']);
    expect(await writer.remove('buyers')).toBe(true);
    expect(Object.keys(rulesOf(await reader.definitions()))).toEqual(['gold']);
  });

  it('never shows a run as running again once it is shown ended, and a later run still replaces it', async () => {
    await writer.create(segmentDoc('shown', { event: 'purchase' }));
    const startedAt = new Date('2026-05-01T10:00:00Z');
    const run = (runId: string, state: 'running' | 'completed', at = startedAt) => ({ runId, state, startedAt: at, finishedAt: state === 'running' ? null : at });
    await writer.setLastRuns(['shown'], run('run_a', 'running'));
    await writer.setLastRuns(['shown'], run('run_a', 'completed'));
    // A request that found run_a running, writing after it completed.
    await writer.setLastRuns(['shown'], run('run_a', 'running'));
    expect((await writer.get('shown'))?.lastRun).toMatchObject({ runId: 'run_a', state: 'completed' });
    const later = new Date(startedAt.getTime() + 1000);
    await writer.setLastRuns(['shown'], run('run_b', 'running', later));
    expect((await writer.get('shown'))?.lastRun).toMatchObject({ runId: 'run_b', state: 'running' });
    await writer.setLastRuns(['shown'], run('run_a', 'running'));
    expect((await writer.get('shown'))?.lastRun).toMatchObject({ runId: 'run_b', state: 'running' });
  });
});
