import { applyEvent, newProfile, type ProfileDoc } from '../../domain/profile';
import { compare, cycleThrough, durationMs, EvaluationTime, findCycle, parseRule, SegmentEvaluator, type Rule } from '../../domain/segmentRules';
import { Bitmap, segmentRunId, wilson } from '../../domain/segments';
import { ConsentPolicies } from '../../domain/consentGate';

/** No source has a policy of its own: each reads as the default. */
const NO_POLICIES = new ConsentPolicies([]);

const NOW = new Date('2026-06-30T12:00:00Z');
const at = new EvaluationTime(NOW);

function profileWith(events: Array<{ type: string; hoursAgo: number; properties?: Record<string, unknown> }>): ProfileDoc {
  // Created as its first event arrived: its first and last seen come from the events.
  const doc = newProfile('p1', NOW, new Date(NOW.getTime() - events[0].hoursAgo * 3_600_000));
  events.forEach((event, seq) =>
    applyEvent(doc, { id: `e${seq}`, type: event.type, timestamp: new Date(NOW.getTime() - event.hoursAgo * 3_600_000), identities: [], properties: event.properties }, { sourceId: 'src_a', party: 'first', seq }),
  );
  return doc;
}

const member = (rule: Rule, doc: ProfileDoc) => new SegmentEvaluator([{ id: 's', rule }], NO_POLICIES).evaluate(doc, at).includes('s');

describe('segment rules: validation', () => {
  it('names the exact path of each problem', () => {
    expect(parseRule({ all: [{ trait: 'a', op: 'eq', value: 1 }, { not: { event: 'x', within: 'P91D' } }] }).errors).toEqual([
      { path: 'rule.all[1].not.within', message: 'longer than the 90 days of behaviour kept on profiles' },
    ]);
    expect(parseRule({ event: 'x', within: 'P3W' }).errors[0]).toMatchObject({ path: 'rule.within' });
    expect(parseRule({ event: 'x', within: 'P0D' }).errors).toEqual([{ path: 'rule.within', message: 'must be longer than zero' }]);
    expect(parseRule({ trait: 'a', op: 'exists', value: 1 }).errors).toEqual([{ path: 'rule.value', message: '`exists` takes no value' }]);
    expect(parseRule({ trait: 'a', op: 'eq' }).errors).toEqual([{ path: 'rule.value', message: '`eq` needs a value' }]);
    expect(parseRule({ trait: 'a', event: 'b' }).errors[0].message).toContain('one kind per rule');
    expect(parseRule({ all: [] }).errors).toEqual([{ path: 'rule.all', message: 'must be a list of 1 to 100 rules' }]);
    expect(parseRule({ lastSeen: {} }).errors[0]).toMatchObject({ path: 'rule.lastSeen' });
    expect(parseRule({ identity: 'passport' }).errors[0]).toMatchObject({ path: 'rule.identity' });
    expect(parseRule({ consent: { purpose: 11, vendor: 3 } }).errors[0]).toMatchObject({ path: 'rule.consent', message: expect.stringContaining('vendor') });
  });

  it('reads ISO 8601 days and hours', () => {
    expect(durationMs('P30D')).toBe(30 * 86_400_000);
    expect(durationMs('PT12H')).toBe(12 * 3_600_000);
    expect(durationMs('P1DT6H')).toBe(30 * 3_600_000);
  });

  it('finds cycles of segment references', () => {
    const rules = new Map<string, Rule>([
      ['a', { segment: 'b' }],
      ['b', { all: [{ identity: 'email' }, { not: { segment: 'c' } }] }],
      ['c', { any: [{ segment: 'a' }] }],
    ]);
    expect(findCycle(rules)).toEqual(['a', 'b', 'c', 'a']);
    expect(cycleThrough('b', rules)).toEqual(['b', 'c', 'a', 'b']);
    // A loop the segment only reaches is not one through it.
    const reaching = new Map<string, Rule>([...rules, ['d', { segment: 'a' }]]);
    expect(cycleThrough('d', reaching)).toBeNull();
    rules.set('c', { identity: 'maid' });
    expect(findCycle(rules)).toBeNull();
    expect(cycleThrough('a', rules)).toBeNull();
    // Two edits at once could still store a cycle: its segments have no members, the others evaluate on.
    const evaluator = new SegmentEvaluator([
      { id: 'x', rule: { segment: 'x' } },
      { id: 'y', rule: { not: { segment: 'x' } } },
    ], NO_POLICIES);
    expect(evaluator.cyclic).toEqual(['x']);
    expect(evaluator.evaluate(newProfile('p', NOW, NOW), at)).toEqual(['y']);
  });

  it('gives no members to a segment whose rule leads to one not given (deleted meanwhile), rather than `not` of it taking in everyone', () => {
    const evaluator = new SegmentEvaluator([
      { id: 'n', rule: { not: { segment: 'gone' } } },
      { id: 'm', rule: { not: { segment: 'n' } } },
      { id: 'o', rule: { not: { identity: 'email' } } },
    ], NO_POLICIES);
    expect(evaluator.dangling).toEqual(['m', 'n']);
    expect(evaluator.evaluate(newProfile('p', NOW, NOW), at)).toEqual(['o']);
  });
});

describe('segment rules: one meaning', () => {
  it('compares values as documented', () => {
    expect(compare(undefined, 'neq', 'a')).toBe(true);
    expect(compare(['a', 'b'], 'contains', 'b')).toBe(true);
    expect(compare('shoes and socks', 'contains', 'socks')).toBe(true);
    expect(compare(3, 'gt', '2')).toBe(false);
    expect(compare('2026-06-01', 'lt', '2026-07-01')).toBe(true);
    expect(compare(null, 'exists', undefined)).toBe(false);
    expect(compare(2, 'in', [1, 2])).toBe(true);
    expect(compare(['a'], 'eq', ['a'])).toBe(true);
  });

  it('counts, over the longest window a rule may name, every day it touches, whether or not the type was seen since', () => {
    // 90 days back from NOW (12:00) is a day whose morning the window does not reach: its whole day counts, as for any window.
    const early = profileWith([{ type: 'buy', hoursAgo: 90 * 24 + 2, properties: { cat: 'shoes' } }]);
    const both = profileWith([
      { type: 'buy', hoursAgo: 90 * 24 + 2, properties: { cat: 'shoes' } },
      { type: 'buy', hoursAgo: 1, properties: { cat: 'shoes' } },
    ]);
    expect(member({ event: 'buy', within: 'P90D' }, early)).toBe(true);
    expect(member({ event: 'buy', count: { op: 'eq', value: 2 }, within: 'P90D' }, both)).toBe(true);
    expect(member({ event: 'buy', count: { op: 'eq', value: 2 }, within: 'P90D', where: [{ property: 'cat', op: 'eq', value: 'shoes' }] }, both)).toBe(true);
  });

  it('counts events in whole days of the daily buckets, and filters on the recent events kept with their properties', () => {
    const doc = profileWith([
      { type: 'buy', hoursAgo: 1, properties: { cat: 'shoes', total: 120 } },
      { type: 'buy', hoursAgo: 30, properties: { cat: 'books', total: 15 } },
      { type: 'buy', hoursAgo: 24 * 20, properties: { cat: 'shoes', total: 80 } },
    ]);
    expect(member({ event: 'buy', count: { op: 'eq', value: 2 }, within: 'P2D' }, doc)).toBe(true);
    // PT1H reaches back into today only (whole days): one buy was today.
    expect(member({ event: 'buy', count: { op: 'eq', value: 1 }, within: 'PT1H' }, doc)).toBe(true);
    expect(member({ event: 'buy', count: { op: 'gte', value: 3 } }, doc)).toBe(true);
    expect(member({ event: 'buy', where: [{ property: 'cat', op: 'eq', value: 'shoes' }], count: { op: 'eq', value: 2 } }, doc)).toBe(true);
    expect(member({ event: 'buy', within: 'P7D', where: [{ property: 'cat', op: 'eq', value: 'shoes' }], count: { op: 'eq', value: 1 } }, doc)).toBe(true);
    expect(member({ event: 'buy', where: [{ property: 'total', op: 'gt', value: 100 }, { property: 'cat', op: 'eq', value: 'shoes' }] }, doc)).toBe(true);
    expect(member({ event: 'view' }, doc)).toBe(false);
    expect(member({ event: 'view', count: { op: 'eq', value: 0 } }, doc)).toBe(true);
    // A filtered window covers the same whole days: PT1H is all of today, P1D all of yesterday too (30 hours back), with or without a filter.
    for (const [within, count] of [['PT1H', 1], ['P1D', 2]] as const) {
      expect(member({ event: 'buy', within, count: { op: 'eq', value: count } }, doc)).toBe(true);
      expect(member({ event: 'buy', within, where: [{ property: 'total', op: 'exists' }], count: { op: 'eq', value: count } }, doc)).toBe(true);
    }
  });

  it('counts an event stamped a little ahead of the clock the same with or without a property filter', () => {
    // Three minutes ahead (a client clock collection let through): today's, and one of all the events.
    const doc = profileWith([
      { type: 'buy', hoursAgo: 2, properties: { cat: 'shoes' } },
      { type: 'buy', hoursAgo: -0.05, properties: { cat: 'shoes' } },
    ]);
    const shoes = [{ property: 'cat', op: 'eq' as const, value: 'shoes' }];
    for (const within of [undefined, 'PT1H', 'P7D']) {
      const plain = member({ event: 'buy', ...(within && { within }), count: { op: 'eq', value: 2 } }, doc);
      const filtered = member({ event: 'buy', ...(within && { within }), where: shoes, count: { op: 'eq', value: 2 } }, doc);
      expect({ within, plain, filtered }).toEqual({ within, plain: true, filtered: true });
    }
  });

  it('tests recency with exact times, and segment membership through the same evaluator', () => {
    const doc = profileWith([{ type: 'visit', hoursAgo: 24 * 10 }]);
    expect(member({ lastSeen: { within: 'P7D' } }, doc)).toBe(false);
    expect(member({ lastSeen: { within: 'P30D', notWithin: 'P7D' } }, doc)).toBe(true);
    const evaluator = new SegmentEvaluator([
      { id: 'recent', rule: { lastSeen: { within: 'P30D' } } },
      { id: 'lapsing', rule: { all: [{ segment: 'recent' }, { not: { lastSeen: { within: 'P7D' } } }] } },
      { id: 'gone', rule: { segment: 'deleted-one' } },
    ], NO_POLICIES);
    expect(evaluator.evaluate(doc, at)).toEqual(['lapsing', 'recent']);
  });
});

describe('segment runs: identity, storage, estimates', () => {
  it('derives a run id from the segment versions and the second evaluated, whatever their order', () => {
    const a = segmentRunId([{ id: 's1', version: 1 }, { id: 's2', version: 3 }], new Date('2026-06-30T12:00:00.400Z'));
    expect(segmentRunId([{ id: 's2', version: 3 }, { id: 's1', version: 1 }], new Date('2026-06-30T12:00:00.900Z'))).toBe(a);
    expect(segmentRunId([{ id: 's1', version: 2 }, { id: 's2', version: 3 }], new Date('2026-06-30T12:00:00.400Z'))).not.toBe(a);
    expect(segmentRunId([{ id: 's1', version: 1 }, { id: 's2', version: 3 }], new Date('2026-06-30T12:00:01Z'))).not.toBe(a);
  });

  it('keeps a bit per profile', () => {
    const bits = new Bitmap(20);
    bits.set(0);
    bits.set(13);
    expect(Array.from({ length: 20 }, (_, k) => bits.has(k)).flatMap((set, k) => (set ? [k] : []))).toEqual([0, 13]);
    expect(bits.bytes).toHaveLength(3);
  });

  it('bounds a sampled share with the Wilson interval', () => {
    const { low, high } = wilson(250, 2000);
    expect(low).toBeLessThan(0.125);
    expect(high).toBeGreaterThan(0.125);
    expect(high - low).toBeLessThan(0.03);
    expect(wilson(0, 2000).low).toBe(0);
    expect(wilson(0, 0)).toEqual({ low: 0, high: 1 });
  });
});

describe('segment rules: consent', () => {
  const gold: Rule = { trait: 'plan', op: 'eq', value: 'gold' };
  const person = (consent: ProfileDoc['consent'], sources = ['src_web']): ProfileDoc => {
    const doc = newProfile('p', NOW, NOW);
    doc.traits.plan = 'gold';
    doc.consent = consent;
    doc.sources = sources;
    return doc;
  };
  const signal = (fields: Partial<NonNullable<ProfileDoc['consent']>>): ProfileDoc['consent'] => ({ sourceId: 'src_web', at: NOW, ...fields });
  const tcf = (purposeConsents: number[]) => ({ tcString: 'tc', policyVersion: 4, cmpId: 1, created: NOW, purposeConsents, purposeLegitimateInterests: [], vendorConsents: [] });

  it('places a person whose consent refuses profiling in no segment, whatever the rule: a TC string short of a purpose, a declined flag, a US opt-out, no decision yet', () => {
    const evaluator = new SegmentEvaluator([{ id: 'gold', rule: gold }, { id: 'all', rule: { not: { trait: 'plan', op: 'eq', value: 'tin' } } }], NO_POLICIES);
    const members = (consent: ProfileDoc['consent']) => evaluator.evaluate(person(consent), at);
    expect(members(null)).toEqual(['all', 'gold']);
    expect(members(signal({ tcf: tcf([1, 3]) }))).toEqual(['all', 'gold']);
    expect(members(signal({ tcf: tcf([1]) }))).toEqual([]);
    expect(members(signal({ purposes: { profiling: false } }))).toEqual([]);
    expect(members(signal({ purposes: { profiling: true, email: false } }))).toEqual(['all', 'gold']);
    expect(members(signal({ gpc: true }))).toEqual([]);
    expect(members(signal({ gpp: { gppString: 'DBABLA~BVQqAAAAAgA.QA', sectionIds: [7], saleOptOut: true } }))).toEqual([]);
    expect(members(signal({ tcfPending: true }))).toEqual([]);
    expect(members(signal({ tcfNotApplicable: true }))).toEqual(['all', 'gold']);
  });

  it("reads a person's consent under the policy of each source their data came from: one that needs no consent enforces nothing, any other refusing keeps them out", () => {
    const policies = new ConsentPolicies([
      ['src_crm', { mode: 'not_required', tcfPurposes: [1, 3], honorGppOptOuts: true, purposeFlag: 'profiling' }],
      ['src_app', { mode: 'require', tcfPurposes: [1], honorGppOptOuts: false, purposeFlag: 'tracking' }],
    ]);
    const evaluator = new SegmentEvaluator([{ id: 'gold', rule: gold }], policies);
    // The newest signal came from the first source, unless said otherwise.
    const members = (consent: ProfileDoc['consent'], sources: string[]) => evaluator.evaluate(person(consent && { ...consent, sourceId: consent.sourceId === 'src_web' ? sources[0] : consent.sourceId }, sources), at);
    const withdrawn = signal({ tcf: tcf([1]), purposes: { profiling: false } });
    expect(members(withdrawn, ['src_crm'])).toEqual(['gold']);
    // src_app needs only purpose 1 and reads its own flag: it refuses neither; a source it does not know reads as the default, which does.
    expect(members(withdrawn, ['src_app'])).toEqual(['gold']);
    expect(members(withdrawn, ['src_crm', 'src_app'])).toEqual(['gold']);
    expect(members(withdrawn, ['src_crm', 'src_gone'])).toEqual([]);
    expect(members(signal({ purposes: { tracking: false } }), ['src_app'])).toEqual([]);
    expect(members(signal({ gpc: true }), ['src_app'])).toEqual(['gold']);
    // A policy that requires a signal does not refuse a profile for holding none it reads: its events brought the signals it holds.
    expect(members(signal({ gpc: false }), ['src_app'])).toEqual(['gold']);
    // A withdrawal sent on a channel that brought nothing else of the person is read under that channel's policy.
    expect(members(signal({ purposes: { tracking: false }, sourceId: 'src_app' }), ['src_web'])).toEqual([]);
    expect(members(signal({ purposes: { tracking: false }, sourceId: 'src_crm' }), ['src_web'])).toEqual(['gold']);
  });
});
