import type { Store } from '../../store/db';
import { DestinationConsentSchema } from '../../domain/destinations';
import { DestinationStore, type DestinationDefinition } from '../../store/destinations';
import { createExportActivities } from '../../activities/exports';
import { Bitmap } from '../../domain/segments';
import { SEGMENT_COLLECTIONS, SegmentRunStore } from '../../store/segmentRuns';
import { baseConfig, testStore } from '../support/services';

describe('a destination’s export turns and what its exports record beside it', () => {
  let store: Store;
  let destinations: DestinationStore;
  beforeAll(async () => {
    store = await testStore('dstturns');
    destinations = new DestinationStore(store);
  });
  afterAll(() => store.close());

  const at = new Date('2026-11-20T10:00:00Z');
  const definition = (id: string): DestinationDefinition => ({
    _id: id,
    name: id,
    connector: 'webhook',
    config: { url: 'http://127.0.0.1:1/hook', secret: 'turns-test-secret-0123456789' },
    segments: ['seg_a'],
    idType: 'cookie_id',
    schedule: null,
    nearRealTime: false,
    labelsAllowed: [],
    consent: DestinationConsentSchema.parse({}),
    state: 'active',
    createdAt: at,
    updatedAt: at,
  });
  const held = (exportId: string, ids: number) => ({ seg_a: { exportId, chunks: 1, ids, uncertain: 0 } });

  it('opens one export per workflow for a window: two privacy removals in the same second never share one, and a retried open finds its own', async () => {
    await destinations.create(definition('dst_opens'));
    // Opening an export needs no Temporal client.
    const { openExport } = createExportActivities({ store, temporal: undefined as never, config: { ...baseConfig } });
    const open = (openedBy: string) => openExport({ destinationId: 'dst_opens', at: at.getTime(), trigger: 'privacy', openedBy });
    const first = await open('privacy:pr_1:dst_opens:r1');
    const second = await open('privacy:pr_2:dst_opens:r1');
    expect(second).not.toBe(first);
    expect(await open('privacy:pr_1:dst_opens:r1')).toBe(first);
    expect(await open('privacy:pr_2:dst_opens:r1')).toBe(second);
  });

  it('finds the export a retried scheduled open recorded, though the destination was paused since', async () => {
    await destinations.create(definition('dst_reopen'));
    const { openExport } = createExportActivities({ store, temporal: undefined as never, config: { ...baseConfig } });
    const open = () => openExport({ destinationId: 'dst_reopen', at: at.getTime(), trigger: 'schedule', openedBy: 'destination-schedule:dst_reopen-2026' });
    const first = await open();
    expect(first).not.toBeNull();
    await destinations.update('dst_reopen', { state: 'paused' });
    // The first attempt's answer was lost: its retry finds the record, which its workflow goes on to run (else it stayed running for ever).
    expect(await open()).toBe(first);
    // Another workflow's turn of a paused destination passes.
    expect(await openExport({ destinationId: 'dst_reopen', at: at.getTime() + 60_000, trigger: 'schedule', openedBy: 'destination-schedule:dst_reopen-later' })).toBeNull();
  });

  it('gives each turn to exactly one of the exports claiming it at once, round after round', async () => {
    const ids = Array.from({ length: 12 }, (_, n) => `dst_turns_${n}`);
    await Promise.all(ids.map((id) => destinations.create(definition(id))));
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        ids.map(async (id) => {
          const claimants = [0, 1, 2].map((k) => `${id}-r${round}-e${k}`);
          const holders = await Promise.all(claimants.map((exportId) => destinations.claim(id, exportId)));
          // Every claimant names the same holder, one of them, and the store agrees.
          expect(new Set(holders).size).toBe(1);
          expect(claimants).toContain(holders[0]);
          expect(await destinations.holder(id)).toBe(holders[0]);
          // Claiming again holds it still; the others are refused until it is released.
          expect(await destinations.claim(id, holders[0])).toBe(holders[0]);
          const loser = claimants.find((exportId) => exportId !== holders[0]) as string;
          expect(await destinations.claim(id, loser)).toBe(holders[0]);
          await destinations.release(id, holders[0]);
          await destinations.release(id, holders[0]);
          expect(await destinations.holder(id)).toBeNull();
        }),
      );
    }
    // Ended turns are let go as new ones are taken: a destination keeps a few documents.
    expect(await destinations.turns.countDocuments({ destinationId: ids[0] })).toBeLessThanOrEqual(3);
    await destinations.remove(ids[0]);
    expect(await destinations.turns.countDocuments({ destinationId: ids[0] })).toBe(0);
  });

  it('keeps the API’s edits and the exports’ records when both write at once', async () => {
    const ids = Array.from({ length: 30 }, (_, n) => `dst_both_${n}`);
    await Promise.all(ids.map((id) => destinations.create(definition(id))));
    await Promise.all(
      ids.flatMap((id, n) => [
        destinations.update(id, { name: `renamed ${n}`, segments: ['seg_a', 'seg_b'], updatedAt: new Date(at.getTime() + 1000) }),
        destinations.saveHoldings(id, held(`exp_${n}`, n), null),
        destinations.saveLastExport(id, { exportId: `exp_${n}`, state: 'completed', startedAt: at, finishedAt: at }),
      ]),
    );
    const listed = new Map((await destinations.list()).map((doc) => [doc._id, doc]));
    for (const [n, id] of ids.entries()) {
      for (const doc of [await destinations.get(id), listed.get(id)]) {
        expect(doc).toMatchObject({ name: `renamed ${n}`, segments: ['seg_a', 'seg_b'], held: held(`exp_${n}`, n), lastExport: { exportId: `exp_${n}`, state: 'completed' } });
      }
    }
    expect([...(await destinations.exportedSegments())]).toEqual(expect.arrayContaining(['seg_a', 'seg_b']));
  });

  it('resends everything after an address change until an export planned after it finishes', async () => {
    await destinations.create(definition('dst_moved'));
    expect((await destinations.get('dst_moved'))?.resend).toBe(false);
    const changedAt = new Date(at.getTime() + 60_000);
    await destinations.update('dst_moved', { addressChangedAt: changedAt, updatedAt: changedAt });
    expect((await destinations.get('dst_moved'))?.resend).toBe(true);
    // An export planned before the change resent to the old address: still owed.
    await destinations.saveHoldings('dst_moved', {}, new Date(changedAt.getTime() - 1));
    expect((await destinations.get('dst_moved'))?.resend).toBe(true);
    await destinations.saveHoldings('dst_moved', {}, new Date(changedAt.getTime() + 1));
    expect((await destinations.get('dst_moved'))?.resend).toBe(false);
    // Another change after that export's plan owes another resend, whatever the export writes meanwhile.
    await destinations.update('dst_moved', { addressChangedAt: new Date(changedAt.getTime() + 5_000) });
    await destinations.saveHoldings('dst_moved', held('exp_x', 3), new Date(changedAt.getTime() + 1));
    expect((await destinations.get('dst_moved'))?.resend).toBe(true);
  });

  it("tries a near-real-time destination's failed export again, with nothing else changed, after as long as its exports have been failing", async () => {
    const changeless = { ...definition('dst_backoff'), segments: [], nearRealTime: true };
    await destinations.create(changeless);
    const plannedAt = new Date(at.getTime() + 60_000);
    await destinations.openExport({ _id: 'exp_backoff', destinationId: 'dst_backoff', state: 'running', full: false, trigger: 'near_real_time', plan: null, batchesConfirmed: 0, rejected: 0, startedAt: plannedAt, finishedAt: null, error: 'partner down' });
    expect(await destinations.savePlan('exp_backoff', { id: 'exp_backoff:plan', segments: [], batches: 1, plannedAt, resent: false, tookMs: 1 })).toBe(true);
    await destinations.exports.updateOne({ _id: 'exp_backoff' }, { $set: { state: 'failed' } });
    const finishedAt = new Date(plannedAt.getTime() + 10_000);
    const check = async (after: number) => {
      const { openExport } = createExportActivities({ store, temporal: undefined as never, config: { ...baseConfig }, now: () => new Date(finishedAt.getTime() + after) });
      return openExport({ destinationId: 'dst_backoff', at: finishedAt.getTime() + after, trigger: 'near_real_time' });
    };
    // Its first failure (however long it ran): a minute.
    await destinations.saveLastExport('dst_backoff', { exportId: 'exp_backoff', state: 'failed', startedAt: new Date(finishedAt.getTime() - 20 * 60_000), finishedAt, failingSince: finishedAt });
    expect(await check(59_000)).toBeNull();
    const retry = await check(60_000);
    expect(retry).not.toBeNull();
    await destinations.exports.deleteOne({ _id: retry as string });
    // Failing for 20 minutes: 20 more.
    await destinations.saveLastExport('dst_backoff', { exportId: 'exp_backoff', state: 'failed', startedAt: plannedAt, finishedAt, failingSince: new Date(finishedAt.getTime() - 20 * 60_000) });
    expect(await check(19 * 60_000)).toBeNull();
    // A change of the destination goes at once, whatever the wait.
    await destinations.update('dst_backoff', { updatedAt: new Date(finishedAt.getTime() + 60_000) });
    const changed = await check(5 * 60_000);
    expect(changed).not.toBeNull();
    await destinations.exports.deleteOne({ _id: changed as string });
    await destinations.update('dst_backoff', { updatedAt: at });
    expect(await check(20 * 60_000)).not.toBeNull();
    // Failing for a day: an hour at most.
    await destinations.saveLastExport('dst_backoff', { exportId: 'exp_backoff', state: 'failed', startedAt: plannedAt, finishedAt, failingSince: new Date(finishedAt.getTime() - 86_400_000) });
    expect(await check(59 * 60_000)).toBeNull();
  });

  it("opens a near-real-time export for a profile whose ids or consent changed only when it is a member of the destination's segments", async () => {
    const runs = new SegmentRunStore(store);
    // seg_touch's snapshot: prf_member is in, prf_stranger out; prf_newcomer entered in real time since.
    const bits = new Bitmap(2);
    bits.set(0);
    await runs.writeChunk('run_touch', 0, { ids: ['prf_member', 'prf_stranger'], bits: [bits.bytes] });
    await store.db.collection(SEGMENT_COLLECTIONS.runs).insertOne({ _id: 'run_touch', segments: [{ id: 'seg_touch', version: 1, ruleJson: '{}' }], now: at, state: 'completed', startedAt: at, finishedAt: at, documentsScanned: 2, evaluated: 2, chunks: [{ first: 'prf_member', last: 'prf_stranger', counts: [1] }], members: {}, entered: {}, exited: {}, error: null } as never);
    await store.db.collection('segments').insertOne({ _id: 'seg_touch', name: 'touch', description: null, taxonomyPath: null, ruleJson: '{"trait":"plan","op":"eq","value":"gold"}', schedule: null, version: 1, createdAt: at, updatedAt: at, current: { runId: 'run_touch', version: 1, size: 1, now: at, startedAt: at, finishedAt: at }, lastRun: null } as never);
    const plannedAt = new Date(at.getTime() + 3_600_000);
    await runs.recordChanges({ _id: 'p0:src:entered', at: new Date(at.getTime() + 60_000), changes: { seg_touch: { entered: ['prf_newcomer'], exited: [] } } });
    await destinations.create({ ...definition('dst_touch'), segments: ['seg_touch'], nearRealTime: true });
    await destinations.openExport({ _id: 'exp_touch', destinationId: 'dst_touch', state: 'running', full: false, trigger: 'near_real_time', plan: null, batchesConfirmed: 1, rejected: 0, startedAt: plannedAt, finishedAt: null, error: null });
    expect(await destinations.savePlan('exp_touch', { id: 'exp_touch:plan', segments: [{ id: 'seg_touch', runId: 'run_touch' }] as never, batches: 1, plannedAt, resent: false, tookMs: 1 })).toBe(true);
    await destinations.exports.updateOne({ _id: 'exp_touch' }, { $set: { state: 'completed', finishedAt: plannedAt } });
    await destinations.saveLastExport('dst_touch', { exportId: 'exp_touch', state: 'completed', startedAt: plannedAt, finishedAt: plannedAt });
    const later = plannedAt.getTime() + 120_000;
    const { openExport } = createExportActivities({ store, temporal: undefined as never, config: { ...baseConfig }, now: () => new Date(later) });
    const check = () => openExport({ destinationId: 'dst_touch', at: later, trigger: 'near_real_time' });
    const touch = (id: string, profileId: string) => runs.recordChanges({ _id: id, at: new Date(plannedAt.getTime() + 60_000), changes: {}, touched: [profileId] });
    // A fold changed a stranger's consent: nothing the destination sends changed.
    await touch('p0:src:stranger', 'prf_stranger');
    expect(await check()).toBeNull();
    for (const profileId of ['prf_member', 'prf_newcomer']) {
      await touch(`p0:src:${profileId}`, profileId);
      const opened = await check();
      expect({ profileId, opened: opened !== null }).toEqual({ profileId, opened: true });
      await destinations.exports.deleteOne({ _id: opened as string });
      await store.db.collection(SEGMENT_COLLECTIONS.changes).deleteOne({ _id: `p0:src:${profileId}` as never });
    }
  });

  it('reads destinations stored before exports kept their own documents', async () => {
    await destinations.destinations.insertOne({ ...definition('dst_legacy'), held: held('exp_old', 7), lastExport: { exportId: 'exp_old', state: 'completed', startedAt: at, finishedAt: at }, resend: true });
    expect(await destinations.get('dst_legacy')).toMatchObject({ held: held('exp_old', 7), lastExport: { exportId: 'exp_old' }, resend: true });
    // The first export after: its records take over; everything was resent by a plan after the flag was set.
    await destinations.saveHoldings('dst_legacy', held('exp_new', 9), new Date(at.getTime() + 1));
    expect(await destinations.get('dst_legacy')).toMatchObject({ held: held('exp_new', 9), lastExport: { exportId: 'exp_old' }, resend: false });
  });

  it('saves one plan of an export when attempts at planning it save at once', async () => {
    const exportIds = Array.from({ length: 10 }, (_, n) => `exp_plans_${n}`);
    for (const id of exportIds) {
      await destinations.openExport({ _id: id, destinationId: 'dst_plans', state: 'running', full: false, trigger: 'api', plan: null, batchesConfirmed: 0, rejected: 0, startedAt: at, finishedAt: null, error: null });
    }
    await Promise.all(
      exportIds.map(async (id) => {
        const attempts = [0, 1, 2].map((k) => `${id}:plan${k}`);
        const saved = await Promise.all(attempts.map((planId) => destinations.savePlan(id, { id: planId, segments: [], batches: 0, plannedAt: at, resent: false, tookMs: 1 })));
        // Exactly one attempt was told its plan stands, and it is the plan stored.
        expect(saved.filter(Boolean)).toHaveLength(1);
        expect((await destinations.getExport(id))?.plan?.id).toBe(attempts[saved.indexOf(true)]);
      }),
    );
  });

  it('keeps every field of API requests changing one destination at once', async () => {
    const ids = Array.from({ length: 15 }, (_, n) => `dst_edits_${n}`);
    await Promise.all(ids.map((id) => destinations.create(definition(id))));
    await Promise.all(
      ids.flatMap((id) => [destinations.update(id, { state: 'paused' }), destinations.update(id, { labelsAllowed: ['first_party'] }), destinations.update(id, { nearRealTime: true }), destinations.update(id, { segments: ['seg_b'] })]),
    );
    for (const id of ids) expect(await destinations.get(id)).toMatchObject({ state: 'paused', labelsAllowed: ['first_party'], nearRealTime: true, segments: ['seg_b'] });
  });

  it('keeps the planned batches it wrote, up to its limit of memory, and forgets the ones it drops', async () => {
    // Each batch of 10 ids of 6 characters counts 520 bytes: two fit, not three.
    const keeping = new DestinationStore(store, { keepBatchBytes: 1200 });
    const batch = (n: number) => ({ segmentId: 'seg_a', adds: Array.from({ length: 10 }, (_, k) => `ck-${n}-${k}`), removes: [] });
    for (const n of [0, 1, 2]) await keeping.writeBatch('plan_kept', n, batch(n));
    // Read back whole by a process that kept nothing.
    expect(await destinations.readBatch('plan_kept', 1)).toEqual(batch(1));
    // With the stored copies gone, what is kept still reads: the two newest batches, not the first.
    await destinations.batches.deleteMany({ _id: { $in: ['plan_kept:0', 'plan_kept:1', 'plan_kept:2'] } });
    expect(await keeping.readBatch('plan_kept', 0)).toBeNull();
    expect(await keeping.readBatch('plan_kept', 1)).toEqual(batch(1));
    expect(await keeping.readBatch('plan_kept', 2)).toEqual(batch(2));
    await keeping.dropBatches('plan_kept', 3);
    expect(await keeping.readBatch('plan_kept', 2)).toBeNull();
  });

  it('reads a partner state of many chunks back in order', async () => {
    const held = Array.from({ length: 120_000 }, (_, n) => `ck-${String(n).padStart(7, '0')}`);
    const uncertain = held.filter((_, n) => n % 1000 === 7).map((id) => `${id}-u`);
    const state = { held: held.filter((_, n) => n % 1000 !== 7), uncertain };
    const written = await destinations.writeState('dst_state', 'seg_a', 'exp_state', state);
    expect(written.chunks).toBeGreaterThan(2);
    expect(await destinations.readState('dst_state', 'seg_a', written)).toEqual(state);
  });

  it('keeps each chunk of a partner state of long ids a few megabytes: 40,000 ids of 512 characters (20 MB) store and read back', async () => {
    // Ids are up to 512 characters; 50,000 a chunk by count alone would be 25 MB, more than a document holds.
    const held = Array.from({ length: 40_000 }, (_, n) => `${String(n).padStart(6, '0')}${'c'.repeat(506)}`);
    const state = { held, uncertain: held.slice(0, 3).map((id) => `${id}-u`) };
    const written = await destinations.writeState('dst_long', 'seg_a', 'exp_long', state);
    expect(written).toMatchObject({ ids: 40_000, uncertain: 3 });
    expect(written.chunks).toBeGreaterThanOrEqual(6);
    expect(await destinations.readState('dst_long', 'seg_a', written)).toEqual(state);
  });
});
