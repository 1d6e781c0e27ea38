import { EvaluationTime, SegmentEvaluator, subjectNeeds, type Rule } from '../../domain/segmentRules';
import { FeatureDictionary } from '../../domain/audienceReports';
import { decodeForReports, decodeForSegments, decodeProfile, encodeProfile } from '../../store/profiles';
import { seededRandom } from '../support/random';
import { mixedSegments, syntheticProfile } from '../support/segmentFixtures';
import { ConsentPolicies } from '../../domain/consentGate';

/** No source has a policy of its own: each reads as the default. */
const NO_POLICIES = new ConsentPolicies([]);

describe('decoding only what segment rules read', () => {
  const random = seededRandom(3);
  const now = Date.UTC(2026, 5, 30);
  const docs = Array.from({ length: 2000 }, (_, n) => syntheticProfile(n, random, now));
  const ids: string[] = [];
  const definitions = mixedSegments(random, 50).map((rule, k) => {
    const id = `s${String(k).padStart(2, '0')}`;
    ids.push(id);
    return { id, rule: (typeof rule === 'function' ? rule(ids) : rule) as Rule };
  });
  const at = new EvaluationTime(new Date(now));

  it('gives every segment the same members as the whole document does', () => {
    const evaluator = new SegmentEvaluator(definitions, NO_POLICIES);
    const needs = subjectNeeds(definitions.map((definition) => definition.rule));
    for (const doc of docs) {
      const stored = encodeProfile(doc, 'g');
      expect({ id: doc.profileId, members: evaluator.evaluate(decodeForSegments(stored, needs), at) }).toEqual({
        id: doc.profileId,
        members: evaluator.evaluate(decodeProfile(stored), at),
      });
    }
  });

  it('reads only the fields the rules need, and always consent and sources, and whether a document is linked, a part, or split', () => {
    const doc = { ...docs[0], linked: true, ancestors: ['p_a', 'p_b'] };
    const view = decodeForSegments(encodeProfile(doc, 'g'), subjectNeeds([{ event: 'purchase' }]));
    expect(view.traits).toEqual({});
    expect(view.identities).toEqual([]);
    // Consent and sources always: by them a person whose consent refuses profiling is in no segment.
    expect(view.consent).toEqual(doc.consent);
    expect(view.sources).toEqual(doc.sources);
    expect(Object.keys(view.counters)).toEqual(Object.keys(doc.counters).filter((key) => key === 'purchase'));
    expect(view.counters.purchase?.recent).toBeUndefined();
    expect(view).toMatchObject({ linked: true, ancestors: ['p_a', 'p_b'], lastSeen: doc.lastSeen });
    const retired = decodeForSegments(encodeProfile({ ...docs[1], retired: { rebuildId: 'u1', parts: [], keys: {}, fallback: 'p_x' } as never }, 'g'), subjectNeeds([]));
    expect(retired.retired).toBeTruthy();
  });

  it('gives an audience report the same features as the whole document does', () => {
    const whole = new FeatureDictionary();
    const partial = new FeatureDictionary();
    for (const [n, doc] of docs.entries()) {
      const campaigns = n % 3 === 0 ? { spring: { impressions: n, clicks: 1, conversions: n % 2, value: 9.5, lastSeen: doc.lastSeen } } : undefined;
      const stored = encodeProfile({ ...doc, ...(campaigns && { campaigns }) }, 'g');
      expect(partial.features(decodeForReports(stored))).toEqual(whole.features(decodeProfile(stored)));
    }
  });
});
