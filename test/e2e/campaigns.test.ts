import { isHeldOut } from '../../domain/destinations';
import { liftOf } from '../../domain/campaignReports';
import { call } from '../support/http';
import { PartnerServer } from '../support/partners';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const PEOPLE = 400;
const HOLDOUT = 0.25;
const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
const WITH_MAID = 100;
const maidOf = (i: number) => `6d5c4b3a-0000-4000-8000-${String(i).padStart(12, '0')}`;

describe('campaign response: reach, frequency, CTR and conversions of a segment, and lift against a destination holdout', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  let partner: PartnerServer;
  let mobilePartner: PartnerServer | undefined;
  let segmentId: string;
  let destinationId: string;
  const profileIds: string[] = [];
  /** Who saw the campaign and who converted, as the second test plants them. */
  const reached = new Set<number>();
  const converted = new Set<number>();
  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  /** Starts an export of the destination and waits for it to end. */
  const exportNow = async (destinationId: string) => {
    const started = await admin(`/v1/destinations/${destinationId}/exports`, { body: {} });
    return waitFor('the export', async () => {
      const body = (await admin(`/v1/destinations/${destinationId}/exports/${started.body.exportId}`)).body;
      return body.state === 'running' ? null : body;
    });
  };
  /** A new batch run of the segment (a report counts the holdouts of the run it reads: a new run makes a new report). */
  const runSegment = async () => {
    const run = (await admin(`/v1/segments/${segmentId}/runs`, { method: 'POST' })).body.runId as string;
    await waitFor('the run', async () => (await admin(`/v1/segments/${segmentId}/runs/${run}`)).body.state === 'completed');
  };

  beforeAll(async () => {
    platform = await startPlatform('campaigns', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'] });
    ({ api } = platform);
    source = await newSource(api, 'site');
    // The first WITH_MAID people also have a mobile ad id: the only ones a destination of maids can send.
    const visits = Array.from({ length: PEOPLE }, (_, i) => ({ id: `v${i}`, type: 'page_view', timestamp: minutesAgo(30), identities: { cookie_id: `ck-${i}`, ...(i < WITH_MAID && { maid: maidOf(i) }) }, traits: { audience: 'outdoor' } }));
    for (let start = 0; start < PEOPLE; start += 100) await source.send(visits.slice(start, start + 100));
    await source.folded(PEOPLE);
    for (let i = 0; i < PEOPLE; i++) profileIds.push((await source.lookup('cookie_id', `ck-${i}`)).body.id);
    segmentId = (await admin('/v1/segments', { body: { name: 'Outdoor', rule: { trait: 'audience', op: 'eq', value: 'outdoor' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed');
    partner = await new PartnerServer({ kind: 'webhook', secret: 'a-secret-of-16-chars' }).start();
  }, 120_000);
  afterAll(async () => {
    await mobilePartner?.stop();
    await partner.stop();
    await platform.stop();
  });

  it('a destination holds out a stable share of the segment from the partner', async () => {
    const created = await admin('/v1/destinations', {
      body: { name: 'DSP', connector: 'webhook', config: { url: `${partner.url}/hook`, secret: 'a-secret-of-16-chars' }, segments: [segmentId], idType: 'cookie_id', holdoutShare: HOLDOUT },
    });
    expect(created.status).toBe(201);
    expect(created.body.holdoutShare).toBe(HOLDOUT);
    destinationId = created.body.id;
    const view = await exportNow(destinationId);
    const held = profileIds.filter((id) => isHeldOut(destinationId, id, HOLDOUT));
    // A quarter, give or take what chance gives 400 draws.
    expect(held.length).toBeGreaterThan(PEOPLE * 0.15);
    expect(held.length).toBeLessThan(PEOPLE * 0.35);
    expect(view).toMatchObject({ state: 'completed', withheld: { consent: 0, labels: {}, holdout: held.length }, adds: PEOPLE - held.length });
    const sent = [...(partner.audiences.get(segmentId) ?? [])].sort();
    const expected = profileIds.flatMap((id, i) => (isHeldOut(destinationId, id, HOLDOUT) ? [] : [`ck-${i}`])).sort();
    expect(sent).toEqual(expected);
  });

  it('reports the response of the segment and the lift over the holdout that the planted effect gives', async () => {
    // Exported members see the campaign (one impression, every fifth clicks) and 30% convert; held-out members see nothing and 10% convert.
    // Who converts goes by rank within each group, so the rates are those planted whoever the destination holds out.
    const events: unknown[] = [];
    const treated = { size: 0, converters: 0, clicks: 0 };
    const held = { size: 0, converters: 0 };
    profileIds.forEach((id, i) => {
      const identities = { cookie_id: `ck-${i}` };
      if (isHeldOut(destinationId, id, HOLDOUT)) {
        if (held.size++ % 10 === 0) {
          held.converters++;
          converted.add(i);
          events.push({ id: `c${i}`, type: 'conversion', timestamp: minutesAgo(1), identities, properties: { campaign: 'spring', value: 20 } });
        }
        return;
      }
      const rank = treated.size++;
      reached.add(i);
      events.push({ id: `i${i}`, type: 'impression', timestamp: minutesAgo(10), identities, properties: { campaign: 'spring', creative: 'tent-300x250' } });
      if (rank % 5 === 0) {
        treated.clicks++;
        events.push({ id: `k${i}`, type: 'click', timestamp: minutesAgo(9), identities, properties: { campaign: 'spring' } });
      }
      if (rank % 10 < 3) {
        treated.converters++;
        converted.add(i);
        events.push({ id: `c${i}`, type: 'conversion', timestamp: minutesAgo(1), identities, properties: { campaign: 'spring', value: 20 } });
      }
    });
    // Another campaign's impressions are not this one's.
    events.push({ id: 'other', type: 'impression', timestamp: minutesAgo(2), identities: { cookie_id: 'ck-1' }, properties: { campaign: 'autumn' } });
    for (let start = 0; start < events.length; start += 100) await source.send(events.slice(start, start + 100));
    await source.folded(PEOPLE + events.length);

    const response = await admin(`/v1/campaigns/spring/report?segment=${segmentId}`);
    expect(response.status).toBe(200);
    const report = response.body;
    const converters = treated.converters + held.converters;
    expect(report).toMatchObject({
      campaign: 'spring',
      segmentId,
      stale: false,
      members: PEOPLE,
      reach: treated.size,
      impressions: treated.size,
      frequency: 1,
      clicks: treated.clicks,
      ctr: treated.clicks / treated.size,
      conversions: converters,
      // Every member with a conversion, the held-out ones (never reached) too; the rate is of the members reached.
      converters,
      convertersReached: treated.converters,
      conversionRate: treated.converters / treated.size,
      value: 20 * converters,
      holdout: { destinationId, share: HOLDOUT, size: held.size, reach: 0, converters: held.converters, conversionRate: held.converters / held.size },
      treated: { size: treated.size, reach: treated.size, converters: treated.converters, conversionRate: treated.converters / treated.size },
      delivery: { state: 'active', partnerHolds: treated.size },
    });
    const expected = liftOf(treated, held);
    expect(report.lift).toBeCloseTo((treated.converters / treated.size) / (held.converters / held.size) - 1, 12);
    expect(report.liftInterval).toEqual(expected.interval);
    // The planted effect (30% against 10%: a lift of 2) lies within the interval.
    expect(report.liftInterval.low).toBeLessThan(2);
    expect(report.liftInterval.high).toBeGreaterThan(2);

    const other = (await admin(`/v1/campaigns/autumn/report?segment=${segmentId}`)).body;
    expect(other).toMatchObject({ reach: 1, impressions: 1, conversions: 0, conversionRate: 0 });
    const unknown = (await admin(`/v1/campaigns/winter/report?segment=${segmentId}`)).body;
    expect(unknown).toMatchObject({ reach: 0, impressions: 0, frequency: null, ctr: null, conversionRate: null });
  });

  it("compares only members a destination would send: one of mobile ad ids splits those who have one, and no one else", async () => {
    mobilePartner = await new PartnerServer({ kind: 'webhook', secret: 'a-secret-of-16-chars' }).start();
    const created = await admin('/v1/destinations', {
      body: { name: 'Mobile DSP', connector: 'webhook', config: { url: `${mobilePartner.url}/hook`, secret: 'a-secret-of-16-chars' }, segments: [segmentId], idType: 'maid', holdoutShare: HOLDOUT },
    });
    expect(created.status).toBe(201);
    const mobileId = created.body.id as string;
    await runSegment();
    const group = (people: number[]) => {
      const converters = people.filter((i) => converted.has(i)).length;
      return { size: people.length, reach: people.filter((i) => reached.has(i)).length, converters, conversionRate: converters / people.length };
    };
    const withMaid = Array.from({ length: WITH_MAID }, (_, i) => i);
    const heldOut = withMaid.filter((i) => isHeldOut(mobileId, profileIds[i], HOLDOUT));
    const sent = withMaid.filter((i) => !isHeldOut(mobileId, profileIds[i], HOLDOUT));
    expect(heldOut.length).toBeGreaterThan(5);
    expect(sent.length).toBeGreaterThan(50);
    const mobile = await waitFor('the report of the new run', async () => {
      const response = await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=${mobileId}`);
      return response.status === 200 && !response.body.stale ? response.body : null;
    });
    // Before, every member went into one group or the other: 400 people, of whom 300 it can never send.
    expect(mobile).toMatchObject({ members: PEOPLE, holdout: { destinationId: mobileId, share: HOLDOUT, ...group(heldOut) }, treated: group(sent) });
    // Not exported yet: the partner holds none of them, so no one was treated and there is no lift to tell.
    expect(mobile).toMatchObject({ delivery: { state: 'active', partnerHolds: 0 }, lift: null, liftInterval: null });
    // What its export sends is the treated group: their maids, and no one else's.
    const exported = await exportNow(mobileId);
    expect(exported).toMatchObject({ state: 'completed', adds: sent.length });
    expect([...(mobilePartner.audiences.get(segmentId) ?? [])].sort()).toEqual(sent.map(maidOf).sort());
    const delivered = (await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=${mobileId}`)).body;
    const expected = liftOf(group(sent), group(heldOut));
    expect(delivered).toMatchObject({ delivery: { state: 'active', partnerHolds: sent.length }, lift: expected.lift, liftInterval: expected.interval });
    // Paused, the partner still holds what it was sent: the lift stands, and the state says it is paused.
    expect((await admin(`/v1/destinations/${mobileId}/pause`, { method: 'POST' })).status).toBe(200);
    expect((await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=${mobileId}`)).body).toMatchObject({ delivery: { state: 'paused', partnerHolds: sent.length }, lift: expected.lift });
    // The destination of cookie ids sends everyone it does not hold out, as before.
    const everyone = Array.from({ length: PEOPLE }, (_, i) => i);
    const cookies = (await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=${destinationId}`)).body;
    expect(cookies).toMatchObject({
      holdout: group(everyone.filter((i) => isHeldOut(destinationId, profileIds[i], HOLDOUT))),
      treated: group(everyone.filter((i) => !isHeldOut(destinationId, profileIds[i], HOLDOUT))),
    });
  }, 180_000);

  it("compares only members a sync partner's destination would send: those the match table maps, or who hold the partner's id", async () => {
    expect((await admin('/v1/partners', { body: { id: 'dsp', name: 'A DSP', redirectUrl: 'https://sync.dsp.example/match?dmp=${DMP_UID}' } })).status).toBe(201);
    // New members with cookies the sync route reads: a third synced, one in ten holding the partner's id themselves, the rest neither.
    const COUNT = 60;
    const cookieOf = (i: number) => `cookie-partner-${String(i).padStart(4, '0')}`;
    const synced = (i: number) => i % 3 === 0;
    const holdsId = (i: number) => i % 10 === 1;
    const visits = Array.from({ length: COUNT }, (_, i) => ({ id: `p${i}`, type: 'page_view', timestamp: minutesAgo(30), identities: { cookie_id: cookieOf(i), ...(holdsId(i) && { partner_uid: `dsp:HELD-${i}` }) }, traits: { audience: 'outdoor' } }));
    await source.send(visits);
    const ids: string[] = [];
    for (let i = 0; i < COUNT; i++) {
      ids.push(await waitFor(`p${i} folded`, async () => {
        const found = await source.lookup('cookie_id', cookieOf(i));
        return found.status === 200 ? (found.body.id as string) : null;
      }));
    }
    for (let i = 0; i < COUNT; i++) {
      if (!synced(i)) continue;
      const response = await fetch(`${api.url}/v1/sync/dsp?puid=P-${i}`, { redirect: 'manual', headers: { cookie: `dmp_uid=${cookieOf(i)}` } });
      expect(response.status).toBe(302);
    }
    const dspPartner = await new PartnerServer({ kind: 'webhook', secret: 'a-secret-of-16-chars' }).start();
    try {
      const share = 0.5;
      const created = await admin('/v1/destinations', {
        body: { name: 'Synced DSP', connector: 'webhook', config: { url: `${dspPartner.url}/hook`, secret: 'a-secret-of-16-chars' }, segments: [segmentId], idType: 'partner:dsp', holdoutShare: share },
      });
      expect(created.status).toBe(201);
      const dspId = created.body.id as string;
      await runSegment();
      const matched = Array.from({ length: COUNT }, (_, i) => i).filter((i) => synced(i) || holdsId(i));
      const heldOut = matched.filter((i) => isHeldOut(dspId, ids[i], share));
      const sent = matched.filter((i) => !isHeldOut(dspId, ids[i], share));
      expect(heldOut.length).toBeGreaterThan(3);
      expect(sent.length).toBeGreaterThan(3);
      const report = await waitFor('the report of the new run', async () => {
        const response = await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=${dspId}`);
        return response.status === 200 && !response.body.stale ? response.body : null;
      });
      // Every one of the 460 members has a cookie id: before, all of them went into one group or the other.
      expect(report).toMatchObject({ members: PEOPLE + COUNT, holdout: { destinationId: dspId, share, size: heldOut.length, reach: 0, converters: 0 }, treated: { size: sent.length, reach: 0, converters: 0 } });
      // Its export sends exactly the treated group's partner ids.
      const exported = await exportNow(dspId);
      // Adds count ids: a member holding the partner's id and synced too sends both.
      const partnerIdOf = (i: number) => (holdsId(i) && !synced(i) ? [`HELD-${i}`] : holdsId(i) ? [`HELD-${i}`, `P-${i}`] : [`P-${i}`]);
      expect(exported).toMatchObject({ state: 'completed', adds: sent.flatMap(partnerIdOf).length, matched: sent.length });
      expect([...(dspPartner.audiences.get(segmentId) ?? [])].sort()).toEqual(sent.flatMap(partnerIdOf).sort());
    } finally {
      await dspPartner.stop();
    }
  }, 180_000);

  it('refuses a report it cannot give, naming the field', async () => {
    const noSegment = await admin('/v1/campaigns/spring/report');
    expect(noSegment.status).toBe(400);
    expect(noSegment.body.errors[0].path).toBe('segment');
    const missing = await admin('/v1/campaigns/spring/report?segment=seg_nope');
    expect(missing.status).toBe(404);
    expect(missing.body.errors[0].path).toBe('query.segment');
    const notHolding = await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=dst_nope`);
    expect(notHolding.status).toBe(400);
    expect(notHolding.body.errors[0].path).toBe('query.destination');
  });

  it('answers 404 for a campaign past those a report counts, rather than zeros for one it did not count', async () => {
    // Eleven members see a hundred campaigns each, before spring (a profile keeps the hundred it saw last): more than a report keeps.
    const impressions = Array.from({ length: 11 }, (_, member) => Array.from({ length: 100 }, (_, n) => ({ id: `many-${member}-${n}`, type: 'impression', timestamp: minutesAgo(20), identities: { cookie_id: `ck-${member}` }, properties: { campaign: `many-${member}-${n}` } }))).flat();
    const applied = async () => (await admin(`/v1/sources/${source.sourceId}`)).body.profiles.eventsApplied as number;
    const before = await applied();
    for (let start = 0; start < impressions.length; start += 100) await source.send(impressions.slice(start, start + 100));
    await source.folded(before + impressions.length);
    await runSegment();
    const uncounted = await waitFor('a report counting more campaigns than it keeps', async () => {
      const response = await admin(`/v1/campaigns/winter/report?segment=${segmentId}`);
      return response.status === 404 ? response : null;
    });
    expect(uncounted.body).toMatchObject({ type: expect.stringContaining('campaign-not-counted'), errors: [{ path: 'params.campaign', message: expect.stringContaining('1000 campaigns') }] });
    // Those it counts are still told: spring reached the most members.
    const spring = await admin(`/v1/campaigns/spring/report?segment=${segmentId}&destination=${destinationId}`);
    expect(spring.status).toBe(200);
    expect(spring.body.reach).toBe(reached.size);
  }, 180_000);
});
