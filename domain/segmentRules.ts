import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import type { FieldError } from './collect';
import type { ConsentPolicies } from './consentGate';
import { encodeFieldName } from './fieldNames';
import type { StoredIdentityType } from './identity';
import { BEHAVIOUR_DAYS, DAY_MS, dayKey, type SegmentSubject } from './profile';
import { oneOfRequired } from './schemaChecks';
import { compileScore, modelNeeds, ScoreRuleSchema, segmentOfFeature } from './scoreModel';
import { numberPattern, storableText } from './text';

extendZodWithOpenApi(z);

// ---- the rule language -------------------------------------------------------------------------

export const TRAIT_OPS = ['eq', 'neq', 'in', 'gt', 'gte', 'lt', 'lte', 'exists', 'contains'] as const;
export type TraitOp = (typeof TRAIT_OPS)[number];

export const IDENTITY_KINDS = ['email', 'phone', 'maid', 'crm_id', 'cookie_id', 'partner_uid'] as const;
export type IdentityKind = (typeof IDENTITY_KINDS)[number];
export const STORED_TYPE_OF_KIND: Record<IdentityKind, StoredIdentityType> = {
  email: 'email_sha256',
  phone: 'phone_sha256',
  maid: 'maid',
  crm_id: 'crm_id',
  cookie_id: 'cookie_id',
  partner_uid: 'partner_uid',
};

/** ISO 8601 durations of whole days and/or hours: `P30D`, `PT12H`, `P1DT6H`. */
const DURATION = /^P(?:(\d{1,4})D)?(?:T(\d{1,5})H)?$/;

export function durationMs(text: string): number {
  const match = DURATION.exec(text);
  if (!match) throw new Error(`not a duration: ${text}`);
  return (Number(match[1] ?? 0) * 24 + Number(match[2] ?? 0)) * 3_600_000;
}

/** Durations of 1 to `maxHours` hours in all (days count 24), as one pattern the document states. */
function durationPattern(maxHours: number): RegExp {
  const maxDays = Math.floor(maxHours / 24);
  const parts = [`P${numberPattern(1, Math.min(maxDays, 9999), 4)}D`, `PT${numberPattern(1, Math.min(maxHours, 99999), 5)}H`];
  if (maxDays >= 9999) {
    // Without a bound that days and hours share, either may take its whole width.
    parts.push(`P\\d{1,4}DT${numberPattern(1, 99999, 5)}H`, `P${numberPattern(1, 9999, 4)}DT\\d{1,5}H`);
  } else {
    for (let days = 0; days <= maxDays; days++) parts.push(`P${numberPattern(days, days, 4)}DT${numberPattern(days === 0 ? 1 : 0, maxHours - 24 * days, 5)}H`);
  }
  return new RegExp(`^(?:${parts.join('|')})$`);
}

/** A duration schema whose pattern is the check, and whose message says what is wrong with the value. */
function durationSchema(maxHours: number, tooLong: string) {
  return z
    .string()
    .regex(durationPattern(maxHours), {
      error: (issue) => {
        const text = String(issue.input);
        if (!DURATION.test(text)) return 'an ISO 8601 duration of days and/or hours, e.g. P30D or PT12H';
        return durationMs(text) === 0 ? 'must be longer than zero' : tooLong;
      },
    })
    .openapi({ example: 'P30D' });
}

export const DurationSchema = durationSchema(Infinity, 'too long');

/** An event window reaches back no further than the behaviour profiles keep. */
const EventWindowSchema = durationSchema(BEHAVIOUR_DAYS * 24, `longer than the ${BEHAVIOUR_DAYS} days of behaviour kept on profiles`);

const VALUES = [z.string().max(1024), z.number().finite(), z.boolean(), z.null()] as const;
const Value = z.union(VALUES);

/** One value to compare with, refused with a message naming the operator. */
function operand(op: TraitOp) {
  return z.union(VALUES, {
    error: (issue) => (issue.input === undefined ? `\`${op}\` needs a value` : Array.isArray(issue.input) ? `\`${op}\` compares with one value, not a list` : undefined),
  });
}

/**
 * A comparison of a trait or event property with a value, one shape per operator (the document's
 * `oneOf` on `op`): `exists` takes no value, `in` a list, the others one value.
 */
function comparison<K extends string>(field: K, name: string) {
  const subject = { [field]: Name } as Record<K, typeof Name>;
  const shape = <T extends z.ZodRawShape>(op: TraitOp, value: T) => z.object({ ...subject, op: z.literal(op), ...value }).strict();
  return z
    .discriminatedUnion('op', [
      // Stated as a `value` nothing matches, so a value sent is refused at its own path.
      shape('exists', { value: z.unknown().refine(() => false, '`exists` takes no value').openapi({ not: {} }).optional() }),
      shape('in', { value: z.array(Value, { error: '`in` needs a list of values' }).max(1000) }),
      ...TRAIT_OPS.filter((op) => op !== 'exists' && op !== 'in').map((op) => shape(op, { value: operand(op) })),
    ])
    .openapi(name);
}

const Name = z.string().min(1).max(128);
export const TraitRuleSchema = comparison('trait', 'TraitRule');
export const PropertyFilterSchema = comparison('property', 'PropertyFilter');
export const EventRuleSchema = z
  .object({
    event: Name,
    count: z.object({ op: z.enum(['gte', 'lte', 'eq']), value: z.number().int().min(0).max(1_000_000) }).strict().optional(),
    within: EventWindowSchema.optional(),
    where: z.array(PropertyFilterSchema).min(1).max(8).optional(),
  })
  .strict()
  .openapi('EventRule');
export const LastSeenRuleSchema = z
  .object({ lastSeen: oneOfRequired(z.object({ within: DurationSchema.optional(), notWithin: DurationSchema.optional() }).strict(), ['within', 'notWithin']) })
  .strict()
  .openapi('LastSeenRule');
export const IdentityRuleSchema = z.object({ identity: z.enum(IDENTITY_KINDS) }).strict().openapi('IdentityRule');
export const ConsentRuleSchema = z.object({ consent: z.object({ purpose: z.number().int().min(1).max(24) }).strict() }).strict().openapi('ConsentRule');
export const SegmentRefRuleSchema = z
  .object({ segment: storableText(64).min(1).openapi({ description: 'Another segment, which must exist (404 naming this path)' }) })
  .strict()
  .openapi('SegmentRule');

export type TraitRule = z.infer<typeof TraitRuleSchema>;
export type EventRule = z.infer<typeof EventRuleSchema>;
export type Rule =
  | { all: Rule[] }
  | { any: Rule[] }
  | { not: Rule }
  | TraitRule
  | EventRule
  | z.infer<typeof LastSeenRuleSchema>
  | z.infer<typeof IdentityRuleSchema>
  | z.infer<typeof ConsentRuleSchema>
  | z.infer<typeof SegmentRefRuleSchema>
  | z.infer<typeof ScoreRuleSchema>;

const MAX_CHILDREN = 100;
const MAX_NODES = 500;

/**
 * The whole language as one schema, which the document states and requests are parsed with.
 * `parseRule` checks the same first, naming the exact path of each problem, and counts the
 * conditions (at most MAX_NODES, which bounds how deep rules nest too): the one limit no schema
 * can state.
 */
export const RuleSchema: z.ZodType<Rule> = z
  .lazy(() =>
    z.union([
      z.object({ all: z.array(RuleSchema).min(1).max(MAX_CHILDREN) }).strict(),
      z.object({ any: z.array(RuleSchema).min(1).max(MAX_CHILDREN) }).strict(),
      z.object({ not: RuleSchema }).strict(),
      // Read-only, so the document refers to a leaf by its name rather than spreading its own alternatives here.
      ...[TraitRuleSchema, EventRuleSchema, LastSeenRuleSchema, IdentityRuleSchema, ConsentRuleSchema, SegmentRefRuleSchema, ScoreRuleSchema].map((leaf) => leaf.readonly()),
    ]),
  )
  .openapi('Rule', {
    description:
      'all/any/not combine rules; trait compares a trait; event counts events of a type (default: at least one), optionally within a window and filtered on properties; lastSeen tests recency; identity needs an identity of a type; consent needs a TCF purpose; segment needs membership of another segment; score qualifies by a logistic model over profile features (what a lookalike extension states). ' +
      `A rule holds at most ${MAX_NODES} conditions in all (counted on the whole rule: a 400 naming where the count ran over).`,
    example: { all: [{ event: 'purchase', count: { op: 'gte', value: 2 }, within: 'P30D' }, { not: { segment: 'seg_churned' } }] },
  }) as z.ZodType<Rule>;

const LEAF_SCHEMAS = {
  trait: TraitRuleSchema,
  event: EventRuleSchema,
  lastSeen: LastSeenRuleSchema,
  identity: IdentityRuleSchema,
  consent: ConsentRuleSchema,
  segment: SegmentRefRuleSchema,
  score: ScoreRuleSchema,
} as const;
const KINDS = ['all', 'any', 'not', ...Object.keys(LEAF_SCHEMAS)];

/**
 * Validates a rule, naming the exact path of each problem (`rule.all[2].within`): the kind is taken
 * from the key present, so an error is reported against the rule the client meant, not against
 * every alternative of a union. It also counts the conditions, the one limit no schema can state.
 */
export function parseRule(value: unknown, path = 'rule'): { rule: Rule; errors: [] } | { rule: null; errors: FieldError[] } {
  const errors: FieldError[] = [];
  let nodes = 0;
  const walk = (node: unknown, at: string): void => {
    if (++nodes > MAX_NODES) {
      if (nodes === MAX_NODES + 1) errors.push({ path: at, message: `a rule may hold at most ${MAX_NODES} conditions` });
      return;
    }
    if (typeof node !== 'object' || node === null || Array.isArray(node)) return void errors.push({ path: at, message: 'must be a rule object' });
    const kinds = Object.keys(node).filter((key) => KINDS.includes(key));
    if (kinds.length !== 1) {
      return void errors.push({ path: at, message: kinds.length === 0 ? `must have one of ${KINDS.join(', ')}` : `has both ${kinds.join(' and ')}: one kind per rule` });
    }
    const kind = kinds[0];
    if (kind === 'all' || kind === 'any' || kind === 'not') {
      const extra = Object.keys(node).filter((key) => key !== kind);
      for (const key of extra) errors.push({ path: `${at}.${key}`, message: `unknown field of a \`${kind}\` rule` });
      const children = (node as Record<string, unknown>)[kind];
      if (kind === 'not') return walk(children, `${at}.not`);
      if (!Array.isArray(children) || children.length === 0 || children.length > MAX_CHILDREN) {
        return void errors.push({ path: `${at}.${kind}`, message: `must be a list of 1 to ${MAX_CHILDREN} rules` });
      }
      children.forEach((child, index) => walk(child, `${at}.${kind}[${index}]`));
      return;
    }
    const parsed = LEAF_SCHEMAS[kind as keyof typeof LEAF_SCHEMAS].safeParse(node);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const suffix = issue.path.map((part) => (typeof part === 'number' ? `[${part}]` : `.${String(part)}`)).join('');
        const unknown = issue.code === 'unrecognized_keys' ? `: ${issue.keys.join(', ')}` : '';
        errors.push({ path: `${at}${suffix}`, message: issue.message + unknown });
      }
      return;
    }
  };
  walk(value, path);
  return errors.length > 0 ? { rule: null, errors } : { rule: value as Rule, errors: [] };
}

/** Where a rule refers to other segments: each reference with its path (`rule.all[1].segment`). */
export function segmentReferences(rule: Rule, path = 'rule'): Array<{ id: string; path: string }> {
  const found: Array<{ id: string; path: string }> = [];
  const walk = (node: Rule, at: string) => {
    if ('all' in node) node.all.forEach((child, index) => walk(child, `${at}.all[${index}]`));
    else if ('any' in node) node.any.forEach((child, index) => walk(child, `${at}.any[${index}]`));
    else if ('not' in node) walk(node.not, `${at}.not`);
    else if ('segment' in node) found.push({ id: node.segment, path: `${at}.segment` });
    else if ('score' in node) {
      node.score.weights.forEach(([feature], k) => {
        const id = segmentOfFeature(feature);
        if (id !== null) found.push({ id, path: `${at}.score.weights[${k}][0]` });
      });
    }
  };
  walk(rule, path);
  return found;
}

/** The segments a rule refers to, each once. */
export function referencedSegments(rule: Rule): string[] {
  return [...new Set(segmentReferences(rule).map((reference) => reference.id))];
}

/**
 * The first cycle of segment references, as the ids along it (`[a, b, a]`), or null. `rules` holds
 * every segment's rule as it would be after the change being checked.
 */
export function findCycle(rules: ReadonlyMap<string, Rule>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (id: string): string[] | null => {
    if (state.get(id) === 'done') return null;
    if (state.get(id) === 'open') return [...stack.slice(stack.indexOf(id)), id];
    state.set(id, 'open');
    stack.push(id);
    const rule = rules.get(id);
    for (const next of rule ? referencedSegments(rule) : []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(id, 'done');
    return null;
  };
  for (const id of [...rules.keys()].sort()) {
    const cycle = visit(id);
    if (cycle) return cycle;
  }
  return null;
}

/** A cycle of segment references through `id` (`[id, …, id]`), or null: loops elsewhere are not its own. */
export function cycleThrough(id: string, rules: ReadonlyMap<string, Rule>): string[] | null {
  const seen = new Set<string>();
  const path = [id];
  const walk = (from: string): string[] | null => {
    const rule = rules.get(from);
    for (const next of rule ? referencedSegments(rule) : []) {
      if (next === id) return [...path, id];
      if (seen.has(next)) continue;
      seen.add(next);
      path.push(next);
      const cycle = walk(next);
      if (cycle) return cycle;
      path.pop();
    }
    return null;
  };
  return walk(id);
}

/** What of a profile a set of rules reads: a batch run decodes only that much of each document. */
export interface SubjectNeeds {
  traits: boolean;
  identities: boolean;
  /** Consent and the sources whose policies read it (see ConsentPolicies). */
  consent: boolean;
  /** Per event type (encoded), whether its recent events (for property filters) are read too. */
  events: Map<string, boolean>;
}

export function subjectNeeds(rules: Rule[]): SubjectNeeds {
  // Consent (with the sources, whose policies read it) always: a profile whose consent refuses profiling is in no segment.
  const needs: SubjectNeeds = { traits: false, identities: false, consent: true, events: new Map() };
  const walk = (rule: Rule): void => {
    if ('all' in rule) rule.all.forEach(walk);
    else if ('any' in rule) rule.any.forEach(walk);
    else if ('not' in rule) walk(rule.not);
    else if ('trait' in rule) needs.traits = true;
    else if ('identity' in rule) needs.identities = true;
    else if ('score' in rule) {
      const model = modelNeeds(rule.score.weights);
      needs.traits ||= model.traits;
      needs.identities ||= model.identities;
      for (const key of model.events) if (!needs.events.has(key)) needs.events.set(key, false);
    } else if ('event' in rule) {
      const key = encodeFieldName(rule.event);
      needs.events.set(key, (needs.events.get(key) ?? false) || Boolean(rule.where?.length));
    }
  };
  rules.forEach(walk);
  return needs;
}

// ---- evaluation ----------------------------------------------------------------------------------

/**
 * What `eq`, `in`, `gt`… mean, the same for traits and event properties. `eq` is deep equality;
 * `neq` is its negation (a missing value is not equal); `contains` is substring for strings and
 * membership for lists; order comparisons need both sides numbers or both strings (ISO dates
 * compare as strings); `exists` is present and not null.
 */
export function compare(actual: unknown, op: TraitOp, expected: unknown): boolean {
  switch (op) {
    case 'exists':
      return actual !== undefined && actual !== null;
    case 'eq':
      return equal(actual, expected);
    case 'neq':
      return !equal(actual, expected);
    case 'in':
      return Array.isArray(expected) && expected.some((candidate) => equal(actual, candidate));
    case 'contains':
      if (typeof actual === 'string') return typeof expected === 'string' && actual.includes(expected);
      return Array.isArray(actual) && actual.some((item) => equal(item, expected));
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte': {
      if (!((typeof actual === 'number' && typeof expected === 'number') || (typeof actual === 'string' && typeof expected === 'string'))) return false;
      if (op === 'gt') return actual > expected;
      if (op === 'gte') return actual >= expected;
      if (op === 'lt') return actual < expected;
      return actual <= expected;
    }
  }
}

function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, index) => equal(item, b[index]));
  return false;
}

type Predicate = (subject: SegmentSubject, at: EvaluationTime) => boolean;

/** `now` and the first daily bucket of each window, computed once per evaluation time. */
export class EvaluationTime {
  private readonly firstDays = new Map<number, string>();
  /** Today's daily bucket: the last day every window covers. */
  readonly today: string;
  /** When today (UTC) ends (ms since the epoch): the end of every window, as of the daily buckets. */
  readonly todayEnd: number;
  constructor(readonly now: Date) {
    this.today = dayKey(now);
    this.todayEnd = (Math.floor(now.getTime() / DAY_MS) + 1) * DAY_MS;
  }

  /** When the oldest UTC day a window reaching back `ms` from now covers begins (ms since the epoch). */
  firstDayStart(ms: number): number {
    return Math.floor((this.now.getTime() - ms) / DAY_MS) * DAY_MS;
  }

  /** The oldest UTC day a window reaching back `ms` from now covers: windows count whole days of the daily buckets. */
  firstDay(ms: number): string {
    let day = this.firstDays.get(ms);
    if (day === undefined) {
      day = dayKey(new Date(this.now.getTime() - ms));
      this.firstDays.set(ms, day);
    }
    return day;
  }
}

function countMatches(count: EventRule['count'], n: number): boolean {
  const { op, value } = count ?? { op: 'gte', value: 1 };
  return op === 'gte' ? n >= value : op === 'lte' ? n <= value : n === value;
}

function compileEvent(rule: EventRule): Predicate {
  const key = encodeFieldName(rule.event);
  const windowMs = rule.within ? durationMs(rule.within) : null;
  const filters = (rule.where ?? []).map((filter) => ({ key: encodeFieldName(filter.property), op: filter.op, value: filter.value }));
  return (subject, at) => {
    const counter = Object.hasOwn(subject.counters, key) ? subject.counters[key] : undefined;
    let n = 0;
    if (counter && filters.length > 0) {
      // Property filters read the recent events kept per type; their window covers the same whole UTC days as the daily
      // buckets' (today's events stamped a little ahead of the clock too), and no window, every event, as the count does.
      const since = windowMs === null ? -Infinity : at.firstDayStart(windowMs);
      const until = windowMs === null ? Infinity : at.todayEnd;
      for (const event of counter.recent ?? []) {
        if (event.at.getTime() < since || event.at.getTime() >= until) continue;
        if (filters.every((filter) => compare(Object.hasOwn(event.properties, filter.key) ? event.properties[filter.key] : undefined, filter.op, filter.value))) n++;
      }
    } else if (counter && windowMs === null) {
      n = counter.count;
    } else if (counter && windowMs !== null) {
      const first = at.firstDay(windowMs);
      for (const [day, count] of Object.entries(counter.days)) if (day >= first && day <= at.today) n += count;
    }
    return countMatches(rule.count, n);
  };
}

function compile(rule: Rule, segment: (id: string) => Predicate): Predicate {
  if ('all' in rule) {
    const parts = rule.all.map((child) => compile(child, segment));
    return (subject, at) => parts.every((part) => part(subject, at));
  }
  if ('any' in rule) {
    const parts = rule.any.map((child) => compile(child, segment));
    return (subject, at) => parts.some((part) => part(subject, at));
  }
  if ('not' in rule) {
    const inner = compile(rule.not, segment);
    return (subject, at) => !inner(subject, at);
  }
  if ('trait' in rule) {
    const key = encodeFieldName(rule.trait);
    return (subject) => compare(Object.hasOwn(subject.traits, key) ? subject.traits[key] : undefined, rule.op, rule.value);
  }
  if ('event' in rule) return compileEvent(rule);
  if ('lastSeen' in rule) {
    const within = rule.lastSeen.within ? durationMs(rule.lastSeen.within) : null;
    const notWithin = rule.lastSeen.notWithin ? durationMs(rule.lastSeen.notWithin) : null;
    return (subject, at) => {
      const age = at.now.getTime() - subject.lastSeen.getTime();
      return (within === null || age <= within) && (notWithin === null || age > notWithin);
    };
  }
  if ('identity' in rule) {
    const type = STORED_TYPE_OF_KIND[rule.identity];
    return (subject) => subject.identities.some((identity) => identity.type === type);
  }
  if ('consent' in rule) {
    const purpose = rule.consent.purpose;
    // No TCF signal is no consent: a purpose counts only when a TC string grants it.
    return (subject) => subject.consent?.tcf?.purposeConsents.includes(purpose) ?? false;
  }
  if ('score' in rule) {
    const qualifies = compileScore(rule.score);
    return (subject, at) => qualifies(subject, at.now, (id) => segment(id)(subject, at));
  }
  const id = rule.segment;
  return (subject, at) => segment(id)(subject, at);
}

export interface SegmentDefinition {
  id: string;
  rule: Rule;
}

/**
 * Compiles segments into one evaluator: the single meaning of every rule, used by the real-time
 * path (a partition writer, per profile it changes), the batch run (per profile it streams), the
 * estimate (per sampled profile) and the profile view. A segment referred to by another is
 * evaluated once per subject and time, whichever refers to it. A segment whose rule leads to one
 * not given (deleted meanwhile) has no members, as one in a cycle has: `not` of a deleted segment
 * would otherwise take in everyone.
 */
export class SegmentEvaluator {
  readonly ids: string[];
  /** Segments left without members because they refer to each other. */
  readonly cyclic: string[];
  /** Segments left without members because their rules lead to a segment not given. */
  readonly dangling: string[];
  private readonly predicates = new Map<string, Predicate>();
  private memo = new WeakMap<SegmentSubject, Map<string, boolean>>();

  /** `policies`: the sources' consent policies, by which a profile whose consent refuses profiling is in no segment. */
  constructor(
    definitions: SegmentDefinition[],
    private readonly policies: ConsentPolicies,
  ) {
    this.ids = definitions.map((definition) => definition.id).sort();
    const rules = new Map(definitions.map((definition) => [definition.id, definition.rule]));
    // The API refuses cycles, but two edits at once could still make one: its segments then have
    // no members (reported here), rather than stopping every fold that evaluates segments.
    const cyclic: string[] = [];
    for (let cycle = findCycle(rules); cycle; cycle = findCycle(rules)) {
      for (const id of cycle) rules.delete(id);
      cyclic.push(...cycle.slice(0, -1));
    }
    this.cyclic = cyclic.sort();
    const dangling: string[] = [];
    const usable = new Set(this.ids);
    for (let found = true; found; ) {
      found = false;
      for (const [id, rule] of rules) {
        if (referencedSegments(rule).some((other) => !usable.has(other))) {
          usable.delete(id);
          rules.delete(id);
          dangling.push(id);
          found = true;
        }
      }
    }
    this.dangling = dangling.sort();
    const memoized = (id: string): Predicate => (subject, at) => {
      let results = this.memo.get(subject);
      if (!results) this.memo.set(subject, (results = new Map()));
      let member = results.get(id);
      if (member === undefined) {
        const predicate = this.predicates.get(id);
        member = predicate ? predicate(subject, at) : false;
        results.set(id, member);
      }
      return member;
    };
    for (const [id, rule] of rules) this.predicates.set(id, compile(rule, memoized));
    this.member = (id, subject, at) => memoized(id)(subject, at);
  }

  readonly member: (id: string, subject: SegmentSubject, at: EvaluationTime) => boolean;

  /** The segments the subject is a member of at `at`, sorted: none for a person who opted out or whose consent refuses profiling. */
  evaluate(subject: SegmentSubject, at: EvaluationTime): string[] {
    if (subject.optOut || this.policies.refuses(subject)) return [];
    const members = this.ids.filter((id) => this.member(id, subject, at));
    this.memo.delete(subject);
    return members;
  }
}
