import { trendPointOf, type AudienceReport } from '../../domain/audienceReports';
import { dayKey } from '../../domain/profile';
import { AudienceReportStore } from '../../store/audienceReports';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { startApi, startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';
import { buildTcString } from '../unit/tcfFixture';

const PEOPLE = 200;
const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3_600_000).toISOString();

/**
 * 200 people whose make-up is planted, so every figure has a known value:
 * - plan: gold when i % 4 = 0 (50), silver when i % 4 = 1 (50), bronze otherwise (100)
 * - region: north when i < 60, south otherwise; interests: a list, `chess` for i % 10 = 0 besides `news` for all
 * - color: red when i % 10 = 0 (20), blue otherwise
 * - an email when i % 5 = 0 (40); TCF consent to purposes 1 and 3 when i is even (100)
 * - two purchases when gold, one page view each
 */
function plantedEvents(): unknown[] {
  const consent = buildTcString({ purposeConsents: [1, 3], vendorConsents: [] });
  const events: unknown[] = [];
  for (let i = 0; i < PEOPLE; i++) {
    const identities = { cookie_id: `p${i}`, ...(i % 5 === 0 && { email: `p${i}@example.com` }) };
    const traits = {
      plan: i % 4 === 0 ? 'gold' : i % 4 === 1 ? 'silver' : 'bronze',
      region: i < 60 ? 'north' : 'south',
      color: i % 10 === 0 ? 'red' : 'blue',
      interests: i % 10 === 0 ? ['news', 'chess'] : ['news'],
    };
    events.push({ id: `v${i}`, type: 'page_view', timestamp: hoursAgo(2), identities, traits, ...(i % 2 === 0 && { consent: { tcf: consent } }) });
    if (i % 4 === 0) for (const n of [1, 2]) events.push({ id: `b${i}-${n}`, type: 'purchase', timestamp: hoursAgo(1), identities: { cookie_id: `p${i}` } });
  }
  return events;
}

describe('audience insights: composition, overlap, affinity and trend of segments, on planted data', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  const segments: Record<'gold' | 'north' | 'email', string> = { gold: '', north: '', email: '' };

  const get = (path: string) => call(`${api.url}${path}`, { key: api.adminKey });
  const settled = (id: string) =>
    waitFor(`segment ${id} evaluated`, async () => {
      const segment = (await get(`/v1/segments/${id}`)).body;
      return segment.currentRun?.version === segment.version && segment.lastRun?.state === 'completed' ? segment : null;
    });

  beforeAll(async () => {
    platform = await startPlatform('insights');
    ({ api } = platform);
    source = await newSource(api, 'site');
    const events = plantedEvents();
    for (let start = 0; start < events.length; start += 100) expect((await source.send(events.slice(start, start + 100))).body.accepted).toBe(Math.min(100, events.length - start));
    await source.folded(events.length);
    const rules = {
      gold: { trait: 'plan', op: 'eq', value: 'gold' },
      north: { trait: 'region', op: 'eq', value: 'north' },
      email: { identity: 'email' },
    };
    for (const [name, rule] of Object.entries(rules)) {
      const created = await call(`${api.url}/v1/segments`, { key: api.adminKey, body: { name, rule } });
      expect(created.status).toBe(201);
      segments[name as keyof typeof segments] = created.body.id;
    }
    for (const id of Object.values(segments)) await settled(id);
  });
  afterAll(() => platform.stop());

  it('insights count what the members hold: top trait values, events, identity and consent coverage', async () => {
    const response = await get(`/v1/segments/${segments.gold}/insights?top=5`);
    expect(response.status).toBe(200);
    const insights = response.body;
    expect(insights).toMatchObject({ segmentId: segments.gold, size: 50, stale: false });
    expect(insights.traits.plan.top).toEqual([{ value: 'gold', count: 50, share: 1 }]);
    // Gold is every fourth person: 15 of the first 60 are north, 35 south.
    expect(insights.traits.region.top).toEqual([
      { value: 'south', count: 35, share: 0.7 },
      { value: 'north', count: 15, share: 0.3 },
    ]);
    // A list trait counts each element: all hold news, every tenth gold person (i % 20 = 0) also chess.
    expect(insights.traits.interests).toMatchObject({ profiles: 50, distinct: 2, top: [{ value: 'news', count: 50, share: 1 }, { value: 'chess', count: 10, share: 0.2 }] });
    expect(insights.events.purchase).toEqual({ profiles: 50, share: 1, meanCount: 2 });
    expect(insights.events.page_view).toEqual({ profiles: 50, share: 1, meanCount: 1 });
    expect(insights.identityCoverage).toEqual({ email: 0.2, phone: 0, maid: 0, crm_id: 0, cookie_id: 1, partner_uid: 0 });
    // Gold people are all even: all consented to purposes 1 and 3, to nothing else.
    expect(insights.consentCoverage).toEqual({ 1: 1, 3: 1 });

    const north = (await get(`/v1/segments/${segments.north}/insights`)).body;
    expect(north.size).toBe(60);
    expect(north.events).toEqual({ page_view: { profiles: 60, share: 1, meanCount: 1 }, purchase: { profiles: 15, share: 0.25, meanCount: 2 } });
    expect(north.consentCoverage).toEqual({ 1: 0.5, 3: 0.5 });
  });

  it('overlap gives every pair its intersection and Jaccard index, from memberships as they stand', async () => {
    const response = await call(`${api.url}/v1/insights/overlap`, { key: api.adminKey, body: { segments: [segments.gold, segments.north, segments.email] } });
    expect(response.status).toBe(200);
    expect(response.body.sizes).toEqual({ [segments.gold]: 50, [segments.north]: 60, [segments.email]: 40 });
    // gold ∩ north: i % 4 = 0 below 60 (15); gold ∩ email: i % 20 = 0 (10); north ∩ email: i % 5 = 0 below 60 (12).
    expect(response.body.pairs).toEqual([
      { a: segments.gold, b: segments.north, intersection: 15, jaccard: 15 / 95 },
      { a: segments.gold, b: segments.email, intersection: 10, jaccard: 10 / 80 },
      { a: segments.north, b: segments.email, intersection: 12, jaccard: 12 / 88 },
    ]);
  });

  it('affinity ranks trait values by index against all profiles, leaving out the thinly supported', async () => {
    // Email holders (i % 5 = 0): red is i % 10 = 0, so half of them (20 of 40) against a tenth of everyone.
    const response = await get(`/v1/segments/${segments.email}/affinity?minSupport=10`);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ segmentId: segments.email, base: 'all', stale: false, audienceSize: 40, baseSize: PEOPLE });
    const items = response.body.items;
    expect(items[0]).toEqual({ trait: 'color', value: 'red', audienceShare: 0.5, baseShare: 0.1, index: 500, support: 20 });
    expect(items[1]).toEqual({ trait: 'interests', value: 'chess', audienceShare: 0.5, baseShare: 0.1, index: 500, support: 20 });
    const indexes = items.map((item: { index: number }) => item.index);
    expect(indexes).toEqual([...indexes].sort((a, b) => b - a));
    const blue = items.find((item: { value: string }) => item.value === 'blue');
    expect(blue).toEqual({ trait: 'color', value: 'blue', audienceShare: 0.5, baseShare: 0.9, index: (0.5 / 0.9) * 100, support: 20 });

    // The default minimum support (30 members) leaves out every value held by 20.
    const strict = (await get(`/v1/segments/${segments.email}/affinity`)).body.items;
    expect(strict.every((item: { support: number }) => item.support >= 30)).toBe(true);
    expect(strict.find((item: { value: string }) => item.value === 'red')).toBeUndefined();
    expect(strict.find((item: { value: string }) => item.value === 'news')).toEqual({ trait: 'interests', value: 'news', audienceShare: 1, baseShare: 1, index: 100, support: 40 });
  });

  it('affinity against another segment uses its members as the base', async () => {
    const response = await get(`/v1/segments/${segments.gold}/affinity?base=${segments.north}&minSupport=1`);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ base: segments.north, audienceSize: 50, baseSize: 60 });
    const north = response.body.items.find((item: { trait: string; value: string }) => item.trait === 'region' && item.value === 'north');
    expect(north).toEqual({ trait: 'region', value: 'north', audienceShare: 0.3, baseShare: 1, index: 30, support: 15 });
    // South is held by no north member: the base's report does not list it, so it is left out.
    expect(response.body.items.find((item: { value: string }) => item.value === 'south')).toBeUndefined();
  });

  it('a segment changed by a run after its report is counted again before it is answered', async () => {
    // p1 (silver) turns gold; a new run of the gold segment takes it in.
    await source.send([{ id: 'up1', type: 'page_view', timestamp: hoursAgo(0), identities: { cookie_id: 'p1' }, traits: { plan: 'gold' } }]);
    await source.folded(plantedEvents().length + 1);
    const { runId } = (await call(`${api.url}/v1/segments/${segments.gold}/runs`, { key: api.adminKey, method: 'POST' })).body;
    await waitFor('run done', async () => (await get(`/v1/segments/${segments.gold}/runs/${runId}`)).body.state === 'completed');
    await waitFor('the run is current', async () => (await get(`/v1/segments/${segments.gold}`)).body.currentRun?.runId === runId);
    const insights = (await get(`/v1/segments/${segments.gold}/insights`)).body;
    expect(insights).toMatchObject({ size: 51, stale: false });
    expect(insights.traits.plan.top).toEqual([{ value: 'gold', count: 51, share: 1 }]);
    expect(insights.traits.region.top).toEqual([
      { value: 'south', count: 35, share: 35 / 51 },
      { value: 'north', count: 16, share: 16 / 51 },
    ]);
  });

  it('an API that waits for no report still starts one: a stale answer at once, the new count soon after', async () => {
    const hasty = await startApi({ store: platform.store, temporal: platform.temporal, taskQueue: platform.taskQueue, config: { DMP_REPORT_WAIT_SECONDS: 0 } });
    try {
      const { runId } = (await call(`${api.url}/v1/segments/${segments.gold}/runs`, { key: api.adminKey, method: 'POST' })).body;
      await waitFor('run done', async () => (await get(`/v1/segments/${segments.gold}/runs/${runId}`)).body.state === 'completed');
      await waitFor('the run is current', async () => (await get(`/v1/segments/${segments.gold}`)).body.currentRun?.runId === runId);
      const insights = () => call(`${hasty.url}/v1/segments/${segments.gold}/insights`, { key: hasty.adminKey });
      expect((await insights()).body).toMatchObject({ size: 51, stale: true });
      // Nothing else asks for a report meanwhile (the daily pass is hours away): the one the answer started counts it.
      expect(await waitFor('the report of the new run', async () => ((await insights()).body.stale === false ? true : null), 30_000, 500)).toBe(true);
      expect(await new AudienceReportStore(platform.store).get(segments.gold)).toMatchObject({ runId, size: 51 });
    } finally {
      await hasty.close();
    }
  });

  it('the trend has a point for today from the day’s report', async () => {
    const response = await get(`/v1/segments/${segments.north}/trend?days=7`);
    expect(response.status).toBe(200);
    const today = new Date().toISOString().slice(0, 10);
    expect(response.body.days).toEqual([{ day: today, asOf: expect.any(String), size: 60, identityCoverage: { email: 0.2, phone: 0, maid: 0, crm_id: 0, cookie_id: 1, partner_uid: 0 }, consentCoverage: { 1: 0.5, 3: 0.5 } }]);
  });

  it('a report counted earlier never replaces a newer one (two passes may overlap)', async () => {
    const reports = new AudienceReportStore(platform.store);
    const newer = (await reports.get(segments.north)) as AudienceReport;
    const older = { ...newer, at: new Date(newer.at.getTime() - 60_000), size: 1 };
    await reports.write([older], [trendPointOf(older, dayKey(newer.at))]);
    expect(await reports.get(segments.north)).toEqual(newer);
    expect((await reports.points(segments.north, [dayKey(newer.at)])).get(dayKey(newer.at))?.size).toBe(60);
    const later = { ...newer, at: new Date(newer.at.getTime() + 1), size: 61 };
    await reports.write([later], []);
    expect((await reports.get(segments.north))?.size).toBe(61);
  });

  it('a deleted segment leaves no report or trend point behind, and the others keep theirs', async () => {
    const created = await call(`${api.url}/v1/segments`, { key: api.adminKey, body: { name: 'passing', rule: { trait: 'region', op: 'eq', value: 'south' } } });
    const id = created.body.id;
    await settled(id);
    expect((await get(`/v1/segments/${id}/insights`)).status).toBe(200);
    const reports = new AudienceReportStore(platform.store);
    expect(await reports.get(id)).not.toBeNull();
    const today = dayKey(new Date());
    expect((await reports.points(id, [today])).size).toBe(1);
    expect((await call(`${api.url}/v1/segments/${id}`, { key: api.adminKey, method: 'DELETE' })).status).toBe(204);
    expect(await reports.get(id)).toBeNull();
    expect(await platform.store.db.collection('audience_trend').countDocuments({ _id: { $gte: `${id}:`, $lt: `${id};` } as never })).toBe(0);
    expect((await reports.points(segments.north, [today])).size).toBe(1);
  });

  it('refuses what it cannot answer with a problem naming the field', async () => {
    const missing = await get('/v1/segments/seg_nope/insights');
    expect(missing.status).toBe(404);
    expect(missing.body.errors).toEqual([{ path: 'params.id', message: 'no segment seg_nope' }]);
    const badBase = await get(`/v1/segments/${segments.gold}/affinity?base=seg_nope`);
    expect(badBase.status).toBe(404);
    expect(badBase.body.errors[0].path).toBe('query.base');
    const one = await call(`${api.url}/v1/insights/overlap`, { key: api.adminKey, body: { segments: [segments.gold] } });
    expect(one.status).toBe(400);
    expect(one.body.errors[0].path).toBe('segments');
    const twice = await call(`${api.url}/v1/insights/overlap`, { key: api.adminKey, body: { segments: [segments.gold, segments.gold] } });
    expect(twice.status).toBe(400);
    const unknown = await call(`${api.url}/v1/insights/overlap`, { key: api.adminKey, body: { segments: [segments.gold, 'seg_nope'] } });
    expect(unknown.status).toBe(404);
    expect(unknown.body.errors[0].path).toBe('segments.1');
    expect((await get(`/v1/segments/${segments.gold}/insights?top=0`)).status).toBe(400);
    expect((await call(`${api.url}/v1/segments/${segments.gold}/insights`, { key: 'not-the-admin-key' })).status).toBe(403);
  });

  it('counts in the report of all profiles only people whose consent allows profiling and who have not opted out', async () => {
    // p3 withdraws (the signal reaches its profile; the event itself is not profiled), p7 opts out.
    const withdrawn = await source.send([{ id: 'w3', type: 'page_view', timestamp: hoursAgo(0), identities: { cookie_id: 'p3' }, consent: { purposes: { profiling: false } } }]);
    expect(withdrawn.body.nonProfiling).toBe(1);
    const optOut = await call(`${api.url}/v1/privacy/requests`, { key: api.adminKey, body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'p7' } } });
    expect(optOut.status).toBe(202);
    expect((await settledRequest(get, optOut.body.id)).state).toBe('completed');
    await waitFor('the withdrawal folded', async () => (await get('/v1/profiles/lookup?type=cookie_id&value=p3')).body.consent?.purposes?.profiling === false);
    // A new run of the email segment makes its report, and the one of all profiles, counted again.
    const { runId } = (await call(`${api.url}/v1/segments/${segments.email}/runs`, { key: api.adminKey, method: 'POST' })).body;
    await waitFor('the run is current', async () => (await get(`/v1/segments/${segments.email}`)).body.currentRun?.runId === runId);
    const affinity = (await get(`/v1/segments/${segments.email}/affinity?minSupport=1`)).body;
    expect(affinity).toMatchObject({ stale: false, audienceSize: 40, baseSize: PEOPLE - 2 });
  });
});
