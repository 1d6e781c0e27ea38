import { createHash } from 'node:crypto';
import { eventIdToken } from '../../domain/profile';
import { createUnlinkActivities } from '../../activities/identityUnlink';
import { identityKey } from '../../domain/identity';
import { COLLECTIONS } from '../../store/db';
import { UnlinkStore } from '../../store/identityUnlinks';
import { SourceStore } from '../../store/sources';
import { wakeSourceWorkflow } from '../../temporal/client';
import { appendToLog } from '../support/appendEvents';
import { call } from '../support/http';
import { PartnerServer } from '../support/partners';
import { latestProfiles } from '../support/profiles';
import { settledRequest as settled } from '../support/privacyRequests';
import { findResidue } from '../support/residue';
import { baseConfig, startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
const ALICE_EMAIL = 'Alice.Erased@Example.com';
const aliceHash = createHash('sha256').update('alice.erased@example.com').digest('hex');
const ALICE_COOKIE = 'ck-erase-alice-0001';
const BOB_COOKIE = 'ck-erase-bob-00001';
const ALICE_PUID = 'ttd-puid-alice-77';

describe('privacy requests: erasure from every store and every partner', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  let partner: PartnerServer;
  /** A people-based list holding the members' email hashes: a second partner that holds her. */
  let listPartner: PartnerServer;
  let segmentId: string;
  let destinationId: string;
  let listDestinationId: string;
  let aliceDocuments: string[];
  let bobId: string;
  let erasure: { id: string; view: Record<string, any> };
  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const lookup = (type: string, value: string) => admin(`/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`);
  const settledRequest = (id: string) => settled(admin, id, 120_000);
  /** Everything that names Alice: her identities as stored (and as UID2 would send the email), her event ids, her documents, her partner id. */
  const aliceNeedles = () => [ALICE_COOKIE, aliceHash, Buffer.from(aliceHash, 'hex').toString('base64'), 'ev-alice-1', 'ev-alice-2', 'ev-alice-3', ALICE_PUID, ...aliceDocuments];

  beforeAll(async () => {
    platform = await startPlatform('privacyerase', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'], DMP_DESTINATION_TIMEOUT_SECONDS: 2 });
    ({ api } = platform);
    source = await newSource(api, 'shop');
    // Alice and Bob arrive in one request: their events share the log's chunk and the routed batches.
    const events = [
      { id: 'ev-alice-1', type: 'page_view', timestamp: minutesAgo(30), identities: { cookie_id: ALICE_COOKIE }, traits: { plan: 'gold' } },
      { id: 'ev-alice-2', type: 'purchase', timestamp: minutesAgo(20), identities: { cookie_id: ALICE_COOKIE, email: ALICE_EMAIL }, properties: { item: 'tent' } },
      { id: 'ev-bob-1', type: 'purchase', timestamp: minutesAgo(10), identities: { cookie_id: BOB_COOKIE }, traits: { plan: 'gold' }, properties: { item: 'pen' } },
    ];
    expect((await source.send(events)).body.accepted).toBe(3);
    await source.folded(3);
    // A cookie sync gave a partner's id for Alice's cookie.
    expect((await admin('/v1/partners', { body: { id: 'ttd', name: 'The Trade Desk', redirectUrl: 'https://sync.partner.example/match?dmp_uid=${DMP_UID}' } })).status).toBe(201);
    const synced = await fetch(`${api.url}/v1/sync/ttd?puid=${ALICE_PUID}`, { redirect: 'manual', headers: { cookie: `dmp_uid=${ALICE_COOKIE}` } });
    expect(synced.status).toBe(302);
    segmentId = (await admin('/v1/segments', { body: { name: 'Gold plan', rule: { trait: 'plan', op: 'eq', value: 'gold' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed');
    partner = await new PartnerServer({ kind: 'webhook', secret: 'webhook-secret-0123456789' }).start();
    destinationId = (await admin('/v1/destinations', { body: { name: 'Hooked', connector: 'webhook', idType: 'cookie_id', segments: [segmentId], config: { url: `${partner.url}/dmp`, secret: 'webhook-secret-0123456789' } } })).body.id;
    const exported = await admin(`/v1/destinations/${destinationId}/exports`, { body: {} });
    await waitFor('the export', async () => (await admin(`/v1/destinations/${destinationId}/exports/${exported.body.exportId}`)).body.state === 'completed', 60_000);
    expect(partner.audience(segmentId)).toEqual([BOB_COOKIE, ALICE_COOKIE].sort());
    listPartner = await new PartnerServer({ kind: 'people', token: 'list-token' }).start();
    listDestinationId = (await admin('/v1/destinations', { body: { name: 'Listed', connector: 'people_list', idType: 'email_sha256', segments: [segmentId], config: { url: listPartner.url, token: 'list-token', listId: 'gold', minAudience: 1 } } })).body.id;
    const listed = await admin(`/v1/destinations/${listDestinationId}/exports`, { body: {} });
    await waitFor('the list export', async () => (await admin(`/v1/destinations/${listDestinationId}/exports/${listed.body.exportId}`)).body.state === 'completed', 60_000);
    expect(listPartner.audience('gold')).toEqual([aliceHash]);

    const alice = (await lookup('email', ALICE_EMAIL)).body;
    aliceDocuments = alice.profileIds;
    bobId = (await lookup('cookie_id', BOB_COOKIE)).body.id;
    // An access export made earlier holds everything about her: it goes too.
    const access = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: ALICE_COOKIE } } })).body.id;
    expect((await settledRequest(access)).state).toBe('completed');
    const before = await findResidue(platform.store.db, aliceNeedles());
    // The search reads inside deflated event batches: her events in the log and in routed batches are found.
    expect(before.some((found) => found.collection === COLLECTIONS.events && found.path.startsWith('.events<bson>'))).toBe(true);
    expect(before.some((found) => found.collection === COLLECTIONS.profileEvents && found.path.startsWith('.events<bson>'))).toBe(true);

    // The sync partner was deleted since: its matches of her are still hers to erase.
    expect((await admin('/v1/partners/ttd', { method: 'DELETE' })).status).toBe(204);
    partner.failNext('http500');
    const started = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'email', value: ALICE_EMAIL }, requestedBy: 'ticket 99' } });
    expect(started.status).toBe(202);
    expect(started.body.id).toMatch(/^pr_erase_[A-Za-z0-9_-]{22}_1$/);
    erasure = { id: started.body.id, view: await settledRequest(started.body.id) };
  }, 300_000);
  afterAll(async () => {
    await partner?.stop();
    await listPartner?.stop();
    await platform.stop();
  });

  it('completes every step, audited, and removes the subject at every partner that held her, one through a 5xx', async () => {
    const { view } = erasure;
    expect(view).toMatchObject({ type: 'erase', state: 'completed', error: null, requestedBy: 'ticket 99' });
    expect(view.steps.map((step: { name: string; state: string }) => [step.name, step.state])).toEqual([
      ['resolve', 'done'],
      ['tombstone', 'done'],
      ['erase', 'done'],
      ['verify', 'done'],
      ['remove', 'done'],
      ['complete', 'done'],
    ]);
    expect(view.steps[2].touched).toMatchObject({ profiles: expect.any(Number), identities: 2, events: 1, profile_events: expect.any(Number), match_cookie_ids: 1, match_partner_ids: 1 });
    expect(view.result).toMatchObject({ found: true, profiles: aliceDocuments.length, identities: 2, events: 2, destinations: 2 });
    expect(view.destinations.sort((a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name))).toEqual([
      expect.objectContaining({ destinationId, name: 'Hooked', state: 'acknowledged', lastError: null }),
      expect.objectContaining({ destinationId: listDestinationId, name: 'Listed', state: 'acknowledged', lastError: null }),
    ]);
    expect(partner.audience(segmentId)).toEqual([BOB_COOKIE]);
    expect(listPartner.audience('gold')).toEqual([]);
    const audit = await platform.store.db.collection('privacy_audit').find({ requestId: erasure.id }).toArray();
    expect(audit.map((entry) => entry.step).sort()).toEqual(['complete', 'erase', 'remove', 'resolve', 'tombstone', 'verify']);
  });

  it('leaves nothing that names the subject in any collection, only the salted tombstone', async () => {
    expect(await findResidue(platform.store.db, aliceNeedles())).toEqual([]);
    expect((await lookup('email', ALICE_EMAIL)).status).toBe(404);
    expect((await lookup('cookie_id', ALICE_COOKIE)).status).toBe(404);
    for (const id of aliceDocuments) expect((await admin(`/v1/profiles/${id}`)).status).toBe(404);
  });

  it('removes an unlink naming her that was still queued when her erasure ran, once it ends', async () => {
    // Asked for (by the same support ticket, say) while the erasure ran: an unlink under way is its workflow's to finish.
    const unlinks = new UnlinkStore(platform.store);
    const keys = [identityKey({ type: 'cookie_id', value: ALICE_COOKIE }), identityKey({ type: 'email_sha256', value: aliceHash })];
    await unlinks.create({ _id: 'ul_queued_during_erasure', keys, state: 'pending', requestedAt: new Date() });
    const activities = createUnlinkActivities({ store: platform.store, temporal: platform.temporal, config: { ...baseConfig, DMP_TASK_QUEUE: platform.taskQueue } });
    expect(await activities.planUnlink('ul_queued_during_erasure')).toEqual({ split: false, partitions: [] });
    expect(await unlinks.get('ul_queued_during_erasure')).toBeNull();
    // One whose attempt recorded its end and stopped before looking for an erasure: its retry removes it.
    const result = { split: false, sides: [], eventsSevered: 0, reason: 'an identity has no profile (any more)' };
    await unlinks.create({ _id: 'ul_ended_unforgotten', keys, state: 'completed', requestedAt: new Date(), result, completedAt: new Date() });
    await activities.planUnlink('ul_ended_unforgotten');
    expect(await unlinks.get('ul_ended_unforgotten')).toBeNull();
    expect(await findResidue(platform.store.db, aliceNeedles())).toEqual([]);
  });

  it('keeps no access export written once she is erased, as one running while the erasure began would be', async () => {
    const access = await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'email', value: ALICE_EMAIL } } });
    expect(access.status).toBe(202);
    const view = await settledRequest(access.body.id);
    expect(view).toMatchObject({ state: 'completed', result: { found: false, exportUrl: null } });
    expect((await admin(`/v1/privacy/requests/${access.body.id}/export`)).status).toBe(404);
    expect(await platform.store.db.collection('privacy_exports').countDocuments({ _id: { $regex: `^${access.body.id}:` } } as object)).toBe(0);
  });

  it("keeps other people's data in the same chunks, batches and snapshots intact", async () => {
    const bob = (await lookup('cookie_id', BOB_COOKIE)).body;
    expect(bob).toMatchObject({ id: bobId, traits: { plan: 'gold' } });
    expect((await admin(`/v1/profiles/${bobId}/events`)).body.events.map((event: { id: string }) => event.id)).toEqual(['ev-bob-1']);
    expect((await admin(`/v1/segments/${segmentId}/members`)).body.members).toEqual([bobId]);
    expect((await admin(`/v1/segments/${segmentId}`)).body.size).toBe(1);
    // His event is still in the raw log, beside where hers stood, and his document still knows its id (a repeat is dropped).
    const residue = await findResidue(platform.store.db, [BOB_COOKIE, 'ev-bob-1']);
    expect([...new Set(residue.map((hit) => hit.collection))]).toEqual(expect.arrayContaining(['events', 'profile_events', 'identities', 'profiles']));
    const bobDocument = (await latestProfiles(platform.store)).find((doc) => doc.profileId === bobId);
    expect(`${bobDocument?.recentEventIds ?? ''}${bobDocument?.recentEventIdsTail ?? ''}`).toContain(eventIdToken(source.sourceId, 'ev-bob-1'));
    expect((await admin(`/v1/destinations/${destinationId}/exports`, { body: {} })).status).toBe(202);
  });

  it('drops and counts late events naming an erased identity: the profile is not re-created', async () => {
    const late = await source.send([
      { id: 'ev-alice-3', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: ALICE_COOKIE }, traits: { plan: 'gold' } },
      { id: 'ev-bob-2', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: BOB_COOKIE } },
    ]);
    // Answered as accepted: the answer does not tell a sender who was erased.
    expect(late.body.accepted).toBe(2);
    await source.folded(4);
    expect((await admin(`/v1/profiles/${bobId}/events`)).body.events).toHaveLength(2);
    expect((await lookup('cookie_id', ALICE_COOKIE)).status).toBe(404);
    expect((await admin(`/v1/privacy/requests/${erasure.id}`)).body.lateEventsDropped).toBe(1);
    // Her browser syncing with a partner again is redirected as any other, and no match of her cookie is recorded.
    expect((await admin('/v1/partners', { body: { id: 'ttd2', name: 'Another partner', redirectUrl: 'https://sync.partner.example/match?dmp_uid=${DMP_UID}' } })).status).toBe(201);
    const synced = await fetch(`${platform.api.url}/v1/sync/ttd2?puid=alice-again`, { redirect: 'manual', headers: { cookie: `dmp_uid=${ALICE_COOKIE}` } });
    expect(synced.status).toBe(302);
    expect(await findResidue(platform.store.db, [...aliceNeedles(), 'alice-again'])).toEqual([]);
  });

  it('drops at the drain an event that was already in the log when its tombstone came, and counts it', async () => {
    // Appended straight to the log, past the door: as an event accepted just before the erasure would be.
    await appendToLog(platform.store, source.sourceId, [{ id: 'ev-alice-4', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: ALICE_COOKIE } }], 1);
    const sources = new SourceStore(platform.store);
    await wakeSourceWorkflow(platform.temporal, source.sourceId, (id) => sources.get(id), { ...baseConfig, DMP_TASK_QUEUE: platform.taskQueue });
    await waitFor('the drain to count it', async () => (await admin(`/v1/privacy/requests/${erasure.id}`)).body.lateEventsDropped === 2, 60_000);
    expect((await lookup('cookie_id', ALICE_COOKIE)).status).toBe(404);
    expect(await platform.store.db.collection('identities').countDocuments({ _id: `cookie_id:${ALICE_COOKIE}` as never })).toBe(0);
  });

  it('puts nothing of her back when she opts out after her erasure: her identity is not claimed for anyone', async () => {
    const opted = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'cookie_id', value: ALICE_COOKIE } } });
    expect(await settledRequest(opted.body.id)).toMatchObject({ state: 'completed', result: { found: false } });
    expect(await platform.store.db.collection('identities').countDocuments({ _id: `cookie_id:${ALICE_COOKIE}` as never })).toBe(0);
    // The raw log still holds the event the test before appended past the door: dropped at the drain, it leaves with the log's retention.
    expect((await findResidue(platform.store.db, aliceNeedles())).filter((hit) => hit.collection !== 'events')).toEqual([]);
  });
});
