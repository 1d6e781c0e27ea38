import { GppModel } from '@iabgpp/cmpapi';
import { call } from '../support/http';
import { startPlatform, waitFor, type RunningPlatform } from '../support/services';
import { newSource } from '../support/sourceClient';
import { buildTcString } from '../unit/tcfFixture';

function usnatOptOut(): string {
  const model = new GppModel();
  model.setFieldValue('usnat', 'SaleOptOutNotice', 1);
  model.setFieldValue('usnat', 'SaleOptOut', 1);
  return model.encode();
}

describe('consent at the door', () => {
  let platform: RunningPlatform;

  beforeAll(async () => {
    platform = await startPlatform('consent_door');
  });
  afterAll(async () => {
    await platform?.stop();
  });

  it('stores events without the consent the source requires as non-profiling: counted on the source, never profiled', async () => {
    const { api } = platform;
    const source = await newSource(api, 'eu-site', { consent: { mode: 'require', tcfPurposes: [1, 3, 4] } });
    const granted = buildTcString({ purposeConsents: [1, 3, 4] });
    const partial = buildTcString({ purposeConsents: [1, 3] });
    const response = await source.send([
      { type: 'page_view', identities: { cookie_id: 'no-signal' } },
      { type: 'page_view', identities: { cookie_id: 'granted' }, consent: { tcf: granted } },
      { type: 'page_view', identities: { cookie_id: 'partial' }, consent: { tcf: partial } },
      { type: 'page_view', identities: { cookie_id: 'sale-opt-out' }, consent: { tcf: granted, gpp: usnatOptOut() } },
      { type: 'page_view', identities: { cookie_id: 'flag-off' }, consent: { tcf: granted, purposes: { profiling: false } } },
    ]);
    expect(response.status).toBe(202);
    expect(response.body).toMatchObject({ accepted: 5, duplicates: 0, nonProfiling: 4, rejected: [] });

    const status = await waitFor('the drain to pass all five events', async () => {
      const body = (await call(`${api.url}/v1/sources/${source.sourceId}`, { key: api.adminKey })).body;
      return body.progress?.cursor >= 1 && body.profiles.eventsApplied >= 1 ? body : null;
    });
    expect(status.consent).toEqual({ mode: 'require', tcfPurposes: [1, 3, 4], honorGppOptOuts: true, purposeFlag: 'profiling' });
    expect(status.progress.eventsProcessed).toBe(1);
    expect(status.progress.eventsNonProfiling).toEqual({ no_consent_signal: 1, tcf_purpose: 1, gpp_opt_out: 1, purpose_flag: 1 });

    expect((await source.lookup('cookie_id', 'granted')).status).toBe(200);
    for (const cookie of ['no-signal', 'partial', 'sale-opt-out', 'flag-off']) {
      expect({ cookie, status: (await source.lookup('cookie_id', cookie)).status }).toEqual({ cookie, status: 404 });
    }
  });

  it("reads the publisher's restrictions: a vendor barred from a purpose it needs is not profiled, and a profile keeps the restrictions its TC string carries", async () => {
    const { api } = platform;
    const source = await newSource(api, 'eu-news', { consent: { mode: 'require', tcfPurposes: [1, 3], tcfVendorId: 755 } });
    const tcString = (barred: number) =>
      buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [755, 900], publisherRestrictions: [{ purpose: 3, type: 'not_allowed', vendors: [barred] }] });
    const response = await source.send([
      { type: 'page_view', identities: { cookie_id: 'us-barred' }, consent: { tcf: tcString(755) } },
      { type: 'page_view', identities: { cookie_id: 'other-barred' }, consent: { tcf: tcString(900) } },
    ]);
    expect(response.body).toMatchObject({ accepted: 2, nonProfiling: 1, rejected: [] });
    const status = await waitFor('the drain to pass both events', async () => {
      const body = (await call(`${api.url}/v1/sources/${source.sourceId}`, { key: api.adminKey })).body;
      return body.progress?.cursor >= 1 && body.profiles.eventsApplied >= 1 ? body : null;
    });
    expect(status.progress.eventsNonProfiling).toEqual({ tcf_vendor: 1 });
    expect((await source.lookup('cookie_id', 'us-barred')).status).toBe(404);
    const profile = (await source.lookup('cookie_id', 'other-barred')).body;
    expect(profile.consent.tcf.restrictions).toEqual([{ purpose: 3, vendors: [[900, 900]] }]);
  });

  it('applies a withdrawal to the profile it belongs to: its consent changes, nothing else does, and segments follow — every one, not only those with consent rules', async () => {
    const { api } = platform;
    const source = await newSource(api, 'eu-shop', { consent: { mode: 'require' } });
    const segment = (await call(`${api.url}/v1/segments`, { key: api.adminKey, body: { name: 'Ads profiling allowed', rule: { consent: { purpose: 3 } } } })).body;
    const visitors = (await call(`${api.url}/v1/segments`, { key: api.adminKey, body: { name: 'Page viewers', rule: { event: 'page_view' } } })).body;
    const granted = buildTcString({ purposeConsents: [1, 3, 4] });
    await source.send([{ id: 'w-1', type: 'page_view', identities: { cookie_id: 'withdrawer' }, traits: { plan: 'gold' }, consent: { tcf: granted } }]);
    await source.folded(1);
    const members = async (id = segment.id) => (await call(`${api.url}/v1/segments/${id}/members`, { key: api.adminKey })).body.members as string[];
    const before = (await source.lookup('cookie_id', 'withdrawer')).body;
    await waitFor('the member to enter', async () => (await members()).includes(before.id) && (await members(visitors.id)).includes(before.id));

    const withdrawn = buildTcString({ purposeConsents: [1] });
    const later = new Date(Date.now() + 1000).toISOString();
    const response = await source.send([
      { id: 'w-2', type: 'page_view', timestamp: later, identities: { cookie_id: 'withdrawer', crm_id: 'never-linked' }, traits: { plan: 'silver' }, consent: { tcf: withdrawn } },
      { id: 'w-3', type: 'page_view', timestamp: later, identities: { cookie_id: 'stranger' }, consent: { tcf: withdrawn } },
    ]);
    expect(response.body).toMatchObject({ accepted: 2, nonProfiling: 2 });
    const after = await waitFor('the withdrawal on the profile', async () => {
      const profile = (await source.lookup('cookie_id', 'withdrawer')).body;
      return profile.consent?.tcf?.tcString === withdrawn ? profile : undefined;
    });
    expect(after.consent.tcf.purposeConsents).toEqual([1]);
    expect(after.counters.page_view.count).toBe(1);
    expect(after.traits.plan).toBe('gold');
    expect(after.identities.map((identity: { type: string }) => identity.type)).toEqual(['cookie_id']);
    expect((await source.lookup('crm_id', 'never-linked')).status).toBe(404);
    expect((await source.lookup('cookie_id', 'stranger')).status).toBe(404);
    const history = (await call(`${api.url}/v1/profiles/${after.id}/events`, { key: api.adminKey })).body.events;
    expect(history.map((event: { id: string }) => event.id)).toEqual(['w-1']);
    await waitFor('the member to exit', async () => !(await members()).includes(after.id));
    await waitFor('the member to exit a segment without a consent rule', async () => !(await members(visitors.id)).includes(after.id));
    expect((await call(`${api.url}/v1/profiles/${after.id}/segments`, { key: api.adminKey })).body.segments).toEqual([]);
    expect(after.segments).toEqual([]);
    const status = (await call(`${api.url}/v1/sources/${source.sourceId}`, { key: api.adminKey })).body;
    expect(status.profiles.eventsApplied).toBe(1);
    // A batch run agrees with the real-time path; consent given again brings the person back.
    const run = await call(`${api.url}/v1/segments/${visitors.id}/runs`, { key: api.adminKey, body: {} });
    expect(run.status).toBe(202);
    await waitFor('the run to complete', async () => (await call(`${api.url}/v1/segments/${visitors.id}/runs/${run.body.runId}`, { key: api.adminKey })).body.state === 'completed');
    expect(await members(visitors.id)).not.toContain(after.id);
    await source.send([{ id: 'w-4', type: 'page_view', timestamp: new Date(Date.now() + 2000).toISOString(), identities: { cookie_id: 'withdrawer' }, consent: { tcf: granted } }]);
    await waitFor('the member to enter again', async () => (await members(visitors.id)).includes(after.id));
  });

  it("holds later events without a signal of their own to a withdrawal the profile recorded, on a source enforcing the signals present, while their identities still lead to the person; a source needing no consent goes on", async () => {
    const { api } = platform;
    const web = await newSource(api, 'eu-web', { consent: { mode: 'require' } });
    const server = await newSource(api, 'eu-server');
    const crm = await newSource(api, 'eu-crm', { consent: { mode: 'not_required' } });
    await web.send([{ id: 'k-1', type: 'page_view', identities: { cookie_id: 'kept-out' }, consent: { tcf: buildTcString({ purposeConsents: [1, 3, 4] }) } }]);
    await web.folded(1);
    await server.send([
      { id: 'k-2', type: 'order', identities: { cookie_id: 'kept-out' }, traits: { tier: 'gold' } },
      { id: 'k-2b', type: 'order', identities: { crm_id: 'their-account' }, traits: { tier: 'bronze' }, consent: { tcf: buildTcString({ purposeConsents: [1, 3, 4] }) } },
    ]);
    await server.folded(2);
    expect((await web.lookup('cookie_id', 'kept-out')).body.counters.order.count).toBe(1);

    // The visitor withdraws on the site; the server goes on sending their orders without a signal,
    // one with a new device id of theirs, one under their account's profile.
    const later = (seconds: number) => new Date(Date.now() + seconds * 1000).toISOString();
    await web.send([{ id: 'k-3', type: 'page_view', timestamp: later(1), identities: { cookie_id: 'kept-out' }, consent: { tcf: buildTcString({ purposeConsents: [1] }) } }]);
    await waitFor('the withdrawal on the profile', async () => (await web.lookup('cookie_id', 'kept-out')).body.consent?.tcf?.purposeConsents?.length === 1);
    const device = '6d8f1c2a-3b4e-4f5a-9b6c-7d8e9fa0b1c2';
    await server.send([{ id: 'k-4', type: 'order', timestamp: later(2), identities: { cookie_id: 'kept-out', maid: device }, traits: { tier: 'platinum' } }]);
    await server.folded(3);
    await crm.send([{ id: 'k-5', type: 'crm_record', timestamp: later(3), identities: { cookie_id: 'kept-out' } }]);
    await crm.folded(1);
    const profile = (await web.lookup('cookie_id', 'kept-out')).body;
    expect(profile.counters.order.count).toBe(1);
    expect(profile.traits.tier).toBe('gold');
    expect(profile.counters.crm_record.count).toBe(1);
    // The held order's device id leads to the profile that held it, without being on it: a later
    // event bringing it alone is held there too.
    const byDevice = (await web.lookup('maid', device)).body;
    expect(byDevice.id).toBe(profile.id);
    expect(byDevice.identities.map((identity: { value: string }) => identity.value)).not.toContain(device);
    await server.send([{ id: 'k-4b', type: 'order', timestamp: later(2), identities: { maid: device } }]);
    await server.folded(4);
    expect((await web.lookup('cookie_id', 'kept-out')).body.counters.order.count).toBe(1);
    // An order showing the withdrawn cookie with their account joins the account's profile to them:
    // the person's consent is then the most restrictive of their documents', which segments with
    // consent rules and exports read. The hold reads one document: the order goes to the account's
    // (a CRM id outranks a cookie), which consented, and is folded there.
    await server.send([{ id: 'k-4c', type: 'order', timestamp: later(2), identities: { cookie_id: 'kept-out', crm_id: 'their-account' } }]);
    const person = await waitFor('the account joined to the withdrawn profile', async () => {
      const view = (await web.lookup('crm_id', 'their-account')).body;
      return view.profileIds.includes(profile.id) ? view : null;
    });
    expect(person.consent.tcf.purposeConsents).toEqual([1]);
    await server.folded(5);
    expect((await web.lookup('crm_id', 'their-account')).body.counters.order.count).toBe(3);

    // Consent given again on the site: the server's next order counts — the person's fourth, two of them the account's.
    await web.send([{ id: 'k-6', type: 'page_view', timestamp: later(4), identities: { cookie_id: 'kept-out' }, consent: { tcf: buildTcString({ purposeConsents: [1, 3, 4] }) } }]);
    await web.folded(2);
    await server.send([{ id: 'k-7', type: 'order', timestamp: later(5), identities: { cookie_id: 'kept-out' } }]);
    await server.folded(6);
    expect((await web.lookup('cookie_id', 'kept-out')).body.counters.order.count).toBe(4);
  });

  it('keeps a TCF withdrawal standing against later messages whose consent holds only other kinds: Segment consent categories, a GPP string without a US section', async () => {
    const { api } = platform;
    const web = await newSource(api, 'eu-web-2', { consent: { mode: 'require' } });
    const app = await newSource(api, 'eu-app');
    const segment = (await call(`${api.url}/v1/segments`, { key: api.adminKey, body: { name: 'Ads profiling allowed (2)', rule: { consent: { purpose: 3 } } } })).body;
    const members = async () => (await call(`${api.url}/v1/segments/${segment.id}/members`, { key: api.adminKey })).body.members as string[];
    const later = (seconds: number) => new Date(Date.now() + seconds * 1000).toISOString();
    await web.send([{ id: 'p-1', type: 'page_view', identities: { cookie_id: 'partial-later' }, consent: { tcf: buildTcString({ purposeConsents: [1, 3, 4] }) } }]);
    await web.folded(1);
    const id = (await web.lookup('cookie_id', 'partial-later')).body.id;
    await waitFor('the member to enter', async () => (await members()).includes(id));
    await web.send([{ id: 'p-2', type: 'page_view', timestamp: later(1), identities: { cookie_id: 'partial-later' }, consent: { tcf: buildTcString({ purposeConsents: [1] }) } }]);
    await waitFor('the withdrawal on the profile', async () => (await web.lookup('cookie_id', 'partial-later')).body.consent?.tcf?.purposeConsents?.length === 1);

    // The app's Segment SDK sends its consent categories only, then a GPP string with a Canadian section alone.
    const basic = `Basic ${Buffer.from(`${app.writeKey}:`).toString('base64')}`;
    const track = (messageId: string, timestamp: string, consent: object) =>
      fetch(`${api.url}/v1/track`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: basic },
        body: JSON.stringify({ messageId, anonymousId: 'partial-later', event: 'Order Completed', timestamp, context: { consent } }),
      });
    const canada = new GppModel();
    canada.setFieldValue('tcfcav1', 'CmpId', 31);
    expect((await track('p-3', later(2), { categoryPreferences: { Analytics: true } })).status).toBe(200);
    expect((await track('p-4', later(3), { gpp: canada.encode() })).status).toBe(200);
    // Even a flag the app's policy reads, granting, says nothing about TCF: the withdrawal still stands.
    expect((await track('p-5', later(4), { categoryPreferences: { Profiling: true } })).status).toBe(200);
    await app.folded(3);
    const profile = (await web.lookup('cookie_id', 'partial-later')).body;
    expect(profile.consent.tcf.purposeConsents).toEqual([1]);
    expect(profile.consent.purposes).toEqual({ analytics: true, profiling: true });
    // All three were held to the withdrawal; their consent signals were kept.
    expect(profile.counters['Order Completed']).toBeUndefined();
    await waitFor('the member to exit', async () => !(await members()).includes(id));
  });

  it("takes a browser's Global Privacy Control (Sec-GPC: 1) on the tag and the Segment routes as an opt-out, until a request without it states consent again", async () => {
    const { api } = platform;
    const site = await newSource(api, 'us-site');
    const tag = (headers: Record<string, string>, event: object) =>
      fetch(`${api.url}/v1/tag/events?writeKey=${site.writeKey}`, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8', ...headers }, body: JSON.stringify({ events: [event] }) });
    const visit = (id: string, seconds: number, consent?: object) => ({ id, type: 'page_view', timestamp: new Date(Date.now() + seconds * 1000).toISOString(), identities: { cookie_id: 'gpc-browser' }, ...(consent && { consent }) });
    expect(await (await tag({}, visit('g-1', 0))).json()).toMatchObject({ accepted: 1, nonProfiling: 0 });
    await site.folded(1);
    expect(await (await tag({ 'sec-gpc': '1' }, visit('g-2', 1))).json()).toMatchObject({ accepted: 1, nonProfiling: 1 });
    await waitFor('the opt-out on the profile', async () => (await site.lookup('cookie_id', 'gpc-browser')).body.consent?.gpc === true);
    // The Segment routes, as analytics.js posts from the page.
    const segment = await fetch(`${api.url}/v1/track`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'sec-gpc': '1', authorization: `Basic ${Buffer.from(`${site.writeKey}:`).toString('base64')}` },
      body: JSON.stringify({ messageId: 'g-3', anonymousId: 'gpc-browser', event: 'Order Completed' }),
    });
    expect(await segment.json()).toMatchObject({ success: true, accepted: 1, nonProfiling: 1 });
    // Held out meanwhile: a page view without a signal is held to the opt-out.
    await tag({}, visit('g-4', 2));
    await site.folded(2);
    expect((await site.lookup('cookie_id', 'gpc-browser')).body.counters.page_view.count).toBe(1);
    // The browser stopped sending it, and its consent tool speaks: the opt-out ends, and the visit counts.
    const noOptOut = new GppModel();
    noOptOut.setFieldValue('usnat', 'SaleOptOutNotice', 1);
    noOptOut.setFieldValue('usnat', 'SaleOptOut', 2);
    expect(await (await tag({}, visit('g-5', 3, { gpp: noOptOut.encode() }))).json()).toMatchObject({ accepted: 1, nonProfiling: 0 });
    await site.folded(3);
    const profile = (await site.lookup('cookie_id', 'gpc-browser')).body;
    expect(profile.consent.gpc).toBe(false);
    expect(profile.counters.page_view.count).toBe(2);
    const status = (await call(`${api.url}/v1/sources/${site.sourceId}`, { key: api.adminKey })).body;
    expect(status.progress.eventsNonProfiling.gpp_opt_out).toBe(2);
  });

  it('profiles events without a signal on a source whose policy enforces only the signals present', async () => {
    const { api } = platform;
    const source = await newSource(api, 'us-app');
    const response = await source.send([
      { type: 'app_open', identities: { cookie_id: 'plain' } },
      { type: 'app_open', identities: { cookie_id: 'opted-out' }, consent: { gpp: usnatOptOut() } },
    ]);
    expect(response.body).toMatchObject({ accepted: 2, nonProfiling: 1 });
    await source.folded(1);
    expect((await source.lookup('cookie_id', 'plain')).status).toBe(200);
    expect((await source.lookup('cookie_id', 'opted-out')).status).toBe(404);
  });

  it('rejects a TC string under a policy version before TCF v2.2 and an unreadable GPP string, naming the field', async () => {
    const source = await newSource(platform.api, 'strict');
    const response = await source.send([
      { type: 'page_view', identities: { cookie_id: 'old' }, consent: { tcf: buildTcString({ purposeConsents: [1, 3], policyVersion: 2 }) } },
      { type: 'page_view', identities: { cookie_id: 'bad-gpp' }, consent: { gpp: 'DBABMA~garbage' } },
    ]);
    expect(response.status).toBe(202);
    expect(response.body.accepted).toBe(0);
    expect(response.body.rejected.map((r: { errors: Array<{ path: string }> }) => r.errors[0].path)).toEqual(['consent.tcf', 'consent.gpp']);
  });

  it('refuses a source whose consent policy is invalid, naming the field', async () => {
    const { api } = platform;
    const response = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'x', kind: 'events', party: 'first', consent: { mode: 'sometimes' } } });
    expect(response.status).toBe(400);
    expect(response.body.errors.map((e: { path: string }) => e.path)).toEqual(['consent.mode']);
  });
});
