import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call } from '../support/http';
import { PartnerServer } from '../support/partners';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';
import { buildTcString } from '../unit/tcfFixture';

const cookie = (name: string) => `cookie-${name.padStart(16, '0')}`;

describe("exports of a segment as a sync partner's own ids, from the cookie-sync match table", () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let shop: SourceClient;
  let segmentId: string;
  let server: PartnerServer;
  const exportDir = mkdtempSync(join(tmpdir(), 'dmp-partner-ids-'));
  const consented = buildTcString({ purposeConsents: [1, 3, 4] });
  /** Profiled (the source's policy needs purposes 1 and 3), but not for ads personalisation (4), which exports need by default. */
  const refused = buildTcString({ purposeConsents: [1, 3] });

  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const sync = async (puid: string, cookieId: string) => {
    const response = await fetch(`${api.url}/v1/sync/dsp?puid=${encodeURIComponent(puid)}`, { redirect: 'manual', headers: { cookie: `dmp_uid=${cookieId}` } });
    expect(response.status).toBe(302);
  };
  const exportNow = async (destinationId: string) => {
    const started = await admin(`/v1/destinations/${destinationId}/exports`, { body: {} });
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

  beforeAll(async () => {
    platform = await startPlatform('partnerids', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'], DMP_DESTINATION_TIMEOUT_SECONDS: 2, DMP_EXPORT_DIR: exportDir });
    ({ api } = platform);
    server = await new PartnerServer({ kind: 'webhook', secret: 'partner-ids-secret-0123' }).start();
    expect((await admin('/v1/partners', { body: { id: 'dsp', name: 'A DSP', redirectUrl: 'https://sync.dsp.example/match?dmp=${DMP_UID}' } })).status).toBe(201);
    shop = await newSource(api, 'shop');
    // Gold: a, b, c (two cookies, joined by a CRM id), d (refused purpose 4), e (never synced). Silver: f.
    await shop.send([
      { id: 'a', type: 'purchase', identities: { cookie_id: cookie('a') }, traits: { plan: 'gold' }, consent: { tcf: consented } },
      { id: 'b', type: 'purchase', identities: { cookie_id: cookie('b') }, traits: { plan: 'gold' } },
      { id: 'c1', type: 'purchase', identities: { cookie_id: cookie('c1'), crm_id: 'crm-c' }, traits: { plan: 'gold' } },
      { id: 'c2', type: 'page_view', identities: { cookie_id: cookie('c2'), crm_id: 'crm-c' } },
      { id: 'd', type: 'purchase', identities: { cookie_id: cookie('d') }, traits: { plan: 'gold' }, consent: { tcf: refused } },
      { id: 'e', type: 'purchase', identities: { cookie_id: cookie('e') }, traits: { plan: 'gold' } },
      { id: 'f', type: 'purchase', identities: { cookie_id: cookie('f') }, traits: { plan: 'silver' } },
    ]);
    await shop.folded(7);
    // b's partner id changed once: the match table holds both.
    for (const [puid, cookieId] of [['P-a', cookie('a')], ['P-b1', cookie('b')], ['P-b2', cookie('b')], ['P-c1', cookie('c1')], ['P-c2', cookie('c2')], ['P-d', cookie('d')], ['P-f', cookie('f')]]) await sync(puid, cookieId);
    segmentId = (await admin('/v1/segments', { body: { name: 'Gold', rule: { trait: 'plan', op: 'eq', value: 'gold' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed');
  }, 180_000);
  afterAll(async () => {
    await server.stop();
    await platform.stop();
  });

  it('takes a partner id type only for a partner that exists and a connector that can carry it, naming idType', async () => {
    const base = { name: 'x', segments: [segmentId], connector: 'webhook', config: { url: `${server.url}/hook`, secret: 'partner-ids-secret-0123' } };
    const cases: Array<[Record<string, unknown>, number, RegExp]> = [
      [{ ...base, idType: 'partner:nobody' }, 404, /sync partner nobody does not exist/],
      [{ ...base, idType: 'partner:Not-A-Slug' }, 400, /partner:<partner id>/],
      [{ ...base, connector: 'people_list', config: { url: `${server.url}/list`, token: 't', listId: 'a' }, idType: 'partner:dsp' }, 400, /takes email_sha256, phone_sha256, phone_sha256_digits$/],
    ];
    for (const [body, status, message] of cases) {
      const response = await admin('/v1/destinations', { body });
      expect(response.status).toBe(status);
      expect(response.body.errors).toEqual([{ path: 'idType', message: expect.stringMatching(message) }]);
    }
  });

  it("sends each member's partner ids, counts members without one as unmatched, and sends a new match with the next export", async () => {
    const created = await admin('/v1/destinations', {
      body: { name: 'DSP via webhook', segments: [segmentId], connector: 'webhook', idType: 'partner:dsp', config: { url: `${server.url}/hook`, secret: 'partner-ids-secret-0123', batchSize: 2 } },
    });
    expect(created.status).toBe(201);
    expect(created.body.idType).toBe('partner:dsp');
    const id = created.body.id as string;

    const first = await exportNow(id);
    expect(first).toMatchObject({ state: 'completed', adds: 5, removes: 0, matched: 3, unmatched: 1, withheld: { consent: 1, labels: {} } });
    expect(first.matchRate).toBeCloseTo(3 / 4, 5);
    expect(server.audience(segmentId)).toEqual(['P-a', 'P-b1', 'P-b2', 'P-c1', 'P-c2']);

    // e syncs now: the next export sends e's partner id and nothing else.
    await sync('P-e', cookie('e'));
    const second = await exportNow(id);
    expect(second).toMatchObject({ state: 'completed', adds: 1, removes: 0, matched: 4, unmatched: 0 });
    expect(server.audience(segmentId)).toEqual(['P-a', 'P-b1', 'P-b2', 'P-c1', 'P-c2', 'P-e']);

    // A partner whose ids a destination exports is not removed.
    const removal = await admin('/v1/partners/dsp', { method: 'DELETE' });
    expect(removal.status).toBe(409);
    expect(removal.body.errors[0].message).toContain(id);
  }, 180_000);

  it("sends a DSP its own cookie ids, learnt by cookie sync, as TDID", async () => {
    const dsp = await new PartnerServer({ kind: 'dsp', token: 'dsp-token' }).start();
    try {
      const created = await admin('/v1/destinations', {
        body: { name: 'DSP data API', segments: [segmentId], connector: 'dsp_segments', idType: 'partner:dsp', config: { url: `${dsp.url}/data/advertiser`, token: 'dsp-token', advertiserId: 'adv1', segmentCodes: { [segmentId]: 'dmp-gold' } } },
      });
      expect(created.status).toBe(201);
      expect(await exportNow(created.body.id)).toMatchObject({ state: 'completed', adds: 6, rejected: 0 });
      expect(dsp.audience('dmp-gold')).toEqual(['P-a', 'P-b1', 'P-b2', 'P-c1', 'P-c2', 'P-e']);
    } finally {
      await dsp.stop();
    }
  }, 120_000);

  it('names the partner id type in segment files', async () => {
    const created = await admin('/v1/destinations', { body: { name: 'SSP files', segments: [segmentId], connector: 'segment_file', idType: 'partner:dsp', config: { folder: 'ssp', format: 'csv' } } });
    expect(created.status).toBe(201);
    expect((await exportNow(created.body.id)).state).toBe('completed');
    const lines = readdirSync(join(exportDir, 'ssp')).flatMap((name) => readFileSync(join(exportDir, 'ssp', name), 'utf8').trim().split('\n').slice(1));
    expect(lines.sort()).toEqual(['P-a', 'P-b1', 'P-b2', 'P-c1', 'P-c2', 'P-e'].map((puid) => `${puid},partner:dsp,${segmentId},add`));
  }, 120_000);
});
