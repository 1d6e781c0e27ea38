import { get } from 'node:http';
import { GppModel } from '@iabgpp/cmpapi';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { sha256Hex } from '../../domain/identity';
import { ChannelRejections } from '../../store/channelRejections';
import { startBrowserSite, type BrowserSite } from '../support/browserSite';
import { call } from '../support/http';
import { startPlatform, waitFor, type RunningPlatform } from '../support/services';
import { buildTcString } from '../unit/tcfFixture';

const TAG_COOKIE = '_dmp_id';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The queueing stub the tag's header documents, as a site pastes it. */
const STUB = `window.dmp=window.dmp||{q:[]};['track','identify','page'].forEach(function(m){dmp[m]=dmp[m]||function(){dmp.q.push([m,[].slice.call(arguments)])}})`;

/** What a TCF CMP tells its `addEventListener` callbacks, and when. */
interface TcfAnswer {
  tcString: string;
  purposeConsents: number[];
  delayMs: number;
  eventStatus?: string;
  vendorConsents?: number[];
  /** The publisher's restrictions as the CMP API gives them: purpose → vendor → restriction type. */
  restrictions?: Record<number, Record<number, number>>;
}

/** A TCF CMP on the page: answers `addEventListener` after `delayMs` with the given TC string, as a real one would — or with each of `later` in turn. */
function tcfCmp(tcString: string, purposeConsents: number[], delayMs: number, eventStatus = 'tcloaded', later: TcfAnswer[] = []): string {
  return tcfCmpAnswering([{ tcString, purposeConsents, delayMs, eventStatus }, ...later]);
}

function tcfCmpAnswering(answers: TcfAnswer[]): string {
  const calls = answers.map((answer) => {
    const consents = Object.fromEntries(answer.purposeConsents.map((purpose) => [purpose, true]));
    const vendors = Object.fromEntries((answer.vendorConsents ?? []).map((vendor) => [vendor, true]));
    const data = {
      tcString: answer.tcString,
      gdprApplies: true,
      eventStatus: answer.eventStatus ?? 'tcloaded',
      cmpStatus: 'loaded',
      listenerId: 1,
      purpose: { consents, legitimateInterests: {} },
      vendor: { consents: vendors, legitimateInterests: {} },
      publisher: { consents: {}, legitimateInterests: {}, restrictions: answer.restrictions ?? {} },
    };
    return `setTimeout(function(){callback(${JSON.stringify(data)},true)},${answer.delayMs});`;
  });
  return `window.__tcfapi=function(command,version,callback){if(command==='addEventListener'){${calls.join('')}}};`;
}

/**
 * A GPP CMP (v1.1): `ping` and `addEventListener` report the GPP string once its signal is ready.
 * `updating`: 100 ms later its listener hears it start again (the visitor choosing anew), not ready, with an interim string.
 * `applicableSections`: the sections in force it says (every section of the string unless given).
 */
function gppCmp(gppString: string, updating?: string, applicableSections?: number[]): string {
  const model = new GppModel(gppString);
  const ping = { gppVersion: '1.1', cmpStatus: 'loaded', signalStatus: 'ready', applicableSections: applicableSections ?? model.getSectionIds(), gppString, parsedSections: model.toObject() };
  const again = updating ? `setTimeout(function(){callback({eventName:'signalStatus',listenerId:1,data:'not ready',pingData:Object.assign({},ping,{signalStatus:'not ready',gppString:${JSON.stringify(updating)}})},true)},100);` : '';
  return `window.__gpp=function(command,callback){var ping=${JSON.stringify(ping)};if(command==='ping')callback(ping,true);if(command==='addEventListener'){callback({eventName:'signalStatus',listenerId:1,data:'ready',pingData:ping},true);${again}}};`;
}

interface Beacon {
  contentType: string;
  sentAt?: string;
  events: Array<{ id: string; type: string; timestamp?: string; identities: Record<string, string>; properties?: Record<string, unknown>; traits?: Record<string, unknown>; consent?: Record<string, unknown> }>;
}

describe('the JS tag in Chromium, on a site of another origin', () => {
  let platform: RunningPlatform;
  let browser: Browser;
  let site: BrowserSite;
  let siteUrl: string;
  const refusedTc = buildTcString({ purposeConsents: [3, 4] });
  const grantedTc = buildTcString({ purposeConsents: [1, 3, 4] });
  const gppString = (() => {
    const model = new GppModel();
    model.setFieldValue('usnat', 'SaleOptOut', 2);
    return model.encode();
  })();

  /** A string of a CMP serving both regions: an EU section refusing storage and profiling, and a US National section that did not opt out. */
  const bothRegions = (() => {
    const model = new GppModel();
    model.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [3], isServiceSpecific: true }));
    model.setFieldValue('usnat', 'SaleOptOut', 2);
    return model.encode();
  })();

  /** TC strings for vendor 755: consented; consented but barred from purpose 1 by the publisher; not consented (another vendor is). */
  const vendorTc = {
    ok: buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [755], isServiceSpecific: true }),
    barred: buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [755], isServiceSpecific: true, publisherRestrictions: [{ purpose: 1, type: 'not_allowed', vendors: [755] }] }),
    other: buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [10], gvlVendors: [10, 755], isServiceSpecific: true }),
  };
  /** A GPP string whose only section is the TC string, as a GPP-only CMP carries it. */
  const gppOf = (tcString: string) => {
    const model = new GppModel();
    model.decodeSection('tcfeuv2', tcString);
    return model.encode();
  };

  /** The site's pages; `k` in the page's query is the source's write key. */
  function page(path: string, writeKey: string): string | null {
    const tag = `<script async src="${platform.api.url}/v1/tag.js?writeKey=${encodeURIComponent(writeKey)}"></script>`;
    switch (path) {
      case '/shop/first.html':
        return `<!doctype html><html><head><title>First page</title><script>${STUB}</script>${tag}
          <script>dmp.track('add_to_cart', { sku: 'A1', price: 12.5 }); dmp.identify({ email: ' Jane.Doe@Example.com ' }, { plan: 'pro' });</script>
          </head><body><a id="next" href="/shop/second.html?k=${writeKey}">next</a></body></html>`;
      case '/shop/second.html':
        return `<!doctype html><html><head><title>Second page</title>${tag}</head><body>second</body></html>`;
      case '/eu/refused.html':
        return `<!doctype html><html><head><title>No consent</title><script>${tcfCmp(refusedTc, [3, 4], 100)}${STUB}</script>${tag}
          <script>dmp.track('article_read', { section: 'news' });</script></head><body>eu</body></html>`;
      case '/eu/granted.html':
        return `<!doctype html><html><head><title>Consent</title><script>${tcfCmp(grantedTc, [1, 3, 4], 300)}${gppCmp(gppString)}${STUB}</script>${tag}
          <script>dmp.track('article_read', { section: 'sport' });</script></head><body>eu</body></html>`;
      case '/eu/late-cmp.html':
        // A tag manager's order: the CMP's stub arrives only after the tag has loaded (and before its first send).
        return `<!doctype html><html><head><title>Late CMP</title><script>${STUB}</script>${tag}
          <script>(function wait(){if(window.dmp&&window.dmp.loaded)setTimeout(function(){${tcfCmp(refusedTc, [3, 4], 100)}},200);else setTimeout(wait,10)})();</script></head><body>eu</body></html>`;
      case '/eu/undecided.html':
        return `<!doctype html><html><head><title>Undecided</title><script>${tcfCmp('', [], 10, 'cmpuishown')}</script>${tag}</head><body>eu</body></html>`;
      case '/eu/blocked.html':
        // A CMP stub whose script never loads: `__tcfapi` is there, and never answers.
        return `<!doctype html><html><head><title>Blocked CMP</title><script>window.__tcfapi=function(){};</script>${tag}</head><body>eu</body></html>`;
      case '/eu/deciding.html':
        // The banner is up at once; the visitor accepts after 2.5 s.
        return `<!doctype html><html><head><title>Deciding</title><script>${tcfCmp('', [], 10, 'cmpuishown', [{ tcString: grantedTc, purposeConsents: [1, 3, 4], delayMs: 2500, eventStatus: 'useractioncomplete' }])}</script>${tag}</head><body>eu</body></html>`;
      case '/us/gpp-1-0.html':
        // A GPP 1.0 CMP: its ping says it has loaded, and carries no GPP string.
        return `<!doctype html><html><head><title>GPP 1.0</title><script>window.__gpp=function(command,callback){if(command==='ping')callback({gppVersion:'1.0',cmpStatus:'loaded',cmpDisplayStatus:'hidden',apiSupport:['uspv1'],currentAPI:'uspv1'},true)};</script>${tag}</head><body>us</body></html>`;
      case '/eu/gpp-stub.html':
        // A GPP CMP's stub whose script never loads, the only CMP on the page: its ping says it is not ready yet.
        return `<!doctype html><html><head><title>GPP stub</title><script>window.__gpp=function(command,callback){var ping={gppVersion:'1.1',cmpStatus:'stub',signalStatus:'not ready',gppString:'',applicableSections:[-1],parsedSections:{}};if(command==='ping')callback(ping,true)};</script>${tag}</head><body>eu</body></html>`;
      case '/us/gpp-both-regions.html':
        // A US visitor: the CMP says only the US National section is in force.
        return `<!doctype html><html><head><title>GPP both regions</title><script>${gppCmp(bothRegions, undefined, [7])}</script>${tag}</head><body>us</body></html>`;
      case '/us/gpp-updating.html':
        return `<!doctype html><html><head><title>GPP updating</title><script>${gppCmp(gppString, 'DBAA')}</script>${tag}</head><body>us</body></html>`;
      case '/us/gpp-loading.html':
        // A GPP CMP still loading its settings: its ping already carries a string, empty ("DBAA", as the IAB's cmpapi encodes no section), not yet the visitor's.
        return `<!doctype html><html><head><title>GPP loading</title><script>window.__gpp=function(command,callback){var ping={gppVersion:'1.1',cmpStatus:'loaded',signalStatus:'not ready',gppString:'DBAA',applicableSections:[-1],parsedSections:{}};if(command==='ping')callback(ping,true);if(command==='addEventListener')callback({eventName:'listenerRegistered',listenerId:1,data:true,pingData:ping},true)};</script>${tag}</head><body>us</body></html>`;
      case '/us/not-applicable.html':
        // A TCF CMP that tells a visitor outside the EU the GDPR does not apply to them.
        return `<!doctype html><html><head><title>Not applicable</title><script>window.__tcfapi=function(command,version,callback){if(command==='addEventListener')setTimeout(function(){callback({tcString:'',gdprApplies:false,eventStatus:'tcloaded',cmpStatus:'loaded',listenerId:1},true)},50)};</script>${tag}</head><body>us</body></html>`;
      case '/eu/vendor-ok.html':
        return `<!doctype html><html><head><title>Vendor</title><script>${tcfCmpAnswering([{ tcString: vendorTc.ok, purposeConsents: [1, 3, 4], vendorConsents: [755], delayMs: 10 }])}</script>${tag}</head><body>eu</body></html>`;
      case '/eu/vendor-barred.html':
        return `<!doctype html><html><head><title>Vendor</title><script>${tcfCmpAnswering([{ tcString: vendorTc.barred, purposeConsents: [1, 3, 4], vendorConsents: [755], restrictions: { 1: { 755: 0 } }, delayMs: 10 }])}</script>${tag}</head><body>eu</body></html>`;
      case '/eu/vendor-other.html':
        return `<!doctype html><html><head><title>Vendor</title><script>${tcfCmpAnswering([{ tcString: vendorTc.other, purposeConsents: [1, 3, 4], vendorConsents: [10], delayMs: 10 }])}</script>${tag}</head><body>eu</body></html>`;
      case '/eu/gpp-vendor-ok.html':
        return `<!doctype html><html><head><title>Vendor</title><script>${gppCmp(gppOf(vendorTc.ok))}</script>${tag}</head><body>eu</body></html>`;
      case '/eu/gpp-vendor-barred.html':
        return `<!doctype html><html><head><title>Vendor</title><script>${gppCmp(gppOf(vendorTc.barred))}</script>${tag}</head><body>eu</body></html>`;
      case '/eu/slow.html':
        // A returning visitor's CMP that takes 3 s to load their stored choice.
        return `<!doctype html><html><head><title>Slow CMP</title><script>${tcfCmp(grantedTc, [1, 3, 4], 3000)}</script>${tag}</head><body>eu</body></html>`;
      default:
        return null;
    }
  }

  beforeAll(async () => {
    platform = await startPlatform('tag');
    site = await startBrowserSite((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const html = page(url.pathname, url.searchParams.get('k') ?? '');
      res.writeHead(html ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' }).end(html ?? 'not found');
    });
    ({ browser, url: siteUrl } = site);
  });
  afterAll(async () => {
    await site?.close();
    await platform?.stop();
  });

  async function createSource(name: string, extra: Record<string, unknown> = {}): Promise<{ id: string; writeKey: string }> {
    return (await call(`${platform.api.url}/v1/sources`, { key: platform.api.adminKey, body: { name, kind: 'events', party: 'first', ...extra } })).body;
  }
  const status = async (id: string) => (await call(`${platform.api.url}/v1/sources/${id}`, { key: platform.api.adminKey })).body;
  const lookup = (type: string, value: string) => call(`${platform.api.url}/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`, { key: platform.api.adminKey });

  /** Script errors on any page: the tag must raise none. */
  const pageErrors: string[] = [];
  afterEach(() => {
    expect(pageErrors.splice(0)).toEqual([]);
  });

  /** Every batch the tag sends from this context, as the browser sent it. */
  function recordBeacons(context: BrowserContext): Beacon[] {
    const beacons: Beacon[] = [];
    context.on('weberror', (error) => pageErrors.push(error.error().message));
    context.on('request', (request) => {
      if (request.method() === 'POST' && request.url().startsWith(`${platform.api.url}/v1/tag/events`)) {
        const body = JSON.parse(request.postData() ?? '{}');
        beacons.push({ contentType: request.headers()['content-type'] ?? '', sentAt: body.sentAt, events: body.events });
      }
    });
    return beacons;
  }
  const sent = (beacons: Beacon[]) => beacons.flatMap((beacon) => beacon.events);
  const tagCookies = async (context: BrowserContext) => (await context.cookies()).filter((cookie) => cookie.name === TAG_COOKIE);
  const waitForEvents = (beacons: Beacon[], count: number) => waitFor(`${count} events sent`, async () => sent(beacons).length >= count, 15_000, 100);
  /** The page is hidden (the visitor switches tabs): the tag sends what it holds. */
  const hide = (tab: Page) => tab.evaluate("Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true }); document.dispatchEvent(new Event('visibilitychange'))");
  /** A page of the site with a new source's tag, hidden once loaded (and `settleMs` after): the source, its context, and what the tag sent. */
  const sentOnHide = async (name: string, path: string, settleMs = 0) => {
    const source = await createSource(name);
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}${path}?k=${source.writeKey}`);
    if (settleMs > 0) await tab.waitForTimeout(settleMs);
    await hide(tab);
    await waitForEvents(beacons, 1);
    return { source, context, events: sent(beacons) };
  };

  it('sends page views with url, referrer and title, queued track and identify calls, and keeps its cookie across page loads', async () => {
    const source = await createSource('site');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab: Page = await context.newPage();
    const firstUrl = `${siteUrl}/shop/first.html?k=${source.writeKey}`;
    await tab.goto(firstUrl);
    await waitForEvents(beacons, 3);
    await tab.click('#next');
    await tab.waitForURL(/second\.html/);
    await waitForEvents(beacons, 4);
    await context.close();

    expect(beacons.every((beacon) => beacon.contentType.startsWith('text/plain'))).toBe(true);
    const events = sent(beacons);
    expect(events.map((event) => event.type)).toEqual(['page_view', 'add_to_cart', 'identify', 'page_view']);
    const cookieIds = new Set(events.map((event) => event.identities.cookie_id));
    expect(cookieIds.size).toBe(1);
    const [cookieId] = cookieIds;
    expect(cookieId).toMatch(UUID);
    expect(events[0].properties).toEqual({ url: firstUrl, referrer: '', title: 'First page' });
    expect(events[1].properties).toEqual({ sku: 'A1', price: 12.5 });
    expect(events[2]).toMatchObject({ identities: { cookie_id: cookieId, email: ' Jane.Doe@Example.com ' }, traits: { plan: 'pro' } });
    expect(events[3].properties).toEqual({ url: `${siteUrl}/shop/second.html?k=${source.writeKey}`, referrer: firstUrl, title: 'Second page' });
    expect(events.every((event) => event.consent === undefined)).toBe(true);

    await waitFor('the events folded', async () => (await status(source.id)).profiles.eventsApplied >= 4);
    const byCookie = await lookup('cookie_id', cookieId);
    expect(byCookie.status).toBe(200);
    expect(byCookie.body.counters.page_view.count).toBe(2);
    expect(byCookie.body.counters.add_to_cart.count).toBe(1);
    expect(byCookie.body.traits.plan).toBe('pro');
    expect(byCookie.body.identities).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'email_sha256', value: sha256Hex('jane.doe@example.com') })]));
    const byEmail = await lookup('email', 'jane.doe@example.com');
    expect(byEmail.body.id).toBe(byCookie.body.id);
  });

  it('cuts a long page URL short of an email address it would have cut through, so no part of the address is sent', async () => {
    const source = await createSource('long urls');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab: Page = await context.newPage();
    const start = `${siteUrl}/shop/first.html?k=${source.writeKey}&pad=`;
    // The 1,024th character falls inside the domain of one address, and inside the local part of the other.
    const inDomain = `${start}${'x'.repeat(1024 - start.length - '&to=jane.doe@exa'.length)}&to=jane.doe@example.com`;
    const inLocalPart = `${start}${'x'.repeat(1024 - start.length - '&to=jane.d'.length)}&to=jane.doe@example.com`;
    // Percent-encoded, with the cut between the `%` and the `40`.
    const inEscape = `${start}${'x'.repeat(1024 - start.length - '&to=jane.doe%'.length)}&to=jane.doe%40example.com`;
    const pageViews = () => sent(beacons).filter((event) => event.type === 'page_view');
    for (const [n, url] of [inDomain, inLocalPart, inEscape].entries()) {
      await tab.goto(url);
      await waitFor('the page view sent', async () => pageViews().length > n, 15_000, 100);
    }
    await context.close();
    const urls = pageViews().map((event) => event.properties?.url as string);
    expect(urls).toEqual([inDomain, inLocalPart, inEscape].map((url) => url.slice(0, url.indexOf('&to=') + 4)));
  });

  it("corrects a browser clock days off: each batch's sentAt moves its events' times onto the server's clock", async () => {
    const source = await createSource('skewed');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    const skewMs = 3 * 24 * 3600 * 1000;
    await tab.clock.setSystemTime(new Date(Date.now() - skewMs));
    await tab.goto(`${siteUrl}/shop/second.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 1);
    const sentBack = Date.now();
    await context.close();
    const [beacon] = beacons;
    const [event] = beacon.events;
    // As the browser stamped them, both days behind; the batch's sentAt and the event's time agree.
    expect(sentBack - Date.parse(beacon.sentAt as string)).toBeGreaterThan(skewMs - 60_000);
    expect(Math.abs(Date.parse(beacon.sentAt as string) - Date.parse(event.timestamp as string))).toBeLessThan(60_000);
    await waitFor('the event folded', async () => (await status(source.id)).profiles.eventsApplied >= 1);
    const profile = (await lookup('cookie_id', event.identities.cookie_id)).body;
    const stored = (await call(`${platform.api.url}/v1/profiles/${profile.id}/events`, { key: platform.api.adminKey })).body.events;
    expect(stored.map((one: { id: string }) => one.id)).toEqual([event.id]);
    expect(Math.abs(Date.parse(stored[0].timestamp) - sentBack)).toBeLessThan(60_000);
  });

  it('keeps the cookie for a later visit', async () => {
    const source = await createSource('returning');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}/shop/second.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 1);
    const [cookie] = await tagCookies(context);
    expect(cookie).toMatchObject({ domain: 'localhost', path: '/', sameSite: 'Lax', httpOnly: false });
    // Thirteen months, within the few seconds the test takes.
    expect(cookie.expires * 1000 - Date.now()).toBeGreaterThan(395 * 24 * 3600 * 1000 - 60_000);
    await tab.reload();
    await waitForEvents(beacons, 2);
    await context.close();
    expect(sent(beacons).map((event) => event.identities.cookie_id)).toEqual([cookie.value, cookie.value]);
  });

  it('no consent ⇒ no profiling: where the GDPR applies without purpose 1 it sets no cookie, and its events are not profiled', async () => {
    const source = await createSource('eu site');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    const url = `${siteUrl}/eu/refused.html?k=${source.writeKey}`;
    await tab.goto(url);
    await waitForEvents(beacons, 2);
    await tab.reload();
    await waitForEvents(beacons, 4);
    expect(await tagCookies(context)).toEqual([]);
    await context.close();

    const events = sent(beacons);
    expect(events.every((event) => (event.consent as { tcf: string }).tcf === refusedTc)).toBe(true);
    // An id per page only: the two loads do not share one.
    expect(events[0].identities.cookie_id).toMatch(UUID);
    expect(events[0].identities.cookie_id).toBe(events[1].identities.cookie_id);
    expect(events[2].identities.cookie_id).toBe(events[3].identities.cookie_id);
    expect(events[0].identities.cookie_id).not.toBe(events[2].identities.cookie_id);

    const drained = await waitFor('the events drained as non-profiling', async () => {
      const body = await status(source.id);
      return body.progress?.eventsNonProfiling?.tcf_purpose === 4 ? body : undefined;
    });
    expect(drained.progress.eventsProcessed).toBe(0);
    expect((await lookup('cookie_id', events[0].identities.cookie_id)).status).toBe(404);
  });

  it('finds a CMP whose stub came after the tag, and waits for it: no consent, no cookie', async () => {
    const source = await createSource('eu site, late CMP');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}/eu/late-cmp.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 1);
    expect(await tagCookies(context)).toEqual([]);
    await context.close();
    const [event] = sent(beacons);
    expect(event.consent).toEqual({ tcf: refusedTc });
    expect(event.identities.cookie_id).toMatch(UUID);
  });

  it('with consent, waits for the CMP, sets its cookie and attaches {tcf, gpp} to every event', async () => {
    const source = await createSource('eu site, consent');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}/eu/granted.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 2);
    const [cookie] = await tagCookies(context);
    await context.close();

    const events = sent(beacons);
    expect(events.map((event) => event.consent)).toEqual([
      { tcf: grantedTc, gpp: gppString, gppSid: [7] },
      { tcf: grantedTc, gpp: gppString, gppSid: [7] },
    ]);
    expect(events.map((event) => event.identities.cookie_id)).toEqual([cookie.value, cookie.value]);
    await waitFor('the events folded', async () => (await status(source.id)).profiles.eventsApplied >= 2);
    const profile = await lookup('cookie_id', cookie.value);
    expect(profile.status).toBe(200);
    expect(profile.body.consent.tcf.purposeConsents).toEqual([1, 3, 4]);
  });

  it("needs the source's vendor consented, and not barred from purpose 1 by the publisher, for its cookie: from a TCF CMP or a GPP string's EU section", async () => {
    const source = await createSource('eu site, vendor', { consent: { tcfVendorId: 755 } });
    const served = await fetch(`${platform.api.url}/v1/tag.js?writeKey=${source.writeKey}`);
    const generic = await fetch(`${platform.api.url}/v1/tag.js?writeKey=unknown`);
    expect(await served.text()).toContain('var VENDOR_ID = 755;');
    expect(await generic.text()).toContain('var VENDOR_ID = /*tcfVendorId*/ null;');
    expect(served.headers.get('etag')).not.toBe(generic.headers.get('etag'));
    const cookieSet = async (path: string, writeKey: string) => {
      const context = await browser.newContext();
      const beacons = recordBeacons(context);
      const tab = await context.newPage();
      await tab.goto(`${siteUrl}${path}?k=${writeKey}`);
      await waitForEvents(beacons, 1);
      const cookies = await tagCookies(context);
      await context.close();
      return cookies.length === 1 && cookies[0].value === sent(beacons)[0].identities.cookie_id;
    };
    const pages = ['/eu/vendor-ok.html', '/eu/vendor-barred.html', '/eu/vendor-other.html', '/eu/gpp-vendor-ok.html', '/eu/gpp-vendor-barred.html'];
    const outcomes: Record<string, boolean> = {};
    for (const path of pages) outcomes[path] = await cookieSet(path, source.writeKey);
    expect(outcomes).toEqual({ '/eu/vendor-ok.html': true, '/eu/vendor-barred.html': false, '/eu/vendor-other.html': false, '/eu/gpp-vendor-ok.html': true, '/eu/gpp-vendor-barred.html': false });
    // A source naming no vendor speaks for none: a restriction of some vendor leaves its cookie alone.
    const plain = await createSource('eu site, no vendor');
    expect(await cookieSet('/eu/vendor-barred.html', plain.writeKey)).toBe(true);
  });

  it('serves the script as JavaScript, cacheable, and revalidates by ETag', async () => {
    const first = await fetch(`${platform.api.url}/v1/tag.js?writeKey=any`);
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toBe('application/javascript; charset=utf-8');
    expect(first.headers.get('cache-control')).toBe('public, max-age=3600');
    expect(await first.text()).toContain('navigator.sendBeacon');
    // node:http, not fetch: fetch marks a request with its own If-None-Match `no-cache`.
    const again = await new Promise<number | undefined>((resolve, reject) => {
      get(`${platform.api.url}/v1/tag.js?writeKey=any`, { headers: { 'if-none-match': first.headers.get('etag') ?? '' } }, (response) => {
        response.resume();
        resolve(response.statusCode);
      }).on('error', reject);
    });
    expect(again).toBe(304);
  });

  it('documents the script and its endpoint, with every status the endpoint answers, in the OpenAPI', async () => {
    const doc = (await call(`${platform.api.url}/openapi.json`)).body;
    expect(Object.keys(doc.paths['/v1/tag.js'].get.responses['200'].content)).toEqual(['application/javascript']);
    const post = doc.paths['/v1/tag/events'].post;
    expect(Object.keys(post.requestBody.content)).toEqual(['text/plain', 'application/json']);
    expect(Object.keys(post.responses).sort()).toEqual(['202', '400', '401', '413', '415', '503']);
  });

  it("the tag's endpoint answers CORS, refuses bad batches with problems naming the field, and counts them on the source", async () => {
    const source = await createSource('tag endpoint');
    const endpoint = `${platform.api.url}/v1/tag/events?writeKey=${source.writeKey}`;
    const post = async (body: string, contentType = 'text/plain;charset=UTF-8', url = endpoint) => {
      const response = await fetch(url, { method: 'POST', headers: { 'content-type': contentType }, body });
      return { status: response.status, cors: response.headers.get('access-control-allow-origin'), contentType: response.headers.get('content-type') ?? '', body: (await response.json()) as any };
    };
    const event = (n: number) => ({ type: 'page_view', identities: { cookie_id: `cookie-${n}-0123456789abcdef` } });

    const preflight = await fetch(endpoint, { method: 'OPTIONS', headers: { origin: siteUrl, 'access-control-request-method': 'POST' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*');

    const good = await post(JSON.stringify({ events: [event(1), { type: 'page_view', identities: { fax: '1' } }] }));
    expect(good).toMatchObject({ status: 202, cors: '*', body: { accepted: 1, duplicates: 0, rejected: [{ index: 1 }] } });

    const refusals: Array<[Awaited<ReturnType<typeof post>>, number, string, string]> = [
      [await post('{"events": ['), 400, 'malformed-json', '(body)'],
      [await post(JSON.stringify({ events: 'many' })), 400, 'validation', 'events'],
      [await post(JSON.stringify({ events: Array.from({ length: 1001 }, (_, n) => event(n)) })), 400, 'validation', 'events'],
      [await post('x'.repeat(1_100_000)), 413, 'body-too-large', '(body)'],
      [await post('events=1', 'application/x-www-form-urlencoded'), 415, 'unsupported-media-type', 'headers.content-type'],
    ];
    for (const [response, code, type, path] of refusals) {
      expect(response).toMatchObject({ status: code, cors: '*', body: { type: `/problems/${type}` } });
      expect(response.contentType).toMatch(/^application\/problem\+json/);
      expect(response.body.errors.map((error: { path: string }) => error.path)).toContain(path);
    }
    const unknown = await post(JSON.stringify({ events: [event(2)] }), undefined, `${platform.api.url}/v1/tag/events?writeKey=wk_unknown`);
    expect(unknown).toMatchObject({ status: 401, cors: '*', body: { type: '/problems/unknown-write-key' } });
    const missing = await post(JSON.stringify({ events: [event(2)] }), undefined, `${platform.api.url}/v1/tag/events`);
    expect(missing.status).toBe(401);
    expect(missing.body.errors[0].path).toBe('query.writeKey');

    const rejections = new ChannelRejections(platform.store);
    try {
      // The refused event and the five refused batches; the 401s have no source to count on.
      const totals = await waitFor('the rejections flushed', async () => {
        const found = await rejections.totalsFor(source.id);
        return found.total.tag === 6 ? found : undefined;
      });
      expect(totals.total.pixel).toBe(0);
      expect(totals.last?.errors[0].path).toBe('headers.content-type');
    } finally {
      await rejections.close();
    }
  });

  it("reads the tag's no-decision mark as the visitor not having decided, whatever purpose flag the source names, and keeps them out of profiles", async () => {
    const source = (await call(`${platform.api.url}/v1/sources`, { key: platform.api.adminKey, body: { name: 'own flag', kind: 'events', party: 'first', consent: { mode: 'when_present', purposeFlag: 'personalised_ads' } } })).body;
    // What the tag sends where the GDPR applies and no TC string consents.
    const response = await fetch(`${platform.api.url}/v1/tag/events?writeKey=${source.writeKey}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain;charset=UTF-8' },
      body: JSON.stringify({ events: [{ type: 'page_view', identities: { cookie_id: 'cookie-own-flag-0123456789' }, consent: { purposes: { profiling: false } } }] }),
    });
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({ accepted: 1, nonProfiling: 1 });
    await waitFor('the event drained as non-profiling', async () => (await status(source.id)).progress?.eventsNonProfiling?.tcf_pending === 1);
    expect((await lookup('cookie_id', 'cookie-own-flag-0123456789')).status).toBe(404);
  });

  it("lets a profile's earlier no-consent mark go once the CMP says the GDPR does not apply to the visitor", async () => {
    const source = await createSource('cmp outside the eu');
    const cookieId = '3f1c2b4a-8d6e-4f70-9a1b-2c3d4e5f6a7b';
    const fromTag = async (event: object) => {
      const response = await fetch(`${platform.api.url}/v1/tag/events?writeKey=${source.writeKey}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain;charset=UTF-8' },
        body: JSON.stringify({ events: [{ type: 'page_view', identities: { cookie_id: cookieId }, ...event }] }),
      });
      expect(response.status).toBe(202);
    };
    // A first visit profiled; then a page whose CMP never answered left the mark on the profile.
    await fromTag({});
    await waitFor('the profile', async () => (await lookup('cookie_id', cookieId)).status === 200);
    await fromTag({ consent: { purposes: { profiling: false } } });
    const consent = async () => (await lookup('cookie_id', cookieId)).body.consent;
    await waitFor('the mark on the profile', async () => (await consent())?.tcfPending === true);

    const context = await browser.newContext();
    await context.addCookies([{ name: TAG_COOKIE, value: cookieId, url: siteUrl }]);
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}/us/not-applicable.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 1);
    await context.close();
    expect(sent(beacons)[0]).toMatchObject({ identities: { cookie_id: cookieId }, consent: { tcfNotApplicable: true } });
    await waitFor('the mark gone from the profile', async () => (await consent())?.tcfPending === undefined);
    expect(await consent()).toMatchObject({ tcfNotApplicable: true });
    // The first visit and the last counted; the marked one held.
    expect((await lookup('cookie_id', cookieId)).body.counters.page_view.count).toBe(2);
  });

  it("lets a profile's earlier no-consent mark go once the visitor's TC string arrives, so signal-less events of other sources count again", async () => {
    const source = await createSource('eu site, deciding');
    const server = (await call(`${platform.api.url}/v1/sources`, { key: platform.api.adminKey, body: { name: 'eu server', kind: 'events', party: 'first' } })).body;
    const cookieId = 'cookie-deciding-0123456789';
    const fromTag = async (consent: object) => {
      const response = await fetch(`${platform.api.url}/v1/tag/events?writeKey=${source.writeKey}`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain;charset=UTF-8' },
        body: JSON.stringify({ events: [{ type: 'page_view', identities: { cookie_id: cookieId }, consent }] }),
      });
      expect(response.status).toBe(202);
    };
    const profile = async () => (await lookup('cookie_id', cookieId)).body;
    const orders = async () => (await profile()).counters?.order?.count ?? 0;
    const fromServer = async (n: number) => {
      await call(`${platform.api.url}/v1/collect`, { key: server.writeKey, body: { events: [{ id: `deciding-order-${n}`, type: 'order', identities: { cookie_id: cookieId } }] } });
      await waitFor(`order ${n} folded`, async () => (await status(server.id)).profiles?.eventsApplied >= n);
    };
    await fromTag({ tcf: grantedTc });
    await waitFor('the profile', async () => (await lookup('cookie_id', cookieId)).status === 200);
    // A later page whose CMP had not answered: the mark reaches the profile, and the server's order does not count.
    await fromTag({ purposes: { profiling: false } });
    await waitFor('the mark on the profile', async () => (await profile()).consent?.tcfPending === true);
    expect((await profile()).consent.purposes).toBeUndefined();
    await fromServer(1);
    expect(await orders()).toBe(0);
    // The visitor's choice arrives: the mark goes, and the next order counts.
    await fromTag({ tcf: grantedTc });
    await waitFor('the choice on the profile', async () => (await profile()).consent?.tcfPending === undefined);
    await fromServer(2);
    expect(await orders()).toBe(1);
    // Marked again, then the choice comes from the server's own channel: a TC string ends the mark whatever brings it.
    await fromTag({ purposes: { profiling: false } });
    await waitFor('the mark again', async () => (await profile()).consent?.tcfPending === true);
    await call(`${platform.api.url}/v1/collect`, { key: server.writeKey, body: { events: [{ id: 'deciding-login', type: 'login', identities: { cookie_id: cookieId }, consent: { tcf: grantedTc } }] } });
    await waitFor('the login folded', async () => (await status(server.id)).profiles?.eventsApplied >= 3);
    expect((await profile()).consent.tcfPending).toBeUndefined();
    await fromServer(4);
    expect(await orders()).toBe(2);
  });

  it('waits for the CMP: a slow one of a returning visitor, and a visitor choosing in its banner, have their events sent with their choice and profiled', async () => {
    const source = await createSource('eu site, slow cmp');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    const started = Date.now();
    await tab.goto(`${siteUrl}/eu/slow.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(3000);
    await tab.goto(`${siteUrl}/eu/deciding.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 2);
    const [cookie] = await tagCookies(context);
    await context.close();
    expect(sent(beacons).map((event) => [event.properties?.title, event.consent])).toEqual([
      ['Slow CMP', { tcf: grantedTc }],
      ['Deciding', { tcf: grantedTc }],
    ]);
    await waitFor('the events folded', async () => (await status(source.id)).profiles.eventsApplied >= 2);
    expect((await lookup('cookie_id', cookie.value)).body.counters.page_view.count).toBe(2);
  });

  it('takes a GPP 1.0 CMP that has loaded as an answer: its ping carries no string to wait for', async () => {
    const source = await createSource('us site, gpp 1.0');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    const started = Date.now();
    await tab.goto(`${siteUrl}/us/gpp-1-0.html?k=${source.writeKey}`);
    await waitForEvents(beacons, 1);
    expect(Date.now() - started).toBeLessThan(5000);
    await context.close();
    expect(sent(beacons)[0].consent).toBeUndefined();
  });

  it('a CMP still waiting for the visitor: events go when the page is hidden, without a cookie, marked not for profiling', async () => {
    const source = await createSource('eu site, undecided');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}/eu/undecided.html?k=${source.writeKey}`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(sent(beacons)).toEqual([]);
    // The visitor switches tabs: the page is hidden.
    await hide(tab);
    await waitForEvents(beacons, 1);
    expect(await tagCookies(context)).toEqual([]);
    await context.close();
    expect(sent(beacons)[0].consent).toEqual({ purposes: { profiling: false } });
    await waitFor('the event drained as non-profiling', async () => (await status(source.id)).progress?.eventsNonProfiling?.tcf_pending === 1);
  });

  it('sets no cookie while a GPP CMP, the only one on the page, has not answered, and its events say so: not profiled', async () => {
    const { source, context, events } = await sentOnHide('gpp stub', '/eu/gpp-stub.html');
    expect(events[0]).toMatchObject({ type: 'page_view', properties: { title: 'GPP stub' }, consent: { gppPending: true } });
    expect(await tagCookies(context)).toEqual([]);
    await context.close();
    await waitFor('the event drained as non-profiling', async () => (await status(source.id)).progress?.eventsNonProfiling?.gpp_pending === 1);
  });

  it("sends no GPP string a CMP gave before it was ready: its events say it has not answered, and are not profiled", async () => {
    const { source, context, events } = await sentOnHide('gpp loading', '/us/gpp-loading.html');
    const [event] = events;
    expect(event).toMatchObject({ type: 'page_view', properties: { title: 'GPP loading' }, consent: { gppPending: true } });
    expect(event.consent?.gpp).toBeUndefined();
    await context.close();
    await waitFor('the event drained as non-profiling', async () => (await status(source.id)).progress?.eventsNonProfiling?.gpp_pending === 1);
  });

  it("reads only the GPP sections the CMP says are in force: a US visitor's refusing EU section neither blocks the cookie nor the profile", async () => {
    const { source, context, events } = await sentOnHide('gpp both regions', '/us/gpp-both-regions.html');
    expect(events[0].consent).toEqual({ gpp: bothRegions, gppSid: [7] });
    const [cookie] = await tagCookies(context);
    expect(cookie?.value).toBe(events[0].identities.cookie_id);
    await context.close();
    await waitFor('the event folded', async () => (await status(source.id)).profiles.eventsApplied >= 1);
    expect((await status(source.id)).progress?.eventsNonProfiling ?? {}).toEqual({});
    expect((await lookup('cookie_id', cookie.value)).status).toBe(200);
  });

  it('keeps the last ready GPP string while the CMP updates it (not ready again, an interim string meanwhile)', async () => {
    const { context, events } = await sentOnHide('gpp updating', '/us/gpp-updating.html', 400);
    expect(events[0].consent).toEqual({ gpp: gppString, gppSid: [7] });
    await context.close();
  });

  it("bounds the wait, from the tag's load: 10 s for a CMP that never answers, 30 s while its banner is up; then sends, marked not for profiling", async () => {
    const source = await createSource('eu site, bounds');
    const context = await browser.newContext();
    // The page's clock runs on, and the test jumps it ahead instead of waiting half a minute.
    await context.clock.install();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

    await tab.goto(`${siteUrl}/eu/blocked.html?k=${source.writeKey}`);
    await context.clock.fastForward(8_500);
    await settle();
    expect(sent(beacons)).toEqual([]);
    await context.clock.fastForward(2_000);
    await waitForEvents(beacons, 1);
    expect(sent(beacons)[0]).toMatchObject({ properties: { title: 'Blocked CMP' }, consent: { purposes: { profiling: false } } });

    await tab.goto(`${siteUrl}/eu/undecided.html?k=${source.writeKey}`);
    // Past the first bound: the banner is up, so the visitor may still choose.
    await context.clock.fastForward(12_000);
    await settle();
    await context.clock.fastForward(16_000);
    await settle();
    expect(sent(beacons)).toHaveLength(1);
    await context.clock.fastForward(3_000);
    await waitForEvents(beacons, 2);
    expect(sent(beacons)[1]).toMatchObject({ properties: { title: 'Undecided' }, consent: { purposes: { profiling: false } } });
    expect(await tagCookies(context)).toEqual([]);
    await context.close();
    await waitFor('both drained as non-profiling', async () => (await status(source.id)).progress?.eventsNonProfiling?.tcf_pending === 2);
  });

  it('a CMP still waiting for the visitor: events go when the page is put away or left for another, marked not for profiling', async () => {
    const source = await createSource('eu site, leaving');
    const context = await browser.newContext();
    const beacons = recordBeacons(context);
    const tab = await context.newPage();
    await tab.goto(`${siteUrl}/eu/undecided.html?k=${source.writeKey}`);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(sent(beacons)).toEqual([]);
    // `pagehide` alone, as a browser fires it when it puts the page in its back-forward cache.
    await tab.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true }))");
    await waitForEvents(beacons, 1);
    expect(sent(beacons)[0]).toMatchObject({ type: 'page_view', consent: { purposes: { profiling: false } } });

    await tab.evaluate("dmp.track('video_start', { id: 'v1' })");
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(sent(beacons)).toHaveLength(1);
    // The browser reports no request a page sends while it unloads: the source's counts show what arrived.
    await tab.goto(`${siteUrl}/shop/second.html?k=${source.writeKey}`);
    await waitFor("both of the first page's events drained as non-profiling, and the next page's profiled", async () => {
      const progress = (await status(source.id)).progress;
      return progress?.eventsNonProfiling?.tcf_pending === 2 && progress.eventsProcessed === 1;
    });
    await context.close();
  });
});
