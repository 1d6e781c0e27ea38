import fc from 'fast-check';
import { affinityOf, AffinityQuerySchema, AudienceTally, CampaignTally, FeatureDictionary, insightsOf, membershipMasks, overlapOf, REPORT_CAMPAIGNS_KEPT, REPORT_EVENT_TYPES_KEPT, REPORT_VALUE_BYTES, REPORT_VALUES_KEPT, VALUES_COUNTED_PER_TRAIT, type AudienceReport } from '../../domain/audienceReports';
import { campaignReportOf, liftOf } from '../../domain/campaignReports';
import { isHeldOut } from '../../domain/destinations';
import { encodeFieldName } from '../../domain/fieldNames';
import { applyEvent, CAMPAIGN_VALUE_MAX, CAMPAIGNS_KEPT, newProfile, type SegmentSubject } from '../../domain/profile';

const at = new Date('2026-11-30T00:00:00Z');
const counter = (count: number) => ({ count, firstSeen: at, lastSeen: at, days: {} });

function subject(fields: Partial<SegmentSubject>): Pick<SegmentSubject, 'traits' | 'counters' | 'identities' | 'consent'> {
  return { traits: {}, counters: {}, identities: [], consent: null, ...fields };
}

function reportOf(subjects: Array<Pick<SegmentSubject, 'traits' | 'counters' | 'identities' | 'consent'>>, id = 'seg'): AudienceReport {
  const dictionary = new FeatureDictionary();
  const tally = new AudienceTally();
  for (const features of subjects.map((s) => dictionary.features(s))) tally.add(features);
  return tally.report(dictionary, id, at, 'run');
}

describe('audience reports', () => {
  it('count a list trait element by element, each once per person, and tell the string "1" from the number 1', () => {
    const report = reportOf([subject({ traits: { tags: ['a', 'b', 'a'], code: '1' } }), subject({ traits: { tags: ['a'], code: 1 } })]);
    expect(report.traits.find((trait) => trait.name === 'tags')).toMatchObject({ profiles: 2, distinct: 2, values: [{ value: 'a', count: 2 }, { value: 'b', count: 1 }] });
    expect(report.traits.find((trait) => trait.name === 'code')?.values).toEqual([
      { value: 1, count: 1 },
      { value: '1', count: 1 },
    ]);
  });

  it('leave objects and nulls out, and name traits and events as collected', () => {
    const name = 'a.b$c';
    const report = reportOf([subject({ traits: { [encodeFieldName(name)]: 'x', nested: { deep: 1 }, empty: null }, counters: { [encodeFieldName('add.to$cart')]: counter(3) } })]);
    expect(report.traits.map((trait) => trait.name)).toEqual([name]);
    expect(report.events).toEqual([{ type: 'add.to$cart', profiles: 1, total: 3 }]);
  });

  it('count values past the per-trait bound as uncounted, and keep the most held values only', () => {
    const subjects = Array.from({ length: VALUES_COUNTED_PER_TRAIT + 5 }, (_, i) => subject({ traits: { id: `v${i}` } }));
    subjects.push(subject({ traits: { id: 'v0' } }));
    const trait = reportOf(subjects).traits[0];
    expect(trait).toMatchObject({ name: 'id', profiles: VALUES_COUNTED_PER_TRAIT + 6, distinct: VALUES_COUNTED_PER_TRAIT, uncounted: 5 });
    expect(trait.values).toHaveLength(REPORT_VALUES_KEPT);
    expect(trait.values[0]).toEqual({ value: 'v0', count: 2 });
  });

  it('keep of long values and of many event types what a stored report holds, the most held first', () => {
    // A trait of URLs of 1 KB, each held by fewer than the one before; a site naming an event per page.
    const subjects = Array.from({ length: 300 }, (_, i) => subject({ traits: { url: `https://shop.example/${i}/`.padEnd(1024, 'x') }, counters: Object.fromEntries(Array.from({ length: 10 }, (_, k) => [`viewed_${i * 10 + k}`, counter(1)])) }));
    subjects.push(...Array.from({ length: 5 }, () => subject({ traits: { url: 'https://shop.example/0/'.padEnd(1024, 'x') }, counters: { viewed_0: counter(1) } })));
    const report = reportOf(subjects);
    const url = report.traits[0];
    expect(url).toMatchObject({ name: 'url', distinct: 300 });
    expect(url.values).toHaveLength(Math.floor(REPORT_VALUE_BYTES / 1024));
    expect(url.values[0]).toEqual({ value: 'https://shop.example/0/'.padEnd(1024, 'x'), count: 6 });
    expect(report.events).toHaveLength(REPORT_EVENT_TYPES_KEPT);
    expect(report.events[0]).toEqual({ type: 'viewed_0', profiles: 6, total: 6 });
  });

  it("count a segment's uncounted among its own members, not the whole pass's", () => {
    const dictionary = new FeatureDictionary();
    const everyone = Array.from({ length: VALUES_COUNTED_PER_TRAIT + 50 }, (_, i) => dictionary.features(subject({ traits: { zip: `z${i}` } })));
    const segment = new AudienceTally();
    // Ten members: five whose zip the dictionary counts, five past its bound.
    for (const features of [...everyone.slice(0, 5), ...everyone.slice(-5)]) segment.add(features);
    expect(segment.report(dictionary, 'seg', at, 'run').traits[0]).toMatchObject({ name: 'zip', profiles: 10, distinct: 5, uncounted: 5 });
  });

  it('cover identities by type and consent by TCF purpose', () => {
    const tcf = (purposeConsents: number[]) => ({ sourceId: 's', at, tcf: { tcString: '', policyVersion: 4, cmpId: 1, created: at, purposeConsents, purposeLegitimateInterests: [], vendorConsents: [] } });
    const identity = (type: 'email_sha256' | 'cookie_id') => ({ type, value: 'x', firstSeen: at, lastSeen: at, sourceId: 's' });
    const report = reportOf([subject({ identities: [identity('email_sha256'), identity('cookie_id')], consent: tcf([1, 4]) }), subject({ identities: [identity('cookie_id')], consent: tcf([1]) })]);
    const insights = insightsOf('seg', report, false, 10);
    expect(insights.identityCoverage).toEqual({ email: 0.5, phone: 0, maid: 0, crm_id: 0, cookie_id: 1, partner_uid: 0 });
    expect(insights.consentCoverage).toEqual({ 1: 1, 4: 0.5 });
  });

  it('affinity indexes a value by its share against the base, leaving out values the base lacks or too few hold', () => {
    const people = [
      ...Array.from({ length: 10 }, () => subject({ traits: { color: 'red' } })),
      ...Array.from({ length: 30 }, () => subject({ traits: { color: 'blue' } })),
    ];
    const dictionary = new FeatureDictionary();
    const features = people.map((person) => dictionary.features(person));
    const all = new AudienceTally();
    const audience = new AudienceTally();
    features.forEach((f, i) => {
      all.add(f);
      if (i < 10 || i % 3 === 0) audience.add(f); // every red, and 10 of the blue
    });
    const result = affinityOf('seg', 'all', audience.report(dictionary, 'seg', at, 'run'), all.report(dictionary, 'all', at, null), false, 5, 10);
    expect(result.stale).toBe(false);
    expect(result.items).toEqual([
      { trait: 'color', value: 'red', audienceShare: 0.5, baseShare: 0.25, index: 200, support: 10 },
      { trait: 'color', value: 'blue', audienceShare: 0.5, baseShare: 0.75, index: (0.5 / 0.75) * 100, support: 10 },
    ]);
    expect(affinityOf('seg', 'all', audience.report(dictionary, 'seg', at, 'run'), all.report(dictionary, 'all', at, null), true, 11, 10).items).toEqual([]);
  });

  it('merges members into the same masks as one map of every member would, however they are paged', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uniqueArray(fc.stringMatching(/^p_[a-d][0-9]$/), { maxLength: 30 }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 7 }), async (segments, pageSize) => {
        const sorted = segments.map((ids) => [...ids].sort());
        async function* paged(ids: string[]) {
          for (let i = 0; i < ids.length; i += pageSize) yield ids.slice(i, i + pageSize);
        }
        const naive = new Map<string, number>();
        sorted.forEach((ids, k) => ids.forEach((id) => naive.set(id, (naive.get(id) ?? 0) | (1 << k))));
        const expected = new Map<number, number>();
        for (const mask of naive.values()) expected.set(mask, (expected.get(mask) ?? 0) + 1);
        expect(await membershipMasks(sorted.map(paged))).toEqual(expected);
      }),
    );
  });

  it('overlap counts every pair from membership masks, merged from each segment\'s members in id order a page at a time', async () => {
    // a: {1,2,3}, b: {2,3,4}, c: {} — pages of any size, empty ones too.
    async function* pages(...chunks: string[][]) {
      for (const chunk of chunks) yield chunk;
    }
    const people = await membershipMasks([pages(['p1', 'p2'], [], ['p3']), pages(['p2'], ['p3', 'p4']), pages([])]);
    expect(people).toEqual(new Map([[0b001, 1], [0b011, 2], [0b010, 1]]));
    expect(overlapOf(['a', 'b', 'c'], people)).toEqual({
      sizes: { a: 3, b: 3, c: 0 },
      pairs: [
        { a: 'a', b: 'b', intersection: 2, jaccard: 0.5 },
        { a: 'a', b: 'c', intersection: 0, jaccard: 0 },
        { a: 'b', b: 'c', intersection: 0, jaccard: 0 },
      ],
    });
  });
});

describe('campaign response', () => {
  it('a profile counts impressions, clicks and conversions per campaign, keeping the most recently seen campaigns', () => {
    const profile = newProfile('p1', at, at);
    const event = (id: string, type: string, campaign: unknown, minutes: number, value?: unknown) => ({ id, type, timestamp: new Date(at.getTime() + minutes * 60_000), identities: [], properties: { campaign, ...(value !== undefined && { value }) } });
    const origin = { sourceId: 's', party: 'first' as const, seq: 0 };
    for (const e of [event('1', 'impression', 'spring', 1), event('2', 'click', 'spring', 2), event('3', 'conversion', 'spring', 3, 25), event('4', 'conversion', 'spring', 4, 'x'), event('5', 'impression', 7, 5), event('6', 'page_view', 'spring', 6)]) applyEvent(profile, e, origin);
    expect(profile.campaigns).toEqual({ spring: { impressions: 1, clicks: 1, conversions: 2, value: 25, lastSeen: new Date(at.getTime() + 4 * 60_000) } });
    // No order is worth 1e308: two such values would sum to Infinity, which JSON writes as null.
    for (const e of [event('7', 'conversion', 'spring', 4, 1e308), event('8', 'conversion', 'spring', 4, -1e308), event('9', 'conversion', 'spring', 4, CAMPAIGN_VALUE_MAX)]) applyEvent(profile, e, origin);
    expect(profile.campaigns?.spring).toMatchObject({ conversions: 5, value: 25 + CAMPAIGN_VALUE_MAX });
    for (let n = 0; n < CAMPAIGNS_KEPT; n++) applyEvent(profile, event(`c${n}`, 'impression', `c${n}`, 10 + n), origin);
    expect(Object.keys(profile.campaigns ?? {})).toHaveLength(CAMPAIGNS_KEPT);
    expect(profile.campaigns?.spring).toBeUndefined();
  });

  it('lift is the ratio of the conversion rates less one, with an interval around it', () => {
    const { lift, interval } = liftOf({ converters: 90, size: 300 }, { converters: 10, size: 100 });
    expect(lift).toBeCloseTo(2, 12);
    expect(interval?.low).toBeLessThan(2);
    expect(interval?.high).toBeGreaterThan(2);
    expect(interval?.low).toBeGreaterThan(0);
    expect(liftOf({ converters: 5, size: 10 }, { converters: 0, size: 10 })).toEqual({ lift: null, interval: null });
  });

  it('gives no lift while the partner holds none of the segment: nobody was treated', () => {
    const figures = (converters: number) => [{ campaign: 'spring', reach: 0, impressions: 0, clicks: 0, converters, conversions: converters, value: 0 }];
    const holdout = { destinationId: 'dst_a', share: 0.25, held: { size: 100, campaigns: figures(10) }, treated: { size: 300, campaigns: figures(90) } };
    const report = { _id: 'seg', at, runId: 'run', size: 400, traits: [], events: [], identities: {}, consent: [], campaigns: [], holdouts: [holdout] } as unknown as AudienceReport;
    const sent = campaignReportOf('spring', 'seg', report, false, holdout, { state: 'paused', partnerHolds: 300 });
    expect(sent.lift).toBeCloseTo(2, 12);
    expect(sent.delivery).toEqual({ state: 'paused', partnerHolds: 300 });
    expect(campaignReportOf('spring', 'seg', report, false, holdout, { state: 'active', partnerHolds: 0 })).toMatchObject({ lift: null, liftInterval: null, treated: { size: 300, converters: 90 } });
    // A destination since deleted: the report stands as counted.
    expect(campaignReportOf('spring', 'seg', report, false, holdout, null)).toMatchObject({ delivery: null, lift: sent.lift });
  });

  it('says whether its campaigns were cut: not when the members had exactly as many as it keeps', () => {
    const dictionary = new FeatureDictionary();
    const counter = { impressions: 1, clicks: 0, conversions: 0, value: 0, lastSeen: at };
    const reportOf = (campaigns: number) => {
      const tally = new AudienceTally();
      tally.add(dictionary.features({ ...subject({}), campaigns: Object.fromEntries(Array.from({ length: campaigns }, (_, n) => [`c${n}`, counter])) }));
      return tally.report(dictionary, 'seg', at, 'run');
    };
    expect(reportOf(REPORT_CAMPAIGNS_KEPT).campaignsCut).toBe(false);
    expect(reportOf(REPORT_CAMPAIGNS_KEPT + 1)).toMatchObject({ campaignsCut: true, campaigns: expect.any(Array) });
    expect(reportOf(REPORT_CAMPAIGNS_KEPT + 1).campaigns).toHaveLength(REPORT_CAMPAIGNS_KEPT);
  });

  it("counts a holdout's groups for the audience's campaigns, a campaign that reached none of the held-out members among them", () => {
    const dictionary = new FeatureDictionary();
    const audience = new AudienceTally();
    const held = new CampaignTally();
    const treated = new CampaignTally();
    const counter = (impressions: number, conversions: number) => ({ impressions, clicks: 0, conversions, value: 0, lastSeen: at });
    // Held-out members see more than a report keeps of other campaigns, and convert without ever seeing spring.
    const busy = Object.fromEntries(Array.from({ length: REPORT_CAMPAIGNS_KEPT + 5 }, (_, n) => [`other${n}`, counter(1, 0)]));
    const person = (campaigns: Record<string, ReturnType<typeof counter>>) => dictionary.features({ ...subject({}), campaigns });
    for (let n = 0; n < 10; n++) {
      const features = person({ ...busy, spring: counter(0, n < 2 ? 1 : 0) });
      audience.add(features);
      held.add(features);
    }
    for (let n = 0; n < 30; n++) {
      const features = person({ spring: counter(3, n < 12 ? 1 : 0) });
      audience.add(features);
      treated.add(features);
    }
    const report = audience.report(dictionary, 'seg', at, 'run', [{ destinationId: 'dst_a', share: 0.25, held, treated }]);
    expect(report.campaigns).toHaveLength(REPORT_CAMPAIGNS_KEPT);
    expect(report.campaignsCut).toBe(true);
    expect(report.campaigns?.[0]).toMatchObject({ campaign: 'spring', reach: 30, converters: 14 });
    const holdout = report.holdouts?.[0];
    expect(holdout?.held.campaigns.find((figures) => figures.campaign === 'spring')).toMatchObject({ reach: 0, converters: 2 });
    expect(holdout?.held.campaigns.length).toBe(REPORT_CAMPAIGNS_KEPT);
    const measured = campaignReportOf('spring', 'seg', report, false, holdout ?? null, { state: 'active', partnerHolds: 30 });
    expect(measured.holdout).toMatchObject({ size: 10, converters: 2 });
    expect(measured.lift).toBeCloseTo(12 / 30 / (2 / 10) - 1, 12);
  });

  it('a holdout takes about its share of members, the same ones every time, different ones per destination', () => {
    const ids = Array.from({ length: 10_000 }, (_, n) => `p${n}`);
    const held = ids.filter((id) => isHeldOut('dst_a', id, 0.2));
    expect(held.length / ids.length).toBeGreaterThan(0.18);
    expect(held.length / ids.length).toBeLessThan(0.22);
    expect(ids.filter((id) => isHeldOut('dst_a', id, 0.2))).toEqual(held);
    expect(ids.filter((id) => isHeldOut('dst_b', id, 0.2))).not.toEqual(held);
    // A larger share keeps everyone the smaller held out.
    const more = new Set(ids.filter((id) => isHeldOut('dst_a', id, 0.3)));
    expect(held.every((id) => more.has(id))).toBe(true);
    expect(ids.some((id) => isHeldOut('dst_a', id, 0))).toBe(false);
  });
});

describe('affinity query', () => {
  it('states the largest minSupport it accepts, so a value the API documents as valid is never refused', () => {
    expect(AffinityQuerySchema.safeParse({ minSupport: '1000000000' }).success).toBe(true);
    const tooBig = AffinityQuerySchema.safeParse({ minSupport: '1000000001' });
    expect(tooBig.error?.issues[0]).toMatchObject({ path: ['minSupport'], code: 'too_big', maximum: 1_000_000_000 });
    expect(AffinityQuerySchema.safeParse({ minSupport: '15732509495570507776' }).success).toBe(false);
  });
});
