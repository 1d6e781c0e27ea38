import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { ProfileReader } from '../../store/profileReader';
import { identityKey, sha256Hex } from '../../domain/identity';
import { sourceWorkflowId } from '../../domain/workflowIds';
import { COLLECTIONS, forEachConcurrently, type Store } from '../../store/db';
import type { IdentityDoc } from '../../store/identities';
import { ensureSourceWorkflow } from '../../temporal/client';
import { appendToLog } from '../support/appendEvents';
import type { GeneratedEvent } from '../support/audience';
import { freeze, killHard, spawnWorker, thaw } from '../support/processes';
import { eventsFolded } from '../support/profiles';
import { baseConfig, testStore, testTemporal, uniqueName, waitFor } from '../support/services';

const USERS = 400;
const BASE = Date.parse('2026-02-01T00:00:00Z');

/**
 * Two sources that know the same people by overlapping identities: the web source sends a cookie
 * (and, for some events, the email), the CRM source sends the email and a CRM id (and, for some, the
 * cookie). Both are drained at once by two worker processes, so their drains race to claim the same
 * identities and their partitions fold concurrently.
 */
function webEvent(user: number, n: number): GeneratedEvent {
  const identities: Record<string, string> = { cookie_id: `ck-${user}` };
  if (n % 4 === 1) identities.email = `person${user}@example.org`;
  return { id: `web-${user}-${n}`, type: n % 5 === 0 ? 'purchase' : 'page_view', timestamp: new Date(BASE + user * 60_000 + n * 3_600_000).toISOString(), identities };
}

function crmEvent(user: number, n: number): GeneratedEvent {
  const identities: Record<string, string> = { email: `person${user}@example.org`, crm_id: `crm-${user}` };
  if (n % 3 === 2) identities.cookie_id = `ck-${user}`;
  return { id: `crm-${user}-${n}`, type: 'crm_update', timestamp: new Date(BASE + user * 60_000 + n * 7_200_000).toISOString(), identities, traits: { tier: ['gold', 'silver'][user % 2] } };
}

describe('partition writers in two worker processes', () => {
  const stores: Store[] = [];
  let temporal: Client;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    temporal = await testTemporal();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    for (const store of stores) await store.close();
    await temporal.connection.close();
  });

  /**
   * Drains both sources with two worker processes and checks every person. Once folding has begun,
   * with `stall`, one worker stops (SIGSTOP, as a host that hangs) for longer than a workflow task
   * may take: the other takes over its sources and partitions while folds and routing turns it had
   * under way wait, and go on when it comes back. With `kill`, one worker is SIGKILLed while the two
   * sources' drains are linking and merging the same people, and a new one is started in its place.
   */
  async function drainBoth(fault?: { stallMs: number } | 'kill'): Promise<string[]> {
    // A database of its own: every run knows the same people.
    const store = await testStore(fault === undefined ? 'partitions' : fault === 'kill' ? 'partitions_kill' : 'partitions_stall');
    stores.push(store);
    const taskQueue = uniqueName('partitions');
    const web = uniqueName('src_web');
    const crm = uniqueName('src_crm');
    const webEvents = Array.from({ length: USERS * 6 }, (_, k) => webEvent(k % USERS, Math.floor(k / USERS)));
    const crmEvents = Array.from({ length: USERS * 3 }, (_, k) => crmEvent(k % USERS, Math.floor(k / USERS)));
    await Promise.all([appendToLog(store, web, webEvents, 300), appendToLog(store, crm, crmEvents, 300)]);

    const env = { DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: '300', DMP_PROFILE_PARTITIONS: String(baseConfig.DMP_PROFILE_PARTITIONS) };
    const workers = [spawnWorker(store, env), spawnWorker(store, env)];
    children.push(...workers);
    const config = { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: 300 };
    await Promise.all([ensureSourceWorkflow(temporal, { _id: web, kind: 'events', party: 'first' }, config), ensureSourceWorkflow(temporal, { _id: crm, kind: 'events', party: 'first' }, config)]);

    const folded = async () => [await eventsFolded(store, web, baseConfig.DMP_PROFILE_PARTITIONS), await eventsFolded(store, crm, baseConfig.DMP_PROFILE_PARTITIONS)];
    if (fault !== undefined) {
      await waitFor('folding to begin', async () => (await folded()).some((count) => count > 0), 240_000, 50);
      if (fault === 'kill') {
        await killHard(workers[0]);
        const [webFolded, crmFolded] = await folded();
        // Killed with folds still to come: merges of people both sources know were under way.
        if (webFolded === webEvents.length && crmFolded === crmEvents.length) throw new Error('the worker was killed after the drain had ended');
        workers[0] = spawnWorker(store, env);
        children.push(workers[0]);
      } else {
        freeze(workers[0]);
        const [webFolded, crmFolded] = await folded();
        // Stalled with folds still to come, as the kill above.
        if (webFolded === webEvents.length && crmFolded === crmEvents.length) throw new Error('the worker stalled after the drain had ended');
        await new Promise((resolve) => setTimeout(resolve, fault.stallMs));
        thaw(workers[0]);
      }
    }
    await waitFor(
      'both sources folded',
      async () => {
        const [webFolded, crmFolded] = await folded();
        return webFolded === webEvents.length && crmFolded === crmEvents.length;
      },
      240_000,
      500,
    );

    // Every identity is claimed once; each person's identities all lead to one profile holding all of them.
    const identities = await store.db.collection<IdentityDoc>(COLLECTIONS.identities).find({}).toArray();
    const problems: string[] = [];
    const reader = new ProfileReader(store);
    await forEachConcurrently(Array.from({ length: USERS }, (_, user) => user), 8, async (user) => {
      const keys = [
        identityKey({ type: 'cookie_id', value: `ck-${user}` }),
        identityKey({ type: 'email_sha256', value: sha256Hex(`person${user}@example.org`) }),
        identityKey({ type: 'crm_id', value: `crm-${user}` }),
      ];
      const profiles = await Promise.all(keys.map((key) => reader.byIdentity(key)));
      const ids = new Set(profiles.map((profile) => profile?.id));
      if (ids.size !== 1) return void problems.push(`user ${user}: identities in ${ids.size} profiles`);
      const profile = profiles[0];
      if (!profile) return void problems.push(`user ${user}: no profile`);
      const held = profile.identities.map((identity) => `${identity.type}:${identity.value}`).sort();
      if (JSON.stringify(held) !== JSON.stringify([...keys].sort())) problems.push(`user ${user}: holds ${held.join(',')}`);
      const want = { page_view: 0, purchase: 0, crm_update: 0 };
      for (const event of [...webEvents, ...crmEvents]) if (event.id.split('-')[1] === String(user)) want[event.type as keyof typeof want]++;
      const got = Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, counter.count]).sort());
      if (JSON.stringify(got) !== JSON.stringify(Object.fromEntries(Object.entries(want).filter(([, count]) => count > 0).sort()))) {
        problems.push(`user ${user}: counters ${JSON.stringify(got)} expected ${JSON.stringify(want)}`);
      }
      if (profile.traits.tier !== ['gold', 'silver'][user % 2]) problems.push(`user ${user}: tier ${String(profile.traits.tier)}`);
    });
    for (const id of [web, crm]) await temporal.workflow.getHandle(sourceWorkflowId(id)).terminate('test finished');
    for (const worker of workers) await killHard(worker);
    return [`${identities.length} identities`, ...problems];
  }

  it('fold overlapping identities from two sources at once: no lost or doubled count, no identity in two profiles', async () => {
    expect((await drainBoth()).slice(0, 10)).toEqual([`${USERS * 3} identities`]);
  }, 360_000);

  it('lose and double nothing when one of the two workers stalls mid-drain and comes back', async () => {
    expect((await drainBoth({ stallMs: 15_000 })).slice(0, 10)).toEqual([`${USERS * 3} identities`]);
  }, 360_000);

  it('lose and double nothing when one of the two workers is SIGKILLed mid-merge and another takes its place', async () => {
    expect((await drainBoth('kill')).slice(0, 10)).toEqual([`${USERS * 3} identities`]);
  }, 360_000);
});
