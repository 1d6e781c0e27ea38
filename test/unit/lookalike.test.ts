import { auc, definingFeatures, definitionsOverlap, isDefining, trainLogistic, type TrainingRow } from '../../domain/lookalike';
import { compileScore, featuresOf, ScoreRuleSchema } from '../../domain/scoreModel';
import { encodeFieldName } from '../../domain/fieldNames';
import { parseRule, SegmentEvaluator, EvaluationTime, segmentReferences, subjectNeeds, type Rule } from '../../domain/segmentRules';
import { ConsentPolicies } from '../../domain/consentGate';

/** No source has a policy of its own: each reads as the default. */
const NO_POLICIES = new ConsentPolicies([]);

const now = new Date('2026-11-30T12:00:00Z');
const counter = (count: number, day: string) => ({ count, firstSeen: now, lastSeen: now, days: { [day]: count } });

describe('lookalike models', () => {
  it('auc is the chance a positive outscores a negative, ties half', () => {
    expect(auc([{ score: 2, label: 1 }, { score: 1, label: 0 }])).toBe(1);
    expect(auc([{ score: 1, label: 1 }, { score: 2, label: 0 }])).toBe(0);
    expect(auc([{ score: 1, label: 1 }, { score: 1, label: 0 }])).toBe(0.5);
    expect(auc([{ score: 3, label: 1 }, { score: 1, label: 1 }, { score: 2, label: 0 }])).toBe(0.5);
    expect(auc([{ score: 1, label: 1 }])).toBeNull();
  });

  it('logistic regression learns the feature that tells the classes apart', () => {
    // Feature 0 is held by 80% of positives and 10% of negatives; feature 1 by a third of each.
    const rows: TrainingRow[] = [];
    for (let i = 0; i < 1000; i++) {
      const label = i % 4 === 0 ? 1 : 0;
      const features = [...((label === 1 ? i % 5 !== 0 : i % 10 === 1) ? [0] : []), ...(i % 3 === 0 ? [1] : [])];
      rows.push({ features: Int32Array.from(features), label });
    }
    const model = trainLogistic(rows, 2);
    expect(model.weights[0]).toBeGreaterThan(1);
    expect(Math.abs(model.weights[1])).toBeLessThan(Math.abs(model.weights[0]) / 2);
  });

  it('the features defining a seed include those of the segments it refers to', () => {
    const rules = new Map<string, Rule>([['seg_b', { any: [{ identity: 'email' }, { trait: 'tier', op: 'eq', value: 'vip' }] }]]);
    const defining = definingFeatures({ all: [{ event: 'purchase' }, { not: { segment: 'seg_b' } }] }, (id) => rules.get(id) ?? null);
    expect(defining.sort()).toEqual(['event:purchase', 'identity:email_sha256', 'recent:purchase', 'segment:seg_b', 'trait:tier=']);
    expect(isDefining('trait:tier="vip"', defining)).toBe(true);
    expect(isDefining('trait:tiered="x"', defining)).toBe(false);
    expect(isDefining('event:purchase_return', defining)).toBe(false);
  });

  it('the features defining a score rule include what defines the segments its weights read', () => {
    // Another lookalike's extension: its model weighs a trait value and membership of extension E1, whose rule leaves out seed S1.
    const rules = new Map<string, Rule>([
      ['seg_e1', { all: [{ score: { intercept: 0, weights: [['event:purchase', 1]], min: 0.5 } }, { not: { segment: 'seg_s1' } }] }],
      ['seg_s1', { trait: 'interest', op: 'eq', value: 'golf' }],
    ]);
    const e2 = { all: [{ score: { intercept: 0, weights: [['segment:seg_e1', 1], ['trait:colour="red"', 1]] as Array<[string, number]>, min: 0.5 } }, { not: { segment: 'seg_s2' } }] } as Rule;
    const defining = definingFeatures(e2, (id) => rules.get(id) ?? null);
    expect(defining).toEqual(expect.arrayContaining(['segment:seg_e1', 'segment:seg_s1', 'trait:interest=', 'trait:colour="red"', 'segment:seg_s2']));
    // So a re-train of E1 (seed S1) sees E2 refers to its seed (and to E1 itself): E2 is no feature of it.
    expect(definitionsOverlap(defining, ['segment:seg_s1'])).toBe(true);
    // A trait value a score weighs overlaps a seed defined by the whole trait, and the other way round.
    expect(definitionsOverlap(['trait:interest="golf"'], ['trait:interest='])).toBe(true);
    expect(definitionsOverlap(['trait:interest='], ['trait:interest="golf"'])).toBe(true);
    expect(definitionsOverlap(['trait:interests="golf"'], ['trait:interest='])).toBe(false);
  });
});

describe('the score rule', () => {
  const subject = {
    traits: { [encodeFieldName('mag.name')]: 'alpine', tags: ['a', 'b'], n: 3 },
    counters: { [encodeFieldName('page.view')]: counter(2, '20261129'), old: counter(1, '20260101') },
    identities: [{ type: 'email_sha256' as const, value: 'x', firstSeen: now, lastSeen: now, sourceId: 's' }],
  };

  it('takes as a feature every string the documented pattern takes, line breaks in an event type too, and refuses an unknown kind or a NUL', () => {
    const weights = (feature: string) => ScoreRuleSchema.safeParse({ score: { intercept: 0, weights: [[feature, 1]], min: 0.5 } }).success;
    expect(['event:signup\r', 'trait:plan="a\u2028b"', 'recent:view\n', 'segment:seg_1', 'identity:partner_uid'].map(weights)).toEqual([true, true, true, true, true]);
    expect(['visit:home', 'identity:Cookie', 'trait:plan', 'segment:seg\u0000'].map(weights)).toEqual([false, false, false, false]);
  });

  it('reads trait values, list elements, event types, recent events and identity types as features', () => {
    expect(featuresOf(subject, now).sort()).toEqual(['event:old', 'event:page.view', 'identity:email_sha256', 'recent:page.view', 'trait:mag.name="alpine"', 'trait:n=3', 'trait:tags="a"', 'trait:tags="b"'].sort());
  });

  it('qualifies a profile whose probability reaches the least one, the same in every evaluator', () => {
    const rule = { score: { intercept: -2, weights: [['trait:mag.name="alpine"', 1.5], ['recent:page.view', 1]] as Array<[string, number]>, min: 0.6 } };
    expect(parseRule(rule).errors).toEqual([]);
    // z = -2 + 1.5 + 1 = 0.5 → p = 0.62 ≥ 0.6
    expect(compileScore(rule.score)(subject, now)).toBe(true);
    expect(compileScore({ ...rule.score, min: 0.65 })(subject, now)).toBe(false);
    const evaluator = new SegmentEvaluator([{ id: 'ext', rule }], NO_POLICIES);
    expect(evaluator.evaluate({ ...subject, consent: null, lastSeen: now, sources: [] }, new EvaluationTime(now))).toEqual(['ext']);
    const needs = subjectNeeds([rule]);
    expect(needs).toMatchObject({ traits: true, identities: false });
    expect([...needs.events.keys()]).toEqual([encodeFieldName('page.view')]);
  });

  it('reads membership of a segment (a taxonomy node) as a feature, which refers to that segment as a segment rule does', () => {
    const rule = { score: { intercept: -2, weights: [['segment:gold', 3]] as Array<[string, number]>, min: 0.5 } };
    expect(parseRule(rule).errors).toEqual([]);
    expect(segmentReferences(rule)).toEqual([{ id: 'gold', path: 'rule.score.weights[0][0]' }]);
    expect(definingFeatures({ all: [{ segment: 'gold' }] }, () => ({ trait: 'plan', op: 'eq', value: 'gold' }))).toEqual(['segment:gold', 'trait:plan=']);
    const evaluator = new SegmentEvaluator([
      { id: 'gold', rule: { trait: 'plan', op: 'eq', value: 'gold' } },
      { id: 'ext', rule },
    ], NO_POLICIES);
    const at = new EvaluationTime(now);
    const person = (plan: string) => ({ ...subject, traits: { plan }, consent: null, lastSeen: now, sources: [] });
    expect(evaluator.evaluate(person('gold'), at)).toEqual(['ext', 'gold']);
    expect(evaluator.evaluate(person('tin'), at)).toEqual([]);
    expect(subjectNeeds([rule]).traits).toBe(false);
  });

  it('refuses a malformed model with the path named', () => {
    expect(parseRule({ score: { intercept: 0, weights: [['colour', 1]], min: 0.5 } }).errors[0].path).toBe('rule.score.weights[0][0]');
    expect(parseRule({ score: { intercept: 0, weights: [], min: 1 } }).errors[0].path).toBe('rule.score.min');
  });
});
