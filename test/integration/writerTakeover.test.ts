import { MockActivityEnvironment } from '@temporalio/testing';
import { createProfileWriterActivities, type ProfileWriterActivities } from '../../activities/profileWriter';
import { profileVersionId } from '../../domain/profile';
import { COLLECTIONS, type Store } from '../../store/db';
import { ProfileEventLog, routedBatchId } from '../../store/profileEvents';
import { ProfileStore } from '../../store/profiles';
import { idsInPartition } from '../support/profiles';
import { baseConfig, testStore, uniqueName } from '../support/services';

const PARTITIONS = baseConfig.DMP_PROFILE_PARTITIONS;
const PARTITION = 0;


/**
 * A partition's writer is a workflow whose folds run as local activities: when a worker stalls, its
 * workflow task times out and another worker takes the partition over, while the stalled worker's
 * fold may still be running and writing. The versioned ids make the two refuse each other's
 * versions; these tests hold compaction — the only step that deletes — to the same standard.
 */
describe('a partition writer taken over while the old writer still writes', () => {
  let store: Store;
  let log: ProfileEventLog;
  beforeAll(async () => {
    store = await testStore('writer_takeover');
    log = new ProfileEventLog(store);
  });
  afterAll(() => store.close());

  const writer = (onFoldStep?: Parameters<typeof createProfileWriterActivities>[0]['onFoldStep']) =>
    createProfileWriterActivities({ store, config: baseConfig, onFoldStep });

  /** Routes one event of a new source to `profileId`; returns the source. */
  async function routeOne(profileId: string, type: string, made = false): Promise<string> {
    const sourceId = uniqueName('src');
    const at = new Date('2026-06-01T00:00:00Z');
    const event = { id: uniqueName('ev'), type, timestamp: at, receivedAt: at, identities: [{ type: 'cookie_id' as const, value: `ck-${profileId}` }], seq: 0, profileId };
    await log.write([{ _id: routedBatchId(PARTITION, sourceId, 0), partition: PARTITION, sourceId, party: 'first', from: 0, to: 1, events: [event], profiles: [profileId], ...(made && { created: [profileId] }), createdAt: at }]);
    return sourceId;
  }

  /** Has `activities` fold the sources' events, as writer `lastWriter` last did. */
  const fold = (activities: ProfileWriterActivities, sourceIds: string[], lastWriter: string | null) =>
    activities.foldPartitionBatch({ partition: PARTITION, sourceIds, includeKnown: false, maxEvents: 1000, lastWriter });

  /** Routes one event to `profileId` and has `activities` fold it; returns the writer. */
  async function foldOne(activities: ProfileWriterActivities, profileId: string, type: string, lastWriter: string | null): Promise<string> {
    const result = await fold(activities, [await routeOne(profileId, type)], lastWriter);
    expect(result.applied).toBe(1);
    return result.writer;
  }

  const OVERTAKEN = /another writer saved its position since this fold loaded it/;

  async function counts(profileId: string): Promise<Record<string, number>> {
    const doc = await new ProfileStore(store).get(profileId);
    return Object.fromEntries(Object.entries(doc?.counters ?? {}).map(([type, counter]) => [type, counter.count]));
  }

  it('carries the version a stalled fold wrote into the group it had reserved, when the new writer compacts that group', async () => {
    const [x, z] = idsInPartition(uniqueName('carry'), 2, PARTITION, PARTITIONS);
    const stalled = writer();
    const a = await foldOne(stalled, x, 'page_view', null);
    // Another worker takes over: it reads the position (and the group the old writer reserved) from the store.
    const taking = writer();
    const b = await foldOne(taking, z, 'page_view', a);
    // The old writer's fold was still running: it writes z, unknown to it, into its reserved group
    // (and then may not save the position its successor saved).
    await expect(foldOne(stalled, z, 'purchase', a)).rejects.toThrow(OVERTAKEN);
    // The new writer, trusting its own cache (it wrote the partition last), compacts the reserved group.
    const compacted = await taking.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 8 });
    expect(compacted.groups).toBeGreaterThan(0);
    expect(await counts(z)).toEqual({ page_view: 1, purchase: 1 });
    expect(await counts(x)).toEqual({ page_view: 1 });
    // The version the stalled write replaced (the new writer's own) is counted superseded, so its group
    // falls due too: once compaction is done, z is one version.
    expect(compacted.more).toBe(true);
    while ((await taking.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 8 })).more);
    expect(await new ProfileStore(store).versions(z)).toHaveLength(1);
  });

  it('carries nothing for a version an interrupted write named in its group when another attempt made it in its own', async () => {
    const [z] = idsInPartition(uniqueName('named'), 1, PARTITION, PARTITIONS);
    const old = writer();
    const a = await foldOne(old, z, 'page_view', null);
    // The old writer's next write into the group it had reserved was cut off between the slice naming
    // its versions and the versions: the slice names z's version 1, which it never made.
    const reserved = (await log.loadPosition(PARTITION)).nextGroup!;
    await store.db.collection(COLLECTIONS.profileGroupSlices).insertOne({ _id: `${reserved}:cut` as never, group: reserved, versions: [{ _id: profileVersionId(z, 1), profileId: z, version: 1 }] });
    // The writer taking over makes version 1 in a group of its own, then compacts the reserved group.
    const taking = writer();
    const b = await foldOne(taking, z, 'purchase', a);
    while ((await taking.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 8 })).more);
    expect((await new ProfileStore(store).versions(z)).map((version) => version.version)).toEqual([1]);
    expect(await counts(z)).toEqual({ page_view: 1, purchase: 1 });
  });

  it('leaves a version the stalled fold writes into a group while it is being compacted', async () => {
    const [x, z] = idsInPartition(uniqueName('late'), 2, PARTITION, PARTITIONS);
    const stalled = writer();
    const a = await foldOne(stalled, x, 'page_view', null);
    let late: Promise<unknown> | undefined;
    // The stalled fold's write lands between the compaction's listing of the group and its delete.
    const taking = writer((step) => {
      if (step === 'group-carried' && !late) late = foldOne(stalled, z, 'purchase', a).catch((error: unknown) => error);
      return late?.then(() => undefined);
    });
    const b = await foldOne(taking, z, 'page_view', a);
    const compacted = await taking.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 8 });
    expect(String(await late)).toMatch(OVERTAKEN);
    expect(compacted.groups).toBeGreaterThan(0);
    expect(await counts(z)).toEqual({ page_view: 1, purchase: 1 });
  });

  it('refuses the position a stalled fold saves after the new writer saved, and counts what it folded once', async () => {
    const [x, z] = idsInPartition(uniqueName('fence'), 2, PARTITION, PARTITIONS);
    const stalled = writer();
    const first = await routeOne(x, 'page_view');
    const a = (await fold(stalled, [first], null)).writer;
    const taking = writer();
    const second = await routeOne(z, 'page_view');
    const b = (await fold(taking, [second], a)).writer;
    const saved = await log.loadPosition(PARTITION);
    // The stalled fold folds an event into z and may not set the position back to before the takeover.
    const third = await routeOne(z, 'purchase');
    await expect(fold(stalled, [third], a)).rejects.toThrow(OVERTAKEN);
    expect(await log.loadPosition(PARTITION)).toEqual(saved);
    // The new writer reaches the same event. Its cache does not know z's version the stalled fold
    // wrote: writing that version again fails, and the retry reads it, folded already, and counts
    // the event without applying it again.
    await expect(fold(taking, [third], b)).rejects.toThrow(/duplicate key/);
    expect(await fold(taking, [third], b)).toMatchObject({ applied: 0, alreadyApplied: 1 });
    expect(await counts(z)).toEqual({ page_view: 1, purchase: 1 });
    expect((await log.loadPosition(PARTITION)).applied).toMatchObject({ [first]: 1, [second]: 1, [third]: 1 });
  });

  it('has a writer whose save was refused fold again from the store: the writer that took over saved first', async () => {
    const [x, z] = idsInPartition(uniqueName('first'), 2, PARTITION, PARTITIONS);
    let armed = false;
    let late: Promise<unknown> | undefined;
    // This writer stalls after writing its versions; meanwhile another takes the partition over,
    // folds (from the position this one saved last) and saves.
    const other = writer();
    const returning = writer((step) => {
      if (step === 'versions-written' && armed && !late) late = fold(other, [third], w);
      return late?.then(() => undefined);
    });
    const first = await routeOne(x, 'page_view');
    const w = (await fold(returning, [first], null)).writer;
    const third = await routeOne(x, 'purchase');
    const second = await routeOne(z, 'page_view');
    armed = true;
    await expect(fold(returning, [second], w)).rejects.toThrow(OVERTAKEN);
    expect(await late).toMatchObject({ applied: 1 });
    // Its retry reads the position the other writer saved, and finds z's event folded already.
    expect(await fold(returning, [second], w)).toMatchObject({ applied: 0, alreadyApplied: 1 });
    const position = await log.loadPosition(PARTITION);
    expect(position.applied).toMatchObject({ [first]: 1, [second]: 1, [third]: 1 });
    expect(position.cursors).toMatchObject({ [first]: 1, [second]: 1, [third]: 1 });
    expect(await counts(x)).toEqual({ page_view: 1, purchase: 1 });
    expect(await counts(z)).toEqual({ page_view: 1 });
  });

  it('reads a document a batch made when batches of another source folded it first and its first version was compacted away', async () => {
    const [d] = idsInPartition(uniqueName('born'), 1, PARTITION, PARTITIONS);
    const w = writer();
    // Another source's drain found the document's identities claimed, and its batches are folded
    // before the batch of the drain that made it: the document's first version, then its second.
    let last = (await fold(w, [await routeOne(d, 'page_view')], null)).writer;
    last = (await fold(w, [await routeOne(d, 'page_view')], last)).writer;
    // Every group due (the tests before left some) is compacted.
    last = (await w.compactPartition({ partition: PARTITION, lastWriter: last, maxGroups: 1000 })).writer;
    expect((await new ProfileStore(store).versions(d)).map((version) => version.version)).toEqual([1]);
    // The batch that made it comes last. A first attempt takes the document for new without
    // reading it; its first version's id is free again, so only the document's birth record stops it.
    const input = { partition: PARTITION, sourceIds: [await routeOne(d, 'purchase', true)], includeKnown: false, maxEvents: 1000, lastWriter: last };
    await expect(new MockActivityEnvironment({ attempt: 1 }).run(w.foldPartitionBatch, input)).rejects.toThrow(/had been folded before/);
    expect(await new MockActivityEnvironment({ attempt: 2 }).run(w.foldPartitionBatch, input)).toMatchObject({ applied: 1 });
    expect(await counts(d)).toEqual({ page_view: 2, purchase: 1 });
  });

  it('trusts nothing it cached before the partition was taken from it, once it is handed back', async () => {
    const [x, y] = idsInPartition(uniqueName('back'), 2, PARTITION, PARTITIONS);
    const first = writer();
    const second = writer();
    // The first writer folds y, and so caches its first version.
    const a = await foldOne(first, y, 'page_view', null);
    // The partition moves to the second writer: two versions of y, and the older compacted away.
    let b = await foldOne(second, y, 'page_view', a);
    b = await foldOne(second, y, 'page_view', b);
    b = (await second.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 1000 })).writer;
    expect((await new ProfileStore(store).versions(y)).map((version) => version.version)).toEqual([2]);
    // Handed back: a fold of another document, then one of y, which must build on y's newest version.
    const back = await foldOne(first, x, 'page_view', b);
    await foldOne(first, y, 'purchase', back);
    expect(await counts(y)).toEqual({ page_view: 3, purchase: 1 });
  });
});
