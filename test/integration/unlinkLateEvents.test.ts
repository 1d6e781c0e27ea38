import type { FoldStep } from '../../activities/profileWriter';
import { partitionOf } from '../../domain/partition';
import { profilePartitionWorkflowId } from '../../domain/workflowIds';
import { ProfileEventLog } from '../../store/profileEvents';
import { call } from '../support/http';
import { newSource } from '../support/sourceClient';
import { baseConfig, startApi, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor } from '../support/services';

const MAID = '0b3e7c52-91d4-4f6a-8c1e-5d2a7f90b4e3';

describe('an event routed before an unlink was planned and folded after the split', () => {
  it('goes to its side without joining the sides again, keeps the links it shows when the relink runs first, and leaves the other side its identity', async () => {
    const store = await testStore('unlink_late');
    const temporal = await testTemporal();
    const taskQueue = uniqueName('unlink-late');
    // A gate: once armed (or armed for a partition), the next fold there to reach its step waits for it
    // to open; events routed meanwhile stay unfolded.
    const gate = () => {
      let open = () => {};
      const opened = new Promise<void>((resolve) => (open = resolve));
      return { armed: false, partitions: new Set<string>(), holding: false, opened, open };
    };
    const first = gate();
    const second = gate();
    const hold = async (step: FoldStep, group: string) => {
      const partition = group.slice(0, group.indexOf('-'));
      // A fold that splits arms the second gate for its partition: the fold after it waits until the relink has run.
      if (step === 'split-parts-written') second.partitions.add(partition);
      // The first gate holds a fold about to write; the second one that has just read its events, before it redirects them.
      for (const [at, holdAt] of [[first, 'versions-writing'], [second, 'events-read']] as const) {
        if (step !== holdAt || (!at.armed && !at.partitions.delete(partition))) continue;
        at.armed = false;
        at.holding = true;
        await at.opened;
      }
    };
    // One event a batch and a fold, so the folds after the split come one by one.
    const config = { DMP_DRAIN_BATCH_EVENTS: 1 };
    const worker = await startWorker({ store, temporal, taskQueue, activityOverrides: { onFoldStep: hold }, config });
    const api = await startApi({ store, temporal, taskQueue, config });
    try {
      const { send, folded, ...source } = await newSource(api, 'app');
      const lookup = async (type: string, value: string) => (await source.lookup(type, value)).body;
      await send([
        { id: 'k0', type: 'page_view', timestamp: '2026-05-31T10:00:00Z', identities: { cookie_id: 'c-tab' } },
        { id: 'k1', type: 'purchase', timestamp: '2026-06-01T10:00:00Z', identities: { maid: MAID, crm_id: 'kim' } },
        { id: 'k2', type: 'page_view', timestamp: '2026-06-02T10:00:00Z', identities: { maid: MAID, crm_id: 'lee' } },
        { id: 'k3', type: 'purchase', timestamp: '2026-06-03T10:00:00Z', identities: { crm_id: 'lee' } },
        { id: 'k4', type: 'login', timestamp: '2026-06-04T10:00:00Z', identities: { crm_id: 'kim' } },
      ]);
      await folded(5);
      const joined = (await lookup('crm_id', 'kim')).id;
      expect((await lookup('crm_id', 'lee')).id).toBe(joined);

      // The writer is busy with Kim's login; meanwhile the device is seen with Lee once more, and Kim on a
      // browser of their own: both routed, neither folded.
      first.armed = true;
      await send([{ id: 'k5', type: 'login', timestamp: '2026-06-05T10:00:00Z', identities: { crm_id: 'kim' } }]);
      await waitFor('a fold held', async () => first.holding);
      await send([{ id: 'k6', type: 'late_view', timestamp: '2026-06-06T10:00:00Z', identities: { maid: MAID, crm_id: 'lee' } }]);
      await send([{ id: 'k7', type: 'signup', timestamp: '2026-06-07T10:00:00Z', identities: { cookie_id: 'c-tab', crm_id: 'kim' } }]);
      // And a cookie never seen before, with Lee: the unlink takes it from Lee too, before any of its events is folded.
      await send([{ id: 'k8', type: 'view', timestamp: '2026-06-08T10:00:00Z', identities: { cookie_id: 'c-x', crm_id: 'lee' } }]);
      const routed = new ProfileEventLog(store);
      const tab = (await lookup('cookie_id', 'c-tab')).id;
      await waitFor('k6 to k8 routed', async () => (await routed.eventsOf([joined, tab])).filter((event) => ['k6', 'k7', 'k8'].includes(event.id)).length === 3);

      // The unlink is planned while they wait: it severs the device and the new cookie from Lee in k6 and k8 too.
      const unlinked = [{ type: 'maid', value: MAID }, { type: 'crm_id', value: 'lee' }, { type: 'cookie_id', value: 'c-x' }];
      const accepted = (await call(`${api.url}/v1/identity/unlink`, { key: api.adminKey, body: { identities: unlinked } })).body;
      const status = async () => (await call(`${api.url}${accepted.statusUrl}`, { key: api.adminKey })).body;
      // Released once the writer has been asked to split: its next fold splits and takes k6 alone.
      const writer = temporal.workflow.getHandle(profilePartitionWorkflowId(store.db.databaseName, partitionOf(joined, baseConfig.DMP_PROFILE_PARTITIONS)));
      await waitFor('the split requested', async () => (await writer.fetchHistory()).events?.some((event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'splitRequested'));
      first.open();
      // The split's fold takes k6; k7's fold waits until the relink is done.
      const done = await waitFor('the unlink to complete', async () => {
        const now = await status();
        return now.state === 'completed' ? now : undefined;
      });
      expect(done.split).toBe(true);
      expect(second.holding).toBe(true);
      second.open();
      await folded(9);

      const kim = await lookup('crm_id', 'kim');
      const lee = await lookup('crm_id', 'lee');
      expect(lee.id).not.toBe(kim.id);
      expect((await lookup('maid', MAID)).id).toBe(kim.id);
      const counts = (profile: any) => Object.fromEntries(Object.entries(profile.counters).map(([type, counter]: [string, any]) => [type, counter.count]));
      expect(counts(kim)).toEqual({ page_view: 1, purchase: 1, login: 2, signup: 1 });
      expect((await lookup('cookie_id', 'c-tab')).id).toBe(kim.id);
      expect(counts(lee)).toEqual({ page_view: 1, purchase: 1, late_view: 1, view: 1 });
      // The new cookie stands alone: its one event was Lee's, seen with it in an event the unlink severed.
      const cookie = await lookup('cookie_id', 'c-x');
      expect([kim.id, lee.id]).not.toContain(cookie.id);
      expect(counts(cookie)).toEqual({});
      const keys = (profile: any) => profile.identities.map((identity: any) => `${identity.type}:${identity.value}`).sort();
      expect(keys(lee)).toEqual(['crm_id:lee']);
      expect(keys(kim)).toEqual(['cookie_id:c-tab', 'crm_id:kim', `maid:${MAID}`]);
      expect(keys(cookie)).toEqual(['cookie_id:c-x']);
    } finally {
      first.open();
      second.open();
      await api.close();
      await worker.stop();
      await stopPartitionWriters(temporal, store);
      await temporal.connection.close();
      await store.close();
    }
  });
});
