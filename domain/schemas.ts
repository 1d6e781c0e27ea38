import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { GppSidSchema } from './consent';
import { EVENT_CURSOR } from './eventPages';
import { INPUT_IDENTITY_TYPES, STORED_IDENTITY_TYPES } from './identity';
import { CrmMappingSchema } from './uploads';
import { FeedConfigSchema, FeedStatusSchema } from './feeds';
import { keyedRecord } from './keyedRecord';
import { listedOnce } from './schemaChecks';
import { FLAT_LIST_MAX, FLAT_TEXT_MAX, nameText, storableText } from './text';

extendZodWithOpenApi(z);

// ---- sources ---------------------------------------------------------------------------------

export const SourceKindSchema = z.enum(['events', 'crm', 'feed']).openapi({
  description:
    'How the source delivers data: `events` through the event API, the tracking API, the tag and the pixel; `crm` by CSV uploads read through its `mapping`; `feed` by files pulled on a schedule from a partner\'s URL or a drop folder (its `feed`).',
});
export type SourceKind = z.infer<typeof SourceKindSchema>;

export const PartySchema = z.enum(['first', 'second', 'third']);
export type Party = z.infer<typeof PartySchema>;

export const UsageLabelSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_:-]{0,63}$/, 'lowercase letters, digits, `_`, `:` or `-`, at most 64')
  .openapi({ example: 'no_third_party_export' });

export const ConsentPolicySchema = z
  .object({
    mode: z
      .enum(['require', 'when_present', 'not_required'])
      .default('when_present')
      .openapi({
        description:
          '`require`: an event is profiled only when a consent signal it carries allows it (`tcfNotApplicable` is one); `when_present` (default): signals an event carries are enforced, events without one are profiled (e.g. traffic outside the GDPR); `not_required`: signals are kept but not enforced (data with its own legal basis, e.g. a CRM).',
      }),
    tcfPurposes: z
      .array(z.number().int().min(1).max(11))
      .max(11)
      .default([1, 3])
      .openapi({ description: 'TCF purposes a TC string must allow (default: store/access on a device, create a personalised-ads profile). Purposes 1 and 3–6 count only with consent; others also with legitimate interest.' }),
    tcfVendorId: z.number().int().min(1).max(65535).optional().openapi({ description: "Our IAB vendor id: when set, a TC string must also consent to this vendor, and no publisher restriction in it may bar the vendor from one of `tcfPurposes` (\"not allowed\", or \"require legitimate interest\": only vendor consent is read); the JS tag, pixel and cookie sync also need it for purpose 1 to use the cookie" }),
    honorGppOptOuts: z.boolean().default(true).openapi({ description: "A GPP string whose US section (US National, a state, or US Privacy) records an opt-out of sale, sharing or targeted advertising, or a Global Privacy Control signal (a GPP section's `Gpc`, or `consent.gpc` from the browser's `Sec-GPC: 1` header), makes the event non-profiling" }),
    purposeFlag: z
      .string()
      .regex(/^[a-z0-9_]{1,64}$/)
      .default('profiling')
      .openapi({ description: 'The explicit purpose flag (`consent.purposes.<flag>`) that, when false, makes an event non-profiling, and when present counts as a signal' }),
  })
  .strict()
  .openapi('ConsentPolicy', { description: 'What consent an event of this source needs to be applied to profiles and segments. An event without it is kept as non-profiling: counted on the source, never profiled.' });
export type ConsentPolicy = z.infer<typeof ConsentPolicySchema>;
/** A source created before consent policies existed, or without one. */
export const DEFAULT_CONSENT_POLICY: ConsentPolicy = ConsentPolicySchema.parse({});

const SourceFields = {
  name: nameText(200),
  party: PartySchema,
  labels: z.array(UsageLabelSchema).max(32).default([]),
  consent: ConsentPolicySchema.default(DEFAULT_CONSENT_POLICY),
};

/** Every field checked at once, so one answer names them all (the union below stops at an unknown kind). */
export const SourceFieldsSchema = z.object({ ...SourceFields, kind: SourceKindSchema, mapping: CrmMappingSchema.optional(), feed: FeedConfigSchema.optional() }).strict();

/** One shape per kind, so what a kind needs (a crm source's mapping) is in the document, not only in code. */
export const CreateSourceRequestSchema = z
  .discriminatedUnion('kind', [
    z.object({ ...SourceFields, kind: z.literal('events') }).strict(),
    z
      .object({ ...SourceFields, kind: z.literal('crm'), mapping: CrmMappingSchema.openapi({ description: 'How upload columns become identities and traits' }) })
      .strict(),
    z.object({ ...SourceFields, kind: z.literal('feed'), feed: FeedConfigSchema }).strict(),
  ])
  .openapi('CreateSourceRequest');
export type CreateSourceRequest = z.infer<typeof CreateSourceRequestSchema>;

export const CreateSourceResponseSchema = z
  .object({ id: z.string(), writeKey: z.string().openapi({ description: 'Shown once (and to a repeat of the create under its Idempotency-Key); only its hash is stored.' }) })
  .openapi('CreateSourceResponse');

export const SourceStateSchema = z.enum(['active', 'paused']);
export type SourceState = z.infer<typeof SourceStateSchema>;

/** Where a source's drain stands; saved in the store after every batch, so a restarted workflow resumes. */
export const DrainPositionSchema = z.object({
  cursor: z.number().int().openapi({ description: 'Next chunk of the source log to drain.' }),
  eventsProcessed: z.number().int().openapi({ description: 'Events routed to the partitions that fold them into profiles.' }),
  eventsRefused: z.number().int().openapi({ description: 'Events whose only identities are blocklisted junk (e.g. an all-zero ad id): kept in the log, never profiled.' }),
  identitiesBlocked: z
    .number()
    .int()
    .optional()
    .openapi({ description: 'Blocklisted junk identities (built-in, or DMP_IDENTITY_BLOCKLIST) dropped from events, those of refused events included: they join no profile. Absent until the first batch drained since it was counted.' }),
  eventsNonProfiling: z
    .record(z.string(), z.number().int())
    .openapi({ description: "Events the source's consent policy does not allow to be profiled, per reason (no_consent_signal, tcf_pending, gpp_pending, tcf_purpose, tcf_vendor, gpp_opt_out, purpose_flag): kept in the log, never applied to profiles or segments." }),
  duplicatesSkipped: z.number().int().openapi({ description: 'Events the drain skipped as repeats found at collection or import (repeats of earlier acknowledged events are dropped later: `profiles.duplicatesDropped`).' }),
  batchesApplied: z.number().int(),
  lastDrainAt: z.string().nullable(),
});
export type DrainPosition = z.infer<typeof DrainPositionSchema>;

/** What the source's workflow reports through its status query. */
export const SourceProgressSchema = DrainPositionSchema.extend({
  state: SourceStateSchema,
  lastError: z.string().nullable(),
  health: z
    .object({
      minutes: z.array(z.object({ minute: z.number().int(), events: z.number().int(), turns: z.number().int(), failures: z.number().int() })),
      lastSuccessAt: z.string().nullable(),
      lastFailureAt: z.string().nullable(),
    })
    .optional()
    .openapi({ description: "The workflow's per-minute counts of the last hour (summarized as the source's `health`)" }),
}).openapi('SourceProgress');
export type SourceProgress = z.infer<typeof SourceProgressSchema>;

/** Collection channels that answer whatever happens (the pixel's GIF, the tag's unread beacons, SDKs that ignore answers), so their rejections are counted. */
export const REJECTION_CHANNELS = ['pixel', 'tag', 'segment'] as const;
export type RejectionChannel = (typeof REJECTION_CHANNELS)[number];
const ChannelCountsSchema = z.object({ pixel: z.number().int(), tag: z.number().int(), segment: z.number().int() });
export const ChannelRejectionsSchema = z
  .object({
    total: ChannelCountsSchema,
    last24Hours: ChannelCountsSchema,
    last: z
      .object({ channel: z.enum(REJECTION_CHANNELS), at: z.string(), errors: z.array(z.object({ path: z.string(), message: z.string() })) })
      .nullable(),
  })
  .openapi('ChannelRejections', {
    description:
      'Pixel hits, tag batches or events, and tracking-API messages refused as bad input (the sender is answered all the same, or does not read the answer), counted per API process and flushed every few seconds; `last` is the newest refusal',
  });
export type ChannelRejectionTotals = z.infer<typeof ChannelRejectionsSchema>;

export const SourceStatusSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    kind: SourceKindSchema,
    party: PartySchema,
    labels: z.array(z.string()),
    consent: ConsentPolicySchema,
    mapping: CrmMappingSchema.optional(),
    feed: FeedStatusSchema.optional().openapi({ description: "A feed source: its config, cursor, validators and last pull" }),
    createdAt: z.string(),
    workflowId: z.string(),
    workflowStatus: z.string(),
    // A union, not `.nullable()`: the generator documents a named object made nullable as never null.
    progress: z.union([SourceProgressSchema, z.null()]),
    pending: z.object({
      chunks: z.number().int(),
      events: z.number().int(),
      lagSeconds: z.number().nullable().openapi({ description: 'Age of the oldest event not yet routed to the profile partitions.' }),
    }),
    health: z
      .object({
        lastSuccessAt: z.string().nullable().openapi({ description: 'When a drain turn last routed events without failing' }),
        lastFailureAt: z.string().nullable(),
        eventsLastHour: z.number().int().openapi({ description: 'Events routed to profiles in the last 60 minutes' }),
        turnsLastHour: z.number().int(),
        errorRate: z.number().nullable().openapi({ description: 'Share of the last hour’s drain turns that failed (after their retries); null without any' }),
        lagSeconds: z.number().nullable().openapi({ description: 'Age of the oldest event not yet routed (as `pending.lagSeconds`)' }),
      })
      .openapi('SourceHealth'),
    rejections: ChannelRejectionsSchema,
    profiles: z.object({
      eventsApplied: z.number().int().openapi({ description: "This source's events taken by the partition writers (repeats dropped there included)." }),
      duplicatesDropped: z
        .number()
        .int()
        .openapi({ description: 'Events the partition writers dropped as repeats of events already folded into the same profile document: retries of batches the tracking channels had acknowledged (see `CollectResponse.duplicates`).' }),
    }),
  })
  .openapi('SourceStatus');
export type SourceStatus = z.infer<typeof SourceStatusSchema>;

// ---- collection ------------------------------------------------------------------------------

/** Ids of one type an event may carry: two, as an alias joins a person's earlier id to the new one (more would pass the caps per type unchecked). */
export const MAX_IDS_PER_TYPE = 2;

const Scalar = z.union([storableText(FLAT_TEXT_MAX), z.number().finite(), z.boolean(), z.null()]);
/** Flat values only: the store refuses nested arrays, and flat values are what segment rules test. */
const FlatValue = z.union([Scalar, z.array(z.union([storableText(FLAT_TEXT_MAX), z.number().finite(), z.boolean()])).max(FLAT_LIST_MAX)]);
const FieldName = z.string().min(1).max(128);

export const ConsentInputSchema = z
  .object({
    tcf: z.string().min(1).max(4096).optional().openapi({ description: 'IAB TCF v2 TC string' }),
    gpp: z.string().regex(/^D[A-Za-z0-9_~.-]+$/, 'not a GPP string').max(4096).optional().openapi({ description: 'IAB GPP string' }),
    gppSid: GppSidSchema.optional().openapi({
        description:
          "The GPP sections in force for this event, as the consent tool said (its `applicableSections`; OpenRTB's `regs.gpp_sid`): only those of the string are read — a TCF EU section (2) not listed is no TC string, a US section not listed no opt-out. `[-1]` (the GPP CMP API's \"no section applies\"): none is. Left out, empty, or holding 0 (a tool still loading): every section of the string is read. Only with `gpp`.",
      }),
    tcfPending: z
      .literal(true)
      .optional()
      .openapi({
        description:
          'The GDPR applies and the person has not decided yet: no TC string (a consent tool still loading). The event is not profiled (`tcf_pending`), and the profile it reaches stays out of profiling and exports until a TC string (or `tcfNotApplicable`) newer than it arrives. Not with `tcf`.',
      }),
    gppPending: z
      .literal(true)
      .optional()
      .openapi({
        description:
          "A GPP consent tool on the page had not answered (no GPP string): the person may be under the GDPR or have opted out under a US law, and it did not say. The event is not profiled (`gpp_pending`) where no TC string or `tcfNotApplicable` beside it settles the GDPR, and wherever the source honours GPP opt-outs; unlike `tcfPending` it leaves no mark on the profile (a US site's tool never sends the TC string that would end one). Not with `gpp`.",
      }),
    tcfNotApplicable: z
      .literal(true)
      .optional()
      .openapi({
        description:
          "The consent tool said the GDPR does not apply to this person (`gdprApplies: false`; the pixel's `gdpr=0`): a TCF statement of its own, with no TC string, that replaces an earlier `tcfPending` of theirs (never a TC string they gave). Not with `tcf` or `tcfPending`.",
      }),
    gpc: z
      .boolean()
      .optional()
      .openapi({
        description:
          "Global Privacy Control as the person's browser sent it (`Sec-GPC: 1`): true is an opt-out of sale, sharing and targeted advertising (non-profiling as `gpp_opt_out` under `honorGppOptOuts`, withheld from exports); false, that the browser no longer sends it. The tag, the pixel and the Segment routes set true from the request's header; only the tag, which browsers alone call, states false.",
      }),
    purposes: keyedRecord(z.string().regex(/^[a-z0-9_]{1,64}$/), z.boolean()).optional().openapi({ description: 'Explicit purpose flags' }),
  })
  .strict()
  .openapi('Consent');
export type ConsentInput = z.infer<typeof ConsentInputSchema>;

const IdentityValue = z.string().min(1).max(512);
export const IdentitiesInputSchema = z
  .partialRecord(
    z.enum(INPUT_IDENTITY_TYPES),
    z.union([IdentityValue, z.array(IdentityValue).min(1).max(MAX_IDS_PER_TYPE)]).openapi({
      description: `The id, or a list of up to ${MAX_IDS_PER_TYPE} ids of this type the event joins (two customer ids an alias makes one person)`,
    }),
  )
  .refine((ids) => Object.keys(ids).length > 0, 'at least one identity is required');

export const EventInputSchema = z
  .object({
    id: storableText(128).min(1).optional().openapi({ description: 'Idempotency id; a repeated id is a duplicate. An email address in it is stored as `(redacted:<digest>)`, a digest of the whole id.' }),
    type: storableText(128).min(1).openapi({ description: 'The event name. An email address in it is stored as `(redacted)`.' }),
    // Milliseconds since the epoch, up to the last a date can hold.
    timestamp: z.union([z.iso.datetime({ offset: true }), z.number().int().nonnegative().max(8_640_000_000_000_000)]).optional(),
    identities: IdentitiesInputSchema,
    previousId: IdentityValue.optional().openapi({
      description:
        "An id the person had before, of a type the sender does not know — a Segment alias's `previousId` sent from a server: an anonymous id or an earlier user id. It joins the profiles that hold it as a `cookie_id` or a `crm_id` (an email address: as its hash), and is never kept as a type no one holds it as; while neither is known, it is kept as a `cookie_id` (an email address: as its hash; a blocklisted cookie id: as the `crm_id`). The same as one of the event's identities, it is that identity.",
    }),
    traits: keyedRecord(FieldName, FlatValue)
      .optional()
      .openapi({
        description:
          'Traits. `email` and `phone` become the identities of those names (hashed; never kept as traits) unless `identities` holds one of that kind. Email addresses elsewhere, and phone numbers under phone-named traits, are stored as `(redacted)`.',
      }),
    properties: keyedRecord(FieldName, FlatValue)
      .optional()
      .openapi({ description: 'Properties. Email addresses in them, and phone numbers under phone-named properties, are stored as `(redacted)`.' }),
    consent: ConsentInputSchema.optional(),
  })
  .strict()
  .openapi('Event');
export type EventInput = z.infer<typeof EventInputSchema>;

/** The envelope is checked as a whole (1 to `maxEvents` events); each event is then checked on its own. */
export function collectRequestSchema(maxEvents: number) {
  return z
    .object({
      events: z.array(z.unknown().openapi({ description: 'An Event; one that is not is refused in `rejected`' })).min(1).max(maxEvents, `at most ${maxEvents} events in one request`),
      sentAt: z.iso
        .datetime({ offset: true })
        .optional()
        .openapi({ description: "When the request was sent, by the sender's clock: each event's `timestamp` (same clock) is then corrected for the clock's skew — receivedAt − (sentAt − timestamp)" }),
    })
    .strict()
    .openapi('CollectRequest', { example: { events: [{ type: 'page_view', identities: { cookie_id: 'c-123' } }] } });
}

export const CollectResponseSchema = z
  .object({
    accepted: z.number().int().openapi({
      description:
        'Events durably stored before this answer. Repeats of events acknowledged earlier are not known yet: the partition writers drop them when they fold them, and the source counts them (`profiles.duplicatesDropped`).',
    }),
    duplicates: z.number().int().openapi({ description: 'Events of this request (or of requests stored together with it) repeating the id of one before them: never applied to profiles.' }),
    nonProfiling: z.number().int().openapi({ description: "Of the accepted events, those the source's consent policy keeps from profiling: stored and counted, never applied to profiles or segments." }),
    rejected: z.array(z.object({ index: z.number().int(), errors: z.array(z.object({ path: z.string(), message: z.string() })) })),
  })
  .openapi('CollectResponse');
export type CollectResponse = z.infer<typeof CollectResponseSchema>;

// ---- profiles --------------------------------------------------------------------------------

export const LookupQuerySchema = z.object({ type: z.enum(INPUT_IDENTITY_TYPES), value: z.string().min(1).max(512) });

const Iso = z.string().openapi({ format: 'date-time' });

export const ProfileSchema = z
  .object({
    id: z.string().openapi({ description: "The profile's id: the smallest id among the documents merged into it." }),
    profileIds: z.array(z.string()).openapi({ description: 'Every profile document merged into this profile (the id first).' }),
    identities: z.array(
      z.object({ type: z.enum(STORED_IDENTITY_TYPES), value: z.string(), firstSeen: Iso, lastSeen: Iso, sourceId: z.string().openapi({ description: 'The source that first reported it' }) }),
    ),
    traits: z.record(z.string(), z.unknown()),
    traitOrigins: z.record(
      z.string(),
      z.object({ at: Iso, sourceId: z.string(), party: PartySchema, labels: z.array(z.string()).optional().openapi({ description: "The usage labels of the trait's source" }) }),
    ),
    counters: z.record(
      z.string(),
      z.object({
        count: z.number().int(),
        firstSeen: Iso,
        lastSeen: Iso,
        days: z.record(z.string(), z.number().int()).openapi({ description: 'Events per UTC day (YYYYMMDD), back to the day 90 days before lastSeen (the 91 days a 90-day window touches)' }),
      }),
    ),
    consent: z.unknown().nullable(),
    sources: z.array(z.string()),
    limited: z
      .object({
        traits: z.number().int().openapi({ description: 'Trait values not kept: a profile document holds about 1 MB of traits, and a new trait (or a larger value) past that is dropped' }),
        eventTypes: z.number().int().openapi({ description: 'Events not counted: a profile document counts the first 150 event types to come, and events of other types are applied (identities, traits, consent) but not counted' }),
      })
      .openapi({ description: "What the profile's documents kept out to stay within a stored document's size; both 0 for almost every profile" }),
    segments: z.array(z.string()).openapi({ description: 'The segments it is a member of now (ids, sorted)' }),
    mergeHistory: z.array(
      z.object({ profiles: z.array(z.string()), via: z.string().openapi({ description: 'The identity (`type:value`) that joined them' }), sourceId: z.string(), eventId: z.string(), at: Iso }),
    ),
    firstSeen: Iso,
    lastSeen: Iso,
    updatedAt: Iso,
  })
  .openapi('Profile');
export type ProfileView = z.infer<typeof ProfileSchema>;

export const ProfileEventsQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z
    .string()
    .regex(EVENT_CURSOR, 'a cursor from a previous page')
    .optional()
    .openapi({ description: 'The `next` of the previous page: pages stay put while events arrive (a cursor is a place in the history, not a count)' }),
});

/** A retained event as the API shows it (the profile's history, an access export). */
export const ProfileEventSchema = z
  .object({
    id: z.string(),
    type: z.string(),
    timestamp: Iso,
    receivedAt: Iso,
    sourceId: z.string(),
    profileId: z.string().openapi({ description: 'The profile document it was folded into' }),
    identities: z.array(z.object({ type: z.enum(STORED_IDENTITY_TYPES), value: z.string() })),
    traits: z.record(z.string(), z.unknown()).optional(),
    properties: z.record(z.string(), z.unknown()).optional(),
    consent: z.unknown().optional(),
  })
  .openapi('ProfileEvent');

export const ProfileEventsSchema = z
  .object({
    events: z.array(ProfileEventSchema),
    next: z.string().nullable().openapi({ description: 'Cursor of the next (older) page; null on the last' }),
  })
  .openapi('ProfileEvents');

// ---- identity graph --------------------------------------------------------------------------

export const IdentityRefSchema = z
  .object({ type: z.enum(INPUT_IDENTITY_TYPES), value: z.string().min(1).max(512) })
  .strict()
  .openapi('IdentityRef', { description: 'Raw `email`/`phone` values are normalized and hashed as at collection, never stored.' });

export const UnlinkRequestSchema = z
  .object({
    identities: listedOnce(z.array(IdentityRefSchema).min(2).max(10), (identity) => `${identity.type}:${identity.value}`, 'the same identity twice').openapi({
      description: 'Every pair among them stops counting as seen together; the profile is rebuilt if that splits it.',
    }),
  })
  .strict()
  .openapi('UnlinkRequest');

export const UnlinkStateSchema = z.enum(['pending', 'splitting', 'completed', 'failed']);
export type UnlinkState = z.infer<typeof UnlinkStateSchema>;

export const UnlinkViewSchema = z
  .object({
    id: z.string(),
    state: UnlinkStateSchema,
    identities: z.array(z.string()).openapi({ description: 'The identities unlinked, as `type:value` (emails and phones hashed)' }),
    requestedAt: Iso,
    completedAt: Iso.nullable(),
    split: z.boolean().nullable().openapi({ description: 'Whether the profile fell apart (null until known); false when another path still joins them' }),
    profiles: z.array(z.array(z.string())).openapi({ description: 'Per side after the split, its profile documents; the first id is the profile id' }),
    eventsSevered: z.number().int().nullable().openapi({ description: 'Events that showed the identities together and no longer join them' }),
    reason: z.string().nullable(),
    statusUrl: z.string(),
  })
  .openapi('Unlink');

export type UnlinkView = z.infer<typeof UnlinkViewSchema>;

export const RefusalsQuerySchema = z.object({
  profileId: z.string().min(1).max(256).optional().openapi({ description: 'Only refusals of joins to this profile document' }),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export const RefusalsSchema = z
  .object({
    refusals: z.array(
      z.object({
        profileId: z.string().openapi({ description: 'The profile document that holds its cap of the identity type' }),
        identity: z.string().openapi({ description: 'The identity refused (`type:value`)' }),
        type: z.enum(STORED_IDENTITY_TYPES),
        cap: z.number().int(),
        eventId: z.string().openapi({ description: 'The event that showed them together' }),
        sourceId: z.string(),
        at: Iso,
      }),
    ),
  })
  .openapi('Refusals');

// ---- errors ----------------------------------------------------------------------------------

export const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string().optional(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  })
  .openapi('Problem');
export type Problem = z.infer<typeof ProblemSchema>;
