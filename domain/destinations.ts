import { createHash } from 'node:crypto';
import { z } from 'zod';
import { rangesBySize, storedStringBytes } from './bySize';
import { usOptedOut, vendorConsented, type TcfRestriction } from './consent';
import { identityKey, PARTNER_ID, uid2Of, type Identity } from './identity';
import type { ProfileConsent, ProfileDoc } from './profile';
import { listedOnce, nonEmptyChange } from './schemaChecks';
import { UsageLabelSchema } from './schemas';
import { NullableScheduleSchema, SegmentScheduleSchema } from './segments';
import { compareText, nameText } from './text';

// ---- API schemas -------------------------------------------------------------------------------

/** What a partner receives for each member: one of the platform's own id types… */
export const ID_TYPES = ['cookie_id', 'maid', 'crm_id', 'email_sha256', 'phone_sha256', 'phone_sha256_digits', 'email_uid2'] as const;
/** …or a sync partner's own ids, from the cookie-sync match tables (`partner:<partner id>`). */
export const PartnerIdTypeSchema = z.string().regex(new RegExp(`^partner:${PARTNER_ID.source.slice(1)}`), `one of ${ID_TYPES.join(', ')}, or partner:<partner id>`) as unknown as z.ZodType<`partner:${string}`>;
export const IdTypeSchema = z
  .union([z.enum(ID_TYPES), PartnerIdTypeSchema], { error: `one of ${ID_TYPES.join(', ')}, or partner:<partner id>` })
  .openapi({
    description:
      'The ids the partner receives; emails and phones only ever hashed: `email_sha256` is hex SHA-256 of the trimmed, lowercased address, `email_uid2` the base64 hash after UID2\'s normalization (gmail dots and +suffix dropped); `phone_sha256` is hex SHA-256 of the number in E.164 (`+16505551234`, Google\'s rule), `phone_sha256_digits` of its digits with the country code and no `+` (`16505551234`, Meta\'s and TikTok\'s rule; only for phones collected raw, not sent hashed). ' +
      '`partner:<partner id>` sends a sync partner\'s own user ids: the member\'s own `partner_uid` of that partner and those the cookie-sync match table holds for its cookie ids (a member with neither counts as unmatched); the partner must exist, and connectors that take it: `webhook`, `segment_file`, and `dsp_segments` (sent as TDID).',
  });
export type IdType = z.infer<typeof IdTypeSchema>;

/** The sync partner whose ids an id type stands for, or null for the platform's own id types. */
export function partnerOfIdType(idType: IdType): string | null {
  return idType.startsWith('partner:') ? idType.slice('partner:'.length) : null;
}

/** Whether a connector (its id types, and whether it takes sync partners' ids) takes an id type. */
export function takesIdType(connector: { idTypes: readonly IdType[]; partnerIds: boolean }, idType: IdType): boolean {
  return partnerOfIdType(idType) === null ? connector.idTypes.includes(idType) : connector.partnerIds;
}

/** Marks a partner's id a member holds itself (`partner_uid`) among the cookie ids to look up: no cookie id holds a NUL. */
export const HELD_PARTNER_ID = '\u0000';

/**
 * Reads a member's ids of `idType` from its identity keys. A partner's ids come two ways: through
 * the match table from the member's cookie ids (returned as they are), and as the graph holds them
 * (the member's `partner_uid` of that partner, returned after HELD_PARTNER_ID); `partnerIdsOf` resolves both.
 */
export function memberIdReader(idType: IdType): (key: string) => string | null {
  const partner = partnerOfIdType(idType);
  if (partner === null) {
    const prefix = `${idType}:`;
    return (key) => (key.startsWith(prefix) ? key.slice(prefix.length) : null);
  }
  const held = `partner_uid:${partner}:`;
  return (key) => (key.startsWith('cookie_id:') ? key.slice('cookie_id:'.length) : key.startsWith(held) ? HELD_PARTNER_ID + key.slice(held.length) : null);
}

/** A member's partner ids, from what `memberIdReader` read: held ones as they are, cookie ids through `matched`. */
export function partnerIdsOf(ids: readonly string[], matched: ReadonlyMap<string, readonly string[]>): string[] {
  return [...new Set(ids.flatMap((id) => (id.startsWith(HELD_PARTNER_ID) ? [id.slice(HELD_PARTNER_ID.length)] : (matched.get(id) ?? []))))];
}

/** The cookie ids among what `memberIdReader` read for a partner: those to look up in the match table. */
export const cookieIdsAmong = (ids: readonly string[]) => ids.filter((id) => !id.startsWith(HELD_PARTNER_ID));

const PurposeFlag = z.string().regex(/^[a-z0-9_]{1,64}$/, 'a purpose flag: lowercase letters, digits and _ (at most 64)');
/** The flags a destination withholds declined profiles by unless told otherwise; also for destinations made before the setting. */
export const DEFAULT_PURPOSE_FLAGS = ['profiling', 'advertising', 'data_sharing'] as const;

export const DestinationConsentSchema = z
  .object({
    tcfPurposes: z
      .array(z.number().int().min(1).max(24))
      .max(24)
      .default([1, 3, 4])
      .openapi({ description: 'TCF purposes a profile with a TC string must have consented to (default: store/access, build and use a personalised-ads profile)' }),
    tcfVendorId: z.number().int().min(1).max(65535).optional().openapi({ description: "The partner's IAB vendor id: when set, a profile's TC string must also consent to this vendor, and no publisher restriction in it may bar the vendor from one of `tcfPurposes` (\"not allowed\", or \"require legitimate interest\": only vendor consent is read)" }),
    requireTcf: z.boolean().default(false).openapi({ description: 'Withhold profiles that carry no TC string at all (e.g. for EU-only audiences)' }),
    honorGppOptOuts: z
      .boolean()
      .default(true)
      .openapi({ description: "Withhold profiles whose GPP string records a US opt-out of sale, sharing or targeted advertising (US National, a state section, or US Privacy)" }),
    purposeFlags: listedOnce(z.array(PurposeFlag).max(32), (flag) => flag, 'flags are listed once each')
      .default([...DEFAULT_PURPOSE_FLAGS])
      .openapi({
        description:
          "Explicit purpose flags (`consent.purposes.<flag>`, as sources and the tag send them, Segment's consent categories lowercased) a profile must not have declined: one whose consent says false to any is withheld. Default: `profiling` (the sources' default flag, and the tag's), `advertising` and `data_sharing` (Segment's categories); [] to ignore flags.",
      }),
  })
  .strict()
  .openapi('DestinationConsent');
export type DestinationConsent = z.infer<typeof DestinationConsentSchema>;

/** A change of a destination's consent settings: the fields sent replace those stored, the others stay. */
export const DestinationConsentChangeSchema = z
  .object({
    tcfPurposes: DestinationConsentSchema.shape.tcfPurposes.removeDefault().optional(),
    tcfVendorId: z.number().int().min(1).max(65535).nullable().optional().openapi({ description: "The partner's IAB vendor id; null stops checking one" }),
    requireTcf: DestinationConsentSchema.shape.requireTcf.removeDefault().optional(),
    honorGppOptOuts: DestinationConsentSchema.shape.honorGppOptOuts.removeDefault().optional(),
    purposeFlags: DestinationConsentSchema.shape.purposeFlags.removeDefault().optional(),
  })
  .strict()
  .openapi('DestinationConsentChange', { description: 'The consent settings to change (see DestinationConsent); those left out stay as they are' });

/** `stored` with `change` made: fields left out stay, a null vendor id goes. */
export function changedConsent(stored: DestinationConsent, change: z.infer<typeof DestinationConsentChangeSchema>): DestinationConsent {
  const { tcfVendorId, ...fields } = change;
  const { tcfVendorId: storedVendor, ...kept } = stored;
  const vendor = tcfVendorId === undefined ? storedVendor : (tcfVendorId ?? undefined);
  return { ...kept, ...Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)), ...(vendor !== undefined && { tcfVendorId: vendor }) };
}

/** The segments a destination sends, each once: at most `max` (a connector may take fewer, see Connector.maxSegments; `why` says so). */
export function segmentIdList(max: number, why?: string) {
  return listedOnce(z.array(z.string().min(1).max(64)).min(1).max(max, why), (id) => id, 'segments are listed once each');
}
const SegmentIds = segmentIdList(50);

export const CreateDestinationRequestSchema = z
  .object({
    name: nameText(200),
    connector: z.string().min(1).max(64).openapi({ description: 'One of the registered connectors: `webhook`, `dsp_segments`, `people_list`, `segment_file`' }),
    config: z.unknown().openapi({ description: "The connector's configuration, checked against its schema (see the README)" }),
    segments: SegmentIds,
    idType: IdTypeSchema,
    schedule: SegmentScheduleSchema.optional(),
    nearRealTime: z.boolean().optional().openapi({ description: 'Check for membership changes every minute and export them when there are any (takes the place of `schedule`)' }),
    labelsAllowed: z.array(UsageLabelSchema).max(64).optional().openapi({ description: "Source labels whose data may leave for this partner; a profile holding data of a source with any other label is withheld" }),
    consent: DestinationConsentSchema.optional(),
    holdoutShare: z
      .number()
      .min(0)
      .max(0.5)
      .optional()
      .openapi({ description: 'A share (0–0.5) of each segment held out from this partner — the same members every export (a hash of the destination and profile ids) — so a campaign report can measure lift against them' }),
  })
  .strict()
  .openapi('CreateDestinationRequest', {
    example: { name: 'CRM webhook', connector: 'webhook', config: { url: 'https://crm.example.com/dmp', secret: 'a-long-shared-secret' }, segments: ['seg_0123456789abcdef'], idType: 'crm_id', schedule: { every: 'PT1H' } },
  });
export type CreateDestinationRequest = z.infer<typeof CreateDestinationRequestSchema>;

export const PatchDestinationRequestSchema = nonEmptyChange(
  z
    .object({
      name: nameText(200).optional(),
      config: z
        .record(z.string(), z.unknown())
        .optional()
        .openapi({ description: "Replaces the connector's configuration (its schema in CreateDestinationRequest); secret fields left out (or sent back as `\"(set)\"`) keep their stored value, and so does a `url` sent back as shown (its query values reading `\"(set)\"`), and null drops one the connector can do without (e.g. `segment_file`'s `token`). One that does not fit the destination's connector is a 409." }),
      segments: SegmentIds.optional(),
      schedule: NullableScheduleSchema.optional(),
      nearRealTime: z.boolean().optional(),
      labelsAllowed: z.array(UsageLabelSchema).max(64).optional(),
      consent: DestinationConsentChangeSchema.optional(),
      holdoutShare: z.number().min(0).max(0.5).optional(),
    })
    .strict(),
).openapi('PatchDestinationRequest');

const Iso = z.string().openapi({ format: 'date-time' });
export const ExportStateSchema = z.enum(['running', 'completed', 'failed']);
export type ExportState = z.infer<typeof ExportStateSchema>;

export const DestinationViewSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    connector: z.string(),
    config: z.record(z.string(), z.unknown()).openapi({ description: 'Secret fields read `"(set)"`: they are never echoed; nor are the values of `url`\'s query (a signed URL\'s signature is a credential), which read `"(set)"` too' }),
    segments: z.array(z.string()),
    idType: IdTypeSchema,
    schedule: NullableScheduleSchema,
    nearRealTime: z.boolean(),
    labelsAllowed: z.array(z.string()),
    consent: DestinationConsentSchema,
    holdoutShare: z.number().openapi({ description: 'The share of each segment held out from this partner (0: none)' }),
    state: z.enum(['active', 'paused']),
    held: z
      .record(
        z.string(),
        z.object({
          ids: z.number().int(),
          uncertain: z.number().int(),
          sentAllAt: z.string().datetime().nullable().openapi({ description: "When every id was last sent (a first or full export, a resend, or a renewal of a partner whose memberships expire: a DSP's ids are sent again once half their TTL has passed since). Ids the partner did not confirm then are uncertain: every export after sends them until it does" }),
        }),
      )
      .openapi({ description: 'Per segment, the ids the partner confirmed holding, and those whose last delivery is unconfirmed' }),
    lastExport: z
      .object({
        exportId: z.string(),
        state: ExportStateSchema,
        startedAt: Iso,
        finishedAt: Iso.nullable(),
        failingSince: Iso.nullable().openapi({ description: 'When the first of the exports failing in a row up to this one ended (null once one completes). With nothing else changed, a near-real-time destination tries again after as long as they have been failing: at least a minute, at most an hour' }),
      })
      .nullable(),
    scheduleId: z.string().nullable().openapi({ description: 'The Temporal Schedule that starts its exports' }),
    partnerWaitUntil: Iso.nullable().openapi({ description: "Until when the partner asked (a Retry-After longer than 5 minutes) not to be sent to: scheduled and near-real-time exports skip until then, and an export the partner takes whole clears it" }),
    createdAt: Iso,
    updatedAt: Iso,
  })
  .openapi('Destination');
export type DestinationView = z.infer<typeof DestinationViewSchema>;

export const ExportRequestSchema = z.object({ full: z.boolean().optional() }).strict().openapi('ExportRequest');

const Withheld = z
  .object({
    consent: z.number().int(),
    labels: z.record(z.string(), z.number().int()).openapi({ description: 'Members withheld per source label not allowed' }),
    holdout: z.number().int().openapi({ description: "Members in the destination's holdout (`holdoutShare`)" }),
    optOut: z.number().int().openapi({ description: 'Members who opted out ("do not sell or share", POST /v1/privacy/requests) since their segments were evaluated' }),
  })
  .openapi({ description: 'Members kept from the partner by export controls, with the reason' });

export const SegmentExportSchema = z.object({
  id: z.string(),
  name: z.string(),
  members: z.number().int(),
  matched: z.number().int().openapi({ description: 'Members sent with at least one id of the idType' }),
  unmatched: z.number().int().openapi({ description: 'Members allowed to leave but holding no id of the idType' }),
  matchRate: z.number().nullable(),
  withheld: Withheld,
  adds: z.number().int(),
  removes: z.number().int(),
  ids: z.number().int().openapi({ description: 'Ids the partner holds for the segment after this export' }),
  refused: z.string().optional().openapi({ description: 'Why nothing was added, e.g. fewer matched ids than the partner serves' }),
});

export const ExportViewSchema = z
  .object({
    exportId: z.string(),
    destinationId: z.string(),
    state: ExportStateSchema,
    full: z.boolean(),
    trigger: z.enum(['api', 'schedule', 'near_real_time', 'privacy']).openapi({ description: '`privacy`: sent for a privacy request, to remove its subject' }),
    adds: z.number().int(),
    removes: z.number().int(),
    matched: z.number().int(),
    unmatched: z.number().int(),
    matchRate: z.number().nullable().openapi({ description: 'matched / (matched + unmatched), over all segments' }),
    batches: z.number().int(),
    batchesConfirmed: z.number().int(),
    rejected: z.number().int().openapi({ description: 'Ids the partner refused inside batches it accepted' }),
    withheld: Withheld,
    segments: z.array(SegmentExportSchema),
    startedAt: Iso,
    finishedAt: Iso.nullable(),
    error: z.string().nullable(),
  })
  .openapi('Export');
export type ExportView = z.infer<typeof ExportViewSchema>;
export type SegmentExport = z.infer<typeof SegmentExportSchema>;

export const ExportListQuerySchema = z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) });

// ---- what a member carries out -----------------------------------------------------------------

/**
 * What an export needs of a member profile, kept with its segment snapshot: its identity keys, its
 * TCF consent (null when it never sent a TC string), whether its GPP string records a US opt-out of
 * sale, sharing or targeted advertising (absent: none), and the sources its data came from.
 */
export interface ExportFacts {
  ids: string[];
  /** Its TCF consent; `restrictions`, the publisher's that take consent away from vendors (absent: none). */
  tcf: { purposes: number[]; vendors: number[]; restrictions?: TcfRestriction[] } | null;
  usOptOut?: true;
  /** The explicit purpose flags its consent says false to, sorted (absent: none). */
  declined?: string[];
  /** The GDPR applies and the person has not decided yet (no TC string): nothing leaves. */
  tcfPending?: true;
  sources: string[];
}

type ConsentFacts = Pick<ExportFacts, 'tcf' | 'usOptOut' | 'declined' | 'tcfPending'>;

/** Reads a packed consent: `{tcf, usOptOut, declined, tcfPending}`, or the bare `tcf` that runs made before opt-outs were kept. */
function consentFacts(json: string): ConsentFacts {
  const value = JSON.parse(json);
  return value !== null && 'tcf' in value ? value : { tcf: value };
}

export function exportFacts(subject: { identities: Identity[]; consent: ProfileConsent | null; sources: string[] }): ExportFacts {
  const tcf = subject.consent?.tcf;
  const declined = Object.entries(subject.consent?.purposes ?? {})
    .filter(([, granted]) => granted === false)
    .map(([flag]) => flag)
    .sort();
  return {
    ids: subject.identities.flatMap(exportKeys),
    tcf: tcf ? { purposes: tcf.purposeConsents, vendors: tcf.vendorConsents, ...(tcf.restrictions && { restrictions: tcf.restrictions }) } : null,
    ...(usOptedOut(subject.consent) && { usOptOut: true as const }),
    ...(declined.length > 0 && { declined }),
    ...(subject.consent?.tcfPending && { tcfPending: true as const }),
    sources: subject.sources,
  };
}

/** A member's identity as export keys: UID2's hashed email and the digits-only phone hash travel as id types of their own, beside ours. */
function exportKeys(identity: Identity): string[] {
  if (identity.type === 'email_sha256') return [identityKey(identity), `email_uid2:${uid2Of(identity)}`];
  if (identity.type === 'phone_sha256' && identity.digits) return [identityKey(identity), `phone_sha256_digits:${identity.digits}`];
  return [identityKey(identity)];
}

/** Export facts as a batch run keeps them per member until it writes its chunks: three strings. */
export interface FlatFacts {
  /** Identity keys joined by newlines (keys never hold one: values are validated or hashed). */
  ids: string;
  /** JSON of the consent (`tcf`, `usOptOut`), and of `sources`: few distinct values, stored once per chunk. */
  consent: string;
  sources: string;
}

export function flattenFacts(facts: ExportFacts): FlatFacts {
  const consent: ConsentFacts = { tcf: facts.tcf, ...(facts.usOptOut && { usOptOut: true }), ...(facts.declined && { declined: facts.declined }), ...(facts.tcfPending && { tcfPending: true }) };
  return { ids: facts.ids.join('\n'), consent: JSON.stringify(consent), sources: JSON.stringify(facts.sources) };
}

/**
 * A snapshot chunk's export facts, packed: each distinct consent and source list once, and per id of
 * the chunk an index into each (-1: no facts, the profile is in no exported segment) and its
 * identity keys. Most of an export's time is reading these, so they are kept small.
 */
export interface PackedFacts {
  consents: string[];
  sources: string[];
  consentOf: Int32Array;
  sourcesOf: Int32Array;
  ids: string[];
}

export function packFacts(facts: ReadonlyArray<FlatFacts | null>): PackedFacts {
  const consents = new Map<string, number>();
  const sources = new Map<string, number>();
  const indexIn = (table: Map<string, number>, value: string) => {
    let index = table.get(value);
    if (index === undefined) table.set(value, (index = table.size));
    return index;
  };
  const packed: PackedFacts = { consents: [], sources: [], consentOf: new Int32Array(facts.length), sourcesOf: new Int32Array(facts.length), ids: [] };
  facts.forEach((fact, i) => {
    packed.consentOf[i] = fact ? indexIn(consents, fact.consent) : -1;
    packed.sourcesOf[i] = fact ? indexIn(sources, fact.sources) : -1;
    packed.ids.push(fact?.ids ?? '');
  });
  packed.consents = [...consents.keys()];
  packed.sources = [...sources.keys()];
  return packed;
}

/** Decides members of a packed chunk: consent and labels once per distinct pair, then each member's ids. */
export class PackedDecisions {
  private readonly cache = new Map<number, Decision>();
  private readonly idOf: (key: string) => string | null;

  constructor(
    private readonly packed: PackedFacts,
    private readonly policy: ExportPolicy,
  ) {
    this.idOf = memberIdReader(policy.idType);
  }

  /** The decision for the chunk's `i`th id, null when it carries no facts. */
  decide(i: number): Decision | null {
    const c = this.packed.consentOf[i];
    if (c < 0) return null;
    const key = c * this.packed.sources.length + this.packed.sourcesOf[i];
    let base = this.cache.get(key);
    if (!base) {
      const facts = { ids: [], ...consentFacts(this.packed.consents[c]), sources: JSON.parse(this.packed.sources[this.packed.sourcesOf[i]]) };
      this.cache.set(key, (base = decide(facts, this.policy)));
    }
    if (base.withheld !== null) return base;
    const keys = this.packed.ids[i];
    // Most members hold one key: read without splitting (a 1M-member plan spends its CPU here).
    if (!keys.includes('\n')) {
      const id = this.idOf(keys);
      return { withheld: null, ids: id === null ? [] : [id] };
    }
    return { withheld: null, ids: keys.split('\n').flatMap((key) => this.idOf(key) ?? []) };
  }
}

type FactFields = Pick<ProfileDoc, 'identities' | 'consent' | 'sources'>;

/** How many hashed forms of its own a document's identities hold: a UID2 email hash, a phone's digits (learned once its raw value came). */
function platformForms(identities: FactFields['identities']): number {
  let forms = 0;
  for (const identity of identities) forms += (identity.uid2 ? 1 : 0) + (identity.digits ? 1 : 0);
  return forms;
}

/**
 * Whether a fold changed what an export reads of a document it already had: an identity, a platform's
 * hashed form of one, or a source added, or a new consent signal. Exports re-read such members
 * instead of trusting the snapshot.
 */
export function factsChanged(before: FactFields | null, after: FactFields): boolean {
  if (!before) return false;
  return (
    before.identities.length !== after.identities.length ||
    platformForms(before.identities) !== platformForms(after.identities) ||
    before.sources.length !== after.sources.length ||
    before.consent?.tcf?.tcString !== after.consent?.tcf?.tcString ||
    before.consent?.tcfPending !== after.consent?.tcfPending ||
    before.consent?.gpp?.gppString !== after.consent?.gpp?.gppString ||
    usOptedOut(before.consent) !== usOptedOut(after.consent) ||
    sortedJson(before.consent?.purposes) !== sortedJson(after.consent?.purposes)
  );
}

function sortedJson(flags: Record<string, boolean> | undefined): string {
  return JSON.stringify(Object.entries(flags ?? {}).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * Whether a member is in a destination's holdout: the first 32 bits of SHA-256 of the destination
 * and profile ids, as a fraction, under the share. The same members every export (a changed share
 * moves only the members between the old and new share), and independent between destinations.
 */
export function isHeldOut(destinationId: string, profileId: string, share: number): boolean {
  if (share <= 0) return false;
  return createHash('sha256').update(`${destinationId}\u0000${profileId}`).digest().readUInt32BE(0) / 2 ** 32 < share;
}

export interface ExportPolicy {
  idType: IdType;
  consent: DestinationConsent;
  labelsAllowed: readonly string[];
  /** Labels of each source (a missing source has none). */
  labelsOf: (sourceId: string) => readonly string[];
}

export type Decision = { withheld: 'consent' } | { withheld: 'label'; label: string } | { withheld: null; ids: string[] };

/** A destination's policy, given each source's labels. */
export function exportPolicyOf(destination: Pick<ExportPolicy, 'idType' | 'consent' | 'labelsAllowed'>, labels: ReadonlyMap<string, readonly string[]>): ExportPolicy {
  return { idType: destination.idType, consent: destination.consent, labelsAllowed: destination.labelsAllowed, labelsOf: (id) => labels.get(id) ?? [] };
}

/**
 * Whether a member may leave for this partner and with which ids. Consent comes first (a profile
 * whose TC string lacks a required purpose, or the vendor's consent for them — which a publisher
 * restriction can take away — is withheld; no TC string passes unless the destination requires one; a US opt-out of sale, sharing or targeted advertising is withheld unless
 * the destination says otherwise; so are a declined purpose flag the destination names, and a
 * person who has not decided yet), then export controls (every label of every source that
 * contributed must be allowed: the data that qualified a profile is not traceable to one source, so
 * all count).
 * For a `partner:` id type the ids are as `memberIdReader` reads them: the member's cookie ids,
 * which the export maps through the match table, and the partner's ids it holds itself.
 */
export function decide(facts: ExportFacts, policy: ExportPolicy): Decision {
  if (facts.usOptOut && policy.consent.honorGppOptOuts !== false) return { withheld: 'consent' };
  if (facts.declined?.some((flag) => policy.consent.purposeFlags.includes(flag))) return { withheld: 'consent' };
  if (facts.tcfPending) return { withheld: 'consent' };
  if (facts.tcf === null) {
    if (policy.consent.requireTcf) return { withheld: 'consent' };
  } else {
    const tcf = facts.tcf;
    if (!policy.consent.tcfPurposes.every((purpose) => tcf.purposes.includes(purpose))) return { withheld: 'consent' };
    if (policy.consent.tcfVendorId !== undefined && !vendorConsented(tcf, policy.consent.tcfVendorId, policy.consent.tcfPurposes)) return { withheld: 'consent' };
  }
  for (const source of facts.sources) {
    const label = policy.labelsOf(source).find((l) => !policy.labelsAllowed.includes(l));
    if (label !== undefined) return { withheld: 'label', label };
  }
  const idOf = memberIdReader(policy.idType);
  return { withheld: null, ids: facts.ids.flatMap((key) => idOf(key) ?? []) };
}

// ---- deltas and partner state ------------------------------------------------------------------

/**
 * What a partner holds for one segment, as far as confirmations tell: `held` ids it confirmed, and
 * `uncertain` ids whose last add or remove was sent without a confirmation (it may hold them or
 * not). Both sorted, disjoint.
 */
export interface PartnerState {
  held: string[];
  uncertain: string[];
}

/**
 * The changes that bring a partner from `state` to `target` (sorted, unique). Adds: targeted ids it
 * does not surely hold; removes: ids it may hold that are not targeted. A full export adds every
 * targeted id again.
 */
export function delta(target: readonly string[], state: PartnerState, full: boolean): { adds: string[]; removes: string[] } {
  const adds: string[] = [];
  const removes: string[] = [];
  let t = 0;
  let h = 0;
  let u = 0;
  while (t < target.length || h < state.held.length || u < state.uncertain.length) {
    const id = minOf(target[t], state.held[h], state.uncertain[u]);
    const inTarget = target[t] === id;
    const held = state.held[h] === id;
    const uncertain = state.uncertain[u] === id;
    if (inTarget && (full || !held)) adds.push(id);
    if (!inTarget && (held || uncertain)) removes.push(id);
    if (inTarget) t++;
    if (held) h++;
    if (uncertain) u++;
  }
  return { adds, removes };
}

function minOf(...ids: Array<string | undefined>): string {
  let min: string | undefined;
  for (const id of ids) if (id !== undefined && (min === undefined || id < min)) min = id;
  return min as string;
}

export interface BatchOutcome {
  adds: readonly string[];
  removes: readonly string[];
  /** The partner confirmed it (a 2xx); otherwise it may or may not have applied it. */
  confirmed: boolean;
  /** Of a confirmed batch, the ids the partner refused inside it: not applied. */
  refused?: ReadonlySet<string>;
}

/**
 * The partner's state after an export's batches: confirmed adds are held, confirmed removes gone,
 * and every id of an unconfirmed batch, or refused inside a confirmed one, uncertain — the next
 * export resends whichever way the target then says. Ids no batch touched keep their state.
 */
export function nextState(state: PartnerState, batches: readonly BatchOutcome[]): PartnerState {
  // One pass over sorted lists: a 1M-id state settles in a fraction of what maps and a sort took.
  const adds = touchedBy(batches, (batch) => batch.adds);
  const removes = touchedBy(batches, (batch) => batch.removes);
  const held: string[] = [];
  const uncertain: string[] = [];
  let a = 0;
  let r = 0;
  let h = 0;
  let u = 0;
  while (a < adds.ids.length || r < removes.ids.length || h < state.held.length || u < state.uncertain.length) {
    const id = minOf(adds.ids[a], removes.ids[r], state.held[h], state.uncertain[u]);
    // An id two batches touched is settled by the later one; within one batch its remove is applied last.
    let settled: 'held' | 'gone' | 'uncertain' | null = null;
    let by = -1;
    const applied = (batch: BatchOutcome) => batch.confirmed && !batch.refused?.has(id);
    if (adds.ids[a] === id) {
      by = adds.batch[a++];
      settled = applied(batches[by]) ? 'held' : 'uncertain';
    }
    if (removes.ids[r] === id) {
      if (removes.batch[r] >= by) settled = applied(batches[removes.batch[r]]) ? 'gone' : 'uncertain';
      r++;
    }
    const wasHeld = state.held[h] === id;
    if (wasHeld) h++;
    const wasUncertain = state.uncertain[u] === id;
    if (wasUncertain) u++;
    const now = settled ?? (wasUncertain ? 'uncertain' : 'held');
    if (now === 'held') held.push(id);
    else if (now === 'uncertain') uncertain.push(id);
  }
  return { held, uncertain };
}

/** The ids one kind of change (adds or removes) touched, in id order, each with the index of the last batch that did. */
function touchedBy(batches: readonly BatchOutcome[], pick: (batch: BatchOutcome) => readonly string[]): { ids: string[]; batch: number[] } {
  // A plan cuts sorted lists into consecutive batches: taken by their first ids, they follow on in order.
  const runs = batches
    .map((batch, index) => ({ ids: pick(batch), index }))
    .filter((run) => run.ids.length > 0)
    .sort((x, y) => compareText(x.ids[0], y.ids[0]) || x.index - y.index);
  const ids: string[] = [];
  const batch: number[] = [];
  for (const run of runs) {
    for (const id of run.ids) {
      ids.push(id);
      batch.push(run.index);
    }
  }
  if (ids.every((id, i) => i === 0 || ids[i - 1] < id)) return { ids, batch };
  // Batches cut otherwise (unsorted, overlapping): sorted one id at a time, the last batch's word kept.
  const sorted: { ids: string[]; batch: number[] } = { ids: [], batch: [] };
  for (const i of ids.map((_, k) => k).sort((x, y) => compareText(ids[x], ids[y]) || batch[x] - batch[y])) {
    if (sorted.ids.at(-1) === ids[i]) sorted.batch[sorted.batch.length - 1] = batch[i];
    else {
      sorted.ids.push(ids[i]);
      sorted.batch.push(batch[i]);
    }
  }
  return sorted;
}

/**
 * The most a batch's ids take (UTF-8, as stored): ids are up to 512 characters, so a batch of a
 * connector's largest size could otherwise pass what a stored document or a partner's request holds.
 */
export const BATCH_ID_BYTES = 4 * 1024 * 1024;

/** Characters JSON writes escaped: a quote or backslash takes two bytes, a control character or a lone surrogate six. */
const JSON_ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

/** An id's bytes in a batch: as stored, or as a JSON request carries it when that is more. */
function batchIdBytes(id: string): number {
  const stored = storedStringBytes(id);
  return JSON_ESCAPED.test(id) ? Math.max(stored, Buffer.byteLength(JSON.stringify(id)) + 1) : stored;
}

/**
 * Cuts a segment's changes into batches of at most `size` ids and BATCH_ID_BYTES of them: removes
 * first (who left or withdrew consent goes before anyone is added), then adds.
 */
export function toBatches(adds: readonly string[], removes: readonly string[], size: number, bytes = BATCH_ID_BYTES): Array<{ adds: string[]; removes: string[] }> {
  const cut = (ids: readonly string[]) => (ids.length === 0 ? [] : rangesBySize(ids, batchIdBytes, bytes, size).map(([from, to]) => ids.slice(from, to)));
  return [...cut(removes).map((ids) => ({ adds: [], removes: ids })), ...cut(adds).map((ids) => ({ adds: ids, removes: [] }))];
}

/** The shortest and longest waits before a near-real-time destination tries a failed export again with nothing else changed. */
export const FAILED_RETRY_MIN_MS = 60_000;
export const FAILED_RETRY_MAX_MS = 3_600_000;

/**
 * When a near-real-time destination whose last export failed, with nothing else changed, tries again:
 * after as long as its exports have been failing in a row (at least a minute, at most an hour), so a
 * partner that keeps refusing is asked at doubling intervals, not every minute.
 */
export function failedExportRetryAt(last: { startedAt: Date; finishedAt: Date | null; failingSince?: Date }): Date {
  const finished = (last.finishedAt ?? last.startedAt).getTime();
  const streak = finished - (last.failingSince?.getTime() ?? finished);
  return new Date(finished + Math.min(Math.max(streak, FAILED_RETRY_MIN_MS), FAILED_RETRY_MAX_MS));
}

/** Deterministic export ids: one per destination and window (the second it was asked for, or the scheduled time). */
export function exportIdFor(destinationId: string, window: Date): string {
  return `${destinationId}-${window.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}`;
}

