import { createProfileWriterActivities, type ProfileWriterActivities } from '../../activities/profileWriter';
import { partitionOf } from '../../domain/partition';
import type { Store } from '../../store/db';
import { ProfileEventLog, routedBatchId } from '../../store/profileEvents';
import { ProfileStore } from '../../store/profiles';
import { baseConfig, testStore, uniqueName } from '../support/services';

const PARTITIONS = baseConfig.DMP_PROFILE_PARTITIONS;
const PARTITION = 0;

/** Profile ids that hash to PARTITION, as the drain's would. */
function idsInPartition(prefix: string, count: number): string[] {
  const ids: string[] = [];
  for (let n = 0; ids.length < count; n++) if (partitionOf(`${prefix}-${n}`, PARTITIONS) === PARTITION) ids.push(`${prefix}-${n}`);
  return ids;
}

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

  /** Routes one event of a new source to `profileId` and has `activities` fold it, as writer `lastWriter` last did. */
  async function foldOne(activities: ProfileWriterActivities, profileId: string, type: string, lastWriter: string | null): Promise<string> {
    const sourceId = uniqueName('src');
    const at = new Date('2026-06-01T00:00:00Z');
    const event = { id: uniqueName('ev'), type, timestamp: at, receivedAt: at, identities: [{ type: 'cookie_id' as const, value: `ck-${profileId}` }], seq: 0, profileId };
    await log.write([{ _id: routedBatchId(PARTITION, sourceId, 0), partition: PARTITION, sourceId, party: 'first', from: 0, to: 1, events: [event], profiles: [profileId], createdAt: at }]);
    const result = await activities.foldPartitionBatch({ partition: PARTITION, sourceIds: [sourceId], includeKnown: false, maxEvents: 1000, lastWriter });
    expect(result.applied).toBe(1);
    return result.writer;
  }

  async function counts(profileId: string): Promise<Record<string, number>> {
    const doc = await new ProfileStore(store).get(profileId);
    return Object.fromEntries(Object.entries(doc?.counters ?? {}).map(([type, counter]) => [type, counter.count]));
  }

  it('carries the version a stalled fold wrote into the group it had reserved, when the new writer compacts that group', async () => {
    const [x, z] = idsInPartition(uniqueName('carry'), 2);
    const stalled = writer();
    const a = await foldOne(stalled, x, 'page_view', null);
    // Another worker takes over: it reads the position (and the group the old writer reserved) from the store.
    const taking = writer();
    const b = await foldOne(taking, z, 'page_view', a);
    // The old writer's fold was still running: it writes z, unknown to it, into its reserved group.
    await foldOne(stalled, z, 'purchase', a);
    // The new writer, trusting its own cache (it wrote the partition last), compacts the reserved group.
    const compacted = await taking.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 8 });
    expect(compacted.groups).toBeGreaterThan(0);
    expect(await counts(z)).toEqual({ page_view: 1, purchase: 1 });
    expect(await counts(x)).toEqual({ page_view: 1 });
  });

  it('leaves a version the stalled fold writes into a group while it is being compacted', async () => {
    const [x, z] = idsInPartition(uniqueName('late'), 2);
    const stalled = writer();
    const a = await foldOne(stalled, x, 'page_view', null);
    let late: Promise<string> | undefined;
    // The stalled fold's write lands between the compaction's listing of the group and its delete.
    const taking = writer((step) => {
      if (step === 'group-carried' && !late) late = foldOne(stalled, z, 'purchase', a);
      return late?.then(() => undefined);
    });
    const b = await foldOne(taking, z, 'page_view', a);
    const compacted = await taking.compactPartition({ partition: PARTITION, lastWriter: b, maxGroups: 8 });
    expect(late).toBeDefined();
    expect(compacted.groups).toBeGreaterThan(0);
    expect(await counts(z)).toEqual({ page_view: 1, purchase: 1 });
  });
});
