import path from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { sha256Hex } from '../../domain/identity';
import { basicWriteKey as basic, useSdkSite } from '../support/sdkSite';
import { waitFor } from '../support/services';

/** RudderStack's browser SDK (v3) as its npm package builds it for a script tag, its plugins bundled in. */
const SDK = path.resolve(__dirname, '../../node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js');

interface Sent {
  path: string;
  status: number;
  contentType: string;
  authorization: string;
  anonymousIdHeader: string;
}

/**
 * RudderStack's own browser SDK (`@rudderstack/analytics-js`) on a page of another origin, with the
 * API as its data plane: it posts JSON with its write key and the visitor's `AnonymousId` header
 * (so every request is preflighted), one message a request or batched, and each is counted exactly
 * in profiles. Its source settings, which it otherwise fetches from RudderStack's control plane, are
 * given on the page: a source with no device-mode destinations.
 */
describe("RudderStack's browser SDK, unchanged, from a page of another origin", () => {
  const site = useSdkSite(
    'rsbrowser',
    (query, { platform }) => `<!doctype html><html><head><title>Tents</title>
<script src="/rudder.js"></script>
<script>
  const analytics = new rudderanalytics.RudderAnalytics();
  analytics.load(${JSON.stringify(query.get('k') ?? '')}, ${JSON.stringify(platform.api.url)}, {
    getSourceConfig: () => ({ source: { id: 'web-src', name: 'web', enabled: true, workspaceId: 'ws', config: {}, destinations: [] } }),
    queueOptions: ${JSON.stringify(query.has('batch') ? { batch: { enabled: true, maxItems: 3, flushInterval: 200 } } : {})},
  });
  analytics.ready(() => (window.analytics = analytics));
</script></head><body>shop</body></html>`,
    (file) => (file === 'rudder.js' ? SDK : ''),
  );

  /** A fresh browser profile on the page, and the answer to every POST it makes to the API. */
  async function visit(query: string): Promise<{ context: BrowserContext; sent: Sent[]; anonymousId: string; run: (script: string) => Promise<unknown> }> {
    const sent: Sent[] = [];
    const { context, run } = await site.visit(query, (context) =>
      context.on('response', async (response) => {
        const request = response.request();
        if (!request.url().startsWith(site.platform.api.url) || request.method() !== 'POST') return;
        const headers = await request.allHeaders();
        sent.push({ path: new URL(request.url()).pathname, status: response.status(), contentType: headers['content-type'] ?? '', authorization: headers.authorization ?? '', anonymousIdHeader: headers.anonymousid ?? '' });
      }),
    );
    const anonymousId = (await run('analytics.getAnonymousId()')) as string;
    return { context, sent, anonymousId, run };
  }

  it('sends identify, track and page one by one as JSON with the write key and AnonymousId headers (preflighted, across origins): each answered 200, one profile with exact counters', async () => {
    const { context, sent, anonymousId, run } = await visit(`k=${site.source.writeKey}`);
    await run(`analytics.identify('user-77', { email: 'Ada@Example.com', plan: 'team' });
      analytics.track('Added To Cart', { sku: 'tent-3p', price: 189 });
      analytics.page();`);
    await waitFor('three messages answered', async () => sent.length >= 3);
    expect(sent.map((request) => request.path).sort()).toEqual(['/v1/identify', '/v1/page', '/v1/track']);
    for (const request of sent) {
      expect(request).toMatchObject({ status: 200, contentType: 'application/json;charset=UTF-8', authorization: basic(site.source.writeKey) });
      expect(Buffer.from(request.anonymousIdHeader, 'base64').toString()).toBe(anonymousId);
    }
    await site.source.folded(3);
    const profile = (await site.source.lookup('crm_id', 'user-77')).body;
    expect(Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, (counter as { count: number }).count]))).toEqual({ identify: 1, 'Added To Cart': 1, page: 1 });
    expect(profile.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`).sort()).toEqual(
      [`cookie_id:${anonymousId}`, 'crm_id:user-77', `email_sha256:${sha256Hex('ada@example.com')}`].sort(),
    );
    expect(profile.traits).toMatchObject({ plan: 'team' });
    await context.close();
  });

  it('sends a batch to /v1/batch: answered 200, and every message counted once', async () => {
    const { context, sent, anonymousId, run } = await visit(`k=${site.source.writeKey}&batch=1`);
    await run(`['a', 'b', 'c'].forEach((sku) => analytics.track('Viewed', { sku }))`);
    await waitFor('the batch answered', async () => sent.length >= 1);
    expect(sent).toEqual([expect.objectContaining({ path: '/v1/batch', status: 200, authorization: basic(site.source.writeKey) })]);
    await site.source.folded(6);
    const profile = (await site.source.lookup('cookie_id', anonymousId)).body;
    expect(profile.counters.Viewed.count).toBe(3);
    await context.close();
  });

  it('retries a message whose answer was lost, with its retry headers (preflighted again): the repeat is dropped and the message counted once', async () => {
    const tracked = `${site.platform.api.url}/v1/track`;
    const attempts: Array<Record<string, string>> = [];
    let stored = 0;
    const dropped = await site.source.duplicatesDropped();
    const { context, tab, run } = await site.visit(`k=${site.source.writeKey}`, async (context) => {
      context.on('request', async (request) => {
        if (request.url() === tracked && request.method() === 'POST') attempts.push(await request.allHeaders());
      });
      // The first attempt reaches the API, which stores the message; its answer never reaches the page.
      // Only that one is intercepted: the retry goes out as the browser sends it, preflight included.
      await context.route(
        tracked,
        async (route) => {
          stored = (await route.fetch()).status();
          await route.abort('connectionreset');
        },
        { times: 1 },
      );
    });
    const anonymousId = (await run('analytics.getAnonymousId()')) as string;
    const answered = tab.waitForResponse((response) => response.url() === tracked && response.request().method() === 'POST');
    await run(`analytics.track('Checked Out', { total: 318 })`);
    expect((await answered).status()).toBe(200);
    expect(stored).toBe(200);
    await waitFor('both attempts seen', async () => attempts.length === 2);
    expect(attempts.find((headers) => headers['rsa-retry-attempt'])).toMatchObject({ 'rsa-retry-attempt': '1', 'rsa-retry-reason': 'client-network' });
    await waitFor('the repeat dropped', async () => (await site.source.duplicatesDropped()) === dropped + 1);
    const profile = (await site.source.lookup('cookie_id', anonymousId)).body;
    expect(profile.counters['Checked Out'].count).toBe(1);
    await context.close();
  });
});
