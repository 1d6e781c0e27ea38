import type { Store } from '../../store/db';
import { LookalikeRunStore, type LookalikeRunDoc } from '../../store/lookalikeRuns';
import { testStore } from '../support/services';

describe('lookalike runs written by a training and the API at once', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('lookalike_runs');
  });
  afterAll(() => store.close());

  const at = new Date('2026-11-20T10:00:00Z');
  const run = (id: string): LookalikeRunDoc => ({
    _id: id,
    seedId: 'seg_seed',
    base: 'all',
    reach: 1000,
    accuracy: null,
    state: 'running',
    auc: null,
    holdoutSize: 0,
    trainingSize: 0,
    threshold: null,
    reachFound: null,
    segmentId: null,
    topFeatures: [],
    excluded: [],
    error: null,
    retrain: { every: 'P1D' },
    startedAt: at,
    finishedAt: null,
  });

  it('keeps both a training’s outcome and a schedule stopped while it trained', async () => {
    const ids = Array.from({ length: 15 }, (_, n) => `lal_both_${n}`);
    const runs = new LookalikeRunStore(store);
    for (const id of ids) await runs.create(run(id));
    await Promise.all(
      ids.flatMap((id) => [
        new LookalikeRunStore(store).saveOutcome(id, { state: 'completed', error: null, finishedAt: at, auc: 0.81, segmentId: `seg_${id}` }),
        new LookalikeRunStore(store).set(id, { retrain: null }),
      ]),
    );
    for (const id of ids) expect(await runs.get(id)).toMatchObject({ state: 'completed', auc: 0.81, segmentId: `seg_${id}`, retrain: null });
  });
});
