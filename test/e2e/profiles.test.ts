import { prepareEvents } from '../../domain/collect';
import { EventLog } from '../../store/eventLog';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

describe('profiles through the API: merges, the 360° view and the event history', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;

  beforeAll(async () => {
    platform = await startPlatform('profiles');
    ({ api } = platform);
    source = await newSource(api);
  });
  afterAll(() => platform.stop());

  const lookup = (type: string, value: string) => source.lookup(type, value);
  const send = (events: unknown[]) => source.send(events);
  const folded = (count: number) => source.folded(count);

  it('merges two profiles when an event joins them, and every identity and document id finds the merged one', async () => {
    await send([
      { id: 'm1', type: 'page_view', timestamp: '2026-05-01T10:00:00Z', identities: { cookie_id: 'laptop-1' }, traits: { plan: 'free' } },
      { id: 'm2', type: 'purchase', timestamp: '2026-05-02T10:00:00Z', identities: { email: 'Ada@Example.org' }, traits: { plan: 'pro' }, consent: { purposes: { ads: true } } },
    ]);
    await folded(2);
    const before = [(await lookup('cookie_id', 'laptop-1')).body, (await lookup('email', 'ada@example.org')).body];
    expect(before[0].id).not.toBe(before[1].id);

    // The same person logs in on the laptop: one event carries both identities.
    await send([{ id: 'm3', type: 'login', timestamp: '2026-05-03T10:00:00Z', identities: { cookie_id: 'laptop-1', email: 'ada@example.org' }, consent: { purposes: { ads: false } } }]);
    await folded(3);
    const byCookie = (await lookup('cookie_id', 'laptop-1')).body;
    const byEmail = (await lookup('email', 'ADA@example.org')).body;
    expect(byEmail).toEqual(byCookie);
    expect(byCookie.profileIds.sort()).toEqual([before[0].id, before[1].id].sort());
    expect(byCookie.id).toBe([before[0].id, before[1].id].sort()[0]);
    expect(Object.fromEntries(Object.entries(byCookie.counters).map(([type, counter]: [string, any]) => [type, counter.count]))).toEqual({ page_view: 1, purchase: 1, login: 1 });
    expect(byCookie.counters.purchase.days).toEqual({ '20260502': 1 });
    expect(byCookie.traits.plan).toBe('pro'); // newer, same party
    expect(byCookie.consent.purposes).toEqual({ ads: false }); // the most restrictive
    expect(byCookie.mergeHistory).toEqual([
      expect.objectContaining({ profiles: [before[0].id, before[1].id].sort(), eventId: 'm3', sourceId: source.sourceId, via: expect.stringMatching(/^(cookie_id|email_sha256):/) }),
    ]);
    expect(byCookie.identities.map((identity: any) => identity.type).sort()).toEqual(['cookie_id', 'email_sha256']);
    for (const id of byCookie.profileIds) expect((await call(`${api.url}/v1/profiles/${id}`, { key: api.adminKey })).body).toEqual(byCookie);
    expect(JSON.stringify(byCookie)).not.toMatch(/example\.org/i);

    const page1 = (await call(`${api.url}/v1/profiles/${byCookie.id}/events?limit=2`, { key: api.adminKey })).body;
    expect(page1.events.map((event: any) => event.id)).toEqual(['m3', 'm2']);
    // A newer event arriving between two pages shifts no page: the cursor is a place in the history.
    await send([{ id: 'm4', type: 'page_view', timestamp: '2026-05-04T10:00:00Z', identities: { cookie_id: 'laptop-1' } }]);
    await folded(4);
    const page2 = (await call(`${api.url}/v1/profiles/${byCookie.id}/events?limit=2&cursor=${page1.next}`, { key: api.adminKey })).body;
    expect(page2.events.map((event: any) => event.id)).toEqual(['m1']);
    expect(page2.next).toBeNull();
    expect((await call(`${api.url}/v1/profiles/${byCookie.id}/events?limit=2`, { key: api.adminKey })).body.events.map((event: any) => event.id)).toEqual(['m4', 'm3']);
    // A cursor this API did not give (an offset, say) is a 400 naming it.
    const offset = await call(`${api.url}/v1/profiles/${byCookie.id}/events?limit=2&cursor=2`, { key: api.adminKey });
    expect(offset.status).toBe(400);
    expect(offset.body.errors).toEqual([expect.objectContaining({ path: expect.stringMatching(/cursor$/), message: 'a cursor from a previous page' })]);
    expect(page1.events[1].traits).toEqual({ plan: 'pro' });
  });

  it('unlinks a shared device: the profile splits, each side holds exactly its own history, and later events find their side', async () => {
    const unlink = (identities: unknown) => call(`${api.url}/v1/identity/unlink`, { key: api.adminKey, body: { identities } });
    await send([
      { id: 'u1', type: 'purchase', timestamp: '2026-06-01T10:00:00Z', identities: { cookie_id: 'tablet-9', email: 'ana@example.net' }, traits: { name: 'Ana' } },
      { id: 'u2', type: 'page_view', timestamp: '2026-06-02T10:00:00Z', identities: { email: 'ana@example.net' } },
      { id: 'u3', type: 'login', timestamp: '2026-06-03T10:00:00Z', identities: { cookie_id: 'tablet-9', email: 'ben@example.net' }, traits: { plan: 'team' } },
      { id: 'u4', type: 'purchase', timestamp: '2026-06-04T10:00:00Z', identities: { email: 'ben@example.net' } },
      { id: 'u5', type: 'page_view', timestamp: '2026-06-05T10:00:00Z', identities: { cookie_id: 'tablet-9' } },
    ]);
    await folded(9);
    const merged = (await lookup('email', 'ben@example.net')).body;
    expect((await lookup('email', 'ana@example.net')).body.id).toBe(merged.id);

    // Only the admin key may split profiles: no key is a 401, a source's write key a 403.
    const pair = { identities: [{ type: 'cookie_id', value: 'tablet-9' }, { type: 'email', value: 'ben@example.net' }] };
    expect((await call(`${api.url}/v1/identity/unlink`, { body: pair })).status).toBe(401);
    expect((await call(`${api.url}/v1/identity/unlink`, { key: source.writeKey, body: pair })).status).toBe(403);
    expect((await unlink([{ type: 'email', value: 'ben@example' }, { type: 'cookie_id', value: 'tablet-9' }])).body.errors[0].path).toBe('identities.0.value');
    expect((await unlink([{ type: 'email', value: 'nobody@example.net' }, { type: 'cookie_id', value: 'tablet-9' }])).status).toBe(404);
    expect((await unlink([{ type: 'email', value: 'ben@example.net' }, { type: 'cookie_id', value: 'laptop-1' }])).status).toBe(409);

    const accepted = await unlink([{ type: 'cookie_id', value: 'tablet-9' }, { type: 'email', value: 'BEN@example.net' }]);
    expect(accepted.status).toBe(202);
    expect(accepted.body.state).toBe('pending');
    const done = await waitFor('the unlink to complete', async () => {
      const status = (await call(`${api.url}${accepted.body.statusUrl}`, { key: api.adminKey })).body;
      return status.state === 'completed' ? status : undefined;
    });
    expect(done).toMatchObject({ split: true, eventsSevered: 1, reason: null });
    expect(done.profiles).toHaveLength(2);

    const ana = (await lookup('email', 'ana@example.net')).body;
    const ben = (await lookup('email', 'ben@example.net')).body;
    expect(ana.id).not.toBe(ben.id);
    expect((await lookup('cookie_id', 'tablet-9')).body.id).toBe(ana.id);
    const counts = (profile: any) => Object.fromEntries(Object.entries(profile.counters).map(([type, counter]: [string, any]) => [type, counter.count]));
    expect(counts(ana)).toEqual({ purchase: 1, page_view: 2 });
    expect(counts(ben)).toEqual({ login: 1, purchase: 1 });
    expect(ana.identities.map((identity: any) => identity.type).sort()).toEqual(['cookie_id', 'email_sha256']);
    expect(ben.identities.map((identity: any) => identity.type)).toEqual(['email_sha256']);
    expect(ana.traits).toEqual({ name: 'Ana' });
    expect(ben.traits).toEqual({ plan: 'team' });
    const history = async (id: string) => (await call(`${api.url}/v1/profiles/${id}/events`, { key: api.adminKey })).body.events.map((event: any) => event.id);
    expect(await history(ana.id)).toEqual(['u5', 'u2', 'u1']);
    expect(await history(ben.id)).toEqual(['u4', 'u3']);
    // The merged profile's id named a document that is split now: it names no one any more.
    expect((await call(`${api.url}/v1/profiles/${merged.id}`, { key: api.adminKey })).status).toBe(404);

    // Later events go to their side, whichever document the drain still thinks owns them.
    await send([
      { id: 'u6', type: 'page_view', timestamp: '2026-06-06T10:00:00Z', identities: { cookie_id: 'tablet-9' } },
      { id: 'u7', type: 'purchase', timestamp: '2026-06-07T10:00:00Z', identities: { email: 'ben@example.net' } },
    ]);
    await folded(11);
    expect(counts((await lookup('cookie_id', 'tablet-9')).body)).toEqual({ purchase: 1, page_view: 3 });
    expect(counts((await lookup('email', 'ben@example.net')).body)).toEqual({ login: 1, purchase: 2 });
    expect(await history((await lookup('email', 'ben@example.net')).body.id)).toEqual(['u7', 'u4', 'u3']);
  });

  it('keeps no email address or phone number sent outside the identity fields: contact traits become identities, the rest reads (redacted)', async () => {
    const leaky = await newSource(api, 'leaky');
    await leaky.send([
      {
        id: 'r1',
        type: 'signup',
        timestamp: '2026-05-10T10:00:00Z',
        identities: { cookie_id: 'leaky-1' },
        traits: { email: 'Cleo@Example.com', phone: '+1 202 555 0199', 'work.email': 'cleo@corp.example', mobilePhone: '+44 7700 900123', plan: 'gold' },
        properties: { url: 'https://shop.example/thanks?email=cleo%40example.com', invitees: ['max@example.com', 'sam'] },
      },
    ]);
    // The Segment API's track: its properties are no identity fields either.
    const segment = await fetch(`${api.url}/v1/track`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${leaky.writeKey}:`).toString('base64')}` },
      body: JSON.stringify({ messageId: 'r2', anonymousId: 'leaky-1', event: 'Invite Sent', timestamp: '2026-05-11T10:00:00Z', properties: { to: 'max@example.com' } }),
    });
    expect(segment.status).toBe(200);
    await leaky.folded(2);
    const byEmail = (await leaky.lookup('email', 'cleo@example.com')).body;
    expect((await leaky.lookup('phone', '+12025550199')).body.id).toBe(byEmail.id);
    expect(byEmail.traits).toEqual({ 'work.email': '(redacted)', mobilePhone: '(redacted)', plan: 'gold' });
    const events = (await call(`${api.url}/v1/profiles/${byEmail.id}/events`, { key: api.adminKey })).body.events;
    expect(Object.fromEntries(events.map((event: any) => [event.id, event.properties]))).toEqual({
      r1: { url: 'https://shop.example/thanks?email=(redacted)', invitees: ['(redacted)', 'sam'] },
      r2: { to: '(redacted)' },
    });
    expect(JSON.stringify([byEmail, events])).not.toMatch(/example\.com|corp\.example|555 ?0199|900 ?123/i);
  });

  it('finds, by lookup and unlink, what an older version stored under a cookie id that was an email address, kept as sent then', async () => {
    // Written to the log as an older version stored it: the address raw, as a cookie id.
    const { accepted } = prepareEvents([{ id: 'legacy-1', type: 'page_view', identities: { cookie_id: 'placeholder' } }], { now: new Date(), defaultPhoneRegion: 'US' });
    const legacy = { ...accepted[0].event, identities: [{ type: 'cookie_id' as const, value: 'Legacy.Person@example.com' }, { type: 'cookie_id' as const, value: 'legacy-device' }] };
    await new EventLog(platform.store).append(source.sourceId, [legacy]);
    await send([{ id: 'legacy-wake', type: 'page_view', identities: { cookie_id: 'legacy-wake' } }]);
    const found = await waitFor('the older profile found by the id as sent', async () => {
      const response = await lookup('cookie_id', 'Legacy.Person@example.com');
      return response.status === 200 ? response.body : null;
    });
    expect(found.id).toBe((await lookup('cookie_id', 'legacy-device')).body.id);
    // The same id sent today is stored hashed: a new profile would be that of the hashed email.
    expect(found.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`)).toContain('cookie_id:Legacy.Person@example.com');
    // A privacy request naming it finds that profile too.
    const admin = (path: string, options: Parameters<typeof call>[1] = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
    const access = await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'Legacy.Person@example.com' } } });
    expect(access.status).toBe(202);
    expect((await settledRequest(admin, access.body.id)).result).toMatchObject({ found: true, profiles: 1, identities: 2 });
    const unlink = await call(`${api.url}/v1/identity/unlink`, { key: api.adminKey, body: { identities: [{ type: 'cookie_id', value: 'Legacy.Person@example.com' }, { type: 'cookie_id', value: 'legacy-device' }] } });
    expect(unlink.status).toBe(202);
  });

  it('answers 404 for a profile that does not exist and 400 for a bad page query', async () => {
    const missing = await call(`${api.url}/v1/profiles/p_nobody`, { key: api.adminKey });
    expect(missing.status).toBe(404);
    expect(missing.contentType).toMatch(/problem\+json/);
    const badLimit = await call(`${api.url}/v1/profiles/p_nobody/events?limit=0`, { key: api.adminKey });
    expect(badLimit.status).toBe(400);
    expect(badLimit.body.errors[0].path).toBe('limit');
    expect((await call(`${api.url}/v1/profiles/p_nobody`)).status).toBe(401);
  });
});
