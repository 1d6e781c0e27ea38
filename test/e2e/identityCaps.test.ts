import { IdentityCapStore } from '../../store/identityCaps';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

describe('over-merge protection: identity caps per profile, and the record of refused joins', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;

  beforeAll(async () => {
    platform = await startPlatform('caps', { DMP_IDENTITY_CAPS: { cookie_id: 2, maid: 100, email_sha256: 20, phone_sha256: 20, crm_id: 5, partner_uid: 1000 }, DMP_IDENTITY_BLOCKLIST: ['cookie_id:shared-kiosk'] });
    ({ api } = platform);
    source = await newSource(api, 'crm-web');
  });
  afterAll(() => platform.stop());

  const lookup = (type: string, value: string) => source.lookup(type, value);
  const send = (events: unknown[]) => source.send(events);
  const folded = (count: number) => source.folded(count);
  /** Sends events through a source and waits until it has folded `count` events in all: each step lands before the next. */
  const foldingAt = (through: SourceClient) => async (count: number, events: unknown[]) => {
    await through.send(events);
    await through.folded(count);
  };
  const cookies = (profile: any) => profile.identities.filter((identity: any) => identity.type === 'cookie_id').map((identity: any) => identity.value).sort();

  it('stops joining cookies to a profile that holds its cap, gives the next one a profile of its own, and records each refusal', async () => {
    await send([
      { id: 'c1', type: 'login', timestamp: '2026-07-01T10:00:00Z', identities: { crm_id: 'shared-123', cookie_id: 'ck-a' } },
      { id: 'c2', type: 'login', timestamp: '2026-07-02T10:00:00Z', identities: { crm_id: 'shared-123', cookie_id: 'ck-b' } },
    ]);
    await folded(2);
    const crm = (await lookup('crm_id', 'shared-123')).body;
    expect(cookies(crm)).toEqual(['ck-a', 'ck-b']);

    // A third cookie: the event still counts for the CRM profile, but the cookie does not join it.
    await send([{ id: 'c3', type: 'login', timestamp: '2026-07-03T10:00:00Z', identities: { crm_id: 'shared-123', cookie_id: 'ck-c' } }]);
    await folded(3);
    const after = (await lookup('crm_id', 'shared-123')).body;
    expect(cookies(after)).toEqual(['ck-a', 'ck-b']);
    expect(after.counters.login.count).toBe(3);

    // The refused cookie lives on as a profile of its own; seen with the CRM id again, it is still not linked.
    await send([
      { id: 'c4', type: 'page_view', timestamp: '2026-07-04T10:00:00Z', identities: { cookie_id: 'ck-c' } },
      { id: 'c5', type: 'login', timestamp: '2026-07-05T10:00:00Z', identities: { cookie_id: 'ck-c', crm_id: 'shared-123' } },
    ]);
    await folded(5);
    const ownLookup = await lookup('cookie_id', 'ck-c');
    expect(ownLookup.status).toBe(200);
    const own = ownLookup.body;
    expect(own.id).not.toBe(after.id);
    expect(own.counters.page_view.count).toBe(1);
    expect((await lookup('crm_id', 'shared-123')).body.counters.login.count).toBe(4);

    const listed = (await call(`${api.url}/v1/identity/refusals?profileId=${after.id}`, { key: api.adminKey })).body.refusals;
    expect(listed).toEqual([expect.objectContaining({ profileId: after.id, identity: 'cookie_id:ck-c', type: 'cookie_id', cap: 2, eventId: 'c3', sourceId: source.sourceId })]);
    expect((await call(`${api.url}/v1/identity/refusals?limit=0`, { key: api.adminKey })).body.errors[0].path).toBe('limit');
  });

  it('keeps the cap of a document an unlink split: the part holding its cap of cookies takes no more', async () => {
    const web = await newSource(api, 'split-web');
    const step = foldingAt(web);
    await step(3, [
      { id: 'u1', type: 'login', timestamp: '2026-07-01T10:00:00Z', identities: { crm_id: 'split-1', cookie_id: 'sp-a' } },
      { id: 'u2', type: 'login', timestamp: '2026-07-02T10:00:00Z', identities: { crm_id: 'split-1', cookie_id: 'sp-b' } },
      { id: 'u3', type: 'login', timestamp: '2026-07-03T10:00:00Z', identities: { crm_id: 'split-1', email: 'split.one@example.com' } },
    ]);
    expect(cookies((await lookup('crm_id', 'split-1')).body)).toEqual(['sp-a', 'sp-b']);
    const unlink = await call(`${api.url}/v1/identity/unlink`, { key: api.adminKey, body: { identities: [{ type: 'crm_id', value: 'split-1' }, { type: 'email', value: 'split.one@example.com' }] } });
    expect(unlink.status).toBe(202);
    await waitFor('the unlink to complete', async () => (await call(`${api.url}${unlink.body.statusUrl}`, { key: api.adminKey })).body.state === 'completed');
    const part = (await lookup('crm_id', 'split-1')).body;
    expect(cookies(part)).toEqual(['sp-a', 'sp-b']);
    expect((await lookup('email', 'split.one@example.com')).body.id).not.toBe(part.id);
    // The part holds its cap of cookies as the split document did: a third one is refused, not joined.
    await step(4, [{ id: 'u4', type: 'login', timestamp: '2026-07-04T10:00:00Z', identities: { crm_id: 'split-1', cookie_id: 'sp-c' } }]);
    expect(cookies((await lookup('crm_id', 'split-1')).body)).toEqual(['sp-a', 'sp-b']);
    expect((await call(`${api.url}/v1/identity/refusals?limit=100`, { key: api.adminKey })).body.refusals).toEqual(expect.arrayContaining([expect.objectContaining({ identity: 'cookie_id:sp-c', eventId: 'u4' })]));
    // Marked itself, as drains that resolve its CRM id afresh (not through the split document they had cached) read it.
    expect([...((await new IdentityCapStore(platform.store).capped([part.id])).get(part.id) ?? [])]).toEqual(['cookie_id']);
  });

  it("forgets a join refused to an erased person's identity under another profile: the refusal names it", async () => {
    const shop = await newSource(api, 'erase-web');
    const step = foldingAt(shop);
    await step(3, [
      { id: 'r1', type: 'login', timestamp: '2026-07-01T10:00:00Z', identities: { crm_id: 'kiosk-crm', cookie_id: 'kiosk-a' } },
      { id: 'r2', type: 'login', timestamp: '2026-07-02T10:00:00Z', identities: { crm_id: 'kiosk-crm', cookie_id: 'kiosk-b' } },
      { id: 'r3', type: 'login', timestamp: '2026-07-03T10:00:00Z', identities: { crm_id: 'kiosk-crm', cookie_id: 'visitor-z' } },
    ]);
    await step(4, [{ id: 'r4', type: 'page_view', timestamp: '2026-07-04T10:00:00Z', identities: { cookie_id: 'visitor-z' } }]);
    const kiosk = (await lookup('crm_id', 'kiosk-crm')).body.id;
    const refusalsOf = async () => (await call(`${api.url}/v1/identity/refusals?profileId=${kiosk}`, { key: api.adminKey })).body.refusals.map((refusal: { identity: string }) => refusal.identity);
    expect(await refusalsOf()).toEqual(['cookie_id:visitor-z']);
    const erase = await call(`${api.url}/v1/privacy/requests`, { key: api.adminKey, body: { type: 'erase', identity: { type: 'cookie_id', value: 'visitor-z' } } });
    expect(erase.status).toBe(202);
    expect(await settledRequest((path) => call(`${api.url}${path}`, { key: api.adminKey }), erase.body.id)).toMatchObject({ state: 'completed' });
    expect(await refusalsOf()).toEqual([]);
  });

  it("holds a burst of one CRM id's new cookies, sent together, to the cap: the rest are refused and recorded, and the next batch finds the profile capped", async () => {
    const burst = await newSource(api, 'web-burst');
    const login = (id: string, cookie: string) => ({ id, type: 'login', timestamp: '2026-07-06T10:00:00Z', identities: { crm_id: 'burst-1', cookie_id: cookie } });
    await burst.send(['a', 'b', 'c', 'd'].map((c, n) => login(`b${n}`, `ck-burst-${c}`)));
    await burst.folded(4);
    const crm = (await burst.lookup('crm_id', 'burst-1')).body;
    expect(cookies(crm)).toEqual(['ck-burst-a', 'ck-burst-b']);
    expect(crm.counters.login.count).toBe(4);
    // Refused, each is claimed for a document of its own, which no event has reached yet: no profile holds it.
    for (const c of ['c', 'd']) expect((await burst.lookup('cookie_id', `ck-burst-${c}`)).status).toBe(404);
    const refused = async () => (await call(`${api.url}/v1/identity/refusals?profileId=${crm.id}`, { key: api.adminKey })).body.refusals.map((refusal: any) => refusal.eventId).sort();
    expect(await refused()).toEqual(['b2', 'b3']);

    await burst.send([login('b4', 'ck-burst-e')]);
    await burst.folded(5);
    expect(cookies((await burst.lookup('crm_id', 'burst-1')).body)).toEqual(['ck-burst-a', 'ck-burst-b']);
    expect(await refused()).toEqual(['b2', 'b3', 'b4']);
  });

  it('caps a profile of several documents by what they hold together: once a link brings it to the cap, no document of it takes another', async () => {
    const joined = await newSource(api, 'web-joined');
    const fold = foldingAt(joined);
    // One cookie each on two documents, one known by a CRM id and the other by an email.
    await fold(1, [{ id: 'j-1', type: 'login', timestamp: '2026-07-07T10:00:00Z', identities: { crm_id: 'joined-1', cookie_id: 'ck-joined-a' } }]);
    await fold(2, [{ id: 'j-2', type: 'signup', timestamp: '2026-07-07T11:00:00Z', identities: { email: 'joined@example.com', cookie_id: 'ck-joined-b' } }]);
    const crmDoc = (await joined.lookup('crm_id', 'joined-1')).body.id;
    expect((await joined.lookup('email', 'joined@example.com')).body.id).not.toBe(crmDoc);
    // An event showing both links the documents: the profile holds two cookies, its cap, though neither document does.
    await fold(3, [{ id: 'j-3', type: 'login', timestamp: '2026-07-07T12:00:00Z', identities: { crm_id: 'joined-1', email: 'joined@example.com' } }]);
    expect(cookies((await joined.lookup('crm_id', 'joined-1')).body)).toEqual(['ck-joined-a', 'ck-joined-b']);
    // A third cookie seen with either document's identity is refused, and recorded against that document.
    await fold(5, [
      { id: 'j-4', type: 'login', timestamp: '2026-07-07T13:00:00Z', identities: { crm_id: 'joined-1', cookie_id: 'ck-joined-c' } },
      { id: 'j-5', type: 'login', timestamp: '2026-07-07T14:00:00Z', identities: { email: 'joined@example.com', cookie_id: 'ck-joined-d' } },
    ]);
    const profile = (await joined.lookup('crm_id', 'joined-1')).body;
    expect(cookies(profile)).toEqual(['ck-joined-a', 'ck-joined-b']);
    expect(profile.counters.login.count).toBe(4);
    const refusals = (await call(`${api.url}/v1/identity/refusals?limit=100`, { key: api.adminKey })).body.refusals.filter((refusal: any) => refusal.sourceId === joined.sourceId);
    expect(refusals.map((refusal: any) => refusal.identity).sort()).toEqual(['cookie_id:ck-joined-c', 'cookie_id:ck-joined-d']);
  });

  it('caps a profile of several documents when a document of it gains an identity that brings the profile to the cap', async () => {
    const grown = await newSource(api, 'web-grown');
    const fold = foldingAt(grown);
    // Linked while they hold one cookie between them: under the cap.
    await fold(1, [{ id: 'g-1', type: 'login', timestamp: '2026-07-08T10:00:00Z', identities: { crm_id: 'grown-1', cookie_id: 'ck-grown-a' } }]);
    await fold(2, [{ id: 'g-2', type: 'signup', timestamp: '2026-07-08T11:00:00Z', identities: { email: 'grown@example.com' } }]);
    await fold(3, [{ id: 'g-3', type: 'login', timestamp: '2026-07-08T12:00:00Z', identities: { crm_id: 'grown-1', email: 'grown@example.com' } }]);
    // Each document has been folded as linked since (the email's may sit in another partition).
    await fold(5, [
      { id: 'g-4', type: 'visit', timestamp: '2026-07-08T12:30:00Z', identities: { email: 'grown@example.com' } },
      { id: 'g-5', type: 'visit', timestamp: '2026-07-08T12:40:00Z', identities: { crm_id: 'grown-1' } },
    ]);
    // The email's document takes a second cookie: the profile now holds its cap.
    await fold(6, [{ id: 'g-6', type: 'visit', timestamp: '2026-07-08T13:00:00Z', identities: { email: 'grown@example.com', cookie_id: 'ck-grown-b' } }]);
    expect(cookies((await grown.lookup('crm_id', 'grown-1')).body)).toEqual(['ck-grown-a', 'ck-grown-b']);
    // So the CRM id's document, which holds one cookie itself, takes no more.
    await fold(7, [{ id: 'g-7', type: 'login', timestamp: '2026-07-08T14:00:00Z', identities: { crm_id: 'grown-1', cookie_id: 'ck-grown-c' } }]);
    expect(cookies((await grown.lookup('crm_id', 'grown-1')).body)).toEqual(['ck-grown-a', 'ck-grown-b']);
  });

  it("keeps strangers who share blocklisted junk (a test email, an 'undefined' CRM id, a listed kiosk cookie) apart, and counts what it dropped", async () => {
    const other = await newSource(api, 'app');
    const sent = await other.send([
      { id: 'j1', type: 'app_open', timestamp: '2026-07-01T10:00:00Z', identities: { cookie_id: 'ck-stranger-1', email: 'test@example.com', crm_id: 'undefined' } },
      { id: 'j2', type: 'app_open', timestamp: '2026-07-01T11:00:00Z', identities: { cookie_id: 'ck-stranger-2', email: 'test@example.com', crm_id: 'undefined' } },
      // Nothing but junk: kept in the log, attached to no one.
      { id: 'j3', type: 'app_open', timestamp: '2026-07-01T12:00:00Z', identities: { cookie_id: 'shared-kiosk', email: 'test@example.com' } },
    ]);
    expect(sent.body).toMatchObject({ accepted: 3, rejected: [] });
    await other.folded(2);
    const first = (await other.lookup('cookie_id', 'ck-stranger-1')).body;
    const second = (await other.lookup('cookie_id', 'ck-stranger-2')).body;
    expect(first.id).not.toBe(second.id);
    for (const profile of [first, second]) {
      expect(profile.identities.map((identity: { type: string }) => identity.type)).toEqual(['cookie_id']);
      expect(profile.counters.app_open.count).toBe(1);
    }
    expect((await other.lookup('email', 'test@example.com')).status).toBe(404);
    expect((await other.lookup('crm_id', 'undefined')).status).toBe(404);
    expect((await other.lookup('cookie_id', 'shared-kiosk')).status).toBe(404);
    const progress = (await call(`${api.url}/v1/sources/${other.sourceId}`, { key: api.adminKey })).body.progress;
    // Two on each stranger's event (the email's hash, the CRM id), two on the event of junk alone.
    expect(progress).toMatchObject({ eventsProcessed: 2, eventsRefused: 1, identitiesBlocked: 6 });
  });
});
