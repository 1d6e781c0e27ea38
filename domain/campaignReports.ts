import { z } from 'zod';
import type { AudienceReport, CampaignFigures, HoldoutReport } from './audienceReports';
import { CAMPAIGN_VALUE_MAX } from './profile';
import './schemaChecks';

/**
 * A campaign's response among a segment's members, from the segment's audience report, and its lift
 * against a destination's holdout: members held out from the partner (never shown the campaign
 * there) against members exported to it.
 */

const Iso = z.string().openapi({ format: 'date-time' });
const Rate = z.number().nullable();

export const CampaignReportQuerySchema = z.object({
  segment: z.string().min(1).max(64).openapi({ description: 'The segment whose members the report counts' }),
  destination: z.string().min(1).max(64).optional().openapi({ description: 'The destination whose holdout lift is measured against; needed only when several destinations hold out members of the segment' }),
});

const GroupSchema = z.object({
  size: z.number().int(),
  reach: z.number().int(),
  converters: z.number().int(),
  conversionRate: Rate.openapi({ description: 'converters / size: every member of the group counts, reached or not' }),
});

export const CampaignReportSchema = z
  .object({
    campaign: z.string(),
    segmentId: z.string(),
    asOf: Iso,
    stale: z.boolean(),
    members: z.number().int(),
    reach: z.number().int().openapi({ description: 'Members with an impression' }),
    impressions: z.number().int(),
    frequency: Rate.openapi({ description: 'impressions / reach' }),
    clicks: z.number().int(),
    ctr: Rate.openapi({ description: 'clicks / impressions' }),
    conversions: z.number().int(),
    converters: z.number().int().openapi({ description: 'Members with a conversion, reached or not (a conversion may come through another channel)' }),
    convertersReached: z.number().int().openapi({ description: 'Members with an impression and a conversion (on a report counted before this figure was: at most the converters and the reach, whichever is fewer, until the next pass)' }),
    conversionRate: Rate.openapi({ description: 'convertersReached / reach: of the members reached, the share that converted' }),
    value: z.number().openapi({ description: `Sum of the conversions' \`properties.value\` (a value beyond ±${CAMPAIGN_VALUE_MAX.toExponential()} counts as none)` }),
    holdout: GroupSchema.extend({ destinationId: z.string(), share: z.number() }).optional().openapi({ description: "Members the destination held out (its `holdoutShare`) that it would otherwise send: its consent settings, export controls and id type let them through, on the profiles as the report read them (a partner id type: members holding one of the partner's ids, or a cookie id the match table maps to one when the report is written)" }),
    treated: GroupSchema.optional().openapi({ description: 'Members the destination sends: not held out, and let through by its consent settings, export controls and id type, decided as for `holdout`' }),
    delivery: z
      .object({
        state: z.enum(['active', 'paused']).openapi({ description: "The destination's state now" }),
        partnerHolds: z.number().int().openapi({ description: "Ids of the segment the partner has confirmed holding now, from the destination's receipts" }),
      })
      .nullable()
      .optional()
      .openapi({ description: "Whether the treated group was sent at all: the destination as it stands (null once it was deleted). `treated` is who it would send (intent to treat, so the groups compare like with like); a partner that holds none of the segment — never exported, paused before its first export, refused under a minimum audience — treated no one" }),
    lift: Rate.optional().openapi({ description: "treated.conversionRate / holdout.conversionRate − 1; null while the holdout has no converter, or while the partner holds none of the segment (`delivery`)" }),
    liftInterval: z.object({ low: z.number(), high: z.number() }).nullable().optional().openapi({ description: '95% interval of the lift (log relative risk); null while either group has no converter, or the lift is null' }),
  })
  .openapi('CampaignReport');
export type CampaignReport = z.infer<typeof CampaignReportSchema>;

const ratio = (a: number, b: number) => (b === 0 ? null : a / b);

/** Reached converters; a report counted before they were tells only that they are at most the converters and the reach. */
const reachedConverters = (figures: Omit<CampaignFigures, 'campaign'>) => figures.convertersReached ?? Math.min(figures.converters, figures.reach);

function figuresOf(campaigns: CampaignFigures[] | undefined, campaign: string): Omit<CampaignFigures, 'campaign'> {
  const found = campaigns?.find((figures) => figures.campaign === campaign);
  return found ?? { reach: 0, impressions: 0, clicks: 0, converters: 0, conversions: 0, value: 0 };
}

function groupOf(group: HoldoutReport['held'], campaign: string): z.infer<typeof GroupSchema> {
  const figures = figuresOf(group.campaigns, campaign);
  return { size: group.size, reach: figures.reach, converters: figures.converters, conversionRate: ratio(figures.converters, group.size) };
}

/**
 * The lift of the treated group's conversion rate over the holdout's, and its 95% interval from the
 * normal approximation of the log relative risk: se = √(1/x₁ − 1/n₁ + 1/x₂ − 1/n₂).
 */
export function liftOf(treated: { converters: number; size: number }, held: { converters: number; size: number }): { lift: number | null; interval: { low: number; high: number } | null } {
  if (held.converters === 0 || held.size === 0 || treated.size === 0) return { lift: null, interval: null };
  const relative = treated.converters / treated.size / (held.converters / held.size);
  if (treated.converters === 0) return { lift: relative - 1, interval: null };
  const se = Math.sqrt(1 / treated.converters - 1 / treated.size + 1 / held.converters - 1 / held.size);
  return { lift: relative - 1, interval: { low: relative * Math.exp(-1.96 * se) - 1, high: relative * Math.exp(1.96 * se) - 1 } };
}

/** The holdout's destination as it stands: its state and how many of the segment's ids its partner holds; null once deleted. */
export type CampaignDelivery = NonNullable<CampaignReport['delivery']>;

export function campaignReportOf(campaign: string, segmentId: string, report: AudienceReport, stale: boolean, holdout: HoldoutReport | null, delivery: CampaignDelivery | null = null): CampaignReport {
  const figures = figuresOf(report.campaigns, campaign);
  const reached = reachedConverters(figures);
  const result: CampaignReport = {
    campaign,
    segmentId,
    asOf: report.at.toISOString(),
    stale,
    members: report.size,
    reach: figures.reach,
    impressions: figures.impressions,
    frequency: ratio(figures.impressions, figures.reach),
    clicks: figures.clicks,
    ctr: ratio(figures.clicks, figures.impressions),
    conversions: figures.conversions,
    converters: figures.converters,
    convertersReached: reached,
    conversionRate: ratio(reached, figures.reach),
    value: figures.value,
  };
  if (!holdout) return result;
  const held = groupOf(holdout.held, campaign);
  const treated = groupOf(holdout.treated, campaign);
  // A partner holding none of the segment showed the campaign to no one the platform sent: no lift to measure.
  const { lift, interval } = delivery?.partnerHolds === 0 ? { lift: null, interval: null } : liftOf(treated, held);
  return { ...result, holdout: { destinationId: holdout.destinationId, share: holdout.share, ...held }, treated, delivery, lift, liftInterval: interval };
}
