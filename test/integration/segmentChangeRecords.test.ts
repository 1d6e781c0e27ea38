import { Binary } from 'mongodb';
import type { Store } from '../../store/db';
import { MatchTableStore } from '../../store/matchTables';
import { SEGMENT_COLLECTIONS, SegmentRunStore, type ChangeDoc } from '../../store/segmentRuns';
import { SubjectErasure } from '../../store/subjectErasure';
import { testStore } from '../support/services';

describe('segment change records as stored', () => {
  let store: Store;
  let runs: SegmentRunStore;
  beforeAll(async () => {
    store = await testStore('segchanges');
    runs = new SegmentRunStore(store);
  });
  afterAll(() => store.close());

  const day = (n: number, hour = 12) => new Date(Date.UTC(2026, 10, n, hour));
  const fold: ChangeDoc = {
    _id: 'p3:src_a:120',
    at: day(2),
    changes: { seg_gold: { entered: ['prf_ann', 'prf_bob'], exited: ['prf_cy'], version: 2 }, seg_new: { entered: [], exited: [], statedIn: ['prf_ann'], statedOut: ['prf_cy'] } },
    touched: ['prf_dee'],
  };
  /** Written by a version that kept the changes as fields. */
  const legacy: ChangeDoc = { _id: 'p1:src_a:40', at: day(1), changes: { seg_gold: { entered: ['prf_eve'], exited: [] } } };

  it('keeps a fold\'s changes as one deflated value, read back whole beside records written as fields', async () => {
    await runs.recordChanges(fold);
    await store.db.collection(SEGMENT_COLLECTIONS.changes).insertOne({ ...legacy } as never);
    const stored = await store.db.collection(SEGMENT_COLLECTIONS.changes).findOne({ _id: fold._id as never });
    expect(Object.keys(stored ?? {}).sort()).toEqual(['_id', 'at', 'body']);
    expect(stored?.body).toBeInstanceOf(Binary);
    expect(await runs.changesSince(day(1, 0))).toEqual([legacy, fold]);
    expect(await runs.changesSince(day(2, 0))).toEqual([fold]);
  });

  it('counts both kinds into history by day, then removes them', async () => {
    await runs.foldChangesIntoHistory(day(3));
    expect(await runs.changesSince(new Date(0))).toEqual([]);
    const history = (await runs.historyOf('seg_gold')).map(({ day: on, entered, exited }) => ({ on, entered, exited }));
    expect(history.sort((a, b) => a.on.localeCompare(b.on))).toEqual([
      { on: '20261101', entered: 1, exited: 0 },
      { on: '20261102', entered: 2, exited: 1 },
    ]);
  });

  it('is rewritten without an erased subject, still deflated, and left alone when it does not name them', async () => {
    const other: ChangeDoc = { _id: 'p2:src_b:7', at: day(4), changes: { seg_gold: { entered: ['prf_bob'], exited: [] } } };
    await runs.recordChanges(fold);
    await runs.recordChanges(other);
    const touched: Record<string, number> = {};
    await new SubjectErasure(store, new MatchTableStore(store, { cap: 10, ttlMs: 86_400_000 })).segments({ keys: new Set(), documents: new Set(['prf_ann', 'prf_dee']) }, touched);
    expect(touched).toEqual({ [SEGMENT_COLLECTIONS.changes]: 1 });
    const [erased, untouched] = await runs.changesSince(new Date(0));
    expect(erased).toEqual({
      _id: fold._id,
      at: fold.at,
      changes: { seg_gold: { entered: ['prf_bob'], exited: ['prf_cy'], version: 2 }, seg_new: { entered: [], exited: [], statedIn: [], statedOut: ['prf_cy'] } },
      touched: [],
    });
    expect(untouched).toEqual(other);
    expect((await store.db.collection(SEGMENT_COLLECTIONS.changes).findOne({ _id: fold._id as never }))?.body).toBeInstanceOf(Binary);
  });
});
