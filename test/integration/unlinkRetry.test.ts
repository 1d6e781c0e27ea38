import type { FoldStep } from '../../activities/profileWriter';
import type { UnlinkStep } from '../../activities/identityUnlink';
import { SegmentRunStore } from '../../store/segmentRuns';
import { SegmentStore } from '../../store/segments';
import { call } from '../support/http';
import { segmentDoc } from '../support/segmentFixtures';
import { newSource } from '../support/sourceClient';
import { startApi, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor } from '../support/services';

describe('an unlink interrupted at its riskiest points', () => {
  it('converges to the same split when the writer fails between writing the parts and retiring the document, and the relink fails after moving identities', async () => {
    const store = await testStore('unlink_retry');
    const temporal = await testTemporal();
    const taskQueue = uniqueName('unlink-retry');
    const injected: string[] = [];
    const failOnce = (step: FoldStep | UnlinkStep) => {
      if ((step === 'split-parts-written' || step === 'identities-moved') && !injected.includes(step)) {
        injected.push(step);
        throw new Error(`injected failure at ${step}`);
      }
    };
    const worker = await startWorker({ store, temporal, taskQueue, activityOverrides: { onFoldStep: failOnce, onUnlinkStep: failOnce } });
    const api = await startApi({ store, temporal, taskQueue });
    try {
      // A segment of people who logged in: Kim did, Lee did not.
      await new SegmentStore(store).create(segmentDoc('seg_logged_in', { event: 'login' }));
      const { send, folded, ...source } = await newSource(api, 'app');
      const lookup = async (type: string, value: string) => (await source.lookup(type, value)).body;

      await send([
        { id: 'k1', type: 'purchase', timestamp: '2026-06-01T10:00:00Z', identities: { maid: '6d92078a-8246-4ba4-ae5b-76104861e7dc', crm_id: 'kim' } },
        { id: 'k2', type: 'page_view', timestamp: '2026-06-02T10:00:00Z', identities: { maid: '6d92078a-8246-4ba4-ae5b-76104861e7dc', crm_id: 'lee' } },
        { id: 'k3', type: 'purchase', timestamp: '2026-06-03T10:00:00Z', identities: { crm_id: 'lee' } },
        { id: 'k4', type: 'login', timestamp: '2026-06-04T10:00:00Z', identities: { crm_id: 'kim' } },
      ]);
      await folded(4);
      const joined = (await lookup('crm_id', 'kim')).id;
      expect((await lookup('crm_id', 'lee')).id).toBe(joined);

      const accepted = (await call(`${api.url}/v1/identity/unlink`, { key: api.adminKey, body: { identities: [{ type: 'maid', value: '6d92078a-8246-4ba4-ae5b-76104861e7dc' }, { type: 'crm_id', value: 'lee' }] } })).body;
      const done = await waitFor('the unlink to complete', async () => {
        const status = (await call(`${api.url}${accepted.statusUrl}`, { key: api.adminKey })).body;
        return status.state === 'completed' ? status : undefined;
      });
      expect(injected.sort()).toEqual(['identities-moved', 'split-parts-written']);
      expect(done.split).toBe(true);

      const kim = await lookup('crm_id', 'kim');
      const lee = await lookup('crm_id', 'lee');
      expect(kim.id).not.toBe(lee.id);
      expect((await lookup('maid', '6d92078a-8246-4ba4-ae5b-76104861e7dc')).id).toBe(kim.id);
      const counts = (profile: any) => Object.fromEntries(Object.entries(profile.counters).map(([type, counter]: [string, any]) => [type, counter.count]));
      expect(counts(kim)).toEqual({ purchase: 1, login: 1 });
      expect(counts(lee)).toEqual({ page_view: 1, purchase: 1 });
      expect(done.profiles.flat().sort()).toEqual([...kim.profileIds, ...lee.profileIds].sort());

      // The split's real-time change, recorded once by the relink its failure made run twice: Kim's
      // person is in, Lee's out, and the joined person's id out of every segment.
      const records = (await new SegmentRunStore(store).changesSince(new Date(0))).filter((change) => change._id.startsWith('unlink-'));
      expect(records.map((change) => change._id)).toEqual([`unlink-${accepted.id}`]);
      const change = records[0].changes.seg_logged_in;
      expect(change.statedIn).toEqual([kim.id]);
      expect(change.statedOut).toEqual(expect.arrayContaining([lee.id, joined]));
      expect(change.statedOut).not.toContain(kim.id);
      expect(records[0].touched?.sort()).toEqual([kim.id, lee.id].sort());
    } finally {
      await api.close();
      await worker.stop();
      await stopPartitionWriters(temporal, store);
      await temporal.connection.close();
      await store.close();
    }
  });
});
