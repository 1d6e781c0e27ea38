import { COLLECTIONS, type Store } from '../../store/db';
import { prepareNextRun, prepareRun, runOfStored, SegmentRunStore, type RunDoc } from '../../store/segmentRuns';
import { SegmentStore } from '../../store/segments';
import { segmentDoc } from '../support/segmentFixtures';
import { testStore } from '../support/services';

describe('the segments a run holds', () => {
  let store: Store;
  let segments: SegmentStore;
  let runs: SegmentRunStore;
  beforeAll(async () => {
    store = await testStore('runscope');
    segments = new SegmentStore(store);
    runs = new SegmentRunStore(store);
    for (const doc of [
      segmentDoc('base', { identity: 'email' }),
      segmentDoc('target', { all: [{ segment: 'base' }, { event: 'purchase' }] }),
      segmentDoc('uses-target', { not: { segment: 'target' } }),
      segmentDoc('uses-user', { any: [{ segment: 'uses-target' }, { segment: 'other' }] }),
      segmentDoc('other', { trait: 'tier', op: 'eq', value: 'gold' }),
      segmentDoc('unrelated', { segment: 'base' }),
      segmentDoc('alone', { identity: 'maid' }),
    ]) {
      await segments.create(doc);
    }
  });
  afterAll(() => store.close());

  /** The segments of a run prepared for `only`; the run is then ended, as a worker would, so the next stands alone. */
  const scopeOf = async (only?: string[], keepRunning = false) => {
    const run = only ? await prepareRun(segments, runs, new Date(), new Date(), only) : (await prepareNextRun(segments, runs, new Date(), new Date(), 4000, null))!.run;
    if (!keepRunning) await runs.saveRun({ ...run, state: 'completed', finishedAt: new Date() });
    return run.segments.map((s) => s.id).sort();
  };

  it("holds a segment's own run to it, the segments whose rules lead to it, and what all of those refer to", async () => {
    expect(await scopeOf(['target'])).toEqual(['base', 'other', 'target', 'uses-target', 'uses-user']);
    expect(await scopeOf(['other'])).toEqual(['base', 'other', 'target', 'uses-target', 'uses-user']);
    expect(await scopeOf(['unrelated'])).toEqual(['base', 'unrelated']);
    expect(await scopeOf(['base'])).toEqual(['base', 'other', 'target', 'unrelated', 'uses-target', 'uses-user']);
    expect(await scopeOf(['alone'])).toEqual(['alone']);
  });

  it('takes in the segments of runs whose pass has not begun, so it supersedes them: edits in a row cost one pass', async () => {
    expect(await scopeOf(['alone'], true)).toEqual(['alone']);
    expect(await scopeOf(['unrelated'], true)).toEqual(['alone', 'base', 'unrelated']);
    // Evaluated later than the others (a run repeated in one second moves to the next): runs of the
    // same second are ordered by id, not by when they were asked for.
    const latest = await prepareRun(segments, runs, new Date(Date.now() + 10_000), new Date(), ['other']);
    expect(latest.segments.map((s) => s.id).sort()).toEqual(['alone', 'base', 'other', 'target', 'unrelated', 'uses-target', 'uses-user']);
    const running = (await runs.runs.find({ state: 'running' }).toArray()).map(runOfStored);
    const supersededBy = await Promise.all(running.filter((run) => run._id !== latest._id).map((run) => runs.supersededBy(run)));
    for (const run of running) await runs.saveRun({ ...run, state: 'completed', finishedAt: new Date() });
    expect(supersededBy).toEqual([latest._id, latest._id]);
  });

  it('leaves a run whose pass has begun to finish, not taking in its segments', async () => {
    const begun = await prepareRun(segments, runs, new Date(), new Date(), ['alone']);
    await runs.markPassStarted(begun._id, new Date(), 'attempt-1');
    expect(await scopeOf(['unrelated'])).toEqual(['base', 'unrelated']);
    await runs.saveRun({ ...begun, state: 'completed', finishedAt: new Date() });
  });

  it('lets only the latest attempt at a pass write its result: an earlier one still going finds it taken over', async () => {
    const run = await prepareRun(segments, runs, new Date(Date.now() + 20_000), new Date(), ['alone']);
    await runs.markPassStarted(run._id, new Date(), 'attempt-1');
    expect(await runs.holdsPass(run._id, 'attempt-1')).toBe(true);
    // Given up on, attempt 1 goes on while attempt 2 begins the pass again.
    await runs.markPassStarted(run._id, new Date(), 'attempt-2');
    expect(await runs.holdsPass(run._id, 'attempt-1')).toBe(false);
    expect(await runs.savePass({ ...run, evaluated: 1 }, 'attempt-1')).toBe(false);
    // Attempt 1 had written three chunks; attempt 2 found people for one.
    for (let n = 0; n < 3; n++) await runs.writeChunk(run._id, n, { ids: [`prf_${n}`], bits: [new Uint8Array([1])] });
    expect(await runs.savePass({ ...run, evaluated: 2, chunks: [{ first: 'prf_0', last: 'prf_0', counts: [1] }] }, 'attempt-2')).toBe(true);
    expect(await runs.readChunk(run._id, 0)).not.toBeNull();
    expect(await runs.readChunk(run._id, 1)).toBeNull();
    expect(await runs.readChunk(run._id, 2)).toBeNull();
    expect(await runs.getRun(run._id)).toMatchObject({ evaluated: 2, passToken: 'attempt-2', state: 'running' });
    // Once the run has ended, not even the latest writes over it.
    await runs.saveRun({ ...run, state: 'completed', finishedAt: new Date() });
    expect(await runs.savePass({ ...run, evaluated: 3 }, 'attempt-2')).toBe(false);
  });

  it('holds every segment in a run for all', async () => {
    expect(await scopeOf()).toEqual(['alone', 'base', 'other', 'target', 'unrelated', 'uses-target', 'uses-user']);
  });

  it('splits the segments of a run of every segment into runs of at most so many, each holding the segments its rules refer to', async () => {
    const at = new Date(Date.now() + 30_000);
    // Each run is prepared once the one before has ended, after its key.
    const split: RunDoc[] = [];
    const keys: string[] = [];
    for (let after: string | null = null; ; ) {
      const next = await prepareNextRun(segments, runs, at, new Date(), 3, after);
      if (!next) break;
      // Prepared again (a retried activity), the same run is found.
      expect((await prepareNextRun(segments, runs, at, new Date(), 3, after))!.run._id).toBe(next.run._id);
      expect(next.run.state).toBe('running');
      for (const { id } of next.run.segments) expect((await segments.get(id))?.lastRun).toMatchObject({ runId: next.run._id, state: 'running' });
      await runs.saveRun({ ...next.run, state: 'completed', finishedAt: new Date() });
      split.push(next.run);
      keys.push(next.key);
      after = next.key;
    }
    // `alone` refers to nothing and nothing to it; the other six are joined by their references, so they stay together past the three.
    expect(split.map((run) => run.segments.map((s) => s.id))).toEqual([['alone'], ['base', 'other', 'target', 'unrelated', 'uses-target', 'uses-user']]);
    expect(keys).toEqual(['alone', 'base']);
    expect(split.every((run) => run.ofEverySegment)).toBe(true);
  });

  it("does not take a run of every segment into an edit's run, even before its pass begins", async () => {
    const everySegment = (await prepareNextRun(segments, runs, new Date(), new Date(), 4000, null))!.run;
    expect(everySegment.segments).toHaveLength(7);
    expect(await scopeOf(['alone'])).toEqual(['alone']);
    expect(await runs.supersededBy(everySegment)).toBeNull();
    await runs.saveRun({ ...everySegment, state: 'completed', finishedAt: new Date() });
  });

  it('finds the dependents of a rule changed to refer elsewhere, and of segments stored before references were kept', async () => {
    expect(await segments.edit('uses-target', 1, { ruleJson: JSON.stringify({ segment: 'alone' }), version: 2 })).toBe(true);
    expect(await scopeOf(['target'])).toEqual(['base', 'target']);
    expect(await scopeOf(['alone'])).toEqual(['alone', 'other', 'uses-target', 'uses-user']);
    // A document written without `refersTo` is found again once the worker indexes it at start.
    await store.db.collection(COLLECTIONS.segments).updateOne({ _id: 'unrelated' } as never, { $unset: { refersTo: '' } });
    expect(await scopeOf(['base'])).toEqual(['base', 'target']);
    expect(await segments.indexReferences()).toBe(1);
    expect(await scopeOf(['base'])).toEqual(['base', 'target', 'unrelated']);
  });

  it('holds a burst of edits to what they touch, however many runs are still going', async () => {
    const burst = Array.from({ length: 65 }, (_, n) => `burst-${String(n).padStart(2, '0')}`);
    for (const id of burst) await segments.create(segmentDoc(id, { identity: 'email' }));
    for (const id of burst) await scopeOf([id], true);
    // Past a few dozen segments they are read at once, but the run still holds only these.
    expect(await scopeOf(['unrelated'])).toEqual([...burst, 'base', 'unrelated'].sort());
    for (const run of (await runs.runs.find({ state: 'running' }).toArray()).map(runOfStored)) await runs.saveRun({ ...run, state: 'completed', finishedAt: new Date() });
  });
});
