import { DMP_COOKIE_MAX_AGE_SECONDS, DMP_COOKIE_NAME } from '../../domain/cookies';
import { sha256Hex } from '../../domain/identity';
import { ChannelRejections } from '../../store/channelRejections';
import { call } from '../support/http';
import { startPlatform, waitFor, type RunningPlatform } from '../support/services';
import { buildTcString } from '../unit/tcfFixture';

const COOKIE_DOMAIN = 'dmp.example';
const GIF_HEADER = 'GIF89a';

interface PixelResponse {
  status: number;
  contentType: string;
  cacheControl: string;
  setCookies: string[];
  body: Buffer;
}

describe('the pixel, end to end', () => {
  let platform: RunningPlatform;
  let sourceId: string;
  let writeKey: string;

  beforeAll(async () => {
    platform = await startPlatform('pixel', { DMP_COOKIE_DOMAIN: COOKIE_DOMAIN });
    ({ id: sourceId, writeKey } = await createSource('pixel'));
  });
  afterAll(() => platform.stop());

  async function createSource(name: string): Promise<{ id: string; writeKey: string }> {
    return (await call(`${platform.api.url}/v1/sources`, { key: platform.api.adminKey, body: { name, kind: 'events', party: 'first' } })).body;
  }
  const status = async (id: string) => (await call(`${platform.api.url}/v1/sources/${id}`, { key: platform.api.adminKey })).body;
  const lookup = (type: string, value: string) => call(`${platform.api.url}/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`, { key: platform.api.adminKey });

  async function pixel(query: Record<string, string | string[]>, headers: Record<string, string> = {}): Promise<PixelResponse> {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) for (const item of [value].flat()) params.append(name, item);
    const response = await fetch(`${platform.api.url}/v1/pixel.gif?${params}`, { headers });
    return {
      status: response.status,
      contentType: response.headers.get('content-type') ?? '',
      cacheControl: response.headers.get('cache-control') ?? '',
      setCookies: response.headers.getSetCookie(),
      body: Buffer.from(await response.arrayBuffer()),
    };
  }

  function expectGif(response: PixelResponse): void {
    expect(response.status).toBe(200);
    expect(response.contentType).toBe('image/gif');
    expect(response.cacheControl).toBe('no-store');
    expect(response.body.subarray(0, 6).toString('latin1')).toBe(GIF_HEADER);
    expect(response.body.readUInt16LE(6)).toBe(1); // width
    expect(response.body.readUInt16LE(8)).toBe(1); // height
  }

  function cookieIdOf(setCookie: string): string {
    const match = new RegExp(`^${DMP_COOKIE_NAME}=([^;]+)`).exec(setCookie);
    if (!match) throw new Error(`not our cookie: ${setCookie}`);
    return match[1];
  }

  it('answers the GIF, sets its cookie, reads it back, and records both hits on one profile with that cookie id', async () => {
    const first = await pixel({ writeKey, e: 'impression', uid: 'crm-77', 'p.campaign': 'spring', 't.tier': 'gold', cb: '1' });
    expectGif(first);
    expect(first.setCookies).toHaveLength(1);
    const cookieId = cookieIdOf(first.setCookies[0]);
    const attributes = first.setCookies[0].split(';').map((part) => part.trim());
    expect(attributes).toEqual(
      expect.arrayContaining([`Max-Age=${DMP_COOKIE_MAX_AGE_SECONDS}`, 'Path=/', `Domain=${COOKIE_DOMAIN}`, 'HttpOnly', 'SameSite=Lax']),
    );
    expect(attributes).not.toContain('Secure');

    const second = await pixel({ writeKey, e: 'impression', 'p.campaign': 'summer', cb: '2' }, { cookie: `other=1; ${DMP_COOKIE_NAME}=${cookieId}` });
    expectGif(second);
    expect(second.setCookies).toEqual([]);

    await waitFor('both hits folded', async () => (await status(sourceId)).profiles.eventsApplied >= 2);
    const profile = await lookup('cookie_id', cookieId);
    expect(profile.status).toBe(200);
    expect(profile.body.counters.impression.count).toBe(2);
    expect(profile.body.identities).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'crm_id', value: 'crm-77' })]));
    expect(profile.body.traits.tier).toBe('gold');
    const events = (await call(`${platform.api.url}/v1/profiles/${profile.body.id}/events`, { key: platform.api.adminKey })).body.events;
    expect(events.map((event: { properties: { campaign: string } }) => event.properties.campaign).sort()).toEqual(['spring', 'summer']);
  });

  it('is documented in the OpenAPI with its query parameters', async () => {
    const doc = (await call(`${platform.api.url}/openapi.json`)).body;
    const operation = doc.paths['/v1/pixel.gif'].get;
    expect(Object.keys(operation.responses)).toEqual(['200']);
    expect(Object.keys(operation.responses['200'].content)).toEqual(['image/gif']);
    expect(operation.parameters.map((parameter: { name: string }) => parameter.name)).toEqual(
      expect.arrayContaining(['e', 'id', 'uid', 'em', 'ph', 'gdpr', 'gdpr_consent', 'gpp', 'cb']),
    );
    // The write key is the query parameter of a security scheme; without one the GIF is answered all the same.
    const schemes = operation.security.flatMap((requirement: object) => Object.keys(requirement));
    expect(schemes.map((name: string) => doc.components.securitySchemes[name])).toEqual([{ type: 'apiKey', in: 'query', name: 'writeKey', description: expect.any(String) }]);
    expect(operation.security).toContainEqual({});
  });

  it('over https (behind a proxy) the cookie is SameSite=None; Secure, for third-party use', async () => {
    const response = await pixel({ writeKey }, { 'x-forwarded-proto': 'https' });
    expectGif(response);
    const attributes = response.setCookies[0].split(';').map((part) => part.trim());
    expect(attributes).toEqual(expect.arrayContaining(['SameSite=None', 'Secure']));
  });

  it('a cookie we could not have set, or that does not decode, is replaced and the hit recorded', async () => {
    const short = await pixel({ writeKey, e: 'replaced' }, { cookie: `${DMP_COOKIE_NAME}=short` });
    expectGif(short);
    expect(cookieIdOf(short.setCookies[0])).not.toBe('short');
    const malformed = await pixel({ writeKey, e: 'replaced' }, { cookie: `${DMP_COOKIE_NAME}=%E0%A4%A` });
    expectGif(malformed);
    const replacement = cookieIdOf(malformed.setCookies[0]);
    await waitFor('the hit folded', async () => (await lookup('cookie_id', replacement)).status === 200);
  });

  it('a missing or unknown write key still gets the GIF, and no cookie', async () => {
    for (const response of [await pixel({ e: 'impression' }), await pixel({ writeKey: 'wk_unknown', e: 'impression' })]) {
      expectGif(response);
      expect(response.setCookies).toEqual([]);
    }
  });

  it('bad parameters get the GIF, store nothing and are counted on the source with the parameter named', async () => {
    const bad = await createSource('bad pixel');
    const hits = [
      await pixel({ writeKey: bad.writeKey, gdpr: 'yes' }),
      await pixel({ writeKey: bad.writeKey, uid: ['a', 'b'] }),
      // A raw address is refused by collection: the pixel only takes hashes.
      await pixel({ writeKey: bad.writeKey, em: 'jane@example.com' }),
    ];
    for (const hit of hits) expectGif(hit);

    const rejections = new ChannelRejections(platform.store);
    try {
      const totals = await waitFor('the rejections to be flushed', async () => {
        const found = await rejections.totalsFor(bad.id);
        return found.total.pixel === 3 ? found : undefined;
      });
      expect(totals.total.tag).toBe(0);
      expect(totals.last24Hours.pixel).toBe(3);
      expect(totals.last?.channel).toBe('pixel');
      expect(totals.last?.errors.map((error) => error.path)).toEqual(['em']);
      expect((await rejections.totalsFor(sourceId)).total.pixel).toBe(0);
      // A parameter named with a NUL is counted too, its sample shown escaped (the store holds no NUL).
      expectGif(await pixel({ writeKey: bad.writeKey, 'p.a\u0000': '\u0000' }));
      const withNul = await waitFor('the NUL-named rejection to be flushed', async () => {
        const found = await rejections.totalsFor(bad.id);
        return found.total.pixel === 4 ? found : undefined;
      });
      expect(JSON.stringify(withNul.last?.errors)).not.toContain('\\u0000');
      expect(withNul.last?.errors.some((error) => error.path.includes('\\0'))).toBe(true);
      // A sample keeps no address the sender put in a name.
      expectGif(await pixel({ writeKey: bad.writeKey, 'p.jane.doe@example.com': '\u0000' }));
      const named = await waitFor('the address-named rejection to be flushed', async () => {
        const found = await rejections.totalsFor(bad.id);
        return found.total.pixel === 5 ? found : undefined;
      });
      expect(named.last?.errors.map((error) => error.path)).toEqual(['(redacted)']);
    } finally {
      await rejections.close();
    }
    const badStatus = await status(bad.id);
    expect(badStatus.pending.events).toBe(0);
    expect(badStatus.progress.eventsProcessed).toBe(0);
  });

  it('where the GDPR applies without consent to storage, the cookie is neither read nor set and the hit is not profiled', async () => {
    const created = await createSource('eu pixel');
    const known = 'known-cookie-0123456789';
    const refused = buildTcString({ purposeConsents: [3, 4] });
    const hits = [
      await pixel({ writeKey: created.writeKey, gdpr: '1', gdpr_consent: refused, em: sha256Hex('eu@example.com') }, { cookie: `${DMP_COOKIE_NAME}=${known}` }),
      await pixel({ writeKey: created.writeKey, gdpr: '1' }, { cookie: `${DMP_COOKIE_NAME}=${known}` }),
    ];
    for (const hit of hits) {
      expectGif(hit);
      expect(hit.setCookies).toEqual([]);
    }
    const drained = await waitFor('both hits drained', async () => {
      const body = await status(created.id);
      const nonProfiling = body.progress?.eventsNonProfiling ?? {};
      return nonProfiling.tcf_purpose === 1 && nonProfiling.tcf_pending === 1 ? body : undefined;
    });
    expect(drained.progress.eventsProcessed).toBe(0);
    expect((await lookup('cookie_id', known)).status).toBe(404);
    expect((await lookup('email_sha256', sha256Hex('eu@example.com'))).status).toBe(404);
  });

  it("takes the browser's Global Privacy Control (Sec-GPC: 1) as an opt-out: the hit is kept, not profiled", async () => {
    const created = await createSource('us pixel');
    expectGif(await pixel({ writeKey: created.writeKey, e: 'impression' }, { 'sec-gpc': '1', cookie: `${DMP_COOKIE_NAME}=gpc-cookie-0123456789` }));
    await waitFor('the hit drained as non-profiling', async () => (await status(created.id)).progress?.eventsNonProfiling?.gpp_opt_out === 1);
    expect((await lookup('cookie_id', 'gpc-cookie-0123456789')).status).toBe(404);
  });
});
