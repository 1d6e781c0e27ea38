import { gzipSync } from 'node:zlib';
import { Analytics } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';
import { sha256Hex } from '../../domain/identity';
import type { Store } from '../../store/db';
import { ProfileEventLog } from '../../store/profileEvents';
import { call } from '../support/http';
import { latestProfiles } from '../support/profiles';
import { baseConfig, startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';

/** What Segment's and RudderStack's Node SDKs have in common: one message object per call. */
interface TrackingClient {
  track(message: object): unknown;
  identify(message: object): unknown;
  page(message: object): unknown;
  screen(message: object): unknown;
  alias(message: object): unknown;
  group(message: object): unknown;
}

/** Per person: an anonymous visit on another device, a visit, two orders, sign-up, an app screen, the alias of the first device and a company. */
const MESSAGES_PER_PERSON = 8;

function person(prefix: string, n: number) {
  return {
    oldAnonymousId: `${prefix}-old-${n}`,
    anonymousId: `${prefix}-anon-${n}`,
    userId: `${prefix}-user-${n}`,
    email: `${prefix.toUpperCase()}.User${n}@Example.com`,
    advertisingId: `6d92078a-8246-4ba4-ae5b-${sha256Hex(`${prefix}-${n}`).slice(0, 12)}`,
    // Every other person limited ad tracking: their ad id must not be used.
    adTrackingEnabled: n % 2 === 0,
  };
}

function journey(client: TrackingClient, prefix: string, people: number): void {
  for (let n = 0; n < people; n++) {
    const p = person(prefix, n);
    client.track({ anonymousId: p.oldAnonymousId, event: 'Product Viewed', properties: { sku: `sku-${n}` } });
    client.page({ anonymousId: p.anonymousId, name: 'Pricing', category: 'Docs', properties: { url: `https://shop.test/pricing?n=${n}` } });
    for (const total of [10, 20]) {
      client.track({ anonymousId: p.anonymousId, event: 'Order Completed', properties: { total, products: [{ sku: 'a', price: 4 }, { sku: 'b', price: 6 }] } });
    }
    client.identify({ userId: p.userId, anonymousId: p.anonymousId, traits: { email: p.email, plan: 'pro', address: { city: 'Paris' } } });
    client.screen({
      userId: p.userId,
      name: 'Home',
      context: { device: { advertisingId: p.advertisingId, adTrackingEnabled: p.adTrackingEnabled }, consent: { categoryPreferences: { Advertising: true, DataSharing: false } } },
    });
    client.alias({ userId: p.userId, previousId: p.oldAnonymousId });
    client.group({ userId: p.userId, groupId: 'acme', traits: { name: 'Acme', employees: 50, email: 'billing@acme.test' } });
  }
}

function basic(writeKey: string): string {
  return `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`;
}

describe('the Segment tracking API, with the real Segment and RudderStack SDKs', () => {
  let platform: RunningPlatform;
  let store: Store;
  let api: RunningApi;
  let sourceId: string;
  let writeKey: string;
  /** Events the source's profiles must have folded so far. */
  let folded = 0;
  const segmentRequests: string[] = [];

  beforeAll(async () => {
    platform = await startPlatform('segmentapi');
    ({ store, api } = platform);
    ({ id: sourceId, writeKey } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'server sdks', kind: 'events', party: 'first' } })).body);
  });
  afterAll(() => platform.stop());

  async function post(path: string, body: unknown, headers: Record<string, string> = { authorization: basic(writeKey) }) {
    const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const response = await fetch(`${api.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: payload });
    const text = await response.text();
    return { status: response.status, contentType: response.headers.get('content-type') ?? '', body: JSON.parse(text) };
  }

  function expectProblem(response: Awaited<ReturnType<typeof post>>, status: number, type: string, path: string): void {
    expect(response.status).toBe(status);
    expect(response.contentType).toMatch(/^application\/problem\+json/);
    expect(response.body.type).toBe(`/problems/${type}`);
    expect(response.body.errors.map((error: { path: string }) => error.path)).toContain(path);
  }

  /** Sends only when flushed (beyond the first message, which it sends at once); failures land in `errors`. */
  const rudderClient = (key: string, errors: unknown[]) =>
    new RudderAnalytics(key, { dataPlaneUrl: api.url, flushAt: 1000, flushInterval: 60_000, retryCount: 0, logLevel: 'none', errorHandler: (error) => errors.push(error) });
  const lookup = async (type: string, value: string) => (await call(`${api.url}/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`, { key: api.adminKey })).body;
  const sourceStatus = async () => (await call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey })).body;

  async function allFolded(added: number) {
    folded += added;
    const status = await waitFor(`${folded} events folded`, async () => {
      const current = await sourceStatus();
      return current.profiles.eventsApplied >= folded && current;
    });
    expect(status.profiles.eventsApplied).toBe(folded);
    return status;
  }

  /** How many people the store holds: its documents, each counted once under the profile it is part of. */
  async function profileCount(): Promise<number> {
    const ids = new Set<string>();
    for (const doc of await latestProfiles(store)) ids.add((await call(`${api.url}/v1/profiles/${doc.profileId}`, { key: api.adminKey })).body.id);
    return ids.size;
  }

  async function expectPerson(prefix: string, n: number): Promise<void> {
    const p = person(prefix, n);
    const profile = await lookup('crm_id', p.userId);
    const counts = Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, (counter as { count: number }).count]));
    expect(counts).toEqual({ 'Product Viewed': 1, page: 1, 'Order Completed': 2, identify: 1, screen: 1, alias: 1, group: 1 });
    const identities = profile.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`).sort();
    const expected = [`cookie_id:${p.anonymousId}`, `cookie_id:${p.oldAnonymousId}`, `crm_id:${p.userId}`, `email_sha256:${sha256Hex(p.email.toLowerCase())}`];
    if (p.adTrackingEnabled) expected.push(`maid:${p.advertisingId}`);
    expect(identities).toEqual(expected.sort());
    expect(profile.traits).toEqual({ plan: 'pro', 'address.city': 'Paris', 'group.id': 'acme', 'group.name': 'Acme', 'group.employees': 50 });
    expect(profile.consent.purposes).toEqual({ advertising: true, data_sharing: false });
    // Every identity finds the same person: the alias joined the first device, the identify the email.
    for (const [type, value] of [['cookie_id', p.oldAnonymousId], ['cookie_id', p.anonymousId], ['email', p.email]]) expect((await lookup(type, value)).id).toBe(profile.id);
    expect(JSON.stringify(profile)).not.toMatch(/example\.com|acme\.test/i);
  }

  it("Segment's Node SDK: every message type of 6 people becomes 6 profiles with exact counters, identities and traits", async () => {
    const people = 6;
    const errors: unknown[] = [];
    const statuses: number[] = [];
    const analytics = new Analytics({ writeKey, host: api.url, flushAt: 1000, flushInterval: 60_000, maxRetries: 0 });
    analytics.on('http_request', (request) => segmentRequests.push(request.body));
    analytics.on('http_response', (response) => statuses.push(response.status));
    analytics.on('error', (error) => errors.push(error));
    journey(analytics, 'seg', people);
    await analytics.closeAndFlush();
    expect(errors).toEqual([]);
    expect(statuses).toEqual([200]);
    expect(JSON.parse(segmentRequests[0]).batch).toHaveLength(people * MESSAGES_PER_PERSON);

    await allFolded(people * MESSAGES_PER_PERSON);
    for (let n = 0; n < people; n++) await expectPerson('seg', n);
    expect(await lookup('maid', person('seg', 1).advertisingId)).toMatchObject({ status: 404 });
    expect(await profileCount()).toBe(people);
  });

  it("RudderStack's Node SDK (gzipped bodies): every message type of 5 more people becomes 5 more profiles", async () => {
    const people = 5;
    const errors: unknown[] = [];
    const rudder = rudderClient(writeKey, errors);
    journey(rudder, 'rud', people);
    await rudder.flush();
    expect(errors).toEqual([]);

    await allFolded(people * MESSAGES_PER_PERSON);
    for (let n = 0; n < people; n++) await expectPerson('rud', n);
    expect(await profileCount()).toBe(6 + people);
  });

  it('a batch sent again (the same messageIds) adds nothing: acknowledged, then dropped by the profile writer', async () => {
    const before = await lookup('crm_id', person('seg', 0).userId);
    const { profiles } = await sourceStatus();
    const resent = await post('/v1/batch', segmentRequests[0]);
    expect(resent.status).toBe(200);
    // Repeats of earlier requests are not known before the answer (nothing is looked up to give it).
    expect(resent.body).toEqual({ success: true, accepted: 6 * MESSAGES_PER_PERSON, duplicates: 0, nonProfiling: 0, rejected: [] });
    const status = await allFolded(6 * MESSAGES_PER_PERSON);
    expect(status.profiles.duplicatesDropped).toBe(profiles.duplicatesDropped + 6 * MESSAGES_PER_PERSON);
    const after = await lookup('crm_id', person('seg', 0).userId);
    expect(after.counters).toEqual(before.counters);
    for (let n = 0; n < 6; n++) await expectPerson('seg', n);
  });

  it('corrects the sender\'s clock skew with sentAt, and still refuses events far in the future', async () => {
    // The sender's clock is 3 hours fast.
    const skew = 3 * 3600_000;
    const senderNow = Date.now() + skew;
    const iso = (ms: number) => new Date(ms).toISOString();
    const batch = await post('/v1/batch', {
      batch: [
        { type: 'track', event: 'Clock Check', anonymousId: 'skewed-1', messageId: 'skew-1', timestamp: iso(senderNow - 5 * 60_000) },
        // A sender whose clock is right stamping an event two days ahead: corrected, it is as far ahead, and refused.
        { type: 'track', event: 'Clock Check', anonymousId: 'skewed-1', messageId: 'skew-2', timestamp: iso(Date.now() + 2 * 86400_000), sentAt: iso(Date.now()) },
      ],
      sentAt: iso(senderNow),
    });
    expect(batch.status).toBe(200);
    expect(batch.body).toMatchObject({ success: true, accepted: 1, rejected: [{ index: 1, errors: [{ path: 'timestamp', message: 'is too far in the future' }] }] });
    // RudderStack's way: originalTimestamp and the message's own sentAt, to the single-message endpoint.
    const single = await post('/v1/track', { event: 'Clock Check', anonymousId: 'skewed-1', messageId: 'skew-3', originalTimestamp: iso(senderNow - 10 * 60_000), sentAt: iso(senderNow) });
    expect(single.body).toEqual({ success: true, accepted: 1, duplicates: 0, nonProfiling: 0, rejected: [] });
    await allFolded(2);

    const profile = await lookup('cookie_id', 'skewed-1');
    const { events } = (await call(`${api.url}/v1/profiles/${profile.id}/events`, { key: api.adminKey })).body;
    const byId = new Map<string, { timestamp: string; receivedAt: string }>(events.map((event: { id: string }) => [event.id, event]));
    expect(byId.get('skew-1')?.timestamp).toBe(iso(Date.parse(byId.get('skew-1')!.receivedAt) - 5 * 60_000));
    expect(byId.get('skew-3')?.timestamp).toBe(iso(Date.parse(byId.get('skew-3')!.receivedAt) - 10 * 60_000));
    expect(byId.has('skew-2')).toBe(false);
  });

  it('each single-message endpoint takes its type, and answers 400 naming the field of a message it refuses', async () => {
    const sent = await Promise.all([
      post('/v1/identify', { userId: 'single-1', traits: { plan: 'free' } }),
      post('/v1/page', { userId: 'single-1', name: 'Home' }),
      post('/v1/screen', { userId: 'single-1', name: 'Home' }),
      post('/v1/alias', { userId: 'single-1', previousId: 'single-anon-1' }),
      post('/v1/group', { userId: 'single-1', groupId: 'initech' }),
      post('/v1/track', { userId: 'single-1', event: 'Signed Up' }, { authorization: `Bearer ${writeKey}` }),
    ]);
    expect(sent.map((response) => [response.status, response.body.accepted])).toEqual(Array(6).fill([200, 1]));
    await allFolded(6);
    const profile = await lookup('cookie_id', 'single-anon-1');
    expect(Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, (counter as { count: number }).count]))).toEqual({
      identify: 1,
      page: 1,
      screen: 1,
      alias: 1,
      group: 1,
      'Signed Up': 1,
    });
    expect(profile.traits).toEqual({ plan: 'free', 'group.id': 'initech' });

    expectProblem(await post('/v1/track', { userId: 'single-1' }), 400, 'validation', 'event');
    expectProblem(await post('/v1/page', { type: 'track', userId: 'single-1' }), 400, 'validation', 'type');
    // A message as documented whose data is refused is answered as in a batch: 200, refused in `rejected`.
    for (const [route, message, path] of [
      ['/v1/identify', { userId: 'single-1', traits: { email: 'not-an-email' } }, 'traits.email'],
      ['/v1/alias', { userId: 'single-1', previousId: 'old\u0000id', anonymousId: 'b' }, 'previousId'],
      ['/v1/track', { event: 'Nobody' }, 'userId'],
    ] as const) {
      const refused = await post(route, message);
      expect({ route, status: refused.status, body: refused.body }).toMatchObject({
        route,
        status: 200,
        body: { success: true, accepted: 0, rejected: [{ index: 0, errors: [expect.objectContaining({ path })] }] },
      });
    }
    expectProblem(await post('/v1/track', [{ event: 'x' }]), 400, 'validation', '(body)');
    expectProblem(await post('/v1/track', '{"event": '), 400, 'malformed-json', '(body)');
  });

  it('refuses a message over 32 KB without failing the others, and a body over 500 KB, gzipped or not, with 413', async () => {
    const big = { type: 'track', event: 'Big', anonymousId: 'big-1', properties: { blob: 'x'.repeat(33 * 1024) } };
    const mixed = await post('/v1/batch', { batch: [big, { type: 'track', event: 'Small', anonymousId: 'big-1' }, { type: 'purchase', anonymousId: 'big-1' }] });
    expect(mixed.status).toBe(200);
    expect(mixed.body).toMatchObject({ success: true, accepted: 1, duplicates: 0 });
    expect(mixed.body.rejected).toEqual([
      { index: 0, errors: [{ path: 'properties', message: expect.stringContaining('more than 32768') }] },
      { index: 2, errors: [{ path: 'type', message: expect.any(String) }] },
    ]);
    await allFolded(1);
    // The SDKs never read that answer: the refusals are counted on the source for its operators.
    const counted = await waitFor('the refusals counted on the source', async () => {
      const { rejections } = await sourceStatus();
      return rejections.total.segment >= 2 ? rejections : undefined;
    }, 15_000);
    expect(counted.last).toMatchObject({ channel: 'segment', errors: [{ path: expect.stringMatching(/^batch\.\d+\./) }] });

    const messages = Array.from({ length: 20 }, (_, n) => ({ type: 'track', event: 'Big', anonymousId: `big-${n}`, properties: { blob: 'x'.repeat(30 * 1024) } }));
    const oversize = JSON.stringify({ batch: messages });
    expectProblem(await post('/v1/batch', oversize), 413, 'body-too-large', '(body)');
    // As RudderStack's SDK sends it: gzipped, typed as a form. The limit applies to what it inflates to.
    const gzipped = gzipSync(oversize);
    expect(gzipped.length).toBeLessThan(100 * 1024);
    expectProblem(
      await post('/v1/batch', gzipped, { authorization: basic(writeKey), 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' }),
      413,
      'body-too-large',
      '(body)',
    );
  });

  it('takes a batch of more messages than DMP_MAX_BATCH_EVENTS allows /v1/collect, as long as it fits 500 KB, as Segment does', async () => {
    const count = 2_500;
    const batch = Array.from({ length: count }, (_, n) => ({ type: 'track', event: 'Tiny', anonymousId: `tiny-${n % 50}`, messageId: `tiny-${n}` }));
    expect(count).toBeGreaterThan(baseConfig.DMP_MAX_BATCH_EVENTS);
    const response = await post('/v1/batch', { batch });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ success: true, accepted: count, duplicates: 0, rejected: [] });
    await allFolded(count);
    expect((await lookup('cookie_id', 'tiny-7')).counters.Tiny.count).toBe(count / 50);
  });

  it("joins the earlier user id, the new one and the cookie when a browser SDK aliases after an identify", async () => {
    // As analytics.js sends them: the identify under the old user id, orders under the new one, then alias(newUserId).
    const sent = await post('/v1/batch', {
      batch: [
        { type: 'identify', messageId: 'ai-1', userId: 'user-old-7', anonymousId: 'browser-7', traits: { plan: 'trial' } },
        { type: 'track', messageId: 'ai-2', userId: 'user-new-7', event: 'Order Completed' },
        { type: 'alias', messageId: 'ai-3', previousId: 'user-old-7', userId: 'user-new-7', anonymousId: 'browser-7' },
      ],
    });
    expect(sent.body).toMatchObject({ success: true, accepted: 3, rejected: [] });
    await allFolded(3);
    const byCookie = await lookup('cookie_id', 'browser-7');
    expect((await lookup('crm_id', 'user-old-7')).id).toBe(byCookie.id);
    expect((await lookup('crm_id', 'user-new-7')).id).toBe(byCookie.id);
    expect(byCookie.identities.filter((identity: { type: string }) => identity.type === 'crm_id').map((identity: { value: string }) => identity.value).sort()).toEqual(['user-new-7', 'user-old-7']);
    expect(byCookie.counters['Order Completed'].count).toBe(1);
    expect(byCookie.traits.plan).toBe('trial');
  });

  it("joins a server's alias to whichever profile knows its previousId — an earlier user id, an anonymous visitor — and keeps neither as the other type", async () => {
    // As server SDKs send it: no anonymousId, and previousId either kind of id.
    const sent = await post('/v1/batch', {
      batch: [
        { type: 'identify', messageId: 'sv-1', userId: 'acct-old-9', traits: { plan: 'gold' } },
        { type: 'track', messageId: 'sv-2', anonymousId: 'visitor-9', event: 'Viewed' },
        { type: 'alias', messageId: 'sv-3', previousId: 'acct-old-9', userId: 'acct-new-9' },
        { type: 'track', messageId: 'sv-4', userId: 'acct-new-9', event: 'Order Completed' },
        { type: 'alias', messageId: 'sv-5', previousId: 'visitor-9', userId: 'acct-new-9' },
      ],
    });
    expect(sent.body).toMatchObject({ success: true, accepted: 5, rejected: [] });
    await allFolded(5);
    const person = await lookup('crm_id', 'acct-new-9');
    expect((await lookup('crm_id', 'acct-old-9')).id).toBe(person.id);
    expect((await lookup('cookie_id', 'visitor-9')).id).toBe(person.id);
    expect(person.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`).sort()).toEqual(['cookie_id:visitor-9', 'crm_id:acct-new-9', 'crm_id:acct-old-9']);
    expect(person.traits.plan).toBe('gold');
    expect(Object.fromEntries(Object.entries(person.counters).map(([type, counter]) => [type, (counter as { count: number }).count]))).toEqual({ identify: 1, Viewed: 1, alias: 2, 'Order Completed': 1 });
    // The events the person's documents hold carry no reading (nor any reading that joined nothing), only identities.
    const held = await new ProfileEventLog(store).eventsOf(person.profileIds);
    const aliases = held.filter((event) => event.type === 'alias').map((event) => event.identities.map((identity) => `${JSON.stringify(identity)}`).sort());
    expect(aliases.sort()).toEqual(
      [
        ['{"type":"crm_id","value":"acct-new-9"}', '{"type":"crm_id","value":"acct-old-9"}'],
        ['{"type":"cookie_id","value":"visitor-9"}', '{"type":"crm_id","value":"acct-new-9"}'],
      ].sort(),
    );
  });


  it('refuses a malformed envelope with 400 naming the field', async () => {
    expectProblem(await post('/v1/batch', { batch: 'many' }), 400, 'validation', 'batch');
    expectProblem(await post('/v1/batch', { batch: [] }), 400, 'validation', 'batch');
    expectProblem(await post('/v1/batch', { batch: [{ type: 'track', event: 'x', anonymousId: 'a' }], sentAt: 'yesterday' }), 400, 'validation', 'sentAt');
    expectProblem(await post('/v1/batch', { batch: [{ type: 'track', event: 'x', anonymousId: 'a' }], context: 'web' }), 400, 'validation', 'context');
  });

  it('refuses a body nested deeper than 64 levels with 400 naming the body, on every JSON route, never a 5xx', async () => {
    // Deep enough that recursive readers (flattening, JSON.stringify, a rule's validation) would overflow their stack; written as text, for the same reason.
    const deep = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;
    const message = (depth: number) => `{"type":"track","event":"Deep","anonymousId":"deep-1","properties":{"nested":${deep(depth)}}}`;
    expectProblem(await post('/v1/batch', `{"batch":[${message(8_000)}]}`), 400, 'validation', '(body)');
    expectProblem(await post('/v1/track', message(8_000)), 400, 'validation', '(body)');
    // As RudderStack's SDK sends it: gzipped, typed as a form, read by the Segment routes' own parser.
    expectProblem(await post('/v1/batch', gzipSync(`{"batch":[${message(8_000)}]}`), { authorization: basic(writeKey), 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' }), 400, 'validation', '(body)');
    expectProblem(await post('/v1/collect', `{"events":[{"type":"deep","identities":{"cookie_id":"deep-1"},"properties":{"nested":${deep(8_000)}}}]}`, { authorization: `Bearer ${writeKey}` }), 400, 'validation', '(body)');
    const rule = `${'{"not":'.repeat(8_000)}{"trait":"plan","op":"exists"}${'}'.repeat(8_000)}`;
    expectProblem(await post('/v1/segments', `{"name":"Deep","rule":${rule}}`, { authorization: `Bearer ${api.adminKey}`, 'idempotency-key': 'deep-segment' }), 400, 'validation', '(body)');
    // Fewer than 64 levels are read as usual.
    const shallow = await post('/v1/batch', `{"batch":[${message(50)}]}`);
    expect(shallow.status).toBe(200);
    expect(shallow.body).toMatchObject({ success: true, accepted: 1 });
    await allFolded(1);
  });

  it('a missing or wrong write key → 401 problem on every route, and the SDK is told', async () => {
    for (const path of ['/v1/batch', '/v1/track', '/v1/identify', '/v1/page', '/v1/screen', '/v1/alias', '/v1/group']) {
      expectProblem(await post(path, { batch: [] }, {}), 401, 'unauthorized', 'headers.authorization');
      expectProblem(await post(path, { batch: [] }, { authorization: basic('wk_not_a_key') }), 401, 'unknown-write-key', 'headers.authorization');
    }
    const errors: Array<{ response?: { status: number } }> = [];
    const rudder = rudderClient('wk_not_a_key', errors);
    rudder.track({ anonymousId: 'nobody', event: 'x' });
    await rudder.flush();
    expect(errors.map((error) => error.response?.status)).toEqual([401]);
  });

  it("takes the write key from the body (Segment's writeKey authentication), alone or beside an OAuth access token in the Authorization header", async () => {
    const message = (n: number) => ({ type: 'track', event: 'Body Key', anonymousId: `body-key-${n}`, messageId: `body-key-${n}` });
    expect(await post('/v1/track', { ...message(1), writeKey }, {})).toMatchObject({ status: 200, body: { success: true } });
    expect(await post('/v1/batch', { batch: [message(2)], writeKey }, { authorization: 'Bearer an-oauth-access-token' })).toMatchObject({ status: 200, body: { success: true, accepted: 1 } });
    expectProblem(await post('/v1/track', { ...message(3), writeKey: 'wk_not_a_key' }, {}), 401, 'unknown-write-key', 'headers.authorization');
    await allFolded(2);
    expect((await lookup('cookie_id', 'body-key-1')).counters['Body Key'].count).toBe(1);
    expect((await lookup('cookie_id', 'body-key-2')).counters['Body Key'].count).toBe(1);
  });

  it('documents every route with the Basic write-key scheme and each status it answers', async () => {
    const doc = (await call(`${api.url}/openapi.json`)).body;
    expect(doc.components.securitySchemes.writeKeyBasic).toEqual(expect.objectContaining({ type: 'http', scheme: 'basic' }));
    for (const path of ['/v1/batch', '/v1/track', '/v1/identify', '/v1/page', '/v1/screen', '/v1/alias', '/v1/group']) {
      const operation = doc.paths[path].post;
      expect(operation.security).toContainEqual({ writeKeyBasic: [] });
      expect(Object.keys(operation.responses).sort()).toEqual(['200', '400', '401', '413', '415', '503']);
    }
    expect(doc.paths['/v1/batch'].post.description).toMatch(/adTrackingEnabled` is false/);
  });

  it('a consent category saying no to profiling keeps the event out of profiles', async () => {
    // The source's default policy: a `profiling` purpose flag that says no makes the event non-profiling.
    const response = await post('/v1/track', { userId: 'consent-1', event: 'Signed Up', context: { consent: { categoryPreferences: { Profiling: false } } } });
    expect(response.body).toMatchObject({ success: true, accepted: 1, nonProfiling: 1 });
    await waitFor('the event to be drained', async () => (await sourceStatus()).progress.eventsNonProfiling.purpose_flag === 1);
    expect((await sourceStatus()).profiles.eventsApplied).toBe(folded);
    expect(await lookup('crm_id', 'consent-1')).toMatchObject({ status: 404 });
  });
});
