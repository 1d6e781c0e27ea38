import { COLLECTIONS } from '../../store/db';
import { call } from '../support/http';
import { killHard, killTestSetting } from '../support/processes';
import { waitFor } from '../support/services';
import { newSource } from '../support/sourceClient';

const MAID = '3f1c2a9e-7b44-4c1d-9e25-0a6f8d2b5c71';
const PER_SIDE = 1500;
const at = (n: number) => new Date(Date.UTC(2026, 9, 1) + n * 60_000).toISOString();

describe('a worker killed mid-unlink', () => {
  const { setting, startWorkers, spawnAnother } = killTestSetting('unlinkkill');

  it('finishes the split on another worker: each side holds exactly its own history, every identity one owner', async () => {
    const first = await startWorkers(1000);
    const { api, store } = setting;
    const admin = (path: string, body?: unknown) => call(`${api.url}${path}`, { key: api.adminKey, ...(body !== undefined && { body }) });
    const source = await newSource(api, 'app');

    // Kim and Lee, each with a long history of their own, joined by one device id seen with both.
    const events = [
      { id: 'bridge-kim', type: 'app_open', timestamp: at(0), identities: { maid: MAID, crm_id: 'kim' } },
      { id: 'bridge-lee', type: 'app_open', timestamp: at(1), identities: { maid: MAID, crm_id: 'lee' } },
      ...Array.from({ length: PER_SIDE }, (_, n) => ({ id: `kim-${n}`, type: 'purchase', timestamp: at(2 + 2 * n), identities: { crm_id: 'kim' }, properties: { n } })),
      ...Array.from({ length: PER_SIDE }, (_, n) => ({ id: `lee-${n}`, type: 'page_view', timestamp: at(3 + 2 * n), identities: { crm_id: 'lee' }, properties: { n } })),
    ];
    for (let start = 0; start < events.length; start += 500) expect((await source.send(events.slice(start, start + 500))).body.accepted).toBe(Math.min(500, events.length - start));
    await source.folded(events.length);
    const joined = (await source.lookup('crm_id', 'kim')).body;
    expect((await source.lookup('crm_id', 'lee')).body.id).toBe(joined.id);

    const accepted = (await admin('/v1/identity/unlink', { identities: [{ type: 'maid', value: MAID }, { type: 'crm_id', value: 'lee' }] })).body;
    const parts = () => store.db.collection(COLLECTIONS.profiles).countDocuments({ profileId: { $regex: '~' } });
    // Killed as soon as the rebuild has written a part (in trial runs: both parts written, the original not retired yet).
    await waitFor('the rebuild under way', async () => (await parts()) > 0, 120_000, 10);
    await killHard(first);
    expect((await admin(accepted.statusUrl)).body.state).not.toBe('completed');

    spawnAnother();
    const done = await waitFor('the unlink to finish on the new worker', async () => {
      const status = (await admin(accepted.statusUrl)).body;
      return status.state === 'completed' || status.state === 'failed' ? status : undefined;
    }, 240_000, 500);
    expect(done).toMatchObject({ state: 'completed', split: true });

    const kim = (await source.lookup('crm_id', 'kim')).body;
    const lee = (await source.lookup('crm_id', 'lee')).body;
    expect(kim.id).not.toBe(lee.id);
    expect((await source.lookup('maid', MAID)).body.id).toBe(kim.id);
    const counts = (profile: { counters: Record<string, { count: number }> }) => Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, counter.count]));
    expect(counts(kim)).toEqual({ app_open: 1, purchase: PER_SIDE });
    expect(counts(lee)).toEqual({ app_open: 1, page_view: PER_SIDE });
    const keys = (profile: { identities: Array<{ type: string; value: string }> }) => profile.identities.map((identity) => `${identity.type}:${identity.value}`).sort();
    expect(keys(kim)).toEqual([`crm_id:kim`, `maid:${MAID}`]);
    expect(keys(lee)).toEqual(['crm_id:lee']);

    // Each side's retained events are exactly its own (the bridge's evidence stays out of Lee's history).
    const history = async (id: string) => {
      const ids: string[] = [];
      for (let cursor: string | null | undefined; cursor !== null; ) {
        const page: { events: Array<{ id: string }>; next: string | null } = (await admin(`/v1/profiles/${id}/events?limit=1000${cursor ? `&cursor=${cursor}` : ''}`)).body;
        ids.push(...page.events.map((event) => event.id));
        cursor = page.next;
      }
      return ids.sort();
    };
    expect(await history(kim.id)).toEqual(['bridge-kim', ...Array.from({ length: PER_SIDE }, (_, n) => `kim-${n}`)].sort());
    expect(await history(lee.id)).toEqual(['bridge-lee', ...Array.from({ length: PER_SIDE }, (_, n) => `lee-${n}`)].sort());

    // Every identity has one owner, and it is a live document holding it.
    const owners = await store.db.collection<{ _id: string; profileId: string }>(COLLECTIONS.identities).find({}).toArray();
    const personOf = (documentId: string) => (kim.profileIds.includes(documentId) ? 'kim' : lee.profileIds.includes(documentId) ? 'lee' : documentId);
    expect(owners.map((owner) => [owner._id, personOf(owner.profileId)]).sort()).toEqual(
      [
        ['crm_id:kim', 'kim'],
        [`maid:${MAID}`, 'kim'],
        ['crm_id:lee', 'lee'],
      ].sort(),
    );
  }, 480_000);
});
