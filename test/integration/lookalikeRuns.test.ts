import { createLookalikeActivities } from '../../activities/lookalike';
import type { Store } from '../../store/db';
import { LookalikeRunStore, type LookalikeRunDoc } from '../../store/lookalikeRuns';
import { baseConfig, testStore, testTemporal } from '../support/services';

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

  it("names a re-train its first run's latest on a retry that finds its outcome saved (the attempt before stopped in between)", async () => {
    const runs = new LookalikeRunStore(store);
    await runs.create({ ...run('lal_first'), state: 'completed', finishedAt: at });
    await runs.create({ ...run('lal_first:retrain'), retrain: null, retrainOf: 'lal_first', state: 'completed', finishedAt: at, segmentId: 'seg_ext' });
    await runs.create({ ...run('lal_first:failed'), retrain: null, retrainOf: 'lal_first', state: 'failed', error: 'seed gone', finishedAt: at });
    const temporal = await testTemporal();
    try {
      const activities = createLookalikeActivities({ store, temporal, config: baseConfig });
      await activities.trainLookalike({ runId: 'lal_first:retrain' });
      expect((await runs.get('lal_first'))?.latestRetrain).toBe('lal_first:retrain');
      // A failed re-train holds no model: the latest stays the one that completed.
      await activities.trainLookalike({ runId: 'lal_first:failed' });
      expect((await runs.get('lal_first'))?.latestRetrain).toBe('lal_first:retrain');
    } finally {
      await temporal.connection.close();
    }
  });
});
