import { createHash } from 'node:crypto';
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { cronPattern, MINUTE_FIELD } from './cronPattern';
import { durationMs, DurationSchema, referencedSegments, RuleSchema, type Rule } from './segmentRules';
import { exactlyOneOf, nonEmptyChange } from './schemaChecks';
import { nameText, storableText, TRIMMED_CHARS } from './text';

// ---- API schemas -------------------------------------------------------------------------------

const CRON = cronPattern();

/** Why a cron expression is refused: the scheduler's parser's reason, or what the pattern takes. */
function cronProblem(cron: string): string {
  try {
    CronExpressionParser.parse(cron);
  } catch (error) {
    return (error as Error).message;
  }
  if (!new RegExp(`^${MINUTE_FIELD} `).test(cron)) return 'runs at most hourly: the minute field is one value from 0 to 59';
  return 'five fields (minute hour day month weekday) separated by single spaces: the minute one value, the others each `*`, `*/step`, a value, a range `a-b` (with `/step`) or a list of values in rising order';
}

/** Runs every so long, or at the times a cron expression names. */
export type SegmentSchedule = { every: string } | { cron: string };

export const SegmentScheduleSchema = exactlyOneOf(
  z
    .object({
      every: DurationSchema.optional().openapi({ description: 'ISO 8601 days/hours between runs, e.g. PT6H' }),
      cron: z
        .string()
        .regex(CRON, { error: (issue) => cronProblem(String(issue.input)) })
        .optional()
        .openapi({ description: 'A cron expression of five fields (minute hour day month weekday), at most hourly (the minute is one value), e.g. `0 3 * * mon-fri`; the pattern states exactly which the scheduler takes', example: '0 3 * * *' }),
    })
    .strict(),
  ['every', 'cron'],
).openapi('SegmentSchedule', { description: 'Batch runs on a schedule (`every` or `cron`): they catch time windows passing without new events.' }) as unknown as z.ZodType<SegmentSchedule>;
/**
 * What a schedule is known by. Segments with the same one share one Temporal Schedule: a scheduled
 * run evaluates every segment, so one firing serves them all (intervals are aligned to the epoch,
 * so `PT1H` and `PT60M` are the same times).
 */
export function scheduleKey(schedule: SegmentSchedule): string {
  return 'every' in schedule ? `every:${durationMs(schedule.every) / 1000}s` : `cron:${schedule.cron}`;
}

/** A schedule or none (null), as a union: the generator documents `.nullable()` of a named object as never null. */
export const NullableScheduleSchema = z.union([SegmentScheduleSchema, z.null()]);

const FOLDER = `[^/\\u0000${TRIMMED_CHARS}][^/\\u0000]{0,99}`;
const TaxonomyPath = z
  .string()
  .regex(new RegExp(`^${FOLDER}(/${FOLDER}){0,7}$`), 'folder names separated by `/`, at most 8 deep, each starting with other than a space')
  .openapi({ example: 'Interests/Sports' });

export const CreateSegmentRequestSchema = z
  .object({
    name: nameText(200),
    rule: RuleSchema,
    description: storableText(2000).optional(),
    taxonomyPath: TaxonomyPath.optional(),
    schedule: SegmentScheduleSchema.optional(),
  })
  .strict()
  .openapi('CreateSegmentRequest', { example: { name: 'Repeat buyers', rule: { event: 'purchase', count: { op: 'gte', value: 2 }, within: 'P30D' } } });

export const PatchSegmentRequestSchema = nonEmptyChange(
  z
    .object({
      name: nameText(200).optional(),
      rule: RuleSchema.optional(),
      description: storableText(2000).nullable().optional(),
      taxonomyPath: TaxonomyPath.nullable().optional(),
      schedule: NullableScheduleSchema.optional(),
    })
    .strict(),
).openapi('PatchSegmentRequest');

const Iso = z.string().openapi({ format: 'date-time' });

export const RunStateSchema = z.enum(['running', 'completed', 'failed', 'superseded']).openapi({ description: '`superseded`: a later run evaluates all its segments, so this one did not pass over the profiles' });

export const SegmentViewSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    description: z.string().nullable(),
    taxonomyPath: z.string().nullable(),
    rule: RuleSchema,
    schedule: NullableScheduleSchema,
    version: z.number().int().openapi({ description: 'Goes up with every change of the rule' }),
    size: z.number().int().nullable().openapi({ description: 'Members now: the last completed run, with real-time changes since; null before the first run completes' }),
    lastRun: z.object({ runId: z.string(), state: RunStateSchema, startedAt: Iso, finishedAt: Iso.nullable() }).nullable(),
    currentRun: z
      .object({ runId: z.string(), version: z.number().int(), size: z.number().int(), evaluatedAt: Iso, finishedAt: Iso })
      .nullable()
      .openapi({ description: 'The completed run whose snapshot the membership reads' }),
    createdAt: Iso,
    updatedAt: Iso,
  })
  .openapi('Segment');
export type SegmentView = z.infer<typeof SegmentViewSchema>;

export const MembersQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  cursor: z.string().min(1).max(256).optional().openapi({ description: 'The `next` of the previous page' }),
});

export const SegmentListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(1000).optional().openapi({ description: 'Segments a page, oldest first; without it, every segment in one answer' }),
  cursor: z
    .string()
    .regex(/^\d{1,15}_[A-Za-z0-9_-]{1,128}$/, 'expected the `next` of the previous page')
    .optional()
    .openapi({ description: 'The `next` of the previous page' }),
});

type Listed = { createdAt: Date; _id: string };

/** The order segments are listed in: creation time, then id. */
export function olderSegmentFirst(a: Listed, b: Listed): number {
  return a.createdAt.getTime() - b.createdAt.getTime() || (a._id < b._id ? -1 : a._id > b._id ? 1 : 0);
}

/** Where a page of segments ends: the last one's place in the list's order. */
export function segmentCursor(segment: Listed): string {
  return `${segment.createdAt.getTime()}_${segment._id}`;
}

export function parseSegmentCursor(cursor: string): Listed {
  const at = cursor.indexOf('_');
  return { createdAt: new Date(Number(cursor.slice(0, at))), _id: cursor.slice(at + 1) };
}

export const MembersSchema = z
  .object({ members: z.array(z.string()).openapi({ description: 'Profile ids, ascending' }), next: z.string().nullable() })
  .openapi('SegmentMembers');

export const RunViewSchema = z
  .object({
    runId: z.string(),
    state: RunStateSchema,
    segments: z.array(z.object({ id: z.string(), version: z.number().int() })).openapi({ description: 'Every segment the run evaluated, in one pass' }),
    evaluatedAt: Iso.openapi({ description: 'The time rules were evaluated at' }),
    evaluated: z.number().int().openapi({ description: 'Profiles evaluated' }),
    documentsScanned: z.number().int(),
    members: z.number().int().nullable().openapi({ description: "This segment's members in the run" }),
    entered: z.number().int().nullable(),
    exited: z.number().int().nullable(),
    startedAt: Iso,
    finishedAt: Iso.nullable(),
    error: z.string().nullable(),
  })
  .openapi('SegmentRun');

export const EstimateRequestSchema = z.object({ rule: RuleSchema }).strict().openapi('EstimateRequest');
export const EstimateSchema = z
  .object({
    estimate: z.number().int(),
    low: z.number().int().openapi({ description: '95% Wilson interval, scaled to the population' }),
    high: z.number().int(),
    sampled: z.number().int().openapi({ description: 'Profiles in the sample the rule was evaluated on' }),
    population: z.number().int(),
  })
  .openapi('Estimate');

export const HistoryQuerySchema = z.object({ days: z.coerce.number().int().min(1).max(400).default(30) });
export const HistorySchema = z
  .object({ days: z.array(z.object({ day: z.string().openapi({ example: '2026-11-30' }), entered: z.number().int(), exited: z.number().int() })) })
  .openapi('SegmentHistory');

// ---- run identity --------------------------------------------------------------------------------

/**
 * A batch run's id derives from what it evaluates and when: the segment versions, and the window
 * (its evaluation time, to the minute). Starting the same run twice finds the one running.
 */
export function segmentRunId(segments: ReadonlyArray<{ id: string; version: number }>, evaluatedAt: Date): string {
  const versions = [...segments].sort((a, b) => (a.id < b.id ? -1 : 1)).map((s) => `${s.id}@${s.version}`).join(',');
  const window = evaluatedAt.toISOString().slice(0, 19).replace(/[-:]/g, '');
  return `run_${window}_${createHash('sha256').update(versions).digest('hex').slice(0, 12)}`;
}

/**
 * Splits the segments of a run of every segment into runs of at most `max`: a run's record and its
 * snapshot chunks hold something per segment, so one run of every segment of a large taxonomy
 * outgrew a document. A segment stays in one run with every segment its rule refers to, and with
 * those that refer to it (however many that makes). Deterministic: the groups follow segment ids,
 * each set of joined segments by its first. With `after`, only the sets whose first id comes after
 * it are grouped (what is left of a round whose earlier groups ran: segments deleted or edited in
 * those meanwhile move nothing between the rest). Without it, always at least one group (of
 * nothing, when there are no segments). Each group's `key` is the first id of its last set: what
 * the next group comes `after`.
 */
export function runGroups<T extends { _id: string; ruleJson: string }>(docs: readonly T[], max: number, after: string | null = null): Array<{ segments: T[]; key: string }> {
  const sorted = [...docs].sort((a, b) => (a._id < b._id ? -1 : a._id > b._id ? 1 : 0));
  const index = new Map(sorted.map((doc, n) => [doc._id, n]));
  const parent = sorted.map((_, n) => n);
  const root = (n: number): number => {
    while (parent[n] !== n) n = parent[n] = parent[parent[n]];
    return n;
  };
  sorted.forEach((doc, n) => {
    for (const id of referencedSegments(JSON.parse(doc.ruleJson) as Rule)) {
      const other = index.get(id);
      if (other === undefined) continue;
      const [a, b] = [root(n), root(other)];
      // The smaller index roots a set: its first segment in id order.
      parent[Math.max(a, b)] = Math.min(a, b);
    }
  });
  // Each set of joined segments, in the order of its first id.
  const sets = new Map<number, T[]>();
  sorted.forEach((doc, n) => {
    const set = sets.get(root(n)) ?? [];
    set.push(doc);
    sets.set(root(n), set);
  });
  const groups = [{ segments: [] as T[], key: '' }];
  for (const set of sets.values()) {
    if (after !== null && set[0]._id <= after) continue;
    const last = groups[groups.length - 1];
    if (last.segments.length > 0 && last.segments.length + set.length > max) groups.push({ segments: [...set], key: set[0]._id });
    else {
      last.segments.push(...set);
      last.key = set[0]._id;
    }
  }
  return after !== null && groups[0].segments.length === 0 ? [] : groups;
}

export function windowStart(at: Date): Date {
  return new Date(Math.floor(at.getTime() / 1000) * 1000);
}

// ---- compact membership --------------------------------------------------------------------------

/** Bits per profile, one set per segment: a run's chunk stores its profile ids once and a bitmap per segment. */
export class Bitmap {
  readonly bytes: Uint8Array;
  constructor(size: number | Uint8Array) {
    this.bytes = typeof size === 'number' ? new Uint8Array(Math.ceil(size / 8)) : size;
  }
  set(index: number): void {
    this.bytes[index >> 3] |= 1 << (index & 7);
  }
  has(index: number): boolean {
    return (this.bytes[index >> 3] & (1 << (index & 7))) !== 0;
  }
}

/** The 95% Wilson score interval of a proportion seen `hits` times in `n`. */
export function wilson(hits: number, n: number): { low: number; high: number } {
  if (n === 0) return { low: 0, high: 1 };
  const z = 1.96;
  const p = hits / n;
  const centre = p + (z * z) / (2 * n);
  const spread = z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n));
  const denominator = 1 + (z * z) / n;
  return { low: Math.max(0, (centre - spread) / denominator), high: Math.min(1, (centre + spread) / denominator) };
}

/** Where a profile id falls in a deterministic uniform order: the sample keeps the lowest. */
export function sampleRank(profileId: string): number {
  return createHash('sha1').update(profileId).digest().readUInt32BE(0);
}
