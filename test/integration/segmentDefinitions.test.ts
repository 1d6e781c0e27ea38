import { COLLECTIONS, type Store } from '../../store/db';
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

    expect(await writer.edit('buyers', 1, { ruleJson: JSON.stringify({ event: 'purchase', count: { op: 'gte', value: 2 } }), version: 2 })).toBe(true);
    const afterEdit = await reader.definitions();
    expect(rulesOf(afterEdit)).toEqual({ buyers: { event: 'purchase', count: { op: 'gte', value: 2 } } });
    expect(afterEdit[0].version).toBe(2);

    // An edit that lost its race changes nothing, and the kept list stands.
    expect(await writer.edit('buyers', 1, { ruleJson: JSON.stringify({ event: 'page_view' }), version: 3 })).toBe(false);
    expect(await reader.definitions()).toBe(afterEdit);

    await writer.create(segmentDoc('gold', { trait: 'tier', op: 'eq', value: 'gold' }));
    expect(Object.keys(rulesOf(await reader.definitions())).sort()).toEqual(['buyers', 'gold']);
    expect(await writer.remove('buyers')).toBe(true);
    expect(Object.keys(rulesOf(await reader.definitions()))).toEqual(['gold']);
  });

  it('writes only the fields an edit changes: an edit made from an older read keeps the other edits', async () => {
    await writer.create(segmentDoc('edited', { event: 'purchase' }));
    const read = (await writer.get('edited'))!;
    expect(await writer.edit('edited', read.version, { description: 'big spenders' })).toBe(true);
    expect(await writer.edit('edited', read.version, { name: 'Spenders' })).toBe(true);
    expect(await writer.get('edited')).toMatchObject({ name: 'Spenders', description: 'big spenders', version: 1, ruleJson: JSON.stringify({ event: 'purchase' }) });
  });

  it('keeps every field of edits made at once, and lets one of two rule changes from the same version through', async () => {
    const ids = Array.from({ length: 15 }, (_, n) => `at_once_${n}`);
    // As on a new store: the creates' first stamps of a change race to insert it, and each still lands.
    await store.db.collection(COLLECTIONS.segmentDefinitionsStamp).deleteMany({});
    await Promise.all(ids.map((id) => writer.create(segmentDoc(id, { event: 'purchase' }))));
    const edits = await Promise.all(
      ids.flatMap((id) => [
        writer.edit(id, 1, { name: `${id} renamed` }),
        writer.edit(id, 1, { description: `${id} described` }),
        writer.edit(id, 1, { ruleJson: JSON.stringify({ event: 'page_view' }), version: 2 }),
        writer.edit(id, 1, { ruleJson: JSON.stringify({ event: 'signup' }), version: 2 }),
      ]),
    );
    for (const [n, id] of ids.entries()) {
      const [renamed, described, first, second] = edits.slice(4 * n, 4 * n + 4);
      const doc = (await writer.get(id))!;
      // An edit of the name or description after a rule change finds the version moved on: refused, never half-applied.
      expect(doc.name).toBe(renamed ? `${id} renamed` : id);
      expect(doc.description).toBe(described ? `${id} described` : null);
      expect([first, second].filter(Boolean)).toHaveLength(1);
      expect(doc).toMatchObject({ version: 2, ruleJson: JSON.stringify(first ? { event: 'page_view' } : { event: 'signup' }) });
    }
    // Edits of the name and description made beside the rule's: at least some went through (the race is not all one way).
    expect(edits.filter((made, i) => made && i % 4 < 2).length).toBeGreaterThan(0);
  });

  it('never shows a run as running again once it is shown ended, and a later run still replaces it', async () => {
    await writer.create(segmentDoc('shown', { event: 'purchase' }));
    const startedAt = new Date('2026-05-01T10:00:00Z');
    const run = (runId: string, state: 'running' | 'completed', at = startedAt) => ({ runId, state, startedAt: at, finishedAt: state === 'running' ? null : at });
    await writer.setLastRuns([{ id: 'shown', version: 1 }], run('run_a', 'running'));
    await writer.setLastRuns([{ id: 'shown', version: 1 }], run('run_a', 'completed'));
    // A request that found run_a running, writing after it completed.
    await writer.setLastRuns([{ id: 'shown', version: 1 }], run('run_a', 'running'));
    expect((await writer.get('shown'))?.lastRun).toMatchObject({ runId: 'run_a', state: 'completed' });
    const later = new Date(startedAt.getTime() + 1000);
    await writer.setLastRuns([{ id: 'shown', version: 1 }], run('run_b', 'running', later));
    expect((await writer.get('shown'))?.lastRun).toMatchObject({ runId: 'run_b', state: 'running' });
    await writer.setLastRuns([{ id: 'shown', version: 1 }], run('run_a', 'running'));
    expect((await writer.get('shown'))?.lastRun).toMatchObject({ runId: 'run_b', state: 'running' });
  });

  it('keeps the segments a run completed reading its snapshot when the run fails before completing the rest', async () => {
    for (const id of ['cut_done', 'cut_left']) await writer.create(segmentDoc(id, { event: 'purchase' }));
    const startedAt = new Date('2026-05-03T10:00:00Z');
    const both = [{ id: 'cut_done', version: 1 }, { id: 'cut_left', version: 1 }];
    await writer.setLastRuns(both, { runId: 'run_cut', state: 'running', startedAt, finishedAt: null });
    await writer.completeRun('cut_done', { runId: 'run_cut', version: 1, size: 3, now: startedAt, startedAt, finishedAt: startedAt }, { runId: 'run_cut', state: 'completed', startedAt, finishedAt: startedAt });
    await writer.setLastRuns(both, { runId: 'run_cut', state: 'failed', startedAt, finishedAt: startedAt });
    expect(await writer.get('cut_done')).toMatchObject({ current: { runId: 'run_cut', size: 3 }, lastRun: { runId: 'run_cut', state: 'completed' } });
    expect(await writer.get('cut_left')).toMatchObject({ current: null, lastRun: { runId: 'run_cut', state: 'failed' } });
  });

  it('shows the later of two runs that complete a segment at the same moment as its last run and its snapshot', async () => {
    // Two runs completing the same segments at once, as overlapping runs do: neither's record of
    // the run may be lost to the other's write, whatever order the store applies them in.
    const ids = Array.from({ length: 40 }, (_, n) => `both_${n}`);
    for (const id of ids) await writer.create(segmentDoc(id, { event: 'purchase' }));
    const [first, second] = [new Date('2026-05-02T10:00:00Z'), new Date('2026-05-02T10:00:01Z')];
    const summary = (runId: string, startedAt: Date, state: 'running' | 'completed') => ({ runId, state, startedAt, finishedAt: state === 'running' ? null : new Date(startedAt.getTime() + 500) });
    const current = (runId: string, startedAt: Date, size: number) => ({ runId, version: 1, size, now: startedAt, startedAt, finishedAt: new Date(startedAt.getTime() + 500) });
    const ofVersion1 = ids.map((id) => ({ id, version: 1 }));
    await writer.setLastRuns(ofVersion1, summary('run_first', first, 'running'));
    await writer.setLastRuns(ofVersion1, summary('run_second', second, 'running'));
    await Promise.all(
      ids.flatMap((id) => [
        writer.completeRun(id, current('run_first', first, 1), summary('run_first', first, 'completed')),
        reader.completeRun(id, current('run_second', second, 2), summary('run_second', second, 'completed')),
      ]),
    );
    for (const id of ids) {
      const doc = await writer.get(id);
      expect({ id, lastRun: doc?.lastRun?.runId, state: doc?.lastRun?.state, current: doc?.current?.runId }).toEqual({ id, lastRun: 'run_second', state: 'completed', current: 'run_second' });
    }
  });

  it('forgets the ended run states a completed run makes unread and not last, and those of removed segments', async () => {
    const states = store.db.collection(COLLECTIONS.segmentRunStates);
    await writer.create(segmentDoc('kept', { event: 'purchase' }));
    const one = [{ id: 'kept', version: 1 }];
    const at = (second: number) => new Date(Date.UTC(2026, 4, 3, 10, 0, second));
    const ended = (runId: string, second: number, state: 'completed' | 'superseded' | 'failed') => ({ runId, state, startedAt: at(second), finishedAt: at(second + 1) });
    const snapshot = (runId: string, second: number) => ({ runId, version: 1, size: second, now: at(second), startedAt: at(second), finishedAt: at(second + 1) });
    for (let second = 0; second < 10; second++) {
      await writer.setLastRuns(one, { runId: `run_${second}`, state: 'running', startedAt: at(second), finishedAt: null });
      if (second % 3 === 2) await writer.setLastRuns(one, ended(`run_${second}`, second, 'superseded'));
      else expect(await writer.completeRun('kept', snapshot(`run_${second}`, second), ended(`run_${second}`, second, 'completed'))).toBe(true);
    }
    // A run still running when a later one completed stays: it is shown once it ends, if last.
    await writer.setLastRuns(one, { runId: 'run_late', state: 'running', startedAt: at(20), finishedAt: null });
    await writer.setLastRuns(one, { runId: 'run_slow', state: 'running', startedAt: at(15), finishedAt: null });
    expect(await writer.completeRun('kept', snapshot('run_late', 20), ended('run_late', 20, 'completed'))).toBe(true);
    // Completed after a later-started run did: recorded, not read.
    expect(await writer.completeRun('kept', snapshot('run_slow', 15), ended('run_slow', 15, 'completed'))).toBe(false);
    expect((await states.find({ segment: 'kept' }).toArray()).map((doc) => doc.runId).sort()).toEqual(['run_late', 'run_slow']);
    expect((await writer.get('kept'))?.current).toMatchObject({ runId: 'run_late', size: 20 });

    expect(await writer.remove('kept')).toBe(true);
    expect(await states.countDocuments({ segment: 'kept' })).toBe(0);
    // A run completing a segment as it is removed leaves a state behind: retention forgets it.
    await writer.completeRun('kept', snapshot('run_after', 30), ended('run_after', 30, 'completed'));
    expect(await writer.forgetOrphanRunStates()).toBe(1);
    expect(await states.countDocuments({ segment: 'kept' })).toBe(0);
  });
});
