import type { Client } from '@temporalio/client';
import { COLLECTIONS, type Store } from '../../store/db';
import { call } from '../support/http';
import { startApi, testStore, testTemporal, uniqueName, type RunningApi } from '../support/services';

describe('bad input is refused with a 4xx problem naming the field, and stores nothing', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  let writeKey: string;

  beforeAll(async () => {
    store = await testStore('badinput');
    temporal = await testTemporal();
    // No worker: these requests must be answered by the API alone.
    api = await startApi({ store, temporal, taskQueue: uniqueName('bad'), config: { DMP_MAX_BODY_BYTES: 4096, DMP_MAX_BATCH_EVENTS: 5 } });
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'bad input', kind: 'events', party: 'first' } });
    writeKey = created.body.writeKey;
  });
  afterAll(async () => {
    await api.close();
    await temporal.connection.close();
    await store.close();
  });

  const storedChunks = () => store.db.collection(COLLECTIONS.events).countDocuments({});
  const collect = (options: Parameters<typeof call>[1]) => call(`${api.url}/v1/collect`, { key: writeKey, ...options });

  function expectProblem(response: Awaited<ReturnType<typeof call>>, status: number, type: string, path?: string): void {
    expect(response.status).toBe(status);
    expect(response.contentType).toMatch(/^application\/problem\+json/);
    expect(response.body.type).toBe(`/problems/${type}`);
    expect(response.body.status).toBe(status);
    if (path) expect(response.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  }

  it('malformed JSON → 400 malformed-json', async () => {
    expectProblem(await collect({ rawBody: '{"events": [' }), 400, 'malformed-json', '(body)');
  });

  it('a compressed body that does not inflate → 400 unreadable-body, on the collect and Segment routes alike', async () => {
    const before = await storedChunks();
    for (const encoding of ['gzip', 'deflate', 'br']) {
      expectProblem(await collect({ rawBody: 'this is not compressed', headers: { 'content-encoding': encoding } }), 400, 'unreadable-body', '(body)');
    }
    const basic = `Basic ${Buffer.from(`${writeKey}:`).toString('base64')}`;
    const segment = await call(`${api.url}/v1/batch`, { rawBody: 'this is not compressed', headers: { authorization: basic, 'content-encoding': 'gzip' } });
    expectProblem(segment, 400, 'unreadable-body', '(body)');
    expect(await storedChunks()).toBe(before);
  });

  it('no body where the document requires a JSON one → 400 naming the body, not read as an empty object', async () => {
    // The JSON parser would read nothing as `{}`: the answer names the missing body, not each missing field.
    const response = await call(`${api.url}/v1/sources`, { key: api.adminKey, method: 'POST' });
    expectProblem(response, 400, 'validation', '(body)');
    expect(response.body.errors).toEqual([{ path: '(body)', message: 'missing' }]);
  });

  it('wrong envelope types → 400 naming `events`', async () => {
    expectProblem(await collect({ body: { events: 'many' } }), 400, 'validation', 'events');
    expectProblem(await collect({ body: { events: [], extra: 1 } }), 400, 'validation');
    expectProblem(await collect({ body: [1, 2] }), 400, 'validation');
  });

  it('a body that is not JSON → 415 naming the content type', async () => {
    expectProblem(await collect({ rawBody: 'events=1', contentType: 'text/plain' }), 415, 'unsupported-media-type', 'headers.content-type');
  });

  it('a body sent as anything but JSON where one may be left out → 415, not run as if none were sent', async () => {
    // curl's default content type: the body would otherwise be unread, and the default (a full rebuild) run.
    expectProblem(await call(`${api.url}/v1/recommendations/model`, { key: api.adminKey, rawBody: '{"full":false}', contentType: 'application/x-www-form-urlencoded' }), 415, 'unsupported-media-type', 'headers.content-type');
  });

  it('no write key → 401, an unknown one → 401 unknown-write-key', async () => {
    expectProblem(await call(`${api.url}/v1/collect`, { body: { events: [] } }), 401, 'unauthorized', 'headers.authorization');
    expectProblem(await call(`${api.url}/v1/collect`, { key: 'wk_nope', body: { events: [{ type: 'x', identities: { cookie_id: 'c' } }] } }), 401, 'unknown-write-key');
  });

  it('too large a body → 413 body-too-large', async () => {
    const events = [{ type: 'x', identities: { cookie_id: 'c' }, traits: { blob: 'x'.repeat(1000) } }];
    expectProblem(await collect({ body: { events: [...events, ...events, ...events, ...events, ...events] } }), 413, 'body-too-large', '(body)');
  });

  it('too many events → 400 naming `events` (the document states the most a request holds)', async () => {
    const events = Array.from({ length: 6 }, (_, n) => ({ type: 'x', identities: { cookie_id: `c${n}` } }));
    expectProblem(await collect({ body: { events } }), 400, 'validation', 'events');
  });

  it('refused requests stored nothing', async () => {
    const before = await storedChunks();
    const event = { type: 'x', identities: { cookie_id: 'c' }, traits: { blob: 'x'.repeat(1000) } };
    const refusals = [
      await collect({ rawBody: '{"events": [' }),
      await collect({ body: { events: 'many' } }),
      await collect({ rawBody: 'events=1', contentType: 'text/plain' }),
      await collect({ rawBody: 'not compressed', headers: { 'content-encoding': 'gzip' } }),
      await collect({ body: { events: Array(5).fill(event) } }),
      await collect({ body: { events: Array.from({ length: 6 }, (_, n) => ({ type: 'x', identities: { cookie_id: `c${n}` } })) } }),
      await call(`${api.url}/v1/collect`, { key: 'wk_nope', body: { events: [{ type: 'x', identities: { cookie_id: 'c' } }] } }),
    ];
    expect(refusals.map((response) => response.status)).toEqual([400, 400, 415, 400, 413, 400, 401]);
    expect(await storedChunks()).toBe(before);
  });

  it('inside an accepted request, each invalid event is rejected on its own with its index and reasons', async () => {
    const response = await collect({
      body: {
        events: [
          { id: 'ok-1', type: 'page_view', identities: { cookie_id: 'c1' } },
          { id: 'bad-1', type: 'page_view', identities: { email: 'not-an-email' } },
          { id: 'bad-2', type: 42, identities: { cookie_id: 'c2' } },
          { id: 'bad-3', type: 'page_view', identities: {}, traits: { nested: [[1]] } },
        ],
      },
    });
    expect(response.status).toBe(202);
    expect(response.body.accepted).toBe(1);
    expect(response.body.rejected.map((r: { index: number }) => r.index)).toEqual([1, 2, 3]);
    expect(response.body.rejected[0].errors).toEqual([{ path: 'identities.email', message: 'not a valid email address' }]);
    expect(response.body.rejected[1].errors.map((e: { path: string }) => e.path)).toEqual(['type']);
    expect(response.body.rejected[2].errors.map((e: { path: string }) => e.path)).toEqual(expect.arrayContaining(['identities', 'traits.nested']));
    expect(await storedChunks()).toBe(1);
  });

  it('management endpoints want the admin key and name bad fields', async () => {
    const sourcesBefore = (await call(`${api.url}/v1/sources`, { key: api.adminKey })).body.sources.length;
    expectProblem(await call(`${api.url}/v1/sources`, { body: { name: 'x', kind: 'events', party: 'first' } }), 401, 'unauthorized');
    expectProblem(await call(`${api.url}/v1/sources`, { key: 'adm_wrong_key_000000', body: {} }), 403, 'forbidden');
    const bad = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: '', kind: 'ftp', party: 'fourth' } });
    expectProblem(bad, 400, 'validation');
    expect(bad.body.errors.map((e: { path: string }) => e.path).sort()).toEqual(['kind', 'name', 'party']);
    expectProblem(await call(`${api.url}/v1/sources/src_missing`, { key: api.adminKey }), 404, 'source-not-found', 'params.id');
    expectProblem(await call(`${api.url}/v1/profiles/lookup?type=fax&value=1`, { key: api.adminKey }), 400, 'validation', 'type');
    expectProblem(await call(`${api.url}/v1/profiles/lookup?type=maid&value=0`, { key: api.adminKey }), 404, 'profile-not-found', 'value');
    expectProblem(await call(`${api.url}/v1/nowhere`, { key: api.adminKey }), 404, 'not-found');
    // A path whose escapes do not decode names no resource, with a key or without one.
    expectProblem(await call(`${api.url}/v1/sources/%ZZ`, { key: api.adminKey }), 404, 'not-found');
    expectProblem(await call(`${api.url}/v1/sync/%E0%A4`), 404, 'not-found');
    expect((await call(`${api.url}/v1/sources`, { key: api.adminKey })).body.sources).toHaveLength(sourcesBefore);
  });

  it('a NUL anywhere in a management body or query → 400 naming where (the store can neither hold nor look one up)', async () => {
    const admin = (path: string, options: Parameters<typeof call>[1] = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
    const counts = async () => [(await admin('/v1/sources')).body.sources.length, (await admin('/v1/privacy/requests')).body.requests.length];
    const before = await counts();
    expectProblem(await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'c-1' }, requestedBy: 'ticket\u00001' } }), 400, 'validation', 'requestedBy');
    expectProblem(await admin('/v1/identity/refusals?profileId=%00'), 400, 'validation', 'profileId');
    expectProblem(await admin('/v1/insights/overlap', { body: { segments: ['seg_a\u0000', 'seg_b'] } }), 400, 'validation', 'segments.0');
    expectProblem(await admin('/v1/sources', { body: { name: 'crm', kind: 'crm', party: 'first', mapping: { identities: { crm_id: 'id' }, traits: { 'Tier\u0000': 'tier' } } } }), 400, 'validation', 'mapping.traits.Tier\\0');
    expect(await counts()).toEqual(before);
  });

  it('keeps the columns a mapping names as sent, `.`, `$` and `__proto__` included', async () => {
    const traits = JSON.parse('{"Unit.Price": "price", "$cost": "cost", "50%": "half", "__proto__": "proto"}') as Record<string, string>;
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'crm dotted', kind: 'crm', party: 'first', mapping: { identities: { crm_id: 'id' }, traits } } });
    expect(created.status).toBe(201);
    expect((await call(`${api.url}/v1/sources/${created.body.id}`, { key: api.adminKey })).body.mapping.traits).toEqual(traits);
  });

  it('a partner segment code for something that is no segment id → 400 naming it', async () => {
    const response = await call(`${api.url}/v1/destinations`, {
      key: api.adminKey,
      body: { name: 'dsp', segments: [], connector: 'dsp_segments', idType: 'cookie_id', config: { url: 'https://dsp.example/data', token: 'tok', advertiserId: 'adv1', segmentCodes: { 'a.b': 'code' } } },
    });
    expectProblem(response, 400, 'validation');
    expect(JSON.stringify(response.body.errors)).toContain('segmentCodes');
    expect((await call(`${api.url}/v1/destinations`, { key: api.adminKey })).body.destinations).toEqual([]);
  });

  it('arbitrary junk never gets a 5xx', async () => {
    const junk: unknown[] = [null, 0, 'x', true, {}, { events: null }, { events: [null] }, { events: [[]] }, { events: [{ type: {}, identities: { cookie_id: 1 } }] },
      { events: [{ type: 'x', identities: { cookie_id: 'c' }, timestamp: 'yesterday' }] }, { events: [{ type: 'x', identities: { maid: 'nope' }, consent: { tcf: 'garbage' } }] },
      { events: [{ type: 'x', identities: { cookie_id: 'c' }, traits: { n: Number.MAX_VALUE * 10 } }] }];
    for (const body of junk) {
      const response = await collect({ rawBody: JSON.stringify(body) ?? 'null' });
      expect(response.status).toBeLessThan(500);
    }
  });
});
