import type { Store } from '../../store/db';
import { SEGMENT_COLLECTIONS, SegmentRunStore, type RunDoc } from '../../store/segmentRuns';
import { testStore, uniqueName } from '../support/services';

/**
 * A run's record holds its index: per chunk of 10,000 profiles, the members of each segment. A run
 * of every segment over 10M profiles has 1,000 chunks; with 2,000 segments, numbers stored as such
 * (~10 bytes each) took ~20 MB, more than a document holds, and the run failed at its end for ever.
 */
describe("a segment run's index", () => {
  let store: Store;
  let runs: SegmentRunStore;
  beforeAll(async () => {
    store = await testStore('runindex');
    runs = new SegmentRunStore(store);
  });
  afterAll(() => store.close());

  const runOf = (id: string, segments: number, chunks: number, count: (chunk: number, segment: number) => number): RunDoc => ({
    _id: id,
    segments: Array.from({ length: segments }, (_, k) => ({ id: `seg_${String(k).padStart(5, '0')}`, version: 1, ruleJson: '{"identity":"cookie_id"}' })),
    now: new Date(),
    state: 'completed',
    startedAt: new Date(),
    finishedAt: new Date(),
    documentsScanned: 0,
    evaluated: 0,
    chunks: Array.from({ length: chunks }, (_, n) => ({ first: `p_${String(n).padStart(7, '0')}a`, last: `p_${String(n).padStart(7, '0')}z`, counts: Array.from({ length: segments }, (__, k) => count(n, k)) })),
    members: {},
    entered: {},
    exited: {},
    error: null,
  });
  const countsOf = (run: RunDoc | null) => run?.chunks.map((chunk) => Array.from(chunk.counts));

  it('stores and reads back the index of 1,000 chunks and 2,000 segments', async () => {
    const run = runOf(uniqueName('run'), 2000, 1000, (n, k) => (n * 7 + k * 13) % 10_001);
    const read = await runs.startRun(run);
    expect(read?.chunks.map(({ first, last }) => [first, last])).toEqual(run.chunks.map(({ first, last }) => [first, last]));
    expect(countsOf(read)).toEqual(countsOf(run));
    // Not under `counts`: a worker of the version before finds none and fails, rather than reading every chunk as empty.
    const stored = await store.db.collection<{ _id: string; chunks: Array<Record<string, unknown>> }>(SEGMENT_COLLECTIONS.runs).findOne({ _id: run._id });
    expect(Object.keys(stored?.chunks[0] ?? {}).sort()).toEqual(['first', 'last', 'packed']);
  });

  it('keeps counts past 65,535 whole, and reads an index stored before counts were packed', async () => {
    const wide = runOf(uniqueName('run'), 3, 2, (n, k) => (n === 1 && k === 2 ? 70_000 : n + k));
    expect(countsOf(await runs.startRun(wide))).toEqual([[0, 1, 2], [1, 2, 70_000]]);

    const before = runOf(uniqueName('run'), 2, 2, (n, k) => n * 10 + k);
    await store.db.collection(SEGMENT_COLLECTIONS.runs).insertOne(before as never);
    expect(countsOf(await runs.getRun(before._id))).toEqual([[0, 1], [10, 11]]);
  });
});
