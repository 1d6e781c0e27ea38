import { cookieSyncEventId, matchLimits } from '../../domain/partners';
import { MatchTableStore } from '../../store/matchTables';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { connectStore } from '../../store/db';
import { baseConfig, startApi, startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource } from '../support/sourceClient';
import { sourceLogEventIds } from '../support/sourceLog';
import { buildTcString } from '../unit/tcfFixture';

const CAP = 5;
const TTL_DAYS = 90;
const DAY = 86_400_000;
const MATCH_URL = 'https://sync.partner.example/match';
const TEMPLATE = `${MATCH_URL}?dmp_uid=\${DMP_UID}&gdpr=\${GDPR}&gdpr_consent=\${GDPR_CONSENT}`;
const cookie = (n: number) => `cookie-${String(n).padStart(16, '0')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('cookie sync: partner ids matched with our cookie ids, and the redirect back', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let matches: MatchTableStore;

  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  /** One browser hit on the sync endpoint; redirects are not followed. */
  const sync = (partner: string, query: Record<string, string>, headers: Record<string, string> = {}) =>
    fetch(`${api.url}/v1/sync/${partner}?${new URLSearchParams(query)}`, { redirect: 'manual', headers });
  const uidOf = (response: Response) => new URL(response.headers.get('location') as string).searchParams.get('dmp_uid');
  const setCookies = (response: Response) => response.headers.getSetCookie();
  const problemOf = async (response: Response) => (await response.json()) as { errors: Array<{ path: string; message: string }> };

  beforeAll(async () => {
    platform = await startPlatform('cookiesync', { DMP_MATCH_CAP: CAP, DMP_MATCH_TTL_DAYS: TTL_DAYS, DMP_COOKIE_DOMAIN: 'dmp.example', DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] });
    ({ api } = platform);
    matches = new MatchTableStore(platform.store, matchLimits({ DMP_MATCH_CAP: CAP, DMP_MATCH_TTL_DAYS: TTL_DAYS }));
    expect((await admin('/v1/partners', { body: { id: 'ttd', name: 'The Trade Desk', redirectUrl: TEMPLATE } })).status).toBe(201);
  }, 120_000);
  afterAll(async () => {
    await platform.stop();
  });

  it('manages partners with the admin key only, naming the field of bad input', async () => {
    for (const [method, path] of [['POST', '/v1/partners'], ['GET', '/v1/partners'], ['GET', '/v1/partners/ttd'], ['PATCH', '/v1/partners/ttd'], ['DELETE', '/v1/partners/ttd']]) {
      const response = await call(`${api.url}${path}`, { method, ...(method === 'POST' || method === 'PATCH' ? { body: { name: 'x' } } : {}) });
      expect({ method, path, status: response.status, type: response.contentType }).toEqual({ method, path, status: 401, type: expect.stringContaining('application/problem+json') });
      expect((await call(`${api.url}${path}`, { method, key: 'not-the-admin-key' })).status).toBe(403);
    }

    const base = { id: 'dsp1', name: 'A DSP', redirectUrl: 'https://dsp.example/sync?u=${DMP_UID}' };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ ...base, redirectUrl: 'https://dsp.example/sync?u=' }, 'redirectUrl'],
      [{ ...base, redirectUrl: 'http://dsp.example/sync?u=${DMP_UID}' }, 'redirectUrl'],
      [{ ...base, redirectUrl: 'https://dsp.example/sync?u=${DMP_ID}' }, 'redirectUrl'],
      [{ ...base, id: 'Not A Slug' }, 'id'],
      [{ ...base, redirect: 'x' }, '(body)'],
    ];
    for (const [body, path] of cases) {
      const response = await admin('/v1/partners', { body });
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
      expect(response.body.errors.map((error: { path: string }) => error.path)).toContain(path);
    }
    // A source that does not exist is not found, and named.
    const noSource = await admin('/v1/partners', { body: { ...base, sourceId: 'src_missing' } });
    expect({ status: noSource.status, paths: noSource.body.errors.map((error: { path: string }) => error.path) }).toEqual({ status: 404, paths: ['sourceId'] });
    // Plain http is for allowlisted hosts.
    const local = await admin('/v1/partners', { body: { ...base, redirectUrl: 'http://127.0.0.1:9/sync?u=${DMP_UID}' } });
    expect(local.status).toBe(201);
    expect(local.body).toMatchObject({ id: 'dsp1', name: 'A DSP', sourceId: null, syncPath: expect.stringContaining('/v1/sync/dsp1?puid=') });
    expect((await admin('/v1/partners', { body: base })).status).toBe(409);

    const listed = (await admin('/v1/partners')).body.partners.map((partner: { id: string }) => partner.id);
    expect(listed).toEqual(['ttd', 'dsp1']);
    const renamed = await admin('/v1/partners/dsp1', { method: 'PATCH', body: { name: 'Renamed' } });
    expect(renamed.status).toBe(200);
    expect(renamed.body.name).toBe('Renamed');
    // Two changes of other fields at once keep both.
    const moved = 'http://127.0.0.1:9/moved?u=${DMP_UID}';
    const both = await Promise.all([admin('/v1/partners/dsp1', { method: 'PATCH', body: { name: 'Both' } }), admin('/v1/partners/dsp1', { method: 'PATCH', body: { redirectUrl: moved } })]);
    expect(both.map((response) => response.status)).toEqual([200, 200]);
    expect((await admin('/v1/partners/dsp1')).body).toMatchObject({ name: 'Both', redirectUrl: moved });
    const badPatch = await admin('/v1/partners/dsp1', { method: 'PATCH', body: { redirectUrl: 'https://dsp.example/no-macro' } });
    expect(badPatch.status).toBe(400);
    expect(badPatch.body.errors[0].path).toBe('redirectUrl');
    expect((await admin('/v1/partners/dsp1', { method: 'DELETE' })).status).toBe(204);
    expect((await admin('/v1/partners/dsp1')).status).toBe(404);
    expect((await admin('/v1/partners/dsp1', { method: 'PATCH', body: { name: 'x' } })).status).toBe(404);
    expect((await admin('/v1/partners')).body.partners.map((partner: { id: string }) => partner.id)).toEqual(['ttd']);
    expect((await sync('dsp1', { puid: 'after-delete' })).status).toBe(404);
    // Profiles may still hold its users' ids: the id is not given to a new partner.
    const reused = await admin('/v1/partners', { body: base });
    expect({ status: reused.status, errors: reused.body.errors }).toEqual({
      status: 409,
      errors: [{ path: 'id', message: "partner dsp1 was deleted; profiles still hold its users' ids (partner_uid dsp1:…), so the id is not reused: choose another" }],
    });
  });

  it('records the pair and redirects to the partner with our id; the cookie minted is reused on the next sync', async () => {
    const first = await sync('ttd', { puid: 'ttd-user-1' });
    expect(first.status).toBe(302);
    expect(first.headers.get('cache-control')).toBe('no-store');
    const [setCookie] = setCookies(first);
    const minted = /^dmp_uid=([^;]+);/.exec(setCookie)?.[1] as string;
    expect(minted).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
    expect(setCookie).toContain(`Max-Age=${395 * 24 * 3600}`);
    expect(setCookie).toContain('Path=/');
    expect(setCookie).toContain('Domain=dmp.example');
    expect(setCookie).toContain('HttpOnly');
    expect(setCookie).toContain('SameSite=Lax'); // plain http: browsers refuse SameSite=None without Secure
    expect(first.headers.get('location')).toBe(`${MATCH_URL}?dmp_uid=${minted}&gdpr=&gdpr_consent=`);
    expect(await matches.cookieIdsOf('ttd', 'ttd-user-1')).toEqual([minted]);
    expect(await matches.partnerIdsOf('ttd', [minted])).toEqual(new Map([[minted, ['ttd-user-1']]]));

    // The browser sends the cookie back: the same id, and no new cookie.
    const again = await sync('ttd', { puid: 'ttd-user-1' }, { cookie: `other=1; dmp_uid=${minted}` });
    expect(again.status).toBe(302);
    expect(uidOf(again)).toBe(minted);
    expect(setCookies(again)).toEqual([]);
    expect(await matches.cookieIdsOf('ttd', 'ttd-user-1')).toEqual([minted]);

    // Over https (behind a TLS-terminating proxy) the cookie is a third-party one: SameSite=None; Secure.
    const secure = await sync('ttd', { puid: 'ttd-user-2' }, { 'x-forwarded-proto': 'https' });
    expect(setCookies(secure)[0]).toMatch(/SameSite=None/);
    expect(setCookies(secure)[0]).toMatch(/; Secure/);
    // A cookie we could not have set (or that does not decode) is replaced.
    for (const bad of ['dmp_uid=short', 'dmp_uid=%E0%A4%A']) {
      const replaced = await sync('ttd', { puid: 'ttd-user-3' }, { cookie: bad });
      expect(replaced.status).toBe(302);
      expect(setCookies(replaced)).toHaveLength(1);
      expect(uidOf(replaced)).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
    }
  });

  it('answers a HEAD (a link checker, a prefetch) as a sync recording nothing: no match, no cookie', async () => {
    const head = await fetch(`${api.url}/v1/sync/ttd?puid=ttd-user-head`, { method: 'HEAD', redirect: 'manual', headers: { cookie: `dmp_uid=${cookie(990)}` } });
    expect(head.status).toBe(302);
    expect(uidOf(head)).toBe('');
    expect(setCookies(head)).toEqual([]);
    expect(await matches.cookieIdsOf('ttd', 'ttd-user-head')).toEqual([]);
    expect(await matches.partnerIdsOf('ttd', [cookie(990)])).toEqual(new Map());
  });

  it('answers an unknown partner with a 404 problem, not a redirect', async () => {
    const response = await sync('nobody', { puid: 'x' });
    expect(response.status).toBe(404);
    expect(response.headers.get('content-type')).toContain('application/problem+json');
    expect(response.headers.get('location')).toBeNull();
    expect(setCookies(response)).toEqual([]);
    expect((await problemOf(response)).errors).toEqual([{ path: 'params.partner', message: 'no partner nobody' }]);
  });

  it('refuses a missing or invalid puid naming query.puid, recording nothing and redirecting nowhere', async () => {
    for (const query of [{}, { puid: '' }, { puid: 'with space' }, { puid: 'x'.repeat(257) }] as Array<Record<string, string>>) {
      const response = await sync('ttd', query, { cookie: `dmp_uid=${cookie(900)}` });
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      expect(setCookies(response)).toEqual([]);
      expect((await problemOf(response)).errors.map((error) => error.path)).toEqual(['query.puid']);
    }
    expect(await matches.partnerIdsOf('ttd', [cookie(900)])).toEqual(new Map());
  });

  it('never redirects where the request says: the target is the partner config alone', async () => {
    for (const [param, target] of [['redirect', 'https://evil.example/'], ['url', '//evil.example'], ['next', 'https://evil.example/']]) {
      const response = await sync('ttd', { puid: 'victim', [param]: target }, { cookie: `dmp_uid=${cookie(901)}` });
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      expect((await problemOf(response)).errors.map((error) => error.path)).toEqual([`query.${param}`]);
    }
    expect(await matches.cookieIdsOf('ttd', 'victim')).toEqual([]);
    // Anything else in the query (a cache buster) changes nothing about where it goes.
    const busted = await sync('ttd', { puid: 'victim', cb: 'https://evil.example/' }, { cookie: `dmp_uid=${cookie(901)}` });
    expect(busted.headers.get('location')).toBe(`${MATCH_URL}?dmp_uid=${cookie(901)}&gdpr=&gdpr_consent=`);
  });

  it('where the GDPR applies without consent to storage (or a US opt-out), sets and records nothing and redirects without our id', async () => {
    const noStorage = buildTcString({ purposeConsents: [2, 3, 4] });
    const refused = await sync('ttd', { puid: 'eu-user', gdpr: '1', gdpr_consent: noStorage }, { cookie: `dmp_uid=${cookie(902)}` });
    expect(refused.status).toBe(302);
    expect(setCookies(refused)).toEqual([]);
    // The partner gets the same consent signal, and no id of ours (not even the one the browser sent).
    expect(refused.headers.get('location')).toBe(`${MATCH_URL}?dmp_uid=&gdpr=1&gdpr_consent=${encodeURIComponent(noStorage)}`);
    const silent = await sync('ttd', { puid: 'eu-user', gdpr: '1' });
    expect(silent.status).toBe(302);
    expect(setCookies(silent)).toEqual([]);
    expect(uidOf(silent)).toBe('');
    const optedOut = await sync('ttd', { puid: 'us-user', us_privacy: '1YYN' }, { cookie: `dmp_uid=${cookie(903)}` });
    expect(uidOf(optedOut)).toBe('');
    // The browser's Global Privacy Control is an opt-out too.
    const gpc = await sync('ttd', { puid: 'gpc-user' }, { 'sec-gpc': '1' });
    expect({ uid: uidOf(gpc), cookies: setCookies(gpc) }).toEqual({ uid: '', cookies: [] });
    expect(await matches.cookieIdsOf('ttd', 'gpc-user')).toEqual([]);
    expect(await matches.cookieIdsOf('ttd', 'eu-user')).toEqual([]);
    expect(await matches.cookieIdsOf('ttd', 'us-user')).toEqual([]);
    expect(await matches.partnerIdsOf('ttd', [cookie(902), cookie(903)])).toEqual(new Map());

    // With consent to storage it is recorded, and the consent passed on.
    const granted = buildTcString({ purposeConsents: [1, 3, 4] });
    const allowed = await sync('ttd', { puid: 'eu-user', gdpr: '1', gdpr_consent: granted }, { cookie: `dmp_uid=${cookie(902)}` });
    expect(allowed.headers.get('location')).toBe(`${MATCH_URL}?dmp_uid=${cookie(902)}&gdpr=1&gdpr_consent=${encodeURIComponent(granted)}`);
    expect(await matches.cookieIdsOf('ttd', 'eu-user')).toEqual([cookie(902)]);
    // A TC string that cannot be read grants nothing: answered as without consent, the signal passed on as it came.
    const unreadable = await sync('ttd', { puid: 'eu-reader', gdpr: '1', gdpr_consent: 'garbage' }, { cookie: `dmp_uid=${cookie(904)}` });
    expect(unreadable.status).toBe(302);
    expect(setCookies(unreadable)).toEqual([]);
    expect(unreadable.headers.get('location')).toBe(`${MATCH_URL}?dmp_uid=&gdpr=1&gdpr_consent=garbage`);
    expect(await matches.cookieIdsOf('ttd', 'eu-reader')).toEqual([]);
    // One that is not even made of a TC string's characters is bad input, named.
    const malformed = await sync('ttd', { puid: 'eu-user', gdpr: '1', gdpr_consent: 'not a tc string' });
    expect(malformed.status).toBe(400);
    expect((await problemOf(malformed)).errors[0].path).toBe('query.gdpr_consent');
  });

  it('keeps the newest ids on both sides: partner ids per cookie, and cookie ids per partner id', async () => {
    for (let n = 0; n < CAP + 2; n++) {
      await sync('ttd', { puid: `rotating-${n}` }, { cookie: `dmp_uid=${cookie(910)}` });
      await sleep(5);
    }
    const newestPartnerIds = Array.from({ length: CAP }, (_, k) => `rotating-${CAP + 1 - k}`);
    expect((await matches.partnerIdsOf('ttd', [cookie(910)])).get(cookie(910))).toEqual(newestPartnerIds);
    // The store holds no more than the cap either.
    expect((await matches.byCookie.findOne({ _id: `${cookie(910)}:ttd` }))?.entries).toHaveLength(CAP);

    for (let n = 0; n < CAP + 2; n++) {
      await sync('ttd', { puid: 'shared-device' }, { cookie: `dmp_uid=${cookie(920 + n)}` });
      await sleep(5);
    }
    expect(await matches.cookieIdsOf('ttd', 'shared-device')).toEqual(Array.from({ length: CAP }, (_, k) => cookie(920 + CAP + 1 - k)));
    expect((await matches.byPartnerId.findOne({ _id: 'ttd:shared-device' }))?.entries).toHaveLength(CAP);
  });

  it('lets matches expire after the TTL: filtered on read, pruned on the next write', async () => {
    const old = new Date(Date.now() - (TTL_DAYS + 1) * DAY);
    await matches.record('ttd', 'stale-user', cookie(930), old);
    expect(await matches.cookieIdsOf('ttd', 'stale-user')).toEqual([]);
    expect(await matches.partnerIdsOf('ttd', [cookie(930)])).toEqual(new Map());

    await sync('ttd', { puid: 'fresh-user' }, { cookie: `dmp_uid=${cookie(930)}` });
    expect((await matches.byCookie.findOne({ _id: `${cookie(930)}:ttd` }))?.entries.map((entry) => entry.id)).toEqual(['fresh-user']);
    expect((await matches.partnerIdsOf('ttd', [cookie(930)])).get(cookie(930))).toEqual(['fresh-user']);

    // The same match read TTL days later (an injected clock) has expired.
    const later = new MatchTableStore(platform.store, matchLimits({ DMP_MATCH_CAP: CAP, DMP_MATCH_TTL_DAYS: TTL_DAYS }), () => new Date(Date.now() + TTL_DAYS * DAY + 60_000));
    expect(await later.partnerIdsOf('ttd', [cookie(930)])).toEqual(new Map());
    expect(await later.cookieIdsOf('ttd', 'fresh-user')).toEqual([]);
  });

  it('loses no entry when syncs of the same id arrive at once', async () => {
    const cookies = Array.from({ length: CAP }, (_, n) => cookie(940 + n));
    const responses = await Promise.all(cookies.map((id) => sync('ttd', { puid: 'busy-user' }, { cookie: `dmp_uid=${id}` })));
    expect(responses.map((response) => response.status)).toEqual(cookies.map(() => 302));
    expect((await matches.cookieIdsOf('ttd', 'busy-user')).sort()).toEqual(cookies);
    const puids = Array.from({ length: CAP }, (_, n) => `busy-${n}`);
    await Promise.all(puids.map((puid) => sync('ttd', { puid }, { cookie: `dmp_uid=${cookie(950)}` })));
    expect((await matches.partnerIdsOf('ttd', [cookie(950)])).get(cookie(950))?.sort()).toEqual(puids);
  });

  it("appends a cookie_sync event to the partner's source, once per partner id, cookie and day, and it reaches the cookie's profile", async () => {
    const source = await newSource(api, 'cookie syncs');
    expect((await admin('/v1/partners', { body: { id: 'lotame', name: 'Lotame', redirectUrl: 'https://sync.lotame.example/m?u=${DMP_UID}', sourceId: source.sourceId } })).status).toBe(201);
    const eventsOf = async () => {
      const profile = (await source.lookup('cookie_id', cookie(960))).body;
      return profile.id ? ((await admin(`/v1/profiles/${profile.id}/events`)).body.events as Array<{ id: string; type: string }>) : [];
    };
    await sync('lotame', { puid: 'lot-1' }, { cookie: `dmp_uid=${cookie(960)}` });
    await source.folded(1);
    const profile = (await source.lookup('cookie_id', cookie(960))).body;
    expect(profile.counters.cookie_sync.count).toBe(1);
    expect(await eventsOf()).toEqual([
      expect.objectContaining({ id: cookieSyncEventId('lotame', 'lot-1', cookie(960), new Date()), type: 'cookie_sync', sourceId: source.sourceId, properties: { partner: 'lotame' }, identities: [{ type: 'cookie_id', value: cookie(960) }, { type: 'partner_uid', value: 'lotame:lot-1' }] }),
    ]);

    // The same sync again today is a duplicate; another partner id is a new event. Both are appended
    // in this order, so once the second reaches the profile the first would have too, had it been appended.
    await sync('lotame', { puid: 'lot-1' }, { cookie: `dmp_uid=${cookie(960)}` });
    await sync('lotame', { puid: 'lot-2' }, { cookie: `dmp_uid=${cookie(960)}` });
    const second = cookieSyncEventId('lotame', 'lot-2', cookie(960), new Date());
    const events = await waitFor('the second sync routed to the profile', async () => {
      const found = await eventsOf();
      return found.some((event) => event.id === second) && found;
    });
    expect(events.map((event) => event.id)).toEqual([second, cookieSyncEventId('lotame', 'lot-1', cookie(960), new Date())]);
    await waitFor('the second sync folded', async () => (await source.lookup('cookie_id', cookie(960))).body.counters.cookie_sync.count === 2);
    // The repeat was acknowledged and stored; the profile writer dropped it.
    await source.folded(3);
    expect(await source.duplicatesDropped()).toBe(1);
    expect((await source.lookup('cookie_id', cookie(960))).body.counters.cookie_sync.count).toBe(2);

    // A partner without a source records matches only.
    expect((await admin('/v1/partners/lotame', { method: 'PATCH', body: { sourceId: null } })).body.sourceId).toBeNull();
    await sync('lotame', { puid: 'lot-3' }, { cookie: `dmp_uid=${cookie(960)}` });
    expect((await matches.partnerIdsOf('lotame', [cookie(960)])).get(cookie(960))).toEqual(['lot-3', 'lot-2', 'lot-1']);
    // Its event was never appended.
    const logged = await sourceLogEventIds(platform.store, source.sourceId);
    expect(logged).toContain(second);
    expect(logged).not.toContain(cookieSyncEventId('lotame', 'lot-3', cookie(960), new Date()));
  }, 120_000);

  it("joins two of our cookies a partner knows as one user into one person: a sync is an edge of the identity graph, a placeholder id none", async () => {
    const source = await newSource(api, 'graph syncs');
    expect((await admin('/v1/partners', { body: { id: 'ramp', name: 'Ramp', redirectUrl: 'https://sync.ramp.example/m?u=${DMP_UID}', sourceId: source.sourceId } })).status).toBe(201);
    // The same partner user on two of our cookies (say, before and after the browser dropped ours).
    await sync('ramp', { puid: 'r-7' }, { cookie: `dmp_uid=${cookie(970)}` });
    await sync('ramp', { puid: 'r-7' }, { cookie: `dmp_uid=${cookie(971)}` });
    // A placeholder the partner sends for users it does not know is nobody's id.
    await sync('ramp', { puid: 'undefined' }, { cookie: `dmp_uid=${cookie(972)}` });
    await sync('ramp', { puid: 'undefined' }, { cookie: `dmp_uid=${cookie(973)}` });
    await source.folded(4);

    const person = (await source.lookup('cookie_id', cookie(970))).body;
    expect((await source.lookup('cookie_id', cookie(971))).body.id).toBe(person.id);
    expect((await source.lookup('partner_uid', 'ramp:r-7')).body.id).toBe(person.id);
    expect(person.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`).sort()).toEqual([`cookie_id:${cookie(970)}`, `cookie_id:${cookie(971)}`, 'partner_uid:ramp:r-7']);
    expect(person.counters.cookie_sync.count).toBe(2);
    // The same user id of another partner is someone else's.
    expect((await source.lookup('partner_uid', 'lotame:r-7')).status).toBe(404);

    expect((await source.lookup('cookie_id', cookie(972))).body.id).not.toBe((await source.lookup('cookie_id', cookie(973))).body.id);
    expect((await source.lookup('partner_uid', 'ramp:undefined')).status).toBe(404);
    // Nor is it matched to the cookies it came with: feeds and exports would map every unknown user of the partner to one of them.
    expect(await matches.cookieIdsOf('ramp', 'undefined')).toEqual([]);
    expect(await matches.partnerIdsOf('ramp', [cookie(972), cookie(973)])).toEqual(new Map());
    // A malformed partner user id is no identity at all.
    expect((await source.lookup('partner_uid', 'no-colon')).status).toBe(404);

    // Erased by the partner's id alone: the person and both sides of the match tables go.
    const erase = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'partner_uid', value: 'ramp:r-7' } } });
    expect(erase.status).toBe(202);
    expect((await settledRequest(admin, erase.body.id, 120_000)).state).toBe('completed');
    expect((await source.lookup('cookie_id', cookie(970))).status).toBe(404);
    expect((await source.lookup('partner_uid', 'ramp:r-7')).status).toBe(404);
    expect(await matches.cookieIdsOf('ramp', 'r-7')).toEqual([]);
    expect(await matches.partnerIdsOf('ramp', [cookie(970), cookie(971)])).toEqual(new Map());
  }, 240_000);

  it('profiles a sync saying the GDPR does not apply (gdpr=0) on a source that requires a consent signal, so it joins the cookies as any sync does', async () => {
    const source = await newSource(api, 'syncs needing consent', { consent: { mode: 'require' } });
    expect((await admin('/v1/partners', { body: { id: 'strict', name: 'Strict', redirectUrl: 'https://sync.strict.example/m?u=${DMP_UID}', sourceId: source.sourceId } })).status).toBe(201);
    await sync('strict', { puid: 's-1', gdpr: '0' }, { cookie: `dmp_uid=${cookie(980)}` });
    await sync('strict', { puid: 's-1', gdpr: '0' }, { cookie: `dmp_uid=${cookie(981)}` });
    await source.folded(2);
    const person = (await source.lookup('partner_uid', 'strict:s-1')).body;
    expect((await source.lookup('cookie_id', cookie(980))).body.id).toBe(person.id);
    expect((await source.lookup('cookie_id', cookie(981))).body.id).toBe(person.id);
    expect(person.counters.cookie_sync.count).toBe(2);
    expect((await admin(`/v1/sources/${source.sourceId}`)).body.progress.eventsNonProfiling ?? {}).toEqual({});
  }, 120_000);

  it('redirects a sync the store cannot record with an empty id, leaving the browser as it was and the match tables without it', async () => {
    // An API of its own, whose store connection is then closed: its partner read is cached, its writes fail.
    const store = await connectStore(baseConfig.MONGODB_URI, platform.store.db.databaseName);
    const failing = await startApi({ store, temporal: platform.temporal, taskQueue: platform.taskQueue });
    try {
      const hit = (query: Record<string, string>, headers: Record<string, string> = {}) =>
        fetch(`${failing.url}/v1/sync/ttd?${new URLSearchParams(query)}`, { redirect: 'manual', headers });
      expect(uidOf(await hit({ puid: 'before-outage' }, { cookie: `dmp_uid=${cookie(940)}` }))).toBe(cookie(940));
      await store.close();
      // Past the erasure marks' one-second refresh: their read fails too.
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      for (const headers of [{ cookie: `dmp_uid=${cookie(941)}` }, {}] as Array<Record<string, string>>) {
        const response = await hit({ puid: 'during-outage' }, headers);
        expect(response.status).toBe(302);
        expect((response.headers.get('location') as string).startsWith(`${MATCH_URL}?`)).toBe(true);
        expect(uidOf(response)).toBe('');
        expect(setCookies(response)).toEqual([]);
      }
      expect(await matches.cookieIdsOf('ttd', 'during-outage')).toEqual([]);
      expect(await matches.cookieIdsOf('ttd', 'before-outage')).toEqual([cookie(940)]);
    } finally {
      await failing.close();
      await store.close();
    }
  });

  it('documents every route and status in the OpenAPI document', async () => {
    const doc = (await call(`${api.url}/openapi.json`)).body;
    const statuses = (path: string, method: string) => Object.keys(doc.paths[path][method].responses);
    expect(statuses('/v1/sync/{partner}', 'get')).toEqual(expect.arrayContaining(['302', '400', '404', '503']));
    expect(doc.paths['/v1/sync/{partner}'].get.responses['302'].headers).toHaveProperty('Location');
    expect(doc.paths['/v1/sync/{partner}'].get.parameters.map((parameter: { name: string }) => parameter.name)).toEqual(expect.arrayContaining(['partner', 'puid', 'gdpr', 'gdpr_consent', 'gpp', 'gpp_sid', 'us_privacy']));
    expect(statuses('/v1/partners', 'post')).toEqual(expect.arrayContaining(['201', '400', '401', '403', '409']));
    expect(statuses('/v1/partners', 'get')).toEqual(expect.arrayContaining(['200', '401', '403']));
    expect(statuses('/v1/partners/{id}', 'get')).toEqual(expect.arrayContaining(['200', '401', '403', '404']));
    expect(statuses('/v1/partners/{id}', 'patch')).toEqual(expect.arrayContaining(['200', '400', '401', '403', '404']));
    expect(statuses('/v1/partners/{id}', 'delete')).toEqual(expect.arrayContaining(['204', '401', '403', '404', '409']));
  });
});
