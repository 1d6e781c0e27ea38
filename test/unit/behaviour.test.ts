import fc from 'fast-check';
import { applyEvent, BEHAVIOUR_DAYS, RECENT_EVENTS_KEPT, type EventOrigin, combineProfiles, dayKey, mostRestrictiveConsent, newProfile, type ProfileConsent, type ProfileDoc } from '../../domain/profile';

const at = (iso: string) => new Date(iso);
const first: EventOrigin = { sourceId: 'src_a', party: 'first', seq: 0 };

function docWith(id: string, events: Array<{ type: string; at: string; traits?: Record<string, unknown> }>, origin = first): ProfileDoc {
  const doc = newProfile(id, at('2026-01-01T00:00:00Z'), at(events[0].at));
  for (const event of events) applyEvent(doc, { id: `${id}-${event.at}`, type: event.type, timestamp: at(event.at), identities: [{ type: 'cookie_id', value: id }], traits: event.traits }, origin);
  return doc;
}

describe('daily behaviour buckets', () => {
  it('counts events per UTC day', () => {
    const doc = docWith('p', [
      { type: 'purchase', at: '2026-03-01T23:59:59Z' },
      { type: 'purchase', at: '2026-03-02T00:00:00Z' },
      { type: 'purchase', at: '2026-03-02T10:00:00Z' },
    ]);
    expect(doc.counters.purchase.days).toEqual({ '20260301': 1, '20260302': 2 });
    expect(doc.counters.purchase.count).toBe(3);
  });

  it(`keeps only the days a ${BEHAVIOUR_DAYS}-day window back from the newest event touches (a day more, for an event stamped ahead), and the total of all`, () => {
    const doc = docWith('p', [
      { type: 'page_view', at: '2025-12-30T12:00:00Z' },
      { type: 'page_view', at: '2026-04-01T12:00:00Z' }, // 92 days later: the first day falls out
    ]);
    expect(doc.counters.page_view.days).toEqual({ '20260401': 1 });
    expect(doc.counters.page_view.count).toBe(2);
    const edge = docWith('q', [
      { type: 'page_view', at: '2026-01-01T00:00:00Z' },
      { type: 'page_view', at: '2026-04-01T23:00:00Z' }, // 90 days later: its day is one a P90D window counts
    ]);
    expect(Object.keys(edge.counters.page_view.days)).toEqual(['20260101', '20260401']);
    // At 2026-04-01T23:00 a P90D window still counts 2026-01-01; an event stamped two hours ahead (04-02T01:00) keeps it.
    const ahead = docWith('r', [
      { type: 'page_view', at: '2026-01-01T12:00:00Z' },
      { type: 'page_view', at: '2026-04-02T01:00:00Z' },
    ]);
    expect(Object.keys(ahead.counters.page_view.days)).toEqual(['20260101', '20260402']);
  });

  it('gives the same buckets whatever the order events arrive in', () => {
    const events = [
      { type: 'page_view', at: '2026-01-01T12:00:00Z' },
      { type: 'page_view', at: '2026-04-01T12:00:00Z' },
      { type: 'page_view', at: '2026-02-10T12:00:00Z' },
    ];
    expect(docWith('p', events).counters).toEqual(docWith('p', [...events].reverse()).counters);
  });

  it('names days by their UTC date', () => {
    expect(dayKey(at('2026-12-31T23:00:00-02:00'))).toBe('20270101');
    expect(dayKey(at('2026-03-04T00:00:00Z'))).toBe('20260304');
    expect(dayKey(at('0999-05-06T12:00:00Z'))).toBe('09990506');
  });

  it('keeps the same recent events, newest first and ties by their properties, whatever the order events arrive in', () => {
    // Few distinct times, so ties are the rule; over 90 days, so some fall out of the window.
    const event = fc.record({ day: fc.constantFrom(0, 1, 11, 95, 100), hour: fc.integer({ min: 0, max: 1 }), page: fc.constantFrom('a', 'b', 'c', 'd') });
    const drawnAndOrder = fc
      .array(event, { minLength: 1, maxLength: 80 })
      .chain((drawn) => fc.tuple(fc.constant(drawn), fc.shuffledSubarray([...drawn.keys()], { minLength: drawn.length, maxLength: drawn.length })));
    fc.assert(
      fc.property(drawnAndOrder, ([drawn, order]) => {
        const events = drawn.map((e, n) => ({ id: `e${n}`, at: new Date(Date.UTC(2026, 0, 1 + e.day, e.hour)), page: e.page }));
        const fold = (ordered: typeof events) => {
          const doc = newProfile('p', at('2026-01-01T00:00:00Z'), ordered[0].at);
          for (const e of ordered) applyEvent(doc, { id: e.id, type: 'page_view', timestamp: e.at, identities: [{ type: 'cookie_id', value: 'p' }], properties: { page: e.page } }, first);
          return doc.counters.page_view.recent;
        };
        const newest = Math.max(...events.map((e) => e.at.getTime()));
        const oldestDay = Math.floor((newest - (BEHAVIOUR_DAYS + 1) * 86_400_000) / 86_400_000) * 86_400_000;
        const expected = events
          .filter((e) => e.at.getTime() >= oldestDay)
          .sort((x, y) => y.at.getTime() - x.at.getTime() || (x.page < y.page ? -1 : x.page > y.page ? 1 : 0))
          .slice(0, RECENT_EVENTS_KEPT)
          .map((e) => ({ at: e.at, properties: { page: e.page } }));
        expect(fold(events)).toEqual(expected);
        expect(fold(order.map((n) => events[n]))).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });
});

describe('combineProfiles (a merge, read as one profile)', () => {
  it('sums counters and their days, and takes the widest first/last seen', () => {
    const a = docWith('p_a', [{ type: 'purchase', at: '2026-03-01T10:00:00Z' }]);
    const b = docWith('p_b', [
      { type: 'purchase', at: '2026-03-01T11:00:00Z' },
      { type: 'purchase', at: '2026-03-05T11:00:00Z' },
    ]);
    const view = combineProfiles([b, a]);
    expect(view.id).toBe('p_a');
    expect(view.profileIds).toEqual(['p_a', 'p_b']);
    expect(view.counters.purchase).toEqual({ count: 3, firstSeen: '2026-03-01T10:00:00.000Z', lastSeen: '2026-03-05T11:00:00.000Z', days: { '20260301': 2, '20260305': 1 } });
    expect(view.identities.map((identity) => identity.value)).toEqual(['p_a', 'p_b']);
  });

  it('keeps traits by precedence: first party over third, then newer', () => {
    const crm = docWith('p_crm', [{ type: 'signup', at: '2026-01-01T00:00:00Z', traits: { age: '25-34', plan: 'basic' } }]);
    const feed = docWith('p_feed', [{ type: 'segment', at: '2026-05-01T00:00:00Z', traits: { age: '45-54', income: 'high' } }], { sourceId: 'src_feed', party: 'third', seq: 0 });
    const newer = docWith('p_web', [{ type: 'upgrade', at: '2026-02-01T00:00:00Z', traits: { plan: 'pro' } }]);
    const view = combineProfiles([crm, feed, newer]);
    expect(view.traits).toEqual({ age: '25-34', plan: 'pro', income: 'high' });
    expect(view.traitOrigins.age).toEqual({ at: '2026-01-01T00:00:00.000Z', sourceId: 'src_a', party: 'first' });
    expect(combineProfiles([newer, feed, crm])).toEqual(view);
  });

  it('keeps traits by precedence across a merge: second party over third even when older, then newer within a party', () => {
    const partner = docWith('p_partner', [{ type: 'match', at: '2026-01-01T00:00:00Z', traits: { segment: 'auto-intender', region: 'north' } }], { sourceId: 'src_partner', party: 'second', seq: 0 });
    const provider = docWith('p_provider', [{ type: 'segment', at: '2026-06-01T00:00:00Z', traits: { segment: 'travel', region: 'south', age: '35-44' } }], { sourceId: 'src_provider', party: 'third', seq: 0 });
    const laterPartner = docWith('p_partner2', [{ type: 'match', at: '2026-03-01T00:00:00Z', traits: { region: 'east' } }], { sourceId: 'src_partner', party: 'second', seq: 0 });
    const view = combineProfiles([provider, partner, laterPartner]);
    expect(view.traits).toEqual({ segment: 'auto-intender', region: 'east', age: '35-44' });
    expect(view.traitOrigins.segment).toEqual({ at: '2026-01-01T00:00:00.000Z', sourceId: 'src_partner', party: 'second' });
    expect(view.traitOrigins.age).toEqual({ at: '2026-06-01T00:00:00.000Z', sourceId: 'src_provider', party: 'third' });
    expect(combineProfiles([laterPartner, partner, provider]).traits).toEqual(view.traits);
  });

  it('records the merge history from the links', () => {
    const view = combineProfiles([docWith('p_a', [{ type: 'x', at: '2026-01-01T00:00:00Z' }]), docWith('p_b', [{ type: 'x', at: '2026-01-01T00:00:00Z' }])], [
      { profiles: ['p_a', 'p_b'], via: 'email_sha256:abc', sourceId: 'src_a', eventId: 'e1', createdAt: at('2026-01-02T00:00:00Z') },
    ]);
    expect(view.mergeHistory).toEqual([{ profiles: ['p_a', 'p_b'], via: 'email_sha256:abc', sourceId: 'src_a', eventId: 'e1', at: '2026-01-02T00:00:00.000Z' }]);
  });
});

describe('mostRestrictiveConsent', () => {
  const tcf = (purposes: number[], vendors: number[], when: string): ProfileConsent => ({
    tcf: { tcString: `tc-${when}`, policyVersion: 4, cmpId: 7, created: at(when), purposeConsents: purposes, purposeLegitimateInterests: [], vendorConsents: vendors },
    sourceId: 'src_a',
    at: at(when),
  });

  it('keeps only the purposes and vendors every document consents to', () => {
    const merged = mostRestrictiveConsent([tcf([1, 2, 3, 4], [10, 20], '2026-01-01T00:00:00Z'), tcf([1, 3], [20, 30], '2026-02-01T00:00:00Z')]);
    expect(merged?.tcf?.purposeConsents).toEqual([1, 3]);
    expect(merged?.tcf?.vendorConsents).toEqual([20]);
    expect(merged?.tcf?.tcString).toBe('tc-2026-02-01T00:00:00Z');
  });

  it("keeps every document's publisher restrictions, whichever string is newest", () => {
    const older = tcf([1, 3], [10, 20], '2026-01-01T00:00:00Z');
    older.tcf!.restrictions = [{ purpose: 3, vendors: [[10, 12], [40, 40]] }];
    const newer = tcf([1, 3], [10, 20], '2026-02-01T00:00:00Z');
    newer.tcf!.restrictions = [
      { purpose: 1, vendors: [[20, 20]] },
      { purpose: 3, vendors: [[13, 15]] },
    ];
    for (const order of [[older, newer], [newer, older]]) {
      expect(mostRestrictiveConsent(order)?.tcf?.restrictions).toEqual([
        { purpose: 1, vendors: [[20, 20]] },
        { purpose: 3, vendors: [[10, 15], [40, 40]] },
      ]);
    }
    expect(mostRestrictiveConsent([tcf([1], [10], '2026-01-01T00:00:00Z'), tcf([1], [10], '2026-02-01T00:00:00Z')])?.tcf).not.toHaveProperty('restrictions');
  });

  it('lets one "no" among explicit purpose flags win', () => {
    const merged = mostRestrictiveConsent([
      { purposes: { ads: true, analytics: true }, sourceId: 'src_a', at: at('2026-01-01T00:00:00Z') },
      { purposes: { ads: false }, sourceId: 'src_b', at: at('2025-01-01T00:00:00Z') },
    ]);
    expect(merged?.purposes).toEqual({ ads: false, analytics: true });
  });

  it('keeps an older document\'s TCF restrictions and GPP opt-outs when the newest signal carries neither', () => {
    const gpp = (saleOptOut: boolean | undefined, when: string, sourceId = 'src_web'): ProfileConsent => ({
      gpp: { gppString: `gpp-${when}`, sectionIds: [7], ...(saleOptOut !== undefined && { saleOptOut }) },
      sourceId,
      at: at(when),
    });
    const newestFlagsOnly: ProfileConsent = { purposes: { ads: true }, sourceId: 'src_crm', at: at('2026-03-01T00:00:00Z') };
    const merged = mostRestrictiveConsent([gpp(true, '2026-01-01T00:00:00Z'), tcf([1, 3], [20], '2026-02-01T00:00:00Z'), newestFlagsOnly, gpp(false, '2026-02-15T00:00:00Z', 'src_app')]);
    expect(merged).toMatchObject({ sourceId: 'src_crm', at: at('2026-03-01T00:00:00Z'), purposes: { ads: true } });
    expect(merged?.tcf).toMatchObject({ tcString: 'tc-2026-02-01T00:00:00Z', purposeConsents: [1, 3], vendorConsents: [20] });
    // One document's opt-out stands against another's decline; the newest string is kept for reference.
    expect(merged?.gpp).toEqual({ gppString: 'gpp-2026-02-15T00:00:00Z', sectionIds: [7], saleOptOut: true });
    expect(mostRestrictiveConsent([gpp(false, '2026-01-01T00:00:00Z'), gpp(undefined, '2026-02-01T00:00:00Z')])?.gpp).toEqual({ gppString: 'gpp-2026-02-01T00:00:00Z', sectionIds: [7], saleOptOut: false });
    expect(mostRestrictiveConsent([gpp(undefined, '2026-01-01T00:00:00Z')])?.gpp).toEqual({ gppString: 'gpp-2026-01-01T00:00:00Z', sectionIds: [7] });
    // An older document's Global Privacy Control signal stands too, not only the opt-outs it implies.
    const withGpc: ProfileConsent = { ...gpp(true, '2026-01-01T00:00:00Z'), gpp: { gppString: 'gpc', sectionIds: [7], saleOptOut: true, gpc: true } };
    expect(mostRestrictiveConsent([withGpc, gpp(false, '2026-02-01T00:00:00Z')])?.gpp).toEqual({ gppString: 'gpp-2026-02-01T00:00:00Z', sectionIds: [7], saleOptOut: true, gpc: true });
  });

  it('lets a document not decided yet hold the person out only while no TC string on any document is newer', () => {
    const pending = (when: string): ProfileConsent => ({ tcfPending: true, sourceId: 'src_tag', at: at(when), since: { tcf: at(when) } });
    const granted = tcf([1, 3, 4], [20], '2026-02-01T00:00:00Z');
    const decided = mostRestrictiveConsent([pending('2026-01-01T00:00:00Z'), granted]);
    expect(decided?.tcfPending).toBeUndefined();
    expect(decided?.tcf?.purposeConsents).toEqual([1, 3, 4]);
    const undecided = mostRestrictiveConsent([pending('2026-03-01T00:00:00Z'), granted]);
    expect(undecided?.tcfPending).toBe(true);
    expect(undecided?.tcf).toBeUndefined();
    expect(undecided).not.toHaveProperty('since');
    // Word on another document that the GDPR does not apply to them, newer than the mark, ends it too.
    const notApplicable: ProfileConsent = { tcfNotApplicable: true, sourceId: 'src_pixel', at: at('2026-04-01T00:00:00Z'), since: { tcf: at('2026-04-01T00:00:00Z') } };
    const ended = mostRestrictiveConsent([pending('2026-03-01T00:00:00Z'), notApplicable]);
    expect(ended?.tcfPending).toBeUndefined();
    expect(ended?.tcfNotApplicable).toBe(true);
    // A TC string on any document is the statement that stands beside it.
    expect(mostRestrictiveConsent([notApplicable, granted])?.tcfNotApplicable).toBeUndefined();
    expect(mostRestrictiveConsent([pending('2026-05-01T00:00:00Z'), notApplicable])?.tcfPending).toBe(true);
  });

  it('is null without any consent signal', () => {
    expect(mostRestrictiveConsent([])).toBeNull();
  });
});
