import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { decodeFieldName, encodeFieldName } from './fieldNames';
import { STORED_IDENTITY_TYPES } from './identity';
import { dayKey, type SegmentSubject } from './profile';
import { NUL_MESSAGE } from './text';

extendZodWithOpenApi(z);

/**
 * A logistic model over a profile's binary features, as a segment rule can state it (`score`): a
 * lookalike extension is an ordinary segment whose rule is its model, so batch runs and real-time
 * folds qualify profiles with the one meaning every rule has. Features:
 *
 * | feature                    | present when the profile…                                   |
 * |----------------------------|-------------------------------------------------------------|
 * | `trait:<name>=<json>`      | holds that trait value (a list trait: holds it as an element)|
 * | `event:<type>`             | has events of the type                                      |
 * | `recent:<type>`            | has events of the type in the last RECENT_DAYS days          |
 * | `identity:<type>`          | holds an identity of the (stored) type                       |
 * | `segment:<id>`             | is a member of the segment (a taxonomy node): rules read it as `{segment}` |
 */

/** The window of `recent:` features. */
export const RECENT_DAYS = 30;
/** Weights a `score` rule states at most. */
export const MAX_MODEL_FEATURES = 500;

const Feature = z
  .string()
  .min(3)
  .max(300)
  // Any storable character (domain/text), not `.`: the document's pattern is read by other regex
  // engines too, whose `.` takes a `\r` or a `\u2028` that JavaScript's refuses. One pattern, so the document states all of it.
  .regex(
    /^(trait:[^=\u0000]+=[^\u0000]+|event:[^\u0000]+|recent:[^\u0000]+|identity:[a-z0-9_]+|segment:[^\u0000]+)$/,
    `trait:<name>=<json value>, event:<type>, recent:<type>, identity:<type> or segment:<id>, and ${NUL_MESSAGE}`,
  );

const SEGMENT_FEATURE = 'segment:';

/** The segment a `segment:<id>` feature names, or null for a feature read off the profile. */
export function segmentOfFeature(feature: string): string | null {
  return feature.startsWith(SEGMENT_FEATURE) ? feature.slice(SEGMENT_FEATURE.length) : null;
}

export const ScoreRuleSchema = z
  .object({
    score: z
      .object({
        intercept: z.number().finite(),
        weights: z.array(z.tuple([Feature, z.number().finite()]).openapi({ minItems: 2, maxItems: 2 })).max(MAX_MODEL_FEATURES).openapi({ description: '`[feature, weight]` pairs' }),
        min: z.number().gt(0).lt(1).openapi({ description: 'The least probability, 1 / (1 + e^−(intercept + Σ weights of the features present)), that qualifies' }),
      })
      .strict(),
  })
  .strict()
  .openapi('ScoreRule', { description: 'A logistic model over binary profile features (a lookalike extension states its model so)' });
export type ScoreRule = z.infer<typeof ScoreRuleSchema>;

/** The features a model reads of a profile: what a segment run decodes for it. */
export function modelNeeds(weights: ReadonlyArray<readonly [string, number]>): { traits: boolean; identities: boolean; events: string[] } {
  const events = new Set<string>();
  let traits = false;
  let identities = false;
  for (const [feature] of weights) {
    // Membership is the evaluator's to say (the referenced segment's own needs count for it).
    if (segmentOfFeature(feature) !== null) continue;
    if (feature.startsWith('trait:')) traits = true;
    else if (feature.startsWith('identity:')) identities = true;
    else events.add(encodeFieldName(feature.slice(feature.indexOf(':') + 1)));
  }
  return { traits, identities, events: [...events] };
}

function traitFeature(key: string, value: unknown): string | null {
  return ['string', 'number', 'boolean'].includes(typeof value) ? `trait:${decodeFieldName(key)}=${JSON.stringify(value)}` : null;
}

/** Every feature a profile holds at `now`. */
export function featuresOf(subject: Pick<SegmentSubject, 'traits' | 'counters' | 'identities'>, now: Date): string[] {
  const features = new Set<string>();
  for (const [key, value] of Object.entries(subject.traits)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      const feature = traitFeature(key, item);
      if (feature) features.add(feature);
    }
  }
  const first = dayKey(new Date(now.getTime() - (RECENT_DAYS - 1) * 86_400_000));
  const today = dayKey(now);
  for (const [key, counter] of Object.entries(subject.counters)) {
    if (counter.count <= 0) continue;
    const type = decodeFieldName(key);
    features.add(`event:${type}`);
    if (Object.keys(counter.days).some((day) => day >= first && day <= today)) features.add(`recent:${type}`);
  }
  for (const identity of subject.identities) if ((STORED_IDENTITY_TYPES as readonly string[]).includes(identity.type)) features.add(`identity:${identity.type}`);
  return [...features];
}

/** Whether a profile's features reach the rule's least probability; `member` says whether it is in a segment a `segment:` feature names. */
export function compileScore(rule: ScoreRule['score']): (subject: Pick<SegmentSubject, 'traits' | 'counters' | 'identities'>, now: Date, member?: (segmentId: string) => boolean) => boolean {
  const weights = new Map(rule.weights.filter(([feature]) => segmentOfFeature(feature) === null));
  const segments = rule.weights.flatMap(([feature, weight]) => {
    const id = segmentOfFeature(feature);
    return id === null ? [] : [[id, weight] as const];
  });
  const threshold = Math.log(rule.min / (1 - rule.min));
  return (subject, now, member = () => false) => {
    let z = rule.intercept;
    for (const feature of featuresOf(subject, now)) z += weights.get(feature) ?? 0;
    for (const [id, weight] of segments) if (member(id)) z += weight;
    return z >= threshold;
  };
}
