import { createHash } from 'node:crypto';
import { linkId } from '../../domain/identityResolution';
import { ProfileStore } from '../../store/profiles';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * Two people once shared a tablet, so one document held them both until an operator unlinked them.
 * Erasing one of them must not reach the other through the document they were split from.
 */
describe('privacy requests: erasing one side of an unlink', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  let shared: string;
  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const lookup = (type: string, value: string) => admin(`/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`);
  const counts = (profile: { counters: Record<string, { count: number }> }) => Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, counter.count]));

  beforeAll(async () => {
    platform = await startPlatform('erase_split');
    ({ api } = platform);
    source = await newSource(api, 'shop');
    await source.send([
      { id: 's1', type: 'purchase', timestamp: '2026-06-01T10:00:00Z', identities: { cookie_id: 'tablet-7', email: 'cleo@example.net' }, traits: { name: 'Cleo' } },
      { id: 's2', type: 'page_view', timestamp: '2026-06-02T10:00:00Z', identities: { email: 'cleo@example.net', crm_id: 'cleo-1' } },
      { id: 's3', type: 'login', timestamp: '2026-06-03T10:00:00Z', identities: { cookie_id: 'tablet-7', email: 'dan@example.net' }, traits: { plan: 'team' } },
      { id: 's4', type: 'purchase', timestamp: '2026-06-04T10:00:00Z', identities: { email: 'dan@example.net', crm_id: 'dan-1' } },
    ]);
    await source.folded(4);
    shared = (await lookup('email', 'cleo@example.net')).body.id;
    expect((await lookup('email', 'dan@example.net')).body.id).toBe(shared);
    const unlink = await admin('/v1/identity/unlink', { body: { identities: [{ type: 'cookie_id', value: 'tablet-7' }, { type: 'email', value: 'dan@example.net' }] } });
    expect(unlink.status).toBe(202);
    await waitFor('the unlink to complete', async () => (await admin(unlink.body.statusUrl)).body.state === 'completed');
    expect((await lookup('email', 'cleo@example.net')).body.id).not.toBe((await lookup('email', 'dan@example.net')).body.id);
    // A drain that had not heard of the split yet joined another document of Cleo's to the one split
    // apart, through the tablet (hers since): the link names the split document, as such a drain writes it.
    await source.send([{ id: 's-other', type: 'page_view', timestamp: '2026-06-04T12:00:00Z', identities: { crm_id: 'cleo-2' } }]);
    await source.folded(5);
    const other = (await lookup('crm_id', 'cleo-2')).body.id;
    const ends = [shared, other].sort() as [string, string];
    await platform.store.db.collection('identity_links').insertOne({ _id: linkId(ends, 'cookie_id:tablet-7'), profiles: ends, via: 'cookie_id:tablet-7', sourceId: source.sourceId, eventId: 's-stale', createdAt: new Date() } as never);
    await waitFor("the link read as Cleo's", async () => (await lookup('crm_id', 'cleo-2')).body.id === (await lookup('email', 'cleo@example.net')).body.id);
  }, 120_000);
  afterAll(() => platform?.stop());

  it("erases Cleo and leaves Dan whole: his identities, history, graph and later events, none of it tombstoned or withheld", async () => {
    const danBefore = (await lookup('email', 'dan@example.net')).body;
    const erase = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'email', value: 'cleo@example.net' } } });
    expect(erase.status).toBe(202);
    const done = await settledRequest(admin, erase.body.id, 120_000);
    expect(done.state).toBe('completed');
    // Only Cleo's side: her email, the tablet's cookie (hers since the unlink), her customer ids.
    expect(done.result).toMatchObject({ identities: 4 });

    for (const [type, value] of [['email', 'cleo@example.net'], ['cookie_id', 'tablet-7'], ['crm_id', 'cleo-1'], ['crm_id', 'cleo-2']]) {
      expect({ type, status: (await lookup(type, value)).status }).toEqual({ type, status: 404 });
    }
    const dan = (await lookup('email', 'dan@example.net')).body;
    expect(dan.id).toBe(danBefore.id);
    expect((await lookup('crm_id', 'dan-1')).body.id).toBe(dan.id);
    expect(counts(dan)).toEqual({ login: 1, purchase: 1 });
    expect(dan.traits).toEqual({ plan: 'team' });
    // His own event stays; the one he sent with her tablet's cookie named her, and went with her.
    expect((await admin(`/v1/profiles/${dan.id}/events`)).body.events.map((event: { id: string }) => event.id)).toEqual(['s4']);

    // Dan's identities are not tombstoned: his next event folds into his profile.
    await source.send([{ id: 's5', type: 'page_view', timestamp: '2026-06-05T10:00:00Z', identities: { email: 'dan@example.net' } }]);
    await waitFor("Dan's next event folded", async () => counts((await lookup('email', 'dan@example.net')).body).page_view === 1);
    // Nor is he withheld from segments, as an erased person's documents are while they go.
    const segment = (await admin('/v1/segments', { body: { name: 'Team plan', rule: { trait: 'plan', op: 'eq', value: 'team' } } })).body;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segment.id}`)).body.lastRun?.state === 'completed');
    expect((await admin(`/v1/segments/${segment.id}/members`)).body.members).toEqual([dan.id]);

    // Nothing of Cleo is left in the profile store, the identity index or the graph; the split document keeps Dan's side only.
    const db = platform.store.db;
    const cleoKeys = [`email_sha256:${sha256('cleo@example.net')}`, 'cookie_id:tablet-7', 'crm_id:cleo-1', 'crm_id:cleo-2'];
    expect(await db.collection('identities').countDocuments({ _id: { $in: cleoKeys } as never })).toBe(0);
    const danKeys = [`email_sha256:${sha256('dan@example.net')}`, 'crm_id:dan-1'];
    expect((await db.collection('identities').find({ _id: { $in: danKeys } as never }).toArray()).map((doc) => doc.profileId)).toEqual([dan.id, dan.id]);
    const split = await new ProfileStore(platform.store, 0).versions(shared);
    expect(split).toHaveLength(1);
    expect(Object.keys(split[0].retired?.keys ?? {}).sort()).toEqual(danKeys.sort());
    expect(JSON.stringify(split)).not.toMatch(/cleo|tablet-7/i);
  });
});
