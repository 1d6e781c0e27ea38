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

  /** The sample parts stored (the header aside). */
  const partsLeft = async () => (await store.db.collection<{ _id: string }>(SEGMENT_COLLECTIONS.samples).find({ _id: { $ne: 'latest' } }).toArray()).map((doc) => doc._id).sort();
  /** The parts of a run's sample of `count` profiles (200 a part). */
  const partIds = (runId: string, count: number) => Array.from({ length: Math.ceil(count / 200) }, (_, part) => `${runId}:${part}`);
  const subjects = (prefix: string, count: number) => Array.from({ length: count }, (_, n) => ({ id: `${prefix}_${n}` }) as unknown as SegmentSubject);

  it('is written by both of a store’s first two runs ending at once, and reads back whole as one of them', async () => {
    // Both find no sample and insert its header: the second insert is a duplicate, not a failed run.
    for (let round = 0; round < 10; round++) {
      await store.db.collection(SEGMENT_COLLECTIONS.samples).deleteMany({});
      const written = await Promise.allSettled([runs.writeSample(`run_a${round}`, new Date(1000), 40, subjects('a', 40)), runs.writeSample(`run_b${round}`, new Date(1000), 30, subjects('b', 30))]);
      expect(written.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled']);
      const sample = await runs.readSample();
      expect([
        { runId: `run_a${round}`, population: 40, subjects: subjects('a', 40) },
        { runId: `run_b${round}`, population: 30, subjects: subjects('b', 30) },
      ]).toContainEqual(sample);
      expect(await partsLeft()).toEqual([...partIds(sample?.runId ?? '', sample?.subjects.length ?? 0)].sort());
    }
  });

  it('stays the sample of the run whose pass began last, however the runs end, and keeps no parts of the others', async () => {
    await store.db.collection(SEGMENT_COLLECTIONS.samples).deleteMany({});
    await runs.writeSample('run_newer', new Date(2000), 30, subjects('n', 300));
    await runs.writeSample('run_older', new Date(1000), 40, subjects('o', 400));
    expect(await runs.readSample()).toEqual({ runId: 'run_newer', population: 30, subjects: subjects('n', 300) });
    expect(await partsLeft()).toEqual(partIds('run_newer', 300).sort());
    for (let round = 0; round < 5; round++) {
      // Three runs ending at once, each from the sample before: the latest pass's stands, alone.
      const begun = [3, 5, 4].map((k) => ({ runId: `run_${round}_${k}`, at: new Date(10_000 * (round + 1) + k) }));
      await Promise.all(begun.map(({ runId, at }, n) => runs.writeSample(runId, at, n, subjects(runId, 250 + n))));
      const sample = await runs.readSample();
      expect(sample?.runId).toBe(`run_${round}_5`);
      expect(sample?.subjects).toEqual(subjects(`run_${round}_5`, 251));
      expect(await partsLeft()).toEqual(partIds(`run_${round}_5`, 251).sort());
    }
  });
});
