import { scheduleKey } from '../../domain/segments';
import { segmentScheduleId } from '../../domain/workflowIds';
import { call } from '../support/http';
import { PartnerServer } from '../support/partners';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource } from '../support/sourceClient';

/**
 * A run of every segment holds something per segment in its record and in each snapshot chunk, so
 * a large taxonomy is evaluated in several runs of at most DMP_SEGMENTS_PER_RUN (here 2), one after
 * the other: by its schedule and before an export, each segment reading its own run's members.
 */
describe('runs of every segment split past DMP_SEGMENTS_PER_RUN', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let partner: PartnerServer;
  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const SCHEDULE = { every: 'PT6H' };
  const ids: Record<string, string> = {};
  const members = async (id: string) => (await admin(`/v1/segments/${id}/members?limit=100`)).body.members.sort();

  beforeAll(async () => {
    platform = await startPlatform('rungroups', { DMP_SEGMENTS_PER_RUN: 2, DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] });
    ({ api } = platform);
    const shop = await newSource(api, 'shop');
    // p0 and p1 are gold, p1 and p2 bought, p2 has a mobile ad id.
    await shop.send([
      { id: 'e0', type: 'page_view', identities: { cookie_id: 'cookie-group-p0' }, traits: { plan: 'gold' } },
      { id: 'e1', type: 'purchase', identities: { cookie_id: 'cookie-group-p1' }, traits: { plan: 'gold' } },
      { id: 'e2', type: 'purchase', identities: { cookie_id: 'cookie-group-p2', maid: '6d5c4b3a-0000-4000-8000-000000000002' } },
    ]);
    await shop.folded(3);
    // `buyers` refers to `gold`: the two stay in one run; `mobile` needs a run of its own.
    const gold = (await admin('/v1/segments', { body: { name: 'Gold', rule: { trait: 'plan', op: 'eq', value: 'gold' }, schedule: SCHEDULE } })).body.id;
    const buyers = (await admin('/v1/segments', { body: { name: 'Gold buyers', rule: { all: [{ segment: gold }, { event: 'purchase' }] }, schedule: SCHEDULE } })).body.id;
    const mobile = (await admin('/v1/segments', { body: { name: 'Mobile', rule: { identity: 'maid' }, schedule: SCHEDULE } })).body.id;
    Object.assign(ids, { gold, buyers, mobile });
    for (const id of Object.values(ids)) await waitFor(`segment ${id} evaluated`, async () => (await admin(`/v1/segments/${id}`)).body.lastRun?.state === 'completed');
    partner = await new PartnerServer({ kind: 'webhook', secret: 'a-secret-of-16-chars' }).start();
  }, 120_000);
  afterAll(async () => {
    await partner.stop();
    await platform.stop();
  });

  const profileOf = async (cookie: string) => (await admin(`/v1/profiles/lookup?type=cookie_id&value=${cookie}`)).body.id as string;

  it('evaluates a scheduled run of every segment as two runs, each segment reading its own', async () => {
    const before = Object.fromEntries(await Promise.all(Object.entries(ids).map(async ([name, id]) => [name, (await admin(`/v1/segments/${id}`)).body.lastRun.runId])));
    const handle = platform.temporal.schedule.getHandle(segmentScheduleId(platform.store.db.databaseName, scheduleKey(SCHEDULE)));
    await handle.trigger();
    const runs = await waitFor('the scheduled runs', async () => {
      const segments = await Promise.all(Object.entries(ids).map(async ([name, id]) => [name, (await admin(`/v1/segments/${id}`)).body] as const));
      return segments.every(([name, segment]) => segment.lastRun.runId !== before[name] && segment.lastRun.state === 'completed') ? Object.fromEntries(segments.map(([name, segment]) => [name, segment.currentRun.runId as string])) : null;
    });
    expect(runs.gold).toBe(runs.buyers);
    expect(runs.mobile).not.toBe(runs.gold);
    const [p0, p1, p2] = await Promise.all(['cookie-group-p0', 'cookie-group-p1', 'cookie-group-p2'].map(profileOf));
    expect(await members(ids.gold)).toEqual([p0, p1].sort());
    expect(await members(ids.buyers)).toEqual([p1]);
    expect(await members(ids.mobile)).toEqual([p2]);
    // One after the other, each prepared once the one before it had ended (a run prepared early and left waiting would be failed as abandoned).
    const views = await Promise.all([[ids.gold, runs.gold], [ids.mobile, runs.mobile]].map(async ([segment, runId]) => (await admin(`/v1/segments/${segment}/runs/${runId}`)).body));
    expect(views.map((view) => view.state)).toEqual(['completed', 'completed']);
    const [earlier, later] = views.sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt));
    expect(Date.parse(later.startedAt)).toBeGreaterThanOrEqual(Date.parse(earlier.finishedAt));
  });

  it("exports segments of both runs: the export's runs of every segment record the facts each one needs", async () => {
    const created = await admin('/v1/destinations', {
      body: { name: 'DSP', connector: 'webhook', config: { url: `${partner.url}/hook`, secret: 'a-secret-of-16-chars' }, segments: [ids.buyers, ids.mobile], idType: 'cookie_id' },
    });
    expect(created.status).toBe(201);
    const started = await admin(`/v1/destinations/${created.body.id}/exports`, { body: {} });
    const view = await waitFor('the export', async () => {
      const body = (await admin(`/v1/destinations/${created.body.id}/exports/${started.body.exportId}`)).body;
      return body.state === 'running' ? null : body;
    }, 120_000);
    expect(view).toMatchObject({ state: 'completed', adds: 2, removes: 0 });
    expect([...(partner.audiences.get(ids.buyers) ?? [])]).toEqual(['cookie-group-p1']);
    expect([...(partner.audiences.get(ids.mobile) ?? [])]).toEqual(['cookie-group-p2']);
  });
});
