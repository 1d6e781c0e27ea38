import { deadlineOf, documentIdsOf, privacyRequestId, subjectHash, targetOf, withOptOut } from '../../domain/privacy';
import { EvaluationTime, SegmentEvaluator } from '../../domain/segmentRules';
import { ConsentPolicies } from '../../domain/consentGate';

/** No source has a policy of its own: each reads as the default. */
const NO_POLICIES = new ConsentPolicies([]);

describe('privacy requests', () => {
  it('are due one calendar month from receipt, the month’s last day when it is shorter', () => {
    expect(deadlineOf(new Date('2026-03-15T10:00:00Z')).toISOString()).toBe('2026-04-15T10:00:00.000Z');
    expect(deadlineOf(new Date('2026-01-31T23:30:00Z')).toISOString()).toBe('2026-02-28T23:30:00.000Z');
    expect(deadlineOf(new Date('2028-01-31T08:00:00Z')).toISOString()).toBe('2028-02-29T08:00:00.000Z');
    expect(deadlineOf(new Date('2026-12-31T00:00:00Z')).toISOString()).toBe('2027-01-31T00:00:00.000Z');
    expect(targetOf(new Date('2026-03-15T10:00:00Z')).toISOString()).toBe('2026-03-18T10:00:00.000Z');
  });

  it('name their subject by a salted hash: the same under one salt, unrelated under another, never the key', () => {
    const key = 'email_sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae';
    const hash = subjectHash('salt-one-0123456789', key);
    expect(hash).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(subjectHash('salt-one-0123456789', key)).toBe(hash);
    expect(subjectHash('salt-two-0123456789', key)).not.toBe(hash);
    expect(privacyRequestId('access', hash, 3)).toBe(`pr_access_${hash}_3`);
    expect(privacyRequestId('access', hash, 3)).not.toContain('2c26b46b');
  });

  it('mark a person opted out by any of their documents, or one they were split from, and then no rule holds them', () => {
    expect(documentIdsOf({ profileId: 'p_b', ancestors: ['p_a'] })).toEqual(['p_b', 'p_a']);
    expect(documentIdsOf({ profileIds: ['p_a', 'p_c'] })).toEqual(['p_a', 'p_c']);
    const subject = { identities: [], traits: { plan: "gold" }, counters: {}, consent: null, lastSeen: new Date(), sources: [] };
    const evaluator = new SegmentEvaluator([{ id: 'gold', rule: { trait: 'plan', op: 'eq', value: 'gold' } }], NO_POLICIES);
    const at = new EvaluationTime(new Date());
    expect(evaluator.evaluate(withOptOut(subject, false), at)).toEqual(['gold']);
    expect(withOptOut(subject, false)).toBe(subject);
    expect(evaluator.evaluate(withOptOut(subject, true), at)).toEqual([]);
  });
});
