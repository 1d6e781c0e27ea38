import { createHash } from 'node:crypto';
import { z } from 'zod';
import { segmentOfFeature } from './scoreModel';
import { STORED_TYPE_OF_KIND, type Rule } from './segmentRules';
import { NullableScheduleSchema, SegmentScheduleSchema } from './segments';
import './schemaChecks';

/**
 * Lookalike modelling: logistic regression of "is in the seed" on binary profile features, trained
 * on the seed against the rest of the base, judged on a holdout by its AUC. Written here rather than
 * taken from a library: the features are sparse and binary (a profile holds tens of the thousands
 * there are), and the maintained JavaScript implementations take dense matrices — a million rows by
 * thousands of columns would not fit — while full-batch gradient descent over sparse rows is a few
 * lines.
 */

/** Features held by fewer training profiles are left out: too rare to learn a weight from. */
export const MIN_FEATURE_SUPPORT = 5;
/** Training profiles per class at most (the rest of the class is sampled by a hash of the id). */
export const MAX_PER_CLASS = 20_000;
/** The share of training profiles held out to measure the AUC on. */
export const HOLDOUT_SHARE = 0.2;
/** Fewest seed members in the base a model is trained on: fewer tell nothing, and may all fall in the holdout. */
export const MIN_SEED_MEMBERS = 10;
const ITERATIONS = 300;
const LEARNING_RATE = 0.5;
const L2 = 1e-3;

/** A run's id: the same request about the same seed within a second is the same run. */
export function lookalikeRunId(seedId: string, request: LookalikeRequest, at: Date): string {
  const second = at.toISOString().slice(0, 19).replace(/[-:]/g, '');
  return `lk_${second}_${createHash('sha256').update(`${seedId}\u0000${JSON.stringify(request)}`).digest('hex').slice(0, 12)}`;
}

/** A re-train's id: the run whose schedule started it, and the scheduled time (one re-train per firing). */
export function retrainRunId(firstRunId: string, at: Date): string {
  return `${firstRunId}_r${at.toISOString().slice(0, 19).replace(/[-:]/g, '')}`;
}

/** A deterministic uniform number in [0, 1) per id and purpose: samples and splits do not depend on scan order. */
export function hashUnit(id: string, purpose: string): number {
  return createHash('sha256').update(`${purpose}\u0000${id}`).digest().readUInt32BE(0) / 2 ** 32;
}

/**
 * The feature prefixes a seed's rule is defined by — its traits, event types and identity types,
 * through the segments it refers to — which a model must not read (it would find the seed's own
 * definition and score an AUC of 1 learning nothing).
 */
export function definingFeatures(rule: Rule, ruleOf: (segmentId: string) => Rule | null): string[] {
  const prefixes = new Set<string>();
  const seen = new Set<string>();
  const walk = (node: Rule): void => {
    if ('all' in node) node.all.forEach(walk);
    else if ('any' in node) node.any.forEach(walk);
    else if ('not' in node) walk(node.not);
    else if ('trait' in node) prefixes.add(`trait:${node.trait}=`);
    else if ('event' in node) {
      prefixes.add(`event:${node.event}`);
      prefixes.add(`recent:${node.event}`);
    } else if ('identity' in node) prefixes.add(`identity:${STORED_TYPE_OF_KIND[node.identity]}`);
    else if ('score' in node) {
      for (const [feature] of node.score.weights) {
        prefixes.add(feature);
        // A score reads a segment's membership as a `{segment}` rule does: what defines that segment defines this one.
        const segment = segmentOfFeature(feature);
        if (segment !== null) walk({ segment });
      }
    } else if ('segment' in node && !seen.has(node.segment)) {
      seen.add(node.segment);
      prefixes.add(`segment:${node.segment}`);
      const referenced = ruleOf(node.segment);
      if (referenced) walk(referenced);
    }
  };
  walk(rule);
  return [...prefixes];
}

/** Whether a feature is one of the defining ones (an exact event feature, or a trait's `trait:<name>=` prefix). */
export function isDefining(feature: string, defining: string[]): boolean {
  return defining.some((prefix) => (prefix.endsWith('=') ? feature.startsWith(prefix) : feature === prefix));
}

/** Whether two sets of defining features share any (a trait's prefix shares each of its values). */
export function definitionsOverlap(a: string[], b: string[]): boolean {
  return a.some((feature) => isDefining(feature, b)) || b.some((feature) => isDefining(feature, a));
}

export interface TrainingRow {
  /** Feature indexes present. */
  features: Int32Array;
  label: 0 | 1;
}

export interface LogisticModel {
  intercept: number;
  weights: Float64Array;
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

export function scoreRow(model: LogisticModel, features: Int32Array): number {
  let z = model.intercept;
  for (const f of features) z += model.weights[f];
  return z;
}

/** Full-batch gradient descent on the log loss with L2 on the weights; classes weighted equally. */
export function trainLogistic(rows: TrainingRow[], featureCount: number): LogisticModel {
  const model: LogisticModel = { intercept: 0, weights: new Float64Array(featureCount) };
  const positives = rows.filter((row) => row.label === 1).length;
  const negatives = rows.length - positives;
  if (positives === 0 || negatives === 0) return model;
  const weightOf = (label: number) => (label === 1 ? rows.length / (2 * positives) : rows.length / (2 * negatives));
  const gradient = new Float64Array(featureCount);
  for (let iteration = 0; iteration < ITERATIONS; iteration++) {
    gradient.fill(0);
    let interceptGradient = 0;
    for (const row of rows) {
      const error = (sigmoid(scoreRow(model, row.features)) - row.label) * weightOf(row.label);
      interceptGradient += error;
      for (const f of row.features) gradient[f] += error;
    }
    model.intercept -= (LEARNING_RATE * interceptGradient) / rows.length;
    for (let f = 0; f < featureCount; f++) model.weights[f] -= LEARNING_RATE * (gradient[f] / rows.length + L2 * model.weights[f]);
  }
  return model;
}

/** The area under the ROC curve: the chance a random positive outscores a random negative (ties count half). */
export function auc(scored: Array<{ score: number; label: 0 | 1 }>): number | null {
  const positives = scored.filter((row) => row.label === 1).length;
  const negatives = scored.length - positives;
  if (positives === 0 || negatives === 0) return null;
  const sorted = [...scored].sort((a, b) => a.score - b.score);
  let rankSum = 0;
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j < sorted.length && sorted[j].score === sorted[i].score) j++;
    const rank = (i + 1 + j) / 2;
    for (let k = i; k < j; k++) if (sorted[k].label === 1) rankSum += rank;
    i = j;
  }
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

// ---- what the routes take and answer -----------------------------------------------------------

export const LookalikeRequestSchema = z
  .object({
    base: z.string().min(1).max(64).optional().openapi({ description: '`all` (default) or a segment whose members are the base: the model learns the seed against the rest of it, and the extension is drawn from it' }),
    reach: z.number().int().min(1).max(100_000_000).optional().openapi({ description: 'How many base profiles outside the seed the extension holds: the best scored (default: as many as the seed)' }),
    accuracy: z.number().gt(0).lt(1).optional().openapi({ description: 'Instead of `reach`: the least model probability a profile needs (higher: fewer, more alike)' }),
    retrain: SegmentScheduleSchema.optional().openapi({ description: "Re-train on this schedule (`{\"every\": \"P7D\"}` or a cron): each re-train is a run of its own, learning from the seed and base as they are then, and replaces the extension segment's model in place — same segment id, so destinations keep exporting it" }),
  })
  .strict()
  .refine((body) => body.reach === undefined || body.accuracy === undefined, { message: 'give reach or accuracy, not both', path: ['accuracy'] })
  .openapi('LookalikeRequest', { not: { required: ['reach', 'accuracy'] } });
export type LookalikeRequest = z.infer<typeof LookalikeRequestSchema>;

export const LookalikeStateSchema = z.enum(['running', 'completed', 'failed']);

export const LookalikeViewSchema = z
  .object({
    runId: z.string(),
    state: LookalikeStateSchema,
    seedId: z.string(),
    base: z.string(),
    auc: z.number().nullable().openapi({ description: "Holdout AUC: 0.5 is chance, 1 a perfect ranking" }),
    holdoutSize: z.number().int(),
    trainingSize: z.number().int(),
    threshold: z.number().nullable().openapi({ description: 'The least model probability the extension takes' }),
    reach: z.number().int().nullable().openapi({ description: 'Base profiles outside the seed scoring at or above the threshold when trained' }),
    segmentId: z.string().nullable().openapi({ description: 'The extension: an ordinary segment whose rule is the model (and not the seed), kept current like any other' }),
    topFeatures: z.array(z.object({ feature: z.string(), weight: z.number() })),
    excluded: z.array(z.string()).openapi({ description: "Features the seed's rule is defined by, never read by the model" }),
    error: z.string().nullable(),
    retrain: NullableScheduleSchema.openapi({ description: 'The re-training schedule this run set (null: none, or stopped)' }),
    retrainOf: z.string().nullable().openapi({ description: 'For a re-train: the run whose schedule started it, and whose extension segment it updated' }),
    latestRetrain: z.string().nullable().openapi({ description: "For a run with a schedule: its newest completed re-train, whose model the extension segment now holds" }),
    startedAt: z.string().openapi({ format: 'date-time' }),
    finishedAt: z.string().openapi({ format: 'date-time' }).nullable(),
  })
  .openapi('LookalikeRun');
export type LookalikeView = z.infer<typeof LookalikeViewSchema>;
