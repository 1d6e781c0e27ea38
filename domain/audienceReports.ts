import { z } from 'zod';
import { decodeFieldName } from './fieldNames';
import { STORED_IDENTITY_TYPES } from './identity';
import type { CampaignCounter, SegmentSubject } from './profile';
import { listedOnce } from './schemaChecks';
import { compareText } from './text';

/**
 * Audience reports: what a segment's members hold (traits, events, identities, consent), counted in
 * one pass over every person for every segment at once, and the figures the insights, affinity and
 * trend routes derive from them. Counting is exact within the bounds below; the bounds keep a
 * report's memory and its stored document finite whatever traits are collected.
 */

/** Trait names a report keeps, those held by the most members first. */
export const REPORT_TRAITS_KEPT = 100;
/** Values a report keeps per trait, the most held first: insights show the top ones, affinity reads them all. */
export const REPORT_VALUES_KEPT = 1000;
/** Bytes of text a report keeps of one trait's values (values are up to 1 KB): 100 traits' stay within a stored document. */
export const REPORT_VALUE_BYTES = 64 * 1024;
/** Event types a report keeps, those held by the most members first (a site naming an event per page has thousands). */
export const REPORT_EVENT_TYPES_KEPT = 1000;
/** Distinct values one pass counts per trait name; values first met after that are counted in `uncounted`. */
export const VALUES_COUNTED_PER_TRAIT = 10_000;
/** The id of the report over every profile: the base of affinity when none is named. */
export const ALL_PROFILES = 'all';
/** TCF purposes are numbered 1–24 at most in any policy version (a consent rule names the same range). */
const TCF_PURPOSES = 24;

/** A value a report counts: a scalar, each element of a list counted on its own; objects and nulls are not counted. */
function countableValues(value: unknown): Array<string | number | boolean> {
  const values = Array.isArray(value) ? value : [value];
  return values.filter((item): item is string | number | boolean => ['string', 'number', 'boolean'].includes(typeof item));
}

/** What a report pass keeps of one person: small integers only, so a million people fit in a few hundred megabytes. */
export interface PersonFeatures {
  /** Interned (trait, value) pairs, each once. */
  values: Int32Array;
  /** Interned trait names the person holds a countable value of. */
  traits: Int32Array;
  /** Interned trait names the person holds a value of beyond the VALUES_COUNTED_PER_TRAIT the dictionary counts. */
  overflow: Int32Array;
  /** Pairs of (interned event type, total events of that type). */
  events: Float64Array;
  /** Bit per STORED_IDENTITY_TYPES entry. */
  identities: number;
  /** Bit `p - 1` per TCF purpose `p` consented. */
  purposes: number;
  /** Per campaign, CAMPAIGN_FIGURES numbers: (interned campaign, impressions, clicks, conversions, value). */
  campaigns: Float64Array;
}

/** Numbers per campaign in PersonFeatures.campaigns. */
const CAMPAIGN_FIGURES = 5;
/** Campaigns a report keeps, those reaching the most members first. */
export const REPORT_CAMPAIGNS_KEPT = 1000;

/** What a report counts of a person: traits, each event type's total, identity types, consent and campaigns. */
export type CountedSubject = Pick<SegmentSubject, 'traits' | 'identities' | 'consent'> & {
  counters: Record<string, { count: number }>;
  campaigns?: Record<string, CampaignCounter>;
};

/** Interns trait names, (trait, value) pairs and event types met during one pass. */
/** The overflow of the many who hold no value past the bound, shared: every person's features are kept until a pass ends. */
const NO_OVERFLOW = new Int32Array(0);

export class FeatureDictionary {
  readonly traitNames: string[] = [];
  readonly valueOf: Array<{ trait: number; value: string | number | boolean }> = [];
  readonly eventTypes: string[] = [];
  readonly campaigns: string[] = [];
  private readonly traitIds = new Map<string, number>();
  private readonly valueIds = new Map<number, Map<string, number>>();
  private readonly eventIds = new Map<string, number>();
  private readonly campaignIds = new Map<string, number>();

  private trait(key: string): number {
    let id = this.traitIds.get(key);
    if (id === undefined) {
      id = this.traitNames.push(key) - 1;
      this.traitIds.set(key, id);
      this.valueIds.set(id, new Map());
    }
    return id;
  }

  private value(trait: number, value: string | number | boolean): number | null {
    const ids = this.valueIds.get(trait) as Map<string, number>;
    // Typed keys: the string "1" and the number 1 are different values.
    const key = `${typeof value}:${String(value)}`;
    let id = ids.get(key);
    if (id === undefined) {
      if (ids.size >= VALUES_COUNTED_PER_TRAIT) return null;
      id = this.valueOf.push({ trait, value }) - 1;
      ids.set(key, id);
    }
    return id;
  }

  private event(key: string): number {
    return intern(this.eventIds, this.eventTypes, key);
  }

  /** A person's features. Trait names and event types stay encoded (as stored) until a report is written. */
  features(subject: CountedSubject): PersonFeatures {
    const values = new Set<number>();
    const traits = new Set<number>();
    const overflow: number[] = [];
    for (const [key, raw] of Object.entries(subject.traits)) {
      const countable = countableValues(raw);
      if (countable.length === 0) continue;
      const trait = this.trait(key);
      traits.add(trait);
      let overflowed = false;
      for (const value of countable) {
        const id = this.value(trait, value);
        if (id === null) overflowed = true;
        else values.add(id);
      }
      if (overflowed) overflow.push(trait);
    }
    const events: number[] = [];
    for (const [key, counter] of Object.entries(subject.counters)) if (counter.count > 0) events.push(this.event(key), counter.count);
    let identities = 0;
    for (const identity of subject.identities) {
      const bit = STORED_IDENTITY_TYPES.indexOf(identity.type);
      if (bit >= 0) identities |= 1 << bit;
    }
    let purposes = 0;
    for (const purpose of subject.consent?.tcf?.purposeConsents ?? []) if (purpose >= 1 && purpose <= TCF_PURPOSES) purposes |= 1 << (purpose - 1);
    const campaigns: number[] = [];
    for (const [key, counter] of Object.entries(subject.campaigns ?? {})) {
      campaigns.push(intern(this.campaignIds, this.campaigns, key), counter.impressions, counter.clicks, counter.conversions, counter.value);
    }
    return { values: Int32Array.from(values), traits: Int32Array.from(traits), overflow: overflow.length > 0 ? Int32Array.from(overflow) : NO_OVERFLOW, events: Float64Array.from(events), identities, purposes, campaigns: Float64Array.from(campaigns) };
  }
}

function intern(ids: Map<string, number>, names: string[], key: string): number {
  let id = ids.get(key);
  if (id === undefined) {
    id = names.push(key) - 1;
    ids.set(key, id);
  }
  return id;
}

/** A group's response to one campaign: members reached (with an impression), converting, and the event totals. */
export interface CampaignFigures {
  campaign: string;
  reach: number;
  impressions: number;
  clicks: number;
  converters: number;
  /** Converters the campaign reached (absent on reports counted before it was). */
  convertersReached?: number;
  conversions: number;
  value: number;
}

/** Counts a group's response to every campaign its members' profiles record. */
export class CampaignTally {
  size = 0;
  private readonly campaigns = new Map<number, Omit<CampaignFigures, 'campaign'>>();

  /** How many campaigns its members' profiles record. */
  get count(): number {
    return this.campaigns.size;
  }

  add(features: PersonFeatures): void {
    this.size++;
    const figures = features.campaigns;
    for (let i = 0; i < figures.length; i += CAMPAIGN_FIGURES) {
      let tally = this.campaigns.get(figures[i]);
      if (!tally) this.campaigns.set(figures[i], (tally = { reach: 0, impressions: 0, clicks: 0, converters: 0, convertersReached: 0, conversions: 0, value: 0 }));
      const [impressions, clicks, conversions, value] = [figures[i + 1], figures[i + 2], figures[i + 3], figures[i + 4]];
      if (impressions > 0) tally.reach++;
      if (conversions > 0) tally.converters++;
      if (conversions > 0 && impressions > 0) tally.convertersReached = (tally.convertersReached ?? 0) + 1;
      tally.impressions += impressions;
      tally.clicks += clicks;
      tally.conversions += conversions;
      tally.value += value;
    }
  }

  /**
   * The REPORT_CAMPAIGNS_KEPT campaigns reaching the most members (then the most converting); or
   * those `among` names (a holdout group's, the audience's campaigns): a campaign that reached
   * none of the group still converted some of it.
   */
  figures(dictionary: FeatureDictionary, among?: ReadonlySet<string>): CampaignFigures[] {
    const all = [...this.campaigns].map(([id, tally]) => ({ campaign: decodeFieldName(dictionary.campaigns[id]), ...tally }));
    if (among) return all.filter((figures) => among.has(figures.campaign)).sort((a, b) => compareText(a.campaign, b.campaign));
    return all.sort((a, b) => b.reach - a.reach || b.converters - a.converters || compareText(a.campaign, b.campaign)).slice(0, REPORT_CAMPAIGNS_KEPT);
  }
}

/** A destination's holdout of a segment as it is counted. */
export interface HoldoutTallies {
  destinationId: string;
  share: number;
  held: CampaignTally;
  treated: CampaignTally;
}

/** A destination's holdout of a segment: its held-out and its treated (exported) members' campaign response. */
export interface HoldoutReport {
  destinationId: string;
  share: number;
  held: { size: number; campaigns: CampaignFigures[] };
  treated: { size: number; campaigns: CampaignFigures[] };
}

/** One audience's report as stored: counts only, names decoded. */
export interface AudienceReport {
  /** A segment id, or ALL_PROFILES. */
  _id: string;
  /** When the pass that counted it began. */
  at: Date;
  /** The segment's batch run whose snapshot (with real-time changes since) gave its members; null for ALL_PROFILES. */
  runId: string | null;
  size: number;
  traits: Array<{ name: string; profiles: number; distinct: number; uncounted: number; values: Array<{ value: string | number | boolean; count: number }> }>;
  events: Array<{ type: string; profiles: number; total: number }>;
  identities: Record<(typeof STORED_IDENTITY_TYPES)[number], number>;
  consent: Array<{ purpose: number; profiles: number }>;
  /** Absent on reports counted before campaigns were. */
  campaigns?: CampaignFigures[];
  /** The members' campaigns were more than `campaigns` keeps (REPORT_CAMPAIGNS_KEPT): one not listed was not counted. Absent on reports counted before it was kept. */
  campaignsCut?: boolean;
  /** Per destination holding out members of the segment. */
  holdouts?: HoldoutReport[];
}

/** Counts the features of one audience's members as they are added. */
export class AudienceTally {
  size = 0;
  private readonly values = new Map<number, number>();
  private readonly traits = new Map<number, number>();
  /** Per trait, the members holding a value of it beyond those the dictionary counts. */
  private readonly uncounted = new Map<number, number>();
  private readonly events = new Map<number, { profiles: number; total: number }>();
  private readonly identities = new Array<number>(STORED_IDENTITY_TYPES.length).fill(0);
  private readonly purposes = new Array<number>(TCF_PURPOSES).fill(0);
  private readonly campaigns = new CampaignTally();

  add(features: PersonFeatures): void {
    this.size++;
    this.campaigns.add(features);
    for (const id of features.values) this.values.set(id, (this.values.get(id) ?? 0) + 1);
    for (const id of features.traits) this.traits.set(id, (this.traits.get(id) ?? 0) + 1);
    for (const id of features.overflow) this.uncounted.set(id, (this.uncounted.get(id) ?? 0) + 1);
    for (let i = 0; i < features.events.length; i += 2) {
      const event = this.events.get(features.events[i]);
      if (event) {
        event.profiles++;
        event.total += features.events[i + 1];
      } else {
        this.events.set(features.events[i], { profiles: 1, total: features.events[i + 1] });
      }
    }
    for (let bit = 0; bit < this.identities.length; bit++) if (features.identities & (1 << bit)) this.identities[bit]++;
    for (let bit = 0; bit < TCF_PURPOSES; bit++) if (features.purposes & (1 << bit)) this.purposes[bit]++;
  }

  /** The report: the REPORT_TRAITS_KEPT most held traits, each with its REPORT_VALUES_KEPT most held values. */
  /** Holdout groups are counted for the audience's campaigns: the lift of each is measured on both sides. */
  report(dictionary: FeatureDictionary, id: string, at: Date, runId: string | null, holdoutTallies: readonly HoldoutTallies[] = []): AudienceReport {
    const byTrait = new Map<number, Array<{ value: string | number | boolean; count: number }>>();
    for (const [valueId, count] of this.values) {
      const { trait, value } = dictionary.valueOf[valueId];
      const list = byTrait.get(trait) ?? [];
      list.push({ value, count });
      byTrait.set(trait, list);
    }
    const traits = [...this.traits]
      .sort((a, b) => b[1] - a[1] || compareText(dictionary.traitNames[a[0]], dictionary.traitNames[b[0]]))
      .slice(0, REPORT_TRAITS_KEPT)
      .map(([trait, profiles]) => {
        const values = (byTrait.get(trait) ?? []).sort((a, b) => b.count - a.count || compareText(valueKey(a.value), valueKey(b.value)));
        return { name: decodeFieldName(dictionary.traitNames[trait]), profiles, distinct: values.length, uncounted: this.uncounted.get(trait) ?? 0, values: mostHeld(values) };
      });
    const events = [...this.events]
      .map(([type, event]) => ({ type: decodeFieldName(dictionary.eventTypes[type]), ...event }))
      .sort((a, b) => b.profiles - a.profiles || compareText(a.type, b.type))
      .slice(0, REPORT_EVENT_TYPES_KEPT);
    const identities = Object.fromEntries(STORED_IDENTITY_TYPES.map((type, bit) => [type, this.identities[bit]])) as AudienceReport['identities'];
    const consent = this.purposes.flatMap((profiles, bit) => (profiles > 0 ? [{ purpose: bit + 1, profiles }] : []));
    const campaigns = this.campaigns.figures(dictionary);
    const among = new Set(campaigns.map((figures) => figures.campaign));
    const holdouts = holdoutTallies.map(({ destinationId, share, held, treated }) => ({
      destinationId,
      share,
      held: { size: held.size, campaigns: held.figures(dictionary, among) },
      treated: { size: treated.size, campaigns: treated.figures(dictionary, among) },
    }));
    return { _id: id, at, runId, size: this.size, traits, events, identities, consent, campaigns, campaignsCut: this.campaigns.count > campaigns.length, holdouts };
  }
}

/** The first REPORT_VALUES_KEPT values (most held first) within REPORT_VALUE_BYTES of text. */
function mostHeld<V extends { value: string | number | boolean }>(values: V[]): V[] {
  let bytes = 0;
  let kept = 0;
  for (; kept < Math.min(values.length, REPORT_VALUES_KEPT); kept++) {
    bytes += typeof values[kept].value === 'string' ? Buffer.byteLength(values[kept].value as string) : 8;
    if (bytes > REPORT_VALUE_BYTES) break;
  }
  return values.slice(0, kept);
}

function valueKey(value: string | number | boolean): string {
  return `${typeof value}:${String(value)}`;
}

const share = (count: number, of: number) => (of === 0 ? 0 : count / of);

// ---- what the routes answer ---------------------------------------------------------------------

const Iso = z.string().openapi({ format: 'date-time' });
const ShareSchema = z.number().min(0).max(1);
const TraitValueSchema = z.union([z.string(), z.number(), z.boolean()]);

export const InsightsQuerySchema = z.object({
  top: z.coerce.number().int().min(1).max(REPORT_VALUES_KEPT).default(10).openapi({ description: 'Values shown per trait, the most held first' }),
});

export const InsightsSchema = z
  .object({
    segmentId: z.string(),
    asOf: Iso.openapi({ description: 'When the report that counted it began: members as they stood then' }),
    stale: z.boolean().openapi({ description: 'True when the segment has completed a run since, and a new report did not finish in time to answer' }),
    size: z.number().int(),
    traits: z
      .record(
        z.string(),
        z.object({
          profiles: z.number().int().openapi({ description: 'Members holding a value of the trait' }),
          distinct: z.number().int().openapi({ description: 'Distinct values members hold (as counted; see `uncounted`)' }),
          uncounted: z.number().int().openapi({ description: `Members holding a value met after the first ${VALUES_COUNTED_PER_TRAIT} distinct values of the trait, which are not counted by value` }),
          top: z.array(z.object({ value: TraitValueSchema, count: z.number().int(), share: ShareSchema })),
        }),
      )
      .openapi({ description: `Per trait name as collected (the ${REPORT_TRAITS_KEPT} held by the most members), its most held values; a list trait counts each element. Shares are over all members.` }),
    events: z
      .record(z.string(), z.object({ profiles: z.number().int(), share: ShareSchema, meanCount: z.number().openapi({ description: 'Events of the type per member holding any, from the totals kept on profiles' }) }))
      .openapi({ description: 'Per event type as collected' }),
    identityCoverage: z
      .object({ email: ShareSchema, phone: ShareSchema, maid: ShareSchema, crm_id: ShareSchema, cookie_id: ShareSchema, partner_uid: ShareSchema })
      .openapi({ description: 'Shares of members holding an identity of each type (an email or phone counts when its hash is held)' }),
    consentCoverage: z.record(z.string(), ShareSchema).openapi({ description: 'Per TCF purpose number, the share of members whose TC string consents to it' }),
  })
  .openapi('SegmentInsights');
export type Insights = z.infer<typeof InsightsSchema>;

function coverage(report: Pick<AudienceReport, 'size' | 'identities' | 'consent'>): Pick<Insights, 'identityCoverage' | 'consentCoverage'> {
  const of = (count: number) => share(count, report.size);
  return {
    identityCoverage: {
      email: of(report.identities.email_sha256),
      phone: of(report.identities.phone_sha256),
      maid: of(report.identities.maid),
      crm_id: of(report.identities.crm_id),
      cookie_id: of(report.identities.cookie_id),
      // Reports counted before partner user ids joined the graph hold none.
      partner_uid: of(report.identities.partner_uid ?? 0),
    },
    consentCoverage: Object.fromEntries(report.consent.map(({ purpose, profiles }) => [String(purpose), of(profiles)])),
  };
}

export function insightsOf(segmentId: string, report: AudienceReport, stale: boolean, top: number): Insights {
  // Built from entries: a trait or event named `__proto__` stays a field, as everywhere else.
  const traits: Insights['traits'] = Object.fromEntries(
    report.traits.map((trait) => [
      trait.name,
      {
        profiles: trait.profiles,
        distinct: trait.distinct,
        uncounted: trait.uncounted,
        top: trait.values.slice(0, top).map(({ value, count }) => ({ value, count, share: share(count, report.size) })),
      },
    ]),
  );
  const events: Insights['events'] = Object.fromEntries(
    report.events.map((event) => [event.type, { profiles: event.profiles, share: share(event.profiles, report.size), meanCount: share(event.total, event.profiles) }]),
  );
  return { segmentId, asOf: report.at.toISOString(), stale, size: report.size, traits, events, ...coverage(report) };
}

export const AffinityQuerySchema = z.object({
  base: z.string().min(1).max(64).default(ALL_PROFILES).openapi({ description: '`all` (every profile) or the id of a segment whose members are the base' }),
  minSupport: z.coerce.number().int().min(1).max(1_000_000_000).default(30).openapi({ description: 'Leave out values held by fewer audience members than this' }),
  limit: z.coerce.number().int().min(1).max(10_000).default(100),
});

export const AffinitySchema = z
  .object({
    segmentId: z.string(),
    base: z.string(),
    asOf: Iso,
    stale: z.boolean().openapi({ description: 'True when the segment (or the base segment) has completed a run since its report, and a new report did not finish in time to answer' }),
    audienceSize: z.number().int(),
    baseSize: z.number().int(),
    items: z.array(
      z.object({
        trait: z.string(),
        value: TraitValueSchema,
        audienceShare: ShareSchema,
        baseShare: ShareSchema,
        index: z.number().openapi({ description: 'audienceShare / baseShare × 100: 100 is as common as in the base, 200 twice as common' }),
        support: z.number().int().openapi({ description: 'Audience members holding the value' }),
      }),
    ),
  })
  .openapi('SegmentAffinity');
export type Affinity = z.infer<typeof AffinitySchema>;

/**
 * Trait values over-represented in an audience against a base: index = audienceShare / baseShare ×
 * 100, highest first (ties: the better supported first). A value the base's report does not list
 * among its kept values is left out, as is one held by fewer than `minSupport` members.
 */
export function affinityOf(segmentId: string, base: string, audience: AudienceReport, baseReport: AudienceReport, stale: boolean, minSupport: number, limit: number): Affinity {
  const baseCounts = new Map<string, number>();
  for (const trait of baseReport.traits) for (const { value, count } of trait.values) baseCounts.set(`${trait.name}\u0000${valueKey(value)}`, count);
  const items: Affinity['items'] = [];
  for (const trait of audience.traits) {
    for (const { value, count } of trait.values) {
      if (count < minSupport) continue;
      const baseCount = baseCounts.get(`${trait.name}\u0000${valueKey(value)}`);
      if (!baseCount) continue;
      const audienceShare = share(count, audience.size);
      const baseShare = share(baseCount, baseReport.size);
      items.push({ trait: trait.name, value, audienceShare, baseShare, index: (audienceShare / baseShare) * 100, support: count });
    }
  }
  items.sort((a, b) => b.index - a.index || b.support - a.support || compareText(a.trait, b.trait) || compareText(valueKey(a.value), valueKey(b.value)));
  return { segmentId, base, asOf: audience.at.toISOString(), stale, audienceSize: audience.size, baseSize: baseReport.size, items: items.slice(0, limit) };
}

export const OverlapRequestSchema = z
  .object({
    segments: listedOnce(z.array(z.string().min(1).max(64)).min(2).max(20), (id) => id, 'each segment once').openapi({ description: '2 to 20 segment ids' }),
  })
  .strict()
  .openapi('OverlapRequest', { example: { segments: ['seg_a', 'seg_b'] } });

export const OverlapSchema = z
  .object({
    sizes: z.record(z.string(), z.number().int()).openapi({ description: 'Members now, per segment' }),
    pairs: z.array(z.object({ a: z.string(), b: z.string(), intersection: z.number().int(), jaccard: z.number().min(0).max(1).openapi({ description: 'intersection / union' }) })),
  })
  .openapi('SegmentOverlap');
export type Overlap = z.infer<typeof OverlapSchema>;

/**
 * How many people hold each membership mask (bit k: member of the k-th segment), from each segment's
 * members in ascending id order: a merge that holds one page of each segment at a time, not every
 * member of every segment.
 */
export async function membershipMasks(segments: ReadonlyArray<AsyncIterable<string[]>>): Promise<Map<number, number>> {
  const cursors = segments.map((pages) => ({ pages: pages[Symbol.asyncIterator](), page: [] as string[], at: 0, done: false }));
  const people = new Map<number, number>();
  for (;;) {
    for (const cursor of cursors) {
      while (!cursor.done && cursor.at >= cursor.page.length) {
        const next = await cursor.pages.next();
        if (next.done) cursor.done = true;
        else [cursor.page, cursor.at] = [next.value, 0];
      }
    }
    let least: string | null = null;
    for (const cursor of cursors) if (!cursor.done && (least === null || cursor.page[cursor.at] < least)) least = cursor.page[cursor.at];
    if (least === null) return people;
    let mask = 0;
    cursors.forEach((cursor, k) => {
      if (!cursor.done && cursor.page[cursor.at] === least) {
        mask |= 1 << k;
        cursor.at++;
      }
    });
    people.set(mask, (people.get(mask) ?? 0) + 1);
  }
}

/** Pairwise overlaps from how many people hold each membership mask (bit k: member of `ids[k]`). */
export function overlapOf(ids: string[], people: ReadonlyMap<number, number>): Overlap {
  const sizes = new Array<number>(ids.length).fill(0);
  const pairs = ids.map(() => new Array<number>(ids.length).fill(0));
  for (const [mask, count] of people) {
    for (let a = 0; a < ids.length; a++) {
      if (!(mask & (1 << a))) continue;
      sizes[a] += count;
      for (let b = a + 1; b < ids.length; b++) if (mask & (1 << b)) pairs[a][b] += count;
    }
  }
  const result: Overlap = { sizes: Object.fromEntries(ids.map((id, k) => [id, sizes[k]])), pairs: [] };
  for (let a = 0; a < ids.length; a++) {
    for (let b = a + 1; b < ids.length; b++) {
      const union = sizes[a] + sizes[b] - pairs[a][b];
      result.pairs.push({ a: ids[a], b: ids[b], intersection: pairs[a][b], jaccard: union === 0 ? 0 : pairs[a][b] / union });
    }
  }
  return result;
}

/** A segment's day in its trend: the size and coverage its report counted that day (the day's last report). */
export interface TrendPoint {
  /** `<segmentId>:<YYYYMMDD>` */
  _id: string;
  at: Date;
  size: number;
  identities: AudienceReport['identities'];
  consent: AudienceReport['consent'];
}

export function trendPointOf(report: AudienceReport, day: string): TrendPoint {
  return { _id: `${report._id}:${day}`, at: report.at, size: report.size, identities: report.identities, consent: report.consent };
}

export const TrendQuerySchema = z.object({ days: z.coerce.number().int().min(1).max(400).default(30) });

export const TrendSchema = z
  .object({
    segmentId: z.string(),
    days: z.array(
      z.object({
        day: z.string().openapi({ example: '2026-11-30' }),
        asOf: Iso,
        size: z.number().int(),
        identityCoverage: InsightsSchema.shape.identityCoverage,
        consentCoverage: InsightsSchema.shape.consentCoverage,
      }),
    ),
  })
  .openapi('SegmentTrend', { description: 'One entry per day a report counted the segment, oldest first; days without a report are absent' });

export function trendDayOf(day: string, point: TrendPoint): z.infer<typeof TrendSchema>['days'][number] {
  return { day: `${day.slice(0, 4)}-${day.slice(4, 6)}-${day.slice(6, 8)}`, asOf: point.at.toISOString(), size: point.size, ...coverage(point) };
}
