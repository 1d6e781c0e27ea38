import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { newExport } from '../../activities/exports';
import { DestinationConsentSchema, isHeldOut } from '../../domain/destinations';
import type { ProfileDoc } from '../../domain/profile';
import { destinationExportWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { batchId, DestinationStore } from '../../store/destinations';
import { ProfileStore } from '../../store/profiles';
import { SegmentStore } from '../../store/segments';
import { startDestinationExport } from '../../temporal/client';
import { PartnerServer } from '../support/partners';
import { killHard, spawnWorker } from '../support/processes';
import { seededRandom } from '../support/random';
import { syntheticProfile } from '../support/segmentFixtures';
import { testStore, testTemporal, uniqueName, waitFor } from '../support/services';

/** A webhook destination of segment `seg_all` to `partner`, in small batches so that delivery takes a while. */
function createWebhookDestination(destinations: DestinationStore, id: string, partner: PartnerServer, at: Date): Promise<boolean> {
  return destinations.create({
    _id: id,
    name: 'webhook',
    connector: 'webhook',
    config: { url: `${partner.url}/hook`, secret: partner.options.secret, batchSize: 50, requestsPerSecond: 1000, concurrency: 2 },
    segments: ['seg_all'],
    idType: 'cookie_id',
    schedule: null,
    nearRealTime: false,
    labelsAllowed: [],
    consent: DestinationConsentSchema.parse({ tcfPurposes: [] }),
    state: 'active',
    createdAt: at,
    updatedAt: at,
  });
}

describe('a worker killed mid export', () => {
  let store: Store;
  let temporal: Client;
  let partner: PartnerServer;
  const children: ChildProcess[] = [];
  /** The profiles the first test writes: the segment `seg_all` holds them all. */
  let docs: ProfileDoc[] = [];

  beforeAll(async () => {
    store = await testStore('exportkill');
    temporal = await testTemporal();
    partner = await new PartnerServer({ kind: 'webhook', secret: 'kill-test-secret-0123456789', delayMs: 60 }).start();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await partner.stop();
    await store.close();
    await temporal.connection.close();
  });

  it('ends, after another worker takes over, with the partner holding exactly the segment and one applied batch per receipt', async () => {
    const random = seededRandom(11);
    const now = Date.now();
    docs = Array.from({ length: 3_000 }, (_, n) => syntheticProfile(n, random, now));
    const profiles = new ProfileStore(store, 0);
    for (let start = 0; start < docs.length; start += 1000) await profiles.saveVersions(docs.slice(start, start + 1000), 'fixture');
    const at = new Date(now);
    await new SegmentStore(store).create({ _id: 'seg_all', name: 'All', description: null, taxonomyPath: null, ruleJson: JSON.stringify({ identity: 'cookie_id' }), schedule: null, version: 1, createdAt: at, updatedAt: at, current: null, lastRun: null });
    const destinations = new DestinationStore(store);
    await createWebhookDestination(destinations, 'dst_kill', partner, at);

    const taskQueue = uniqueName('exportkill');
    const env = { DMP_TASK_QUEUE: taskQueue, DMP_DESTINATION_ALLOWLIST: '127.0.0.1' };
    const first = spawnWorker(store, env);
    children.push(first);
    const exportId = 'dst_kill-20260101T000000Z';
    await destinations.openExport(newExport(exportId, 'dst_kill', false, 'api', at));
    await startDestinationExport(temporal, store.db.databaseName, 'dst_kill', exportId, false, { DMP_TASK_QUEUE: taskQueue });
    // Killed while batches are being delivered (the export first runs the segmentation pass it needs).
    await waitFor('delivery under way', async () => partner.applied.length >= 10, 120_000, 20);
    await killHard(first);
    const appliedAtKill = partner.applied.length;
    expect(appliedAtKill).toBeLessThan(60);

    children.push(spawnWorker(store, env));
    await temporal.workflow.getHandle(destinationExportWorkflowId(store.db.databaseName, exportId)).result();

    const done = await destinations.getExport(exportId);
    const expected = docs.map((doc) => doc.identities.find((identity) => identity.type === 'cookie_id')!.value).sort();
    expect(done).toMatchObject({ state: 'completed', batchesConfirmed: 60, error: null });
    expect(partner.audience('seg_all')).toEqual(expected);
    // The partner applies a key once: exactly the plan's 60 keys applied means no batch went again under
    // a new key, and every one of them has its receipt.
    expect([...partner.applied].sort()).toEqual(Array.from({ length: 60 }, (_, n) => batchId(exportId, n)).sort());
    const receipts = await destinations.receiptsOf(exportId, 60);
    expect([...receipts.values()].every((receipt) => receipt.state === 'applied')).toBe(true);
    expect(receipts.size).toBe(60);
    const destination = await destinations.get('dst_kill');
    expect(destination?.held.seg_all).toMatchObject({ exportId, ids: 3000, uncertain: 0 });
    expect(await destinations.holder('dst_kill')).toBeNull();
  }, 300_000);

  it("plans after taking over from an export whose workflow ended mid delivery from what that one confirmed: the partner loses who should go", async () => {
    const abandonedPartner = await new PartnerServer({ kind: 'webhook', secret: 'abandon-test-secret-0123456789', delayMs: 60 }).start();
    const destinations = new DestinationStore(store);
    const at = new Date();
    await createWebhookDestination(destinations, 'dst_abandon', abandonedPartner, at);
    const taskQueue = uniqueName('exportabandon');
    const env = { DMP_TASK_QUEUE: taskQueue, DMP_DESTINATION_ALLOWLIST: '127.0.0.1' };
    children.push(spawnWorker(store, env));
    try {
      // The first export of the segment: its workflow is ended while it delivers, so no finish records what it confirmed.
      const first = 'dst_abandon-20260101T000000Z';
      await destinations.openExport(newExport(first, 'dst_abandon', false, 'api', at));
      await startDestinationExport(temporal, store.db.databaseName, 'dst_abandon', first, false, { DMP_TASK_QUEUE: taskQueue });
      await waitFor('delivery under way', async () => abandonedPartner.applied.length >= 10, 120_000, 20);
      await temporal.workflow.getHandle(destinationExportWorkflowId(store.db.databaseName, first)).terminate('ended mid delivery');
      const confirmedFirst = abandonedPartner.audience('seg_all');
      expect(confirmedFirst.length).toBeGreaterThan(0);
      expect(confirmedFirst.length).toBeLessThan(3000);

      // Half the segment is held out from now on: whoever the first export sent of that half must go.
      await destinations.update('dst_abandon', { holdoutShare: 0.5 });
      const second = 'dst_abandon-20260101T000100Z';
      await destinations.openExport(newExport(second, 'dst_abandon', false, 'api', new Date(at.getTime() + 60_000)));
      await startDestinationExport(temporal, store.db.databaseName, 'dst_abandon', second, false, { DMP_TASK_QUEUE: taskQueue });
      await temporal.workflow.getHandle(destinationExportWorkflowId(store.db.databaseName, second)).result();

      expect(await destinations.getExport(first)).toMatchObject({ state: 'failed', error: 'abandoned: its workflow ended before it finished' });
      const done = await destinations.getExport(second);
      expect(done).toMatchObject({ state: 'completed', error: null });
      const kept = docs.filter((doc) => !isHeldOut('dst_abandon', doc.profileId, 0.5)).map((doc) => doc.identities.find((identity) => identity.type === 'cookie_id')!.value).sort();
      expect(kept.length).toBeGreaterThan(1000);
      expect(kept.length).toBeLessThan(2000);
      expect(abandonedPartner.audience('seg_all')).toEqual(kept);
      expect(done?.plan?.segments[0].before).toMatchObject({ exportId: first });
    } finally {
      await abandonedPartner.stop();
    }
  }, 300_000);
});
