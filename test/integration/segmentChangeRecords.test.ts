import { Binary } from 'mongodb';
import { setFlagsFromString } from 'v8';
import { runInNewContext } from 'vm';
import type { Store } from '../../store/db';
import { deflateDocument } from '../../store/deflatedBson';
import { MatchTableStore } from '../../store/matchTables';
import { SEGMENT_COLLECTIONS, SegmentRunStore, type ChangeDoc } from '../../store/segmentRuns';
import type { SegmentDoc } from '../../store/segments';
import { onCurrentSnapshots, SegmentMembership, SnapshotReleased } from '../../store/segmentMembership';
import { Bitmap } from '../../domain/segments';
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

  it('keeps a fold\'s changes as one deflated value, read back whole beside records written as one deflated document or as fields', async () => {
    await runs.recordChanges(fold);
    await store.db.collection(SEGMENT_COLLECTIONS.changes).insertOne({ ...legacy } as never);
    const deflatedWhole: ChangeDoc = { _id: 'p2:src_a:80', at: day(1, 18), changes: { seg_gold: { entered: [], exited: ['prf_eve'] } }, touched: ['prf_fay'] };
    await store.db.collection(SEGMENT_COLLECTIONS.changes).insertOne({ _id: deflatedWhole._id, at: deflatedWhole.at, body: deflateDocument({ changes: deflatedWhole.changes, touched: deflatedWhole.touched }) } as never);
    const stored = await store.db.collection(SEGMENT_COLLECTIONS.changes).findOne({ _id: fold._id as never });
    expect(Object.keys(stored ?? {}).sort()).toEqual(['_id', 'at', 'parts']);
    expect(stored?.parts).toBeInstanceOf(Binary);
    expect(await runs.changesSince(day(1, 0))).toEqual([legacy, deflatedWhole, fold]);
    expect(await runs.changesSince(day(2, 0))).toEqual([fold]);
    await store.db.collection(SEGMENT_COLLECTIONS.changes).deleteOne({ _id: deflatedWhole._id as never });
  });

  it('keeps a fold that states thousands of relinked people in hundreds of segments, more than one BSON document holds before deflating', async () => {
    const people = Array.from({ length: 2_000 }, (_, n) => `prf_relinked_${n}`);
    const large: ChangeDoc = { _id: 'p5:src_c:9', at: day(9), changes: Object.fromEntries(Array.from({ length: 500 }, (_, s) => [`seg_${s}`, { entered: [], exited: [], ...(s % 2 === 0 ? { statedIn: people } : { statedOut: people }) }])) };
    await runs.recordChanges(large);
    expect(await runs.changesSince(day(9, 0))).toEqual([large]);
    await store.db.collection(SEGMENT_COLLECTIONS.changes).deleteOne({ _id: large._id as never });
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
    expect((await store.db.collection(SEGMENT_COLLECTIONS.changes).findOne({ _id: fold._id as never }))?.parts).toBeInstanceOf(Binary);
  });
  it('takes a person an opt-out stated out of a segment out of a snapshot of any rule version begun before it, and not of one begun after', async () => {
    const membership = new SegmentMembership(runs);
    const optOut: ChangeDoc = { _id: 'privacy:pr_opt', at: day(6), changes: { seg_edited: { entered: [], exited: [], statedOut: ['prf_opt'] } } };
    const versioned: ChangeDoc = { _id: 'p1:src_a:99', at: day(6), changes: { seg_edited: { entered: [], exited: ['prf_old'], version: 1 } } };
    // A run of version 2 of the rule (an edit's), whose pass read the marks before the opt-out, completed after it.
    const snapshot = (startedAt: Date) => ({ _id: 'seg_edited', version: 2, current: { runId: 'run_v2', version: 2, size: 2, now: startedAt, startedAt, finishedAt: day(7) } }) as unknown as SegmentDoc;
    const before = (await membership.realTime([snapshot(day(5))], [versioned, optOut])).get('seg_edited');
    expect([...(before ?? [])]).toEqual([['prf_opt', false]]);
    // A run begun after it read the mark itself.
    expect([...((await membership.realTime([snapshot(day(6, 13))], [versioned, optOut])).get('seg_edited') ?? [])]).toEqual([]);
  });
  it('walks a snapshot of many chunks a few at a time, in ascending order, with real-time states over it', async () => {
    // Members of seg_walk: every third of 30 ids, 10 ids a chunk; chunk 1 has gone missing.
    const ids = Array.from({ length: 30 }, (_, n) => `prf_${String(n).padStart(2, '0')}`);
    const chunkIds = [0, 1, 2].map((n) => ids.slice(n * 10, n * 10 + 10));
    const bitsOf = (slice: string[]) => {
      const bits = new Bitmap(slice.length);
      slice.forEach((id, i) => Number(id.slice(4)) % 3 === 0 && bits.set(i));
      return bits.bytes;
    };
    await runs.writeChunk('run_walk', 0, { ids: chunkIds[0], bits: [bitsOf(chunkIds[0])] });
    await runs.writeChunk('run_walk', 2, { ids: chunkIds[2], bits: [bitsOf(chunkIds[2])] });
    const at = day(8);
    const chunks = chunkIds.map((slice) => ({ first: slice[0], last: slice[slice.length - 1], counts: [0] }));
    await store.db.collection(SEGMENT_COLLECTIONS.runs).insertOne({ _id: 'run_walk', segments: [{ id: 'seg_walk', version: 1, ruleJson: '{}' }], now: at, state: 'completed', startedAt: at, finishedAt: at, documentsScanned: 30, evaluated: 30, chunks, members: {}, entered: {}, exited: {}, error: null } as never);
    const segment = { _id: 'seg_walk', version: 1, current: { runId: 'run_walk', version: 1, size: 7, now: at, startedAt: at, finishedAt: at } } as unknown as SegmentDoc;
    const read: number[] = [];
    const membership = new SegmentMembership(runs);
    const readChunk = runs.readChunk.bind(runs);
    runs.readChunk = (runId, n) => (read.push(n), readChunk(runId, n));
    try {
      const walk = await membership.ascending([segment, null], new Map([['seg_walk', new Map([['prf_04', true], ['prf_06', false]])]]));
      const found: string[] = [];
      for (const slice of [ids.slice(0, 8), ids.slice(8, 16), ids.slice(16, 30)]) {
        await walk.reach(slice[slice.length - 1]);
        for (const id of slice) {
          if (walk.has(0, id)) found.push(id);
          expect(walk.has(1, id)).toBe(false);
        }
        // The first slice lies in chunk 0: that one is read, and the next ahead, not the last.
        if (slice[0] === ids[0]) expect(read.sort()).toEqual([0, 1]);
      }
      // prf_04 entered and prf_06 left in real time; chunk 1's members are not known.
      expect(found).toEqual(['prf_00', 'prf_03', 'prf_04', 'prf_09', 'prf_21', 'prf_24', 'prf_27']);
      expect(read.sort()).toEqual([0, 1, 2]);
    } finally {
      runs.readChunk = readChunk;
    }
  });

  it('walks every member of a snapshot holding one chunk at a time, letting go of those passed', async () => {
    // Three chunks of 10 ids, every id a member of seg_pages.
    const ids = Array.from({ length: 30 }, (_, n) => `prf_pg_${String(n).padStart(2, '0')}`);
    const chunkIds = [0, 1, 2].map((n) => ids.slice(n * 10, n * 10 + 10));
    const all = (slice: string[]) => {
      const bits = new Bitmap(slice.length);
      slice.forEach((_, i) => bits.set(i));
      return bits.bytes;
    };
    for (const [n, slice] of chunkIds.entries()) await runs.writeChunk('run_pages', n, { ids: slice, bits: [all(slice)] });
    const at = day(8);
    const chunks = chunkIds.map((slice) => ({ first: slice[0], last: slice[slice.length - 1], counts: [10] }));
    await store.db.collection(SEGMENT_COLLECTIONS.runs).insertOne({ _id: 'run_pages', segments: [{ id: 'seg_pages', version: 1, ruleJson: '{}' }], now: at, state: 'completed', startedAt: at, finishedAt: at, documentsScanned: 30, evaluated: 30, chunks, members: {}, entered: {}, exited: {}, error: null } as never);
    const segment = { _id: 'seg_pages', version: 1, current: { runId: 'run_pages', version: 1, size: 30, now: at, startedAt: at, finishedAt: at } } as unknown as SegmentDoc;
    setFlagsFromString('--expose_gc');
    const collect = runInNewContext('gc') as () => void;
    const readChunks: Array<WeakRef<object>> = [];
    const readChunk = runs.readChunk.bind(runs);
    runs.readChunk = async (runId, n) => {
      const chunk = await readChunk(runId, n);
      if (chunk) readChunks.push(new WeakRef(chunk));
      return chunk;
    };
    const membership = new SegmentMembership(runs);
    try {
      const walked: string[] = [];
      for await (const page of membership.pages(segment, new Map())) walked.push(...page);
      expect(walked).toEqual(ids);
      // The walk is over, the membership still in use: none of the chunks it read is held any more.
      await new Promise((resolve) => setImmediate(resolve));
      collect();
      await new Promise((resolve) => setImmediate(resolve));
      expect({ read: readChunks.length, held: readChunks.filter((chunk) => chunk.deref() !== undefined).length }).toEqual({ read: 3, held: 0 });
      expect(await membership.members(segment, new Map(), ids[14], 3)).toEqual({ members: ids.slice(15, 18), next: ids[17] });
      // A report pass walks each of a run's segments: kept with the run, its chunks are read once for all, until it is let go.
      const walks = async () => {
        const before = readChunks.length;
        for (let walk = 0; walk < 2; walk++) for await (const page of membership.pages(segment, new Map(), { keepRun: true })) expect(page).toHaveLength(30);
        return readChunks.length - before;
      };
      expect(await walks()).toBe(3);
      membership.forget('run_pages');
      expect(await walks()).toBe(3);
    } finally {
      runs.readChunk = readChunk;
    }
  });

  it("refuses to walk a snapshot retention let go under the walk, rather than give only the real-time members, and reads the segment's current one again", async () => {
    const at = day(9);
    const bits = new Bitmap(2);
    bits.set(0);
    bits.set(1);
    const run = (id: string, chunks: number) => ({ _id: id, segments: [{ id: 'seg_gone', version: 1, ruleJson: '{}' }], now: at, state: 'completed', startedAt: at, finishedAt: at, documentsScanned: 2, evaluated: 2, chunks: Array.from({ length: chunks }, () => ({ first: 'prf_g1', last: 'prf_g2', counts: [2] })), members: {}, entered: {}, exited: {}, error: null });
    // run_old's chunks were dropped by retention (its index emptied); run_cut's index names a chunk that is gone; run_new is whole.
    await store.db.collection(SEGMENT_COLLECTIONS.runs).insertMany([run('run_old', 0), run('run_cut', 1), run('run_new', 1)] as never[]);
    await runs.writeChunk('run_new', 0, { ids: ['prf_g1', 'prf_g2'], bits: [bits.bytes] });
    const segment = (runId: string) => ({ _id: 'seg_gone', version: 1, current: { runId, version: 1, size: 2, now: at, startedAt: at, finishedAt: at } }) as unknown as SegmentDoc;
    const membership = new SegmentMembership(runs);
    const entered = new Map([['seg_gone', new Map([['prf_g3', true]])]]);
    for (const runId of ['run_old', 'run_cut', 'run_forgotten']) await expect(membership.members(segment(runId), entered, '', 10)).rejects.toBeInstanceOf(SnapshotReleased);
    // Read again, the segment names its current run.
    const current = ['run_cut', 'run_new'];
    expect(await onCurrentSnapshots(() => membership.members(segment(current.shift()!), entered, '', 10))).toEqual({ members: ['prf_g1', 'prf_g2', 'prf_g3'], next: null });
    // An activity's walk reads the segment again, with its own real-time changes (none recorded here).
    const walked = await membership.walkCurrent(segment('run_old'), entered, async () => segment('run_new'), (doc, states) => membership.members(doc, states, '', 10));
    expect(walked).toEqual({ members: ['prf_g1', 'prf_g2'], next: null });
  });

  it('has an erasure wait for a run still reading the profiles, before it has written any chunk, and not for one yet to begin its pass', async () => {
    const run = (id: string, passStartedAt?: Date) => ({ _id: id, segments: {}, now: day(3), state: 'running', startedAt: day(3), ...(passStartedAt && { passStartedAt }), finishedAt: null, documentsScanned: 0, evaluated: 0, chunks: [], members: {}, entered: {}, exited: {}, error: null });
    await store.db.collection(SEGMENT_COLLECTIONS.runs).insertMany([run('run_mid_pass', day(3)), run('run_not_begun')] as never[]);
    const erasure = new SubjectErasure(store, new MatchTableStore(store, { cap: 10, ttlMs: 86_400_000 }));
    expect(await erasure.segments({ keys: new Set(), documents: new Set(['prf_ann']) }, {})).toEqual(['run_mid_pass']);
    await store.db.collection(SEGMENT_COLLECTIONS.runs).deleteMany({ _id: { $in: ['run_mid_pass', 'run_not_begun'] } as never });
  });
  it('folds past days of changes into history once every segment reads a newer snapshot, a segment never evaluated holding back only while its first run is under way', async () => {
    const at = (n: number) => new Date(Date.UTC(2026, 11, n, 12));
    const ids = ['rel:a', 'rel:b'];
    await runs.recordChanges({ _id: ids[0], at: at(2), changes: { seg_read: { entered: ['prf_fay'], exited: [] } } });
    await runs.recordChanges({ _id: ids[1], at: at(5), changes: { seg_read: { entered: ['prf_gus'], exited: [] } } });
    const left = async () => (await runs.changesSince(at(1))).map((change) => change._id).filter((id) => ids.includes(id));
    const summary = (runId: string, startedAt: Date, state: 'running' | 'completed' | 'failed') => ({ runId, state, startedAt, finishedAt: state === 'running' ? null : startedAt });
    const evaluated = { _id: 'seg_read', current: { runId: 'run_read', version: 1, size: 2, now: at(10), startedAt: at(10), finishedAt: at(10) }, lastRun: summary('run_read', at(10), 'completed') };
    const underWay = { _id: 'seg_new_running', current: null, lastRun: summary('run_first', at(4), 'running') };
    const neverRun = { _id: 'seg_new_failed', current: null, lastRun: summary('run_failed', at(1), 'failed') };
    const release = (segments: object[]) => runs.releaseUnread(segments as SegmentDoc[], at(12), new Date(0));

    await release([evaluated, underWay, neverRun]);
    expect(await left()).toEqual([ids[1]]);
    await release([evaluated, neverRun, { ...neverRun, _id: 'seg_new_unrun', lastRun: null }]);
    expect(await left()).toEqual([]);
  });
});
