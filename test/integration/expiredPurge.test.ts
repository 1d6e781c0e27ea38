import { COLLECTIONS } from '../../store/db';
import { EXPIRED_PROFILES_COLLECTION } from '../../store/expiredProfiles';
import { ProfileEventLog } from '../../store/profileEvents';
import { ProfileStore } from '../../store/profiles';
import { storeRetention } from '../../workflows/storeRetention';
import { startPlatform, uniqueName, waitFor, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const DAY = 86_400_000;

describe("an expired document's empty version leaves once the history window has passed", () => {
  let platform: RunningPlatform;
  let source: SourceClient;
  /** How far the worker's clock runs ahead of this one. */
  let skew = 0;
  let events = 0;
  const daysAgo = (days: number) => new Date(Date.now() - days * DAY).toISOString();
  async function send(list: Array<{ id: string; days: number; cookie: string }>): Promise<void> {
    const response = await source.send(list.map(({ id, days, cookie }) => ({ id, type: 'page_view', timestamp: daysAgo(days), identities: { cookie_id: cookie } })));
    expect(response.status).toBe(202);
    events += list.length;
    await source.folded(events);
  }

  beforeAll(async () => {
    // One partition, so every fold can compact the expired document's group; a one-day history
    // window; and compaction whenever a group is due, not only once due versions are a quarter of the live.
    platform = await startPlatform('expiredpurge', { DMP_PROFILE_PARTITIONS: 1, DMP_EVENT_HISTORY_DAYS: 1 }, { now: () => new Date(Date.now() + skew), compactWhenIdleAtShare: 0.001 });
    source = await newSource(platform.api);
  });
  afterAll(() => platform.stop());

  const retain = (eventHistoryTtlMs: number) =>
    platform.temporal.workflow.execute(storeRetention, {
      workflowId: uniqueName('retention'),
      taskQueue: platform.taskQueue,
      args: [{ inactiveProfileTtlMs: 30 * DAY, rawEventTtlMs: 3_600_000, eventHistoryTtlMs }],
    });

  it('keeps it and its record through the window, then removes every trace of the document and the record; the visitor coming back starts afresh', async () => {
    // Folded with three people who stay: the version it had before it expired sits in a write group that never falls due.
    await send([
      { id: 'p1', days: 40, cookie: 'purged-p' },
      ...[1, 2, 3].map((n) => ({ id: `o${n}`, days: 0, cookie: `other-${n}` })),
    ]);
    const expired = (await source.lookup('cookie_id', 'purged-p')).body;
    expect((await retain(DAY)).inactiveDocumentsExpired).toBe(1);
    const profiles = new ProfileStore(platform.store, 0);
    const births = platform.store.db.collection(COLLECTIONS.profileBirths);
    const records = platform.store.db.collection(EXPIRED_PROFILES_COLLECTION);
    expect(await records.countDocuments({ _id: expired.id as never })).toBe(1);

    // Within the window a fold and a retention run leave them: a drain may still have it cached, a privacy request may ask.
    await send([{ id: 'q1', days: 0, cookie: 'someone-else' }]);
    await retain(DAY);
    expect(await profiles.get(expired.id)).toMatchObject({ identities: [], retired: { expired: expect.anything() } });
    expect(await births.countDocuments({ _id: expired.id as never })).toBe(1);
    expect(await records.countDocuments({ _id: expired.id as never })).toBe(1);

    // Two days on: the visitor comes back. The drain no longer trusts the owner it cached, so they
    // get a new profile; once the partition is idle, its compaction removes the expired document.
    skew = 2 * DAY;
    await send([{ id: 'p2', days: 0, cookie: 'purged-p' }]);
    const back = (await source.lookup('cookie_id', 'purged-p')).body;
    expect(back.id).not.toBe(expired.id);
    expect(back.id.startsWith(`${expired.id}~`)).toBe(false); // not the expired document's successor: nothing routed there
    expect(Object.fromEntries(Object.entries(back.counters).map(([type, counter]: [string, any]) => [type, counter.count]))).toEqual({ page_view: 1 });
    await waitFor('the expired document to leave', async () => (await profiles.versions(expired.id)).length === 0, 30_000, 200);
    expect(await births.countDocuments({ _id: expired.id as never })).toBe(0);
    // Its group leaves the position with the compaction's save, just after the delete.
    const expiredGroups = async () => Object.values((await new ProfileEventLog(platform.store).loadPositions(1))[0].groups).filter((counts) => (counts.expired ?? 0) > 0);
    await waitFor('the compaction to save the position without its group', async () => (await expiredGroups()).length === 0, 10_000, 100).catch(() => undefined);
    expect(await expiredGroups()).toEqual([]);
    expect(await platform.store.db.collection(COLLECTIONS.profiles).countDocuments({ retired: { $exists: true } })).toBe(0);
    // The retention run past the window lets the record go with the last of the events.
    expect((await retain(DAY)).routedBatchesRemoved).toBeGreaterThan(0);
    expect(await records.countDocuments({})).toBe(0);
  });
});
