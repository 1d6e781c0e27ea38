import { COLLECTIONS, type Store } from '../../store/db';
import { SegmentStore } from '../../store/segments';
import { segmentDoc } from '../support/segmentFixtures';
import { testStore } from '../support/services';

describe('a segment’s size lowered by erasures of its run', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('segment_sizes');
  });
  afterAll(() => store.close());

  const at = new Date('2026-11-20T10:00:00Z');
  const completed = (runId: string) => ({ runId, state: 'completed' as const, startedAt: at, finishedAt: at });

  it('ends at the smallest size whatever order erasures of one run write in', async () => {
    const segments = new SegmentStore(store);
    for (let n = 0; n < 10; n++) {
      await segments.create(segmentDoc(`sized_${n}`, { identity: 'email' }));
      await segments.completeRun(`sized_${n}`, { runId: 'run_sized', version: 1, size: 100, now: at, startedAt: at, finishedAt: at }, completed('run_sized'));
    }
    await Promise.all(Array.from({ length: 10 }, (_, n) => [99, 96, 98, 97].map((size) => new SegmentStore(store).lowerRunSize(`sized_${n}`, 'run_sized', size))).flat());
    for (let n = 0; n < 10; n++) expect((await segments.get(`sized_${n}`))?.current?.size).toBe(96);
  });

  it('keeps an edit made while an erasure lowers the size a segment stored before run states holds itself', async () => {
    const raw = store.db.collection<{ _id: string; name: string; current?: { runId: string; size: number } }>(COLLECTIONS.segments);
    for (let n = 0; n < 10; n++) {
      await new SegmentStore(store).create(segmentDoc(`legacy_${n}`, { identity: 'email' }));
      await raw.updateOne({ _id: `legacy_${n}` }, { $set: { current: { runId: 'run_legacy', size: 50 } } });
    }
    await Promise.all(
      Array.from({ length: 10 }, (_, n) => [
        new SegmentStore(store).edit(`legacy_${n}`, 1, { name: `renamed_${n}`, version: 2 }),
        new SegmentStore(store).lowerRunSize(`legacy_${n}`, 'run_legacy', 49),
        new SegmentStore(store).lowerRunSize(`legacy_${n}`, 'run_legacy', 48),
      ]).flat(),
    );
    for (let n = 0; n < 10; n++) expect(await raw.findOne({ _id: `legacy_${n}` })).toMatchObject({ name: `renamed_${n}`, current: { size: 48 } });
  });
});
