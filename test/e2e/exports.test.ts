import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256Hex } from '../../domain/identity';
import { SA } from '../../domain/searchAttributes';
import { destinationExportWorkflowId, destinationScheduleId } from '../../domain/workflowIds';
import { DESTINATION_COLLECTIONS } from '../../store/destinations';
import { call } from '../support/http';
import { applyFile, PartnerServer } from '../support/partners';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';
import { buildTcString } from '../unit/tcfFixture';

const maid = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
const PEOPLE = 24;
/** Profiles 0–11 are gold; 7 refused purpose 4, using a profile for ads (withheld for consent; it may be profiled); 5 holds data of a labelled broker source. */
const GOLD = Array.from({ length: 12 }, (_, i) => i);
/** Gold after the webhook test's changes (0 and 1 left, 12 joined). */
const GOLD_NOW = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const cookies = (indexes: number[]) => indexes.map((i) => `ck-${i}`).sort();

describe('destinations: scheduled, receipted exports of segments to partners', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let shop: SourceClient;
  let segmentId: string;
  const exportDir = mkdtempSync(join(tmpdir(), 'dmp-exports-'));
  const partners: PartnerServer[] = [];
  const consented = buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [] });
  const refused = buildTcString({ purposeConsents: [1, 3], vendorConsents: [] });

  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const partner = async (options: ConstructorParameters<typeof PartnerServer>[0]) => {
    const server = await new PartnerServer(options).start();
    partners.push(server);
    return server;
  };
  const createDestination = async (body: Record<string, unknown>) => {
    const created = await admin('/v1/destinations', { body: { name: 'partner', segments: [segmentId], ...body } });
    expect(created.status).toBe(201);
    return created.body.id as string;
  };
  /** Starts an export and waits for it to end. */
  const exportNow = async (destinationId: string, body: Record<string, unknown> = {}) => {
    const started = await admin(`/v1/destinations/${destinationId}/exports`, { body });
    expect(started.status).toBe(202);
    return waitFor(
      `export ${started.body.exportId}`,
      async () => {
        const view = (await admin(`/v1/destinations/${destinationId}/exports/${started.body.exportId}`)).body;
        return view.state === 'running' ? null : view;
      },
      120_000,
    );
  };
  const members = async () => (await admin(`/v1/segments/${segmentId}/members?limit=100`)).body.members as string[];

  beforeAll(async () => {
    platform = await startPlatform('exports', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'], DMP_DESTINATION_TIMEOUT_SECONDS: 2, DMP_EXPORT_DIR: exportDir });
    ({ api } = platform);
    shop = await newSource(api, 'shop');
    const broker = await newSource(api, 'broker', { party: 'third', labels: ['partner_data'] });
    await shop.send(
      Array.from({ length: PEOPLE }, (_, i) => ({
        id: `e${i}`,
        type: 'purchase',
        identities: { cookie_id: `ck-${i}`, ...(i % 2 === 0 && { email: `user${i}@example.com` }), ...(i % 4 === 0 && { maid: maid(i) }) },
        traits: { plan: i < 12 ? 'gold' : 'silver' },
        consent: { tcf: i === 7 ? refused : consented },
      })),
    );
    await broker.send([{ id: 'b5', type: 'income_band', identities: { cookie_id: 'ck-5' }, traits: { income: 'high' } }]);
    await shop.folded(PEOPLE);
    await broker.folded(1);
    segmentId = (await admin('/v1/segments', { body: { name: 'Gold', rule: { trait: 'plan', op: 'eq', value: 'gold' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed');
  }, 120_000);
  afterAll(async () => {
    for (const server of partners) await server.stop();
    await platform.stop();
  });

  it('refuses bad destinations with the field named, and never echoes secrets', async () => {
    const base = { name: 'x', segments: [segmentId], idType: 'cookie_id', connector: 'webhook', config: { url: 'http://10.1.2.3/hook', secret: 'a-secret-of-16-chars' } };
    const cases: Array<[Record<string, unknown>, string]> = [
      [base, 'config.url'],
      [{ ...base, config: { url: 'http://169.254.169.254/latest', secret: 'a-secret-of-16-chars' } }, 'config.url'],
      [{ ...base, config: { url: 'ftp://127.0.0.1/x', secret: 'a-secret-of-16-chars' } }, 'config.url'],
      [{ ...base, config: { url: 'http://127.0.0.1:1/hook', secret: 'short' } }, 'config.secret'],
      [{ ...base, connector: 'nope' }, 'connector'],
      [{ ...base, connector: 'dsp_segments', config: { url: 'http://127.0.0.1:1/data', token: 't', advertiserId: 'a' }, idType: 'email_sha256' }, 'idType'],
      [{ ...base, config: { url: 'http://127.0.0.1:1/hook', secret: 'a-secret-of-16-chars' }, schedule: { every: 'soon' } }, 'schedule'],
    ];
    for (const [body, path] of cases) {
      const response = await admin('/v1/destinations', { body });
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
      expect(response.body.errors.map((error: { path: string }) => error.path).join(' ')).toContain(path);
    }
    // What only the store or the network can tell: a segment that does not exist, a host that does not
    // resolve (not found), a host inside our own network (forbidden).
    const references: Array<[Record<string, unknown>, number, string]> = [
      [{ ...base, config: { url: 'http://127.0.0.1:1/hook', secret: 'a-secret-of-16-chars' }, segments: [segmentId, 'seg_missing'] }, 404, 'segments.1'],
      [{ ...base, config: { url: 'https://nowhere.invalid/hook', secret: 'a-secret-of-16-chars' } }, 404, 'config.url'],
      [{ ...base, config: { url: 'https://10.1.2.3/hook', secret: 'a-secret-of-16-chars' } }, 403, 'config.url'],
    ];
    for (const [body, status, path] of references) {
      const response = await admin('/v1/destinations', { body });
      expect({ path, status: response.status, paths: response.body.errors.map((error: { path: string }) => error.path) }).toEqual({ path, status, paths: [path] });
    }
    // The placeholder the API shows for a stored secret is no secret: kept, it would sign every batch.
    const placeholder = await admin('/v1/destinations', { body: { ...base, connector: 'dsp_segments', config: { url: 'http://127.0.0.1:1/dsp', token: '(set)', advertiserId: 'adv-1' } } });
    expect({ status: placeholder.status, errors: placeholder.body.errors }).toEqual({
      status: 409,
      errors: [{ path: 'config.token', message: '"(set)" stands for a stored secret, and none is stored: send the secret itself' }],
    });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', config: { url: 'http://127.0.0.1:1/hook', secret: 'a-secret-of-16-chars' } });
    const shown = JSON.stringify((await admin(`/v1/destinations/${id}`)).body);
    expect(shown).not.toContain('a-secret-of-16-chars');
    expect(JSON.parse(shown).config.secret).toBe('(set)');
    // A change that leaves the secret out keeps it, but never for another address.
    const patched = await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { url: 'http://127.0.0.1:1/hook', batchSize: 5 } } });
    expect(patched.status).toBe(200);
    expect(patched.body.config).toMatchObject({ url: 'http://127.0.0.1:1/hook', secret: '(set)', batchSize: 5 });
    const moved = await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { url: 'http://127.0.0.1:2/hook' } } });
    expect(moved.status).toBe(409);
    expect(moved.body.errors).toEqual([{ path: 'config.secret', message: 'send the secret again when the address changes' }]);
    // Nor when it is sent back as shown.
    const movedAsShown = await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { url: 'http://127.0.0.1:2/hook', secret: '(set)' } } });
    expect(movedAsShown.status).toBe(409);
    expect(movedAsShown.body.errors).toEqual([{ path: 'config.secret', message: 'send the secret again when the address changes' }]);
    expect((await admin(`/v1/destinations/${id}`)).body.config.url).toBe('http://127.0.0.1:1/hook');
    // null drops a stored secret a connector can do without; a required one is then missing.
    const dropped = await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { url: 'http://127.0.0.1:1/hook', secret: null } } });
    expect(dropped.status).toBe(409);
    expect(dropped.body.errors.map((error: { path: string }) => error.path)).toEqual(['config.secret']);
    expect((await admin(`/v1/destinations/${id}`)).body.config.secret).toBe('(set)');
    expect((await admin(`/v1/destinations/${id}`, { method: 'DELETE' })).status).toBe(204);
    const upload = await createDestination({ connector: 'segment_file', idType: 'cookie_id', config: { url: 'http://127.0.0.1:1/incoming', token: 'upload-token' } });
    expect((await admin(`/v1/destinations/${upload}`)).body.config.token).toBe('(set)');
    const untokened = await admin(`/v1/destinations/${upload}`, { method: 'PATCH', body: { config: { url: 'http://127.0.0.1:1/incoming', token: null } } });
    expect(untokened.status).toBe(200);
    expect(untokened.body.config).not.toHaveProperty('token');
    expect((await admin(`/v1/destinations/${upload}`)).body.config).not.toHaveProperty('token');
    expect((await admin(`/v1/destinations/${upload}`, { method: 'DELETE' })).status).toBe(204);
  });

  it('delivers a signed webhook export through a dropped connection, a 5xx, a partner past the timeout and a 429, applying no batch twice, then sends deltas', async () => {
    const server = await partner({ kind: 'webhook', secret: 'webhook-secret-0123456789', faults: ['applyThenDrop', 'http500', 'stall', 'http429'], stallMs: 4000 });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', config: { url: `${server.url}/dmp`, secret: 'webhook-secret-0123456789', batchSize: 3 } });

    const first = await exportNow(id);
    const allowed = GOLD.filter((i) => i !== 5 && i !== 7);
    expect(first).toMatchObject({ state: 'completed', adds: allowed.length, removes: 0, matched: allowed.length, unmatched: 0, matchRate: 1, batches: 4, batchesConfirmed: 4, withheld: { consent: 1, labels: { partner_data: 1 } } });
    expect(server.audience(segmentId)).toEqual(cookies(allowed));
    // The partner applies a key once: as many keys applied as batches planned means no batch went again under a new key.
    expect(server.applied.length).toBe(first.batches);
    expect(server.duplicates).toBeGreaterThanOrEqual(1); // the batch whose answer was lost came again under its key
    expect(server.rejectedAuth).toBe(0);

    // Two leave the segment, one enters, one withdraws consent: the next export sends only that.
    await shop.send([
      { id: 'd0', type: 'page_view', identities: { cookie_id: 'ck-0' }, traits: { plan: 'silver' } },
      { id: 'd1', type: 'page_view', identities: { cookie_id: 'ck-1' }, traits: { plan: 'silver' } },
      { id: 'd12', type: 'page_view', identities: { cookie_id: 'ck-12' }, traits: { plan: 'gold' } },
      { id: 'd2', type: 'page_view', identities: { cookie_id: 'ck-2' }, consent: { tcf: refused } },
    ]);
    await shop.folded(PEOPLE + 4);
    const profile12 = (await shop.lookup('cookie_id', 'ck-12')).body.id;
    await waitFor('the segment to change', async () => (await members()).includes(profile12));
    const second = await exportNow(id);
    const now = [...allowed.filter((i) => i > 2), 12];
    expect(second).toMatchObject({ state: 'completed', adds: 1, removes: 3, withheld: { consent: 2 } });
    expect(server.audience(segmentId)).toEqual(cookies(now));

    // A full export sends everything again and leaves the partner as it was.
    const full = await exportNow(id, { full: true });
    expect(full).toMatchObject({ state: 'completed', full: true, adds: now.length, removes: 0 });
    expect(server.audience(segmentId)).toEqual(cookies(now));

    // Allowing the broker's label lets its profile leave.
    expect((await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { labelsAllowed: ['partner_data'] } })).status).toBe(200);
    const labelled = await exportNow(id);
    expect(labelled).toMatchObject({ state: 'completed', adds: 1, removes: 0, withheld: { labels: {} } });
    expect(server.audience(segmentId)).toEqual(cookies([...now, 5]));
    expect(server.applied.length).toBe(first.batches + second.batches + full.batches + labelled.batches);

    const destination = (await admin(`/v1/destinations/${id}`)).body;
    const { sentAllAt, ...held } = destination.held[segmentId];
    expect(held).toEqual({ ids: now.length + 1, uncertain: 0 });
    // Every id it holds was last sent by the full export.
    expect(Date.parse(sentAllAt)).toBeGreaterThanOrEqual(Date.parse(full.startedAt));
    expect(Date.parse(sentAllAt)).toBeLessThanOrEqual(Date.parse(full.finishedAt));
    const listed = (await admin(`/v1/destinations/${id}/exports`)).body.exports;
    expect(listed.map((view: { exportId: string }) => view.exportId)).toEqual([labelled.exportId, full.exportId, second.exportId, first.exportId]);

    // Another address holds none of what the old one did: the next export sends everything again, once.
    // A batch the new address refused outright fails that export, and goes again alone: not the whole segment with it.
    expect((await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { url: `${server.url}/moved`, secret: 'webhook-secret-0123456789', batchSize: 3 } } })).status).toBe(200);
    server.failNext('http400');
    const resent = await exportNow(id);
    expect(resent).toMatchObject({ state: 'failed', adds: now.length + 1, removes: 0, batchesConfirmed: resent.batches - 1 });
    expect((await admin(`/v1/destinations/${id}`)).body.lastExport).toMatchObject({ exportId: resent.exportId, state: 'failed', failingSince: resent.finishedAt });
    const retried = await exportNow(id);
    expect(retried).toMatchObject({ state: 'completed', removes: 0, batches: 1 });
    expect(retried.adds).toBeGreaterThan(0);
    expect(retried.adds).toBeLessThanOrEqual(3);
    expect((await admin(`/v1/destinations/${id}`)).body.lastExport).toMatchObject({ exportId: retried.exportId, state: 'completed', failingSince: null });
    expect(await exportNow(id)).toMatchObject({ state: 'completed', adds: 0, removes: 0 });
    expect(server.audience(segmentId)).toEqual(cookies([...now, 5]));
  }, 240_000);

  it("sends device ids to a DSP in its segment-data format under its rate limit, and counts the match rate", async () => {
    const server = await partner({ kind: 'dsp', token: 'dsp-token', ratePerSecond: 2 });
    const id = await createDestination({
      connector: 'dsp_segments',
      idType: 'maid',
      config: { url: `${server.url}/data/advertiser`, token: 'dsp-token', advertiserId: 'adv1', segmentCodes: { [segmentId]: 'dmp-gold' }, batchSize: 1, requestsPerSecond: 5 },
    });
    const done = await exportNow(id);
    // After the webhook test: 2–12 are gold; 2 and 7 withheld for consent, 5 for its broker label.
    const allowed = GOLD_NOW.filter((i) => ![2, 5, 7].includes(i));
    const withMaid = allowed.filter((i) => i % 4 === 0);
    expect((await members()).length).toBe(GOLD_NOW.length);
    expect(done).toMatchObject({ state: 'completed', adds: withMaid.length, matched: withMaid.length, unmatched: allowed.length - withMaid.length, batches: withMaid.length, rejected: 0 });
    expect(done.withheld).toEqual({ consent: 2, labels: { partner_data: 1 }, holdout: 0, optOut: 0 });
    expect(done.matchRate).toBeCloseTo(withMaid.length / allowed.length, 5);
    expect(server.audience('dmp-gold')).toEqual(withMaid.map(maid).sort());
    expect(server.rateLimited).toBeGreaterThan(0); // paced at 5/s against a partner taking 2/s: it said 429, and we waited
  }, 120_000);

  it("sends again what a DSP refused inside a batch it took (FailedLines): a refused add with the next export, and a refused removal, until the DSP holds exactly the segment", async () => {
    const server = await partner({ kind: 'dsp', token: 'dsp-token' });
    const withMaid = GOLD_NOW.filter((i) => ![2, 5, 7].includes(i) && i % 4 === 0).map(maid).sort();
    const id = await createDestination({
      connector: 'dsp_segments',
      idType: 'maid',
      config: { url: `${server.url}/data/advertiser`, token: 'dsp-token', advertiserId: 'adv1', segmentCodes: { [segmentId]: 'dmp-refusing' } },
    });
    server.refusing.add(withMaid[0]);
    expect(await exportNow(id)).toMatchObject({ state: 'completed', adds: withMaid.length, rejected: 1 });
    expect(server.audience('dmp-refusing')).toEqual(withMaid.slice(1));
    server.refusing.clear();
    expect(await exportNow(id)).toMatchObject({ state: 'completed', adds: 1, removes: 0, rejected: 0 });
    expect(server.audience('dmp-refusing')).toEqual(withMaid);
    // Its segment swapped for one nobody is in: every member is removed, one removal refused, then sent again.
    const nobody = (await admin('/v1/segments', { body: { name: 'Platinum', rule: { trait: 'plan', op: 'eq', value: 'platinum' } } })).body.id;
    await waitFor('the empty segment evaluated', async () => (await admin(`/v1/segments/${nobody}`)).body.lastRun?.state === 'completed');
    expect((await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { segments: [nobody] } })).status).toBe(200);
    server.refusing.add(withMaid[1]);
    expect(await exportNow(id)).toMatchObject({ state: 'completed', removes: withMaid.length, rejected: 1 });
    expect(server.audience('dmp-refusing')).toEqual([withMaid[1]]);
    server.refusing.clear();
    expect(await exportNow(id)).toMatchObject({ state: 'completed', adds: 0, removes: 1, rejected: 0 });
    expect(server.audience('dmp-refusing')).toEqual([]);
  }, 120_000);

  it('sends nothing more from a delivery Temporal gave up (its export workflow ended under it): its requests are abandoned, its batches left', async () => {
    const server = await partner({ kind: 'webhook', secret: 'given-up-secret-0123' });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', config: { url: `${server.url}/hook`, secret: 'given-up-secret-0123', batchSize: 1, concurrency: 2 } });
    const release = server.hold();
    const started = await admin(`/v1/destinations/${id}/exports`, { body: {} });
    expect(started.status).toBe(202);
    await waitFor('the first batches held at the partner', async () => server.requests >= 2);
    // The attempt's next heartbeat the worker sends on (at most 16 s apart: 0.8 of its 20 s timeout) finds it
    // gone, as when its heartbeats went unheard and it was tried again. Till then it retries its held batches.
    await platform.temporal.workflow.getHandle(destinationExportWorkflowId(platform.store.db.databaseName, started.body.exportId)).terminate('the delivery is given up');
    await new Promise((resolve) => setTimeout(resolve, 25_000));
    const held = server.requests;
    release();
    // Longer than its backoff before a next try (8 s by then), and than the rest of its batches would take.
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    expect(server.requests).toBe(held);
    expect(server.applied.length).toBeLessThan(GOLD_NOW.length);
    // The partner answered the requests it held once let go, to nobody: no batch is recorded as applied.
    const receipts = await platform.store.db.collection(DESTINATION_COLLECTIONS.receipts).find({ exportId: started.body.exportId }).toArray();
    expect(receipts.filter((receipt) => receipt.state === 'applied')).toEqual([]);
  }, 120_000);

  it('removes what an export wrote when its destination is being deleted as it finishes: no holdings or partner state are left behind', async () => {
    const server = await partner({ kind: 'webhook', secret: 'removed-secret-0123' });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', config: { url: `${server.url}/hook`, secret: 'removed-secret-0123' } });
    const release = server.hold();
    expect((await admin(`/v1/destinations/${id}/exports`, { body: {} })).status).toBe(202);
    await waitFor('the batch held at the partner', async () => server.requests >= 1);
    // A DELETE has begun: its first step marks the definition, before it reads what to drop.
    await platform.store.db.collection(DESTINATION_COLLECTIONS.destinations).updateOne({ _id: id as never }, { $set: { dropping: [] } });
    release();
    await waitFor('the export to remove the destination', async () => (await admin(`/v1/destinations/${id}`)).status === 404, 60_000);
    expect(server.applied.length).toBe(1);
    expect(await platform.store.db.collection(DESTINATION_COLLECTIONS.holdings).countDocuments({ _id: id as never })).toBe(0);
    const states = await platform.store.db.collection(DESTINATION_COLLECTIONS.partnerState).find({}, { projection: { _id: 1 } }).toArray();
    expect(states.filter((doc) => String(doc._id).startsWith(`${id}:`))).toEqual([]);
  }, 120_000);

  it("adds a DSP's members again once half their TTL has passed, before the DSP lets them lapse; a delta before that sends nothing", async () => {
    const server = await partner({ kind: 'dsp', token: 'dsp-token' });
    const id = await createDestination({
      connector: 'dsp_segments',
      idType: 'maid',
      config: { url: `${server.url}/data/advertiser`, token: 'dsp-token', advertiserId: 'adv1', segmentCodes: { [segmentId]: 'dmp-ttl' }, ttlMinutes: 1 },
    });
    const first = await exportNow(id);
    const held = server.audience('dmp-ttl');
    expect(first.adds).toBe(held.length);
    expect(held.length).toBeGreaterThan(0);
    const firstSent = (await admin(`/v1/destinations/${id}`)).body.held[segmentId].sentAllAt;
    expect(Date.parse(firstSent)).toBeLessThanOrEqual(Date.parse(first.startedAt) + 1000);
    const lapsing = Math.max(...held.map((maidId) => server.expiresAt('dmp-ttl', maidId) as number));
    expect((await exportNow(id)).adds).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 30_500 - (Date.now() - Date.parse(firstSent))));
    const renewal = await exportNow(id);
    expect(renewal).toMatchObject({ state: 'completed', adds: held.length, removes: 0 });
    expect(server.audience('dmp-ttl')).toEqual(held);
    for (const maidId of held) expect(server.expiresAt('dmp-ttl', maidId)).toBeGreaterThan(lapsing + 25_000);
    expect(Date.parse((await admin(`/v1/destinations/${id}`)).body.held[segmentId].sentAllAt)).toBeGreaterThan(Date.parse(firstSent) + 29_000);
  }, 120_000);

  it("renews a near-real-time DSP's members when half their TTL has passed, though nothing changed", async () => {
    const server = await partner({ kind: 'dsp', token: 'dsp-token' });
    const id = await createDestination({
      connector: 'dsp_segments',
      idType: 'maid',
      nearRealTime: true,
      config: { url: `${server.url}/data/advertiser`, token: 'dsp-token', advertiserId: 'adv1', segmentCodes: { [segmentId]: 'dmp-rt-ttl' }, ttlMinutes: 1 },
    });
    const handle = platform.temporal.schedule.getHandle((await admin(`/v1/destinations/${id}`)).body.scheduleId);
    const exports = async () => (await admin(`/v1/destinations/${id}/exports`)).body.exports as Array<{ exportId: string; state: string; trigger: string; adds: number }>;
    // Its schedule checks every minute; a check is also started here, rather than waited for.
    await handle.trigger();
    const [first] = await waitFor('the first export', async () => ((await exports())[0]?.state === 'completed' ? exports() : null), 90_000, 250);
    const held = server.audience('dmp-rt-ttl');
    expect(held.length).toBeGreaterThan(0);
    expect(first).toMatchObject({ trigger: 'near_real_time', adds: held.length });
    const firstSent = Date.parse((await admin(`/v1/destinations/${id}`)).body.held[segmentId].sentAllAt);
    // Before half the TTL, a check with nothing changed exports nothing.
    await handle.trigger();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect((await exports())[0].exportId).toBe(first.exportId);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 30_500 - (Date.now() - firstSent))));
    await handle.trigger();
    const [renewal] = await waitFor('the renewal', async () => {
      const listed = await exports();
      return listed[0].exportId !== first.exportId && listed[0].state !== 'running' ? listed : null;
    }, 60_000, 250);
    expect(renewal).toMatchObject({ trigger: 'near_real_time', state: 'completed', adds: held.length });
    expect(server.audience('dmp-rt-ttl')).toEqual(held);
    await admin(`/v1/destinations/${id}`, { method: 'DELETE' });
  }, 180_000);

  it("records a renewal that had nothing to send (the DSP holds none of an emptied segment), so it is not made again every minute", async () => {
    const server = await partner({ kind: 'dsp', token: 'dsp-token' });
    const emptied = (await admin('/v1/segments', { body: { name: 'Silver', rule: { trait: 'plan', op: 'eq', value: 'silver' } } })).body.id as string;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${emptied}`)).body.lastRun?.state === 'completed');
    const id = await createDestination({
      segments: [emptied],
      connector: 'dsp_segments',
      idType: 'maid',
      nearRealTime: true,
      config: { url: `${server.url}/data/advertiser`, token: 'dsp-token', advertiserId: 'adv1', segmentCodes: { [emptied]: 'dmp-silver' }, ttlMinutes: 1 },
    });
    expect(await exportNow(id)).toMatchObject({ state: 'completed', adds: 3 });
    const before = (await admin(`/v1/segments/${emptied}`)).body.lastRun.runId;
    await admin(`/v1/segments/${emptied}`, { method: 'PATCH', body: { rule: { trait: 'plan', op: 'eq', value: 'platinum' } } });
    await waitFor('the emptied segment evaluated', async () => {
      const run = (await admin(`/v1/segments/${emptied}`)).body.lastRun;
      return run?.runId !== before && run?.state === 'completed';
    });
    const exports = async () => (await admin(`/v1/destinations/${id}/exports`)).body.exports as Array<{ exportId: string; state: string; adds: number; removes: number }>;
    // Exported now, rather than at the schedule's next check (which may also come first).
    await exportNow(id);
    await waitFor('no export running', async () => (await exports()).every((listed) => listed.state !== 'running'));
    expect((await exports()).some((listed) => listed.removes === 3 && listed.state === 'completed')).toBe(true);
    expect(server.audience('dmp-silver')).toEqual([]);
    // Half the TTL passes (set back, rather than waited for): the renewal is due, with nothing to send.
    const holdings = platform.store.db.collection<{ _id: string; held: Record<string, { sentAllAt?: Date }> }>(DESTINATION_COLLECTIONS.holdings);
    const dueAt = new Date(Date.now() - 31_000);
    await holdings.updateOne({ _id: id }, { $set: { [`held.${emptied}.sentAllAt`]: dueAt } });
    const handle = platform.temporal.schedule.getHandle((await admin(`/v1/destinations/${id}`)).body.scheduleId);
    const last = (await exports())[0].exportId;
    await handle.trigger();
    const [renewal] = await waitFor('the renewal', async () => {
      const listed = await exports();
      return listed[0].exportId !== last && listed[0].state !== 'running' ? listed : null;
    }, 60_000, 250);
    expect(renewal).toMatchObject({ state: 'completed', adds: 0, removes: 0 });
    expect(Date.parse((await admin(`/v1/destinations/${id}`)).body.held[emptied].sentAllAt)).toBeGreaterThan(dueAt.getTime() + 20_000);
    // The next check, within half the TTL of it, exports nothing.
    await handle.trigger();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect((await exports())[0].exportId).toBe(renewal.exportId);
    await admin(`/v1/destinations/${id}`, { method: 'DELETE' });
  }, 180_000);

  it('refuses a people-based list under its minimum audience, then sends SHA-256 email hashes', async () => {
    const server = await partner({ kind: 'people', token: 'list-token' });
    const config = { url: server.url, token: 'list-token', listId: 'gold_buyers', minAudience: 50 };
    // One list, one audience: a second segment's removals would take people off the first's.
    const two = await admin('/v1/destinations', { body: { name: 'list', connector: 'people_list', idType: 'email_sha256', config, segments: [segmentId, 'seg_another'] } });
    expect(two.status).toBe(400);
    expect(two.body.errors).toEqual([{ path: 'segments', message: 'a people_list destination sends at most 1 segment to its list: make one destination per segment' }]);
    const id = await createDestination({ connector: 'people_list', idType: 'email_sha256', config });
    const patched = await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { segments: [segmentId, 'seg_another'] } });
    expect(patched.status).toBe(409);
    expect(patched.body.errors).toEqual(two.body.errors);
    const refusedExport = await exportNow(id);
    expect(refusedExport).toMatchObject({ state: 'completed', adds: 0, batches: 0 });
    expect(refusedExport.segments[0].refused).toMatch(/minimum audience of 50/);
    expect(server.requests).toBe(0);

    await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { ...config, token: undefined, minAudience: 3 } } });
    const sent = await exportNow(id);
    const hashes = GOLD_NOW.filter((i) => i % 2 === 0 && i !== 2).map((i) => sha256Hex(`user${i}@example.com`)).sort();
    expect(sent).toMatchObject({ state: 'completed', adds: hashes.length });
    expect(server.audience('gold_buyers')).toEqual(hashes);

    // The list sent another segment holding the same people instead: the one left removes none of them from the list both fill.
    const again = (await admin('/v1/segments', { body: { name: 'Gold again', rule: { trait: 'plan', op: 'eq', value: 'gold' } } })).body.id;
    await waitFor('the second segment evaluated', async () => (await admin(`/v1/segments/${again}`)).body.lastRun?.state === 'completed');
    expect((await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { segments: [again] } })).status).toBe(200);
    const swapped = await exportNow(id);
    expect(swapped).toMatchObject({ state: 'completed', adds: hashes.length, removes: 0 });
    expect(server.audience('gold_buyers')).toEqual(hashes);

    // Another list, which holds none of them, while the segment is under the minimum: nothing is sent to it,
    // and once the segment may be sent, the whole of it goes, not only what changed since.
    await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { ...config, token: undefined, listId: 'gold_buyers_2', minAudience: 50 } } });
    const refusedResend = await exportNow(id);
    expect(refusedResend).toMatchObject({ state: 'completed', adds: 0 });
    expect(refusedResend.segments[0].refused).toMatch(/minimum audience of 50/);
    expect(server.audience('gold_buyers_2')).toEqual([]);
    await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { config: { ...config, token: undefined, listId: 'gold_buyers_2', minAudience: 3 } } });
    const owed = await exportNow(id);
    expect(owed).toMatchObject({ state: 'completed', adds: hashes.length });
    expect(server.audience('gold_buyers_2')).toEqual(hashes);
    // Sent whole once: the next export sends only what changed.
    expect(await exportNow(id)).toMatchObject({ state: 'completed', adds: 0, removes: 0 });
  }, 120_000);

  it('delivers to a people-based list through a dropped connection, a 5xx, a timeout and a 429, applying no request twice; a refused batch fails the export', async () => {
    const server = await partner({ kind: 'people', token: 'list-token', faults: ['applyThenDrop', 'http500', 'stall', 'http429'], stallMs: 4000 });
    const id = await createDestination({ connector: 'people_list', idType: 'email_sha256', config: { url: server.url, token: 'list-token', listId: 'faulty', minAudience: 1, batchSize: 2 } });
    const done = await exportNow(id);
    const hashes = GOLD_NOW.filter((i) => i % 2 === 0 && i !== 2).map((i) => sha256Hex(`user${i}@example.com`)).sort();
    expect(done).toMatchObject({ state: 'completed', adds: hashes.length, batches: Math.ceil(hashes.length / 2), batchesConfirmed: Math.ceil(hashes.length / 2) });
    expect(server.audience('faulty')).toEqual(hashes);
    // One `members:add` a batch, each applied once: the one whose answer was lost came again under its key.
    expect(server.applied).toHaveLength(done.batches);
    expect(server.duplicates).toBeGreaterThanOrEqual(1);

    // The partner refuses a batch outright (400): not retried, and the export ends failed, saying why.
    server.failNext('http400');
    const refused = await exportNow(id, { full: true });
    expect(refused.state).toBe('failed');
    expect(refused.error).toMatch(/400/);
    expect(refused.batchesConfirmed).toBe(refused.batches - 1);
    expect(server.audience('faulty')).toEqual(hashes);
  }, 120_000);

  it('writes exchange segment files into a folder and uploads them over HTTP', async () => {
    const folderId = await createDestination({ connector: 'segment_file', idType: 'cookie_id', config: { folder: 'ssp/gold', format: 'csv', batchSize: 4 } });
    const folderExport = await exportNow(folderId);
    expect(folderExport.state).toBe('completed');
    const folder = join(exportDir, 'ssp/gold');
    const files = readdirSync(folder).sort();
    expect(files.every((name) => name.endsWith('.csv'))).toBe(true);
    const fromFiles = new Map<string, Set<string>>();
    for (const name of files) applyFile(readFileSync(join(folder, name), 'utf8'), 'csv', (segment) => fromFiles.get(segment) ?? fromFiles.set(segment, new Set()).get(segment)!);
    expect(folderExport.adds).toBeGreaterThan(0);
    expect([...(fromFiles.get(segmentId) ?? [])].length).toBe(folderExport.adds);

    // Uploaded to a signed URL: its query is a credential, never shown, kept when sent back as shown.
    const signed = 'sv=2026-01-01&sig=c2lnbmF0dXJlLTAxMjM0NTY3ODk%3D';
    const server = await partner({ kind: 'files', token: 'upload-token', signedQuery: signed });
    const uploadId = await createDestination({ connector: 'segment_file', idType: 'cookie_id', config: { url: `${server.url}/incoming?${signed}`, token: 'upload-token', format: 'ndjson' } });
    const shown = (await admin(`/v1/destinations/${uploadId}`)).body.config.url;
    expect(shown).toBe(`${server.url}/incoming?sv=(set)&sig=(set)`);
    const kept = await admin(`/v1/destinations/${uploadId}`, { method: 'PATCH', body: { config: { url: shown, format: 'ndjson', batchSize: 4 } } });
    expect({ status: kept.status, url: kept.body.config.url, token: kept.body.config.token }).toEqual({ status: 200, url: shown, token: '(set)' });
    // Hidden values are no values: sent for another address, they are refused, naming the field.
    const moved = await admin(`/v1/destinations/${uploadId}`, { method: 'PATCH', body: { config: { url: `${server.url}/elsewhere?sv=(set)&sig=(set)`, token: 'upload-token' } } });
    expect({ status: moved.status, paths: moved.body.errors.map((error: { path: string }) => error.path) }).toEqual({ status: 409, paths: ['config.url'] });
    const uploaded = await exportNow(uploadId);
    expect(uploaded.state).toBe('completed');
    expect([...server.files.keys()].every((name) => name.endsWith('.ndjson'))).toBe(true);
    expect(server.audience(segmentId)).toEqual([...(fromFiles.get(segmentId) ?? [])].sort());
    // The partner stops taking that signature and quotes it back: the export's error does not.
    server.options.signedQuery = 'sv=2026-01-01&sig=rotated';
    const refused = await exportNow(uploadId, { full: true });
    expect(refused.state).toBe('failed');
    expect(refused.error).toMatch(/^batch 0: HTTP 403: .*SignatureDoesNotMatch.*sig=\(secret\)/);
    expect(JSON.stringify(refused)).not.toMatch(/c2lnbmF0dXJlLTAxMjM0NTY3ODk|2026-01-01/);
  }, 120_000);

  it("waits as long as a 429's Retry-After asks before sending the batch again, under the same key", async () => {
    // 4 s: longer than the backoff of a first retry (0.75–1.25 s), so only the header explains the wait.
    const server = await partner({ kind: 'webhook', secret: 'retry-after-secret-0123456789', faults: ['http429'], retryAfterSeconds: 4 });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', config: { url: server.url, secret: 'retry-after-secret-0123456789' } });
    const done = await exportNow(id);
    expect(done).toMatchObject({ state: 'completed', batches: 1, batchesConfirmed: 1 });
    expect(server.rateLimited).toBe(1);
    expect(server.retryGaps).toHaveLength(1);
    expect(server.retryGaps[0]).toBeGreaterThanOrEqual(3900);
    expect(server.applied).toHaveLength(1);
  });

  it("stops an export whose partner asks (Retry-After) for longer than a delivery waits, and lets the schedule's turns pass until then; an operator's export still goes", async () => {
    const server = await partner({ kind: 'webhook', secret: 'long-wait-secret-0123456789', faults: ['http429'], retryAfterSeconds: 3600 });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', schedule: { every: 'PT1H' }, config: { url: server.url, secret: 'long-wait-secret-0123456789' } });
    const started = Date.now();
    const stopped = await exportNow(id);
    expect(stopped).toMatchObject({ state: 'failed', batchesConfirmed: 0 });
    expect(stopped.error).toMatch(/HTTP 429.*the partner asked to wait until \d{4}-/);
    expect(server.rateLimited).toBe(1);
    expect(server.retryGaps).toEqual([]);
    const view = (await admin(`/v1/destinations/${id}`)).body;
    expect(Date.parse(view.partnerWaitUntil)).toBeGreaterThanOrEqual(started + 3_600_000 - 1000);

    const handle = platform.temporal.schedule.getHandle(view.scheduleId);
    await handle.trigger();
    const action = await waitFor('the scheduled run', async () => (await handle.describe()).info.recentActions[0]?.action);
    expect(await platform.temporal.workflow.getHandle(action.workflow.workflowId).result()).toEqual({ exportId: null, state: 'skipped' });
    expect((await admin(`/v1/destinations/${id}/exports`)).body.exports).toHaveLength(1);
    // Asked for by the operator, an export is sent all the same: the partner answers for itself.
    const sent = await exportNow(id);
    expect(sent).toMatchObject({ state: 'completed', batchesConfirmed: 1 });
    expect(server.audience(segmentId)).toHaveLength(sent.adds);
    // The partner took it: its schedule's turns go again.
    expect((await admin(`/v1/destinations/${id}`)).body.partnerWaitUntil).toBeNull();
    expect((await admin(`/v1/destinations/${id}`, { method: 'DELETE' })).status).toBe(204);
  });

  it('runs exports from a Temporal Schedule per destination, paused and resumed through the API', async () => {
    const server = await partner({ kind: 'webhook', secret: 'schedule-secret-0123456789' });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', schedule: { every: 'PT1H' }, config: { url: server.url, secret: 'schedule-secret-0123456789' } });
    const view = (await admin(`/v1/destinations/${id}`)).body;
    expect(view.scheduleId).toBe(destinationScheduleId(platform.store.db.databaseName, id));
    const handle = platform.temporal.schedule.getHandle(view.scheduleId);
    const described = await handle.describe();
    expect(described.policies.overlap).toBe('SKIP');
    // Runs missed while the cluster was down are caught up within the hour, no further back.
    expect(described.policies.catchupWindow).toBe(60 * 60 * 1000);
    expect(described.typedSearchAttributes?.get(SA.destinationId)).toBe(id);
    expect(described.state.paused).toBe(false);

    expect((await admin(`/v1/destinations/${id}/pause`, { method: 'POST' })).body.state).toBe('paused');
    expect((await handle.describe()).state.paused).toBe(true);
    expect((await admin(`/v1/destinations/${id}/exports`, { body: {} })).status).toBe(409);
    expect((await admin(`/v1/destinations/${id}/resume`, { method: 'POST' })).body.state).toBe('active');
    expect((await handle.describe()).state.paused).toBe(false);

    await handle.trigger();
    const scheduled = await waitFor(
      'the scheduled export',
      async () => {
        const [latest] = (await admin(`/v1/destinations/${id}/exports`)).body.exports;
        return latest && latest.state !== 'running' ? latest : null;
      },
      120_000,
    );
    expect(scheduled).toMatchObject({ trigger: 'schedule', state: 'completed' });
    expect(server.audience(segmentId).length).toBe(scheduled.adds);
    // An operator finds the destination's runs in the Temporal UI by its search attribute.
    const runs = await waitFor('the visibility store to index the scheduled export', async () => {
      const ids: string[] = [];
      for await (const execution of platform.temporal.workflow.list({ query: `DmpDestinationId = "${id}"` })) ids.push(execution.workflowId);
      return ids.length > 0 ? ids : undefined;
    });
    expect(runs.length).toBeGreaterThan(0);
    expect(runs.every((workflowId) => workflowId.startsWith(view.scheduleId))).toBe(true);

    // What the partner holds was kept for the next export's delta; it goes with the destination.
    const partnerState = platform.store.db.collection(DESTINATION_COLLECTIONS.partnerState);
    const stateOf = () => partnerState.countDocuments({ _id: { $regex: `^${id}:` } as never });
    expect(await stateOf()).toBeGreaterThan(0);
    expect((await admin(`/v1/destinations/${id}`, { method: 'DELETE' })).status).toBe(204);
    await expect(handle.describe()).rejects.toThrow();
    expect(await stateOf()).toBe(0);
  }, 180_000);

  it('exports near real time: a membership change reaches the partner within about a minute, by the schedule alone', async () => {
    const server = await partner({ kind: 'webhook', secret: 'realtime-secret-0123456789' });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', nearRealTime: true, labelsAllowed: ['partner_data'], config: { url: server.url, secret: 'realtime-secret-0123456789' } });
    const initial = GOLD_NOW.filter((i) => i !== 2 && i !== 7);
    await waitFor('the first near-real-time export', async () => server.audience(segmentId).length === initial.length, 90_000, 500);
    expect(server.audience(segmentId)).toEqual(cookies(initial));

    await shop.send([{ id: 'rt13', type: 'page_view', identities: { cookie_id: 'ck-13' }, traits: { plan: 'gold' } }]);
    const acknowledged = Date.now();
    const profile13 = await waitFor('ck-13 folded', async () => (await shop.lookup('cookie_id', 'ck-13')).body.id as string | undefined, 60_000, 250);
    await waitFor('ck-13 in the segment', async () => (await members()).includes(profile13), 60_000, 250);
    const joined = Date.now();
    await waitFor('ck-13 at the partner', async () => server.audience(segmentId).includes('ck-13'), 120_000, 250);
    // The schedule checks every minute; folding, planning and delivery come on top.
    expect(Date.now() - acknowledged).toBeLessThan(90_000);
    // The partner confirmed the batch; the export records it once its state has advanced.
    const [latest] = await waitFor('the export recorded', async () => {
      const listed = (await admin(`/v1/destinations/${id}/exports`)).body.exports;
      return listed[0]?.state === 'running' ? null : listed;
    });
    expect(latest).toMatchObject({ trigger: 'near_real_time', state: 'completed', adds: 1, removes: 0 });
    // The export that carried it started within a minute of the membership change (seen within 250 ms
    // of it), give or take the second a scheduled run takes to open its record.
    expect(Date.parse(latest.startedAt) - joined).toBeLessThanOrEqual(61_000);
    await admin(`/v1/destinations/${id}`, { method: 'DELETE' });
  }, 240_000);

  it("sends a phone to people-based lists hashed by each platform's rule: E.164 (Google), digits without + (Meta)", async () => {
    await shop.send([{ id: 'phil', type: 'purchase', identities: { cookie_id: 'ck-phil', phone: '+1 (650) 555-1234' }, traits: { plan: 'gold' }, consent: { tcf: consented } }]);
    const phil = await waitFor('phil folded', async () => (await shop.lookup('cookie_id', 'ck-phil')).body.id as string | undefined);
    await waitFor('phil in the segment', async () => (await members()).includes(phil));
    const server = await partner({ kind: 'people', token: 'list-token' });
    const list = (listId: string, idType: string) => createDestination({ connector: 'people_list', idType, config: { url: server.url, token: 'list-token', listId, minAudience: 1 } });
    const google = await exportNow(await list('google_list', 'phone_sha256'));
    const meta = await exportNow(await list('meta_list', 'phone_sha256_digits'));
    expect(google).toMatchObject({ state: 'completed', adds: 1 });
    expect(meta).toMatchObject({ state: 'completed', adds: 1 });
    expect(server.audience('google_list')).toEqual([sha256Hex('+16505551234')]);
    expect(server.audience('meta_list')).toEqual([sha256Hex('16505551234')]);
  }, 120_000);

  it("sends UID2 hashed emails computed at the collection edge (UID2's published vector)", async () => {
    await shop.send([{ id: 'jane', type: 'purchase', identities: { cookie_id: 'ck-jane', email: 'Jane.Saoirse@gmail.com' }, traits: { plan: 'gold' }, consent: { tcf: consented } }]);
    const jane = await waitFor('jane folded', async () => (await shop.lookup('cookie_id', 'ck-jane')).body.id as string | undefined);
    await waitFor('jane in the segment', async () => (await members()).includes(jane));
    const server = await partner({ kind: 'webhook', secret: 'uid2-secret-0123456789ab' });
    const id = await createDestination({ connector: 'webhook', idType: 'email_uid2', config: { url: server.url, secret: 'uid2-secret-0123456789ab' } });
    const done = await exportNow(id);
    expect(done.state).toBe('completed');
    const sent = server.audience(segmentId);
    expect(sent).toContain('ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=');
    // Addresses UID2 normalizes as we do are our own digest in base64.
    expect(sent).toContain(Buffer.from(sha256Hex('user4@example.com'), 'hex').toString('base64'));
  }, 120_000);

  it('withholds a profile that declined an explicit purpose flag the destination names (advertising by default), and exports it once the flag is no longer named', async () => {
    // A server-side event with Segment-style consent categories: no TC string, no GPP, advertising declined.
    await shop.send([{ id: 'nora', type: 'purchase', identities: { cookie_id: 'ck-nora' }, traits: { plan: 'gold' }, consent: { purposes: { advertising: false } } }]);
    const nora = await waitFor('nora folded', async () => (await shop.lookup('cookie_id', 'ck-nora')).body.id as string | undefined);
    await waitFor('nora in the segment', async () => (await members()).includes(nora));
    const server = await partner({ kind: 'webhook', secret: 'flags-secret-0123456789a' });
    const id = await createDestination({ connector: 'webhook', idType: 'cookie_id', config: { url: server.url, secret: 'flags-secret-0123456789a' } });
    expect((await admin(`/v1/destinations/${id}`)).body.consent.purposeFlags).toEqual(['profiling', 'advertising', 'data_sharing']);
    const withheld = await exportNow(id);
    expect(withheld.state).toBe('completed');
    expect(server.audience(segmentId)).not.toContain('ck-nora');
    expect(server.audience(segmentId)).toContain('ck-3');

    expect((await admin(`/v1/destinations/${id}`, { method: 'PATCH', body: { consent: { purposeFlags: ['data_sharing'] } } })).body.consent).toMatchObject({ purposeFlags: ['data_sharing'], tcfPurposes: [1, 3, 4] });
    const exported = await exportNow(id);
    expect(exported).toMatchObject({ state: 'completed', adds: 1, removes: 0, withheld: { consent: withheld.withheld.consent - 1 } });
    expect(server.audience(segmentId)).toContain('ck-nora');
  }, 120_000);
});
