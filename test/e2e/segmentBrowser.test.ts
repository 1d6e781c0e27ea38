import path from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { sha256Hex } from '../../domain/identity';
import { call } from '../support/http';
import { basicWriteKey as basic, useSdkSite } from '../support/sdkSite';
import { waitFor } from '../support/services';

/** Segment's browser SDK as its npm package builds it for a script tag (it loads its chunks from beside itself). */
const SDK_DIR = path.resolve(__dirname, '../../node_modules/@segment/analytics-next/dist/umd');

interface Sent {
  method: string;
  path: string;
  contentType: string;
  authorization: string;
}

/**
 * Segment's own browser SDK (analytics.js 2.0, `@segment/analytics-next`) on a page of another
 * origin, pointed at the API as Segment's settings point it at api.segment.io: its messages come in
 * through the one-letter paths it posts to, across origins, and are counted exactly in profiles.
 */
describe("Segment's browser SDK, unchanged, from a page of another origin", () => {
  /** A page loading the SDK with the settings Segment's CDN would give it, Segment.io's api host being ours. */
  const site = useSdkSite(
    'segbrowser',
    (query, { platform }) => {
      const writeKey = query.get('k') ?? '';
      const delivery = query.get('batching') ? { strategy: 'batching', config: { size: 3, timeout: 200 } } : null;
      return `<!doctype html><html><head><title>Tents</title>
<script src="/index.js"></script>
<script>
  AnalyticsNext.AnalyticsBrowser.load({
    writeKey: ${JSON.stringify(writeKey)},
    cdnSettings: { integrations: { 'Segment.io': ${JSON.stringify({ apiKey: writeKey, apiHost: `${new URL(platform.api.url).host}/v1`, protocol: 'http', ...(delivery && { deliveryStrategy: delivery }) })} } },
  }).then(([analytics]) => (window.analytics = analytics));
</script></head><body>shop</body></html>`;
    },
    (file) => path.join(SDK_DIR, path.basename(file)),
  );

  /** A fresh browser profile on the page, and every request it makes to the API. */
  async function visit(query: string): Promise<{ context: BrowserContext; sent: Sent[]; anonymousId: string; run: (script: string) => Promise<unknown> }> {
    const sent: Sent[] = [];
    const { context, run } = await site.visit(query, (context) =>
      context.on('request', (request) => {
        if (!request.url().startsWith(site.platform.api.url)) return;
        const headers = request.headers();
        sent.push({ method: request.method(), path: new URL(request.url()).pathname, contentType: headers['content-type'] ?? '', authorization: headers.authorization ?? '' });
      }),
    );
    const anonymousId = (await run('analytics.user().anonymousId()')) as string;
    return { context, sent, anonymousId, run };
  }

  it('sends identify, track and page one by one as text/plain with the write key as the Basic user (preflighted, across origins): each accepted, one profile with exact counters', async () => {
    const { context, sent, anonymousId, run } = await visit(`k=${site.source.writeKey}`);
    // Each call resolves once its message is delivered (or has failed for good).
    const failures = await run(`Promise.all([
      analytics.identify('user-42', { email: 'Grace@Example.com', plan: 'pro' }),
      analytics.track('Added To Cart', { sku: 'tent-2p', price: 129 }),
      analytics.page(),
    ]).then((contexts) => contexts.map((ctx) => ctx.failedDelivery() ?? null))`);
    expect(failures).toEqual([null, null, null]);
    const posts = sent.filter((request) => request.method === 'POST');
    expect(posts.map((request) => request.path).sort()).toEqual(['/v1/i', '/v1/p', '/v1/t']);
    for (const request of posts) expect(request).toMatchObject({ contentType: 'text/plain', authorization: basic(site.source.writeKey) });
    await site.source.folded(3);
    const profile = (await site.source.lookup('crm_id', 'user-42')).body;
    expect(Object.fromEntries(Object.entries(profile.counters).map(([type, counter]) => [type, (counter as { count: number }).count]))).toEqual({ identify: 1, 'Added To Cart': 1, page: 1 });
    expect(profile.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`).sort()).toEqual(
      [`cookie_id:${anonymousId}`, 'crm_id:user-42', `email_sha256:${sha256Hex('grace@example.com')}`].sort(),
    );
    expect(profile.traits).toMatchObject({ plan: 'pro' });
    await context.close();
  });

  it('sends a batch to /v1/b with the write key as the Basic user: preflighted, allowed, and every message counted', async () => {
    const { context, sent, anonymousId, run } = await visit(`k=${site.source.writeKey}&batching=1`);
    await run(`Promise.all([analytics.track('Viewed', { sku: 'a' }), analytics.track('Viewed', { sku: 'b' }), analytics.track('Viewed', { sku: 'c' })])`);
    await waitFor('the batch sent', async () => sent.some((request) => request.method === 'POST' && request.path === '/v1/b'));
    const batch = sent.find((request) => request.method === 'POST')!;
    expect(batch).toMatchObject({ path: '/v1/b', contentType: 'text/plain', authorization: basic(site.source.writeKey) });
    await site.source.folded(6);
    const profile = (await site.source.lookup('cookie_id', anonymousId)).body;
    expect(profile.counters.Viewed.count).toBe(3);
    await context.close();
  });

  it('answers preflights and refusals so a page may read them: any origin, the headers browser SDKs send', async () => {
    for (const route of ['/v1/b', '/v1/batch', '/v1/t', '/v1/track', '/v1/i', '/v1/p', '/v1/s', '/v1/a', '/v1/g']) {
      const preflight = await fetch(`${site.platform.api.url}${route}`, {
        method: 'OPTIONS',
        headers: { origin: site.url, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,x-retry-count' },
      });
      expect({ route, status: preflight.status }).toEqual({ route, status: 204 });
      expect(preflight.headers.get('access-control-allow-origin')).toBe('*');
      expect(preflight.headers.get('access-control-allow-methods')).toBe('POST');
      expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toEqual(expect.stringContaining('authorization'));
      expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toEqual(expect.stringContaining('x-retry-count'));
    }
    // A refusal carries the header too: the SDK reads a 401 as one, not as the network failing.
    const refused = await fetch(`${site.platform.api.url}/v1/t`, { method: 'POST', headers: { origin: site.url, 'content-type': 'text/plain' }, body: JSON.stringify({ writeKey: 'wk_nobody', event: 'x', anonymousId: 'a' }) });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe('*');
    // So does a body refused before any route reads it, as RudderStack's browser SDK sends JSON.
    const malformed = await fetch(`${site.platform.api.url}/v1/track`, { method: 'POST', headers: { origin: site.url, 'content-type': 'application/json', authorization: basic(site.source.writeKey) }, body: '{"event": ' });
    expect(malformed.status).toBe(400);
    expect(malformed.headers.get('access-control-allow-origin')).toBe('*');
    // And a method the route does not take.
    const wrongMethod = await fetch(`${site.platform.api.url}/v1/t`, { headers: { origin: site.url } });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('access-control-allow-origin')).toBe('*');
    const doc = (await call(`${site.platform.api.url}/openapi.json`)).body;
    for (const route of ['/v1/b', '/v1/t', '/v1/i', '/v1/p', '/v1/s', '/v1/a', '/v1/g']) {
      expect(Object.keys(doc.paths[route]).sort()).toEqual(['options', 'post']);
      expect(doc.paths[route].post.security).toContainEqual({ writeKeyBasic: [] });
    }
  });
});
