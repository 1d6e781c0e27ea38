import type { Store } from '../../store/db';
import { SEGMENT_COLLECTIONS, SegmentRunStore } from '../../store/segmentRuns';
import type { SegmentSubject } from '../../domain/profile';
import { testStore } from '../support/services';

describe('the sample segment runs keep for estimates', () => {
  let store: Store;
  let runs: SegmentRunStore;
  beforeAll(async () => {
    store = await testStore('segsamples');
    runs = new SegmentRunStore(store);
  });
  afterAll(() => store.close());

  const subjects = (prefix: string, count: number) => Array.from({ length: count }, (_, n) => ({ id: `${prefix}_${n}` }) as unknown as SegmentSubject);

  it('is written by both of a store’s first two runs ending at once, and reads back whole as one of them', async () => {
    // Both find no sample and insert its header: the second insert is a duplicate, not a failed run.
    for (let round = 0; round < 10; round++) {
      await store.db.collection(SEGMENT_COLLECTIONS.samples).deleteMany({});
      const written = await Promise.allSettled([runs.writeSample(`run_a${round}`, 40, subjects('a', 40)), runs.writeSample(`run_b${round}`, 30, subjects('b', 30))]);
      expect(written.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled']);
      const sample = await runs.readSample();
      expect([
        { runId: `run_a${round}`, population: 40, subjects: subjects('a', 40) },
        { runId: `run_b${round}`, population: 30, subjects: subjects('b', 30) },
      ]).toContainEqual(sample);
    }
  });
});
