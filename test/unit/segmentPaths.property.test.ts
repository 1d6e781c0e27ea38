import fc from 'fast-check';
import type { StoredConsent } from '../../domain/consent';
import { applyEvent, combineDocuments, newProfile, nextVersion, type ProfileDoc } from '../../domain/profile';
import { foldChanges } from '../../domain/segmentChanges';
import { EvaluationTime, parseRule, SegmentEvaluator, type Rule } from '../../domain/segmentRules';
import { ConsentPolicies } from '../../domain/consentGate';

/** No source has a policy of its own: each reads as the default. */
const NO_POLICIES = new ConsentPolicies([]);

/**
 * One meaning, two paths: random segments over random profiles that receive random events in random
 * folds, some joined by links along the way. The real-time path (each fold's changes, as partition
 * writers record them, applied in order) must end with exactly the membership the batch path gives
 * (every profile's documents combined and evaluated once). Both evaluate at the same time: windows
 * that pass without events are the batch path's to catch, by design.
 */
const NOW = new Date('2026-06-30T12:00:00Z');
const DAY = 86_400_000;
const DOCS = ['p1', 'p2', 'p3', 'p4', 'p5'];

const valueArb = fc.oneof(fc.constantFrom('a', 'b', 'c'), fc.integer({ min: 0, max: 5 }));
const comparisonArb = fc.oneof(
  fc.record({ op: fc.constantFrom('eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'contains' as const), value: valueArb }),
  fc.record({ op: fc.constant('in' as const), value: fc.array(valueArb, { minLength: 1, maxLength: 3 }) }),
  fc.constant({ op: 'exists' as const }),
);
const windowArb = fc.constantFrom('P1D', 'P3D', 'P10D', 'PT36H', 'P30D');

function ruleArb(earlier: number): fc.Arbitrary<Rule> {
  const leaves: Array<fc.Arbitrary<Rule>> = [
    fc.tuple(fc.constantFrom('plan', 'score', 'tags'), comparisonArb).map(([trait, c]) => ({ trait, ...c }) as Rule),
    fc
      .record({
        event: fc.constantFrom('buy', 'view'),
        count: fc.option(fc.record({ op: fc.constantFrom('gte', 'lte', 'eq' as const), value: fc.integer({ min: 0, max: 3 }) }), { nil: undefined }),
        within: fc.option(windowArb, { nil: undefined }),
        where: fc.option(fc.array(fc.tuple(fc.constantFrom('cat', 'total'), comparisonArb).map(([property, c]) => ({ property, ...c })), { minLength: 1, maxLength: 2 }), { nil: undefined }),
      })
      .map((rule) => Object.fromEntries(Object.entries(rule).filter(([, v]) => v !== undefined)) as Rule),
    fc.record({ within: fc.option(windowArb, { nil: undefined }), notWithin: fc.option(windowArb, { nil: undefined }) })
      .filter((w) => w.within !== undefined || w.notWithin !== undefined)
      .map((w) => ({ lastSeen: Object.fromEntries(Object.entries(w).filter(([, v]) => v !== undefined)) }) as Rule),
    fc.constantFrom('email', 'maid', 'cookie_id' as const).map((identity) => ({ identity }) as Rule),
    fc.integer({ min: 1, max: 3 }).map((purpose) => ({ consent: { purpose } }) as Rule),
    // A model over the features these profiles can hold (domain/scoreModel).
    fc
      .record({
        intercept: fc.double({ min: -2, max: 2, noNaN: true }),
        weights: fc.uniqueArray(
          fc.tuple(fc.constantFrom('trait:plan="a"', 'trait:tags="b"', 'trait:score=3', 'event:buy', 'recent:view', 'identity:maid'), fc.double({ min: -3, max: 3, noNaN: true })),
          { maxLength: 4, selector: ([feature]) => feature },
        ),
        min: fc.double({ min: 0.05, max: 0.95, noNaN: true }),
      })
      .map((score) => ({ score }) as Rule),
  ];
  if (earlier > 0) leaves.push(fc.integer({ min: 0, max: earlier - 1 }).map((k) => ({ segment: `s${k}` })));
  const { rule } = fc.letrec<{ rule: Rule }>((tie) => ({
    rule: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      ...leaves,
      fc.array(tie('rule'), { minLength: 1, maxLength: 3 }).map((all) => ({ all })),
      fc.array(tie('rule'), { minLength: 1, maxLength: 3 }).map((any) => ({ any })),
      tie('rule').map((not) => ({ not })),
    ),
  }));
  return rule;
}

const segmentsArb = fc.integer({ min: 1, max: 5 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, k) => ruleArb(k))));

const eventArb = fc.record({
  doc: fc.constantFrom(...DOCS),
  type: fc.constantFrom('buy', 'view'),
  daysAgo: fc.integer({ min: 0, max: 40 }),
  hours: fc.integer({ min: 0, max: 23 }),
  traits: fc.option(fc.record({ plan: fc.constantFrom('a', 'b', 'c'), score: fc.integer({ min: 0, max: 5 }), tags: fc.constantFrom(['a'], ['b', 'c'], []) }, { requiredKeys: [] }), { nil: undefined }),
  properties: fc.option(fc.record({ cat: fc.constantFrom('a', 'b'), total: fc.integer({ min: 0, max: 5 }) }, { requiredKeys: [] }), { nil: undefined }),
  identity: fc.constantFrom('email_sha256', 'maid', 'cookie_id' as const),
  consent: fc.option(fc.uniqueArray(fc.integer({ min: 1, max: 3 }), { maxLength: 3 }), { nil: undefined }),
});
const foldArb = fc.record({
  events: fc.array(eventArb, { maxLength: 5 }),
  links: fc.array(fc.tuple(fc.constantFrom(...DOCS), fc.constantFrom(...DOCS)).filter(([a, b]) => a !== b), { maxLength: 1 }),
});

function consentOf(purposes: number[]): StoredConsent {
  return { tcf: { tcString: 'x', policyVersion: 4, cmpId: 1, created: NOW, purposeConsents: purposes, purposeLegitimateInterests: [], vendorConsents: [] } };
}

describe('segmentation: the real-time and batch paths give identical membership', () => {
  it('holds for random segments, events, folds and links', () => {
    fc.assert(
      fc.property(segmentsArb, fc.array(foldArb, { minLength: 1, maxLength: 8 }), (rules, folds) => {
        const definitions = rules.map((rule, k) => ({ id: `s${k}`, rule }));
        for (const { rule } of definitions) expect(parseRule(rule).errors).toEqual([]);
        const evaluator = new SegmentEvaluator(definitions, NO_POLICIES);
        const at = new EvaluationTime(NOW);
        const evaluate = (subject: Parameters<typeof evaluator.evaluate>[0]) => evaluator.evaluate(subject, at);

        const store = new Map<string, ProfileDoc>();
        const parent = new Map(DOCS.map((id) => [id, id]));
        const root = (id: string): string => (parent.get(id) === id ? id : root(parent.get(id) as string));
        const realTime = new Map<string, boolean>();
        let seq = 0;

        for (const fold of folds) {
          const relinked: string[] = [];
          const changed = new Map<string, ProfileDoc>();
          const version = (id: string) => {
            let doc = changed.get(id);
            if (!doc) {
              const stored = store.get(id);
              doc = stored ? nextVersion(stored) : newProfile(id, NOW, NOW);
              changed.set(id, doc);
            }
            return doc;
          };
          for (const e of fold.events) {
            const timestamp = new Date(NOW.getTime() - e.daysAgo * DAY - e.hours * 3_600_000);
            applyEvent(
              version(e.doc),
              { id: `e${seq}`, type: e.type, timestamp, identities: [{ type: e.identity, value: e.doc }], traits: e.traits, properties: e.properties, consent: e.consent && consentOf(e.consent) },
              { sourceId: 'src_a', party: 'first', seq: seq++ },
            );
          }
          for (const [a, b] of fold.links) {
            if (!store.has(a) && !changed.has(a)) continue;
            if (!store.has(b) && !changed.has(b)) continue;
            parent.set(root(a), root(b));
            relinked.push(a, b);
            // As the writer does: a document is versioned for its link only when it was not linked yet.
            for (const end of [a, b]) if (!(changed.get(end) ?? store.get(end))?.linked) version(end).linked = true;
          }
          const previous = new Map(store);
          for (const [id, doc] of changed) store.set(id, doc);
          const components = new Map<string, ProfileDoc[]>();
          for (const doc of [...changed.values(), ...relinked.map((id) => store.get(id) as ProfileDoc)]) {
            if (!doc.linked) continue;
            components.set(doc.profileId, [...store.values()].filter((other) => root(other.profileId) === root(doc.profileId)));
          }
          const changes = foldChanges({ segments: evaluator.ids, evaluate, changed, previousOf: (id) => previous.get(id) ?? null, components, relinked });
          for (const [segment, change] of Object.entries(changes)) {
            for (const person of [...change.entered, ...(change.statedIn ?? [])]) realTime.set(`${person}|${segment}`, true);
            for (const person of [...change.exited, ...(change.statedOut ?? [])]) realTime.set(`${person}|${segment}`, false);
          }
        }

        const batch = new Set<string>();
        const people = new Map<string, ProfileDoc[]>();
        for (const doc of store.values()) people.set(root(doc.profileId), [...(people.get(root(doc.profileId)) ?? []), doc]);
        for (const docs of people.values()) {
          const person = combineDocuments(docs);
          for (const segment of evaluate(person)) batch.add(`${person.id}|${segment}`);
        }
        const live = new Set([...realTime].filter(([, member]) => member).map(([key]) => key));
        expect([...live].sort()).toEqual([...batch].sort());
      }),
      { numRuns: 400 },
    );
  });
});
