import { createHash } from 'node:crypto';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { zodIssuesToFieldErrors, type FieldError } from './collect';
import { ConsentError, decodeConsent, parseGppSid, storageConsented, usOptedOut, type StoredConsent } from './consent';
import { escapeRegex, originPattern } from './outboundUrls';
import type { ConsentInput } from './schemas';
import { nonEmptyChange } from './schemaChecks';
import { nameText, storableText } from './text';
import { PARTNER_ID, PARTNER_USER_ID } from './identity';

extendZodWithOpenApi(z);

// ---- partners ----------------------------------------------------------------------------------

export const PartnerIdSchema = z
  .string()
  .regex(PARTNER_ID, 'a slug: lowercase letters, digits, `_` or `-`, at most 32, starting with a letter or digit')
  .openapi({ example: 'ttd' });

/** Where our cookie id goes in a partner's match URL. */
export const DMP_UID_MACRO = '${DMP_UID}';

/**
 * Consent macros a partner's match URL may carry, each replaced by the query parameter of the sync
 * request of the same meaning: whoever passes a user on passes the consent signal with it.
 */
export const CONSENT_MACROS = {
  '${GDPR}': 'gdpr',
  '${GDPR_CONSENT}': 'gdpr_consent',
  '${GPP}': 'gpp',
  '${GPP_SID}': 'gpp_sid',
  '${US_PRIVACY}': 'us_privacy',
} as const;

const MACRO = /\$\{[^}]*\}/g;
const KNOWN_MACROS = new Set<string>([DMP_UID_MACRO, ...Object.keys(CONSENT_MACROS)]);

/**
 * The match URLs a partner may have, as one pattern the document states and the API checks: an
 * origin `originPattern` takes, then a path or query with `${DMP_UID}` and no `$` but the known
 * macros' (a `$` before anything but `{` or `$` is text). It is `redirectUrlProblem`'s rules, a
 * little stricter where they would need a URL parser to state.
 */
export function redirectUrlPattern(allowlist: ReadonlySet<string>): RegExp {
  const text = `(?:[^$\\u0000]|\\$[^{$\\u0000]|${[...KNOWN_MACROS].map(escapeRegex).join('|')})`;
  return new RegExp(`^${originPattern(allowlist)}[/?#\\\\]${text}*${escapeRegex(DMP_UID_MACRO)}${text}*$`);
}

function redirectUrlSchema(allowlist: ReadonlySet<string>) {
  return z
    .string()
    // Too long ends the checks: the pattern's alternatives would backtrack over a long text.
    .max(2048, { abort: true })
    .regex(redirectUrlPattern(allowlist), {
      error: (issue) => redirectUrlProblem(String(issue.input), allowlist) ?? 'an https URL (http for hosts in DMP_DESTINATION_ALLOWLIST) to a host name or IPv4 address, with ${DMP_UID} in its path or query',
    })
    .openapi({
      description: `The partner's match URL, where the browser is sent after a sync. \`${DMP_UID_MACRO}\` (required) becomes our cookie id, URL-encoded; \`\${GDPR}\`, \`\${GDPR_CONSENT}\`, \`\${GPP}\`, \`\${GPP_SID}\` and \`\${US_PRIVACY}\` become the sync request's consent parameters. https only (http for hosts in DMP_DESTINATION_ALLOWLIST); no credentials; no other \`\${…}\`.`,
      example: 'https://sync.partner.example/match?dmp_uid=${DMP_UID}&gdpr=${GDPR}&gdpr_consent=${GDPR_CONSENT}',
    });
}

const PartnerName = nameText(200);
const SourceRef = storableText(64)
  .min(1)
  .openapi({ description: 'A source whose log gets a `cookie_sync` event per recorded sync (identities `cookie_id` and `partner_uid` `<partner>:<puid>`, property `partner`), so the sync joins the cookie\'s profile in the identity graph; it must exist (404 naming `sourceId`)' });

/** The partner requests; match URLs may use plain http to the hosts in `allowlist`. */
export function partnerRequestSchemas(allowlist: ReadonlySet<string>) {
  const redirectUrl = redirectUrlSchema(allowlist);
  return {
    create: z
      .object({ id: PartnerIdSchema, name: PartnerName, redirectUrl, sourceId: SourceRef.optional() })
      .strict()
      .openapi('CreatePartnerRequest', {
        example: { id: 'ttd', name: 'The Trade Desk', redirectUrl: 'https://match.partner.example/track?dmp_uid=${DMP_UID}&gdpr=${GDPR}&gdpr_consent=${GDPR_CONSENT}' },
      }),
    patch: nonEmptyChange(z.object({ name: PartnerName.optional(), redirectUrl: redirectUrl.optional(), sourceId: SourceRef.nullable().optional() }).strict()).openapi('PatchPartnerRequest'),
  };
}
export type CreatePartnerRequest = z.infer<ReturnType<typeof partnerRequestSchemas>['create']>;

const Iso = z.string().openapi({ format: 'date-time' });

export const PartnerViewSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    redirectUrl: z.string(),
    sourceId: z.string().nullable(),
    syncPath: z.string().openapi({ description: 'What the partner calls on our host: its own user id in `puid`, and its consent macros' }),
    createdAt: Iso,
    updatedAt: Iso,
  })
  .openapi('Partner');
export type PartnerView = z.infer<typeof PartnerViewSchema>;

export function syncPathOf(partnerId: string): string {
  return `/v1/sync/${partnerId}?puid=<partner user id>&gdpr=\${GDPR}&gdpr_consent=\${GDPR_CONSENT}&gpp=\${GPP}&gpp_sid=\${GPP_SID}&us_privacy=\${US_PRIVACY}`;
}

/**
 * Why a match URL template may not be used, or null when it may. The browser, not our server,
 * follows it, so what matters is that our id never travels unencrypted (https, or http to a host
 * the operator allowlisted), that it carries our id where the partner reads it (the macro, and
 * never in the host), that no other macro is a typo, and that no credentials ride in it.
 */
export function redirectUrlProblem(template: string, allowlist: ReadonlySet<string>): string | null {
  if (!template.includes(DMP_UID_MACRO)) return `must contain ${DMP_UID_MACRO}, where our cookie id goes`;
  const unknown = (template.match(MACRO) ?? []).find((macro) => !KNOWN_MACROS.has(macro));
  if (unknown) return `unknown macro ${unknown} (known: ${[...KNOWN_MACROS].join(', ')})`;
  const marker = 'dmpmacro0';
  let url: URL;
  try {
    url = new URL(template.replace(MACRO, marker));
  } catch {
    return 'not a URL';
  }
  if (url.host.includes(marker) || url.protocol.includes(marker)) return 'macros belong in the path or query, not the host';
  if (url.username || url.password) return 'no credentials in the URL';
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (url.protocol === 'https:') return null;
  if (url.protocol === 'http:') return allowlist.has(host) ? null : 'https only (plain http is for hosts in DMP_DESTINATION_ALLOWLIST): our id must not travel unencrypted';
  return 'only https URLs';
}

/** The partner's match URL for one sync: our id (empty when we may not share it) and the consent parameters, each URL-encoded. */
export function expandRedirect(template: string, cookieId: string | null, signals: Partial<Record<(typeof CONSENT_MACROS)[keyof typeof CONSENT_MACROS], string>>): string {
  return template.replace(MACRO, (macro) => {
    if (macro === DMP_UID_MACRO) return encodeURIComponent(cookieId ?? '');
    return encodeURIComponent(signals[CONSENT_MACROS[macro as keyof typeof CONSENT_MACROS]] ?? '');
  });
}

// ---- the sync request --------------------------------------------------------------------------

/**
 * Query parameters that name a place to go. The target of a sync only ever comes from the
 * partner's config; a request naming one is refused rather than ignored, so a partner that
 * integrated wrongly finds out at once instead of silently losing its redirect.
 */
export const REDIRECT_PARAMS = ['redirect', 'redirect_uri', 'redirect_url', 'redir', 'url', 'return', 'return_url', 'returnUrl', 'next', 'continue', 'dest', 'destination', 'target', 'goto'] as const;

/** `${GDPR}`, `[GDPR]`, `%%GDPR%%`: what a partner sends when it did not expand a macro; counted as absent. */
const UNEXPANDED_MACRO = /^(\$\{.*\}|\[.*\]|%%.*%%)$/;

/** A parameter sent empty, or as a macro the partner left unexpanded, counts as absent. */
const Absent = z.union([z.literal(''), z.string().regex(UNEXPANDED_MACRO)]).transform(() => undefined);
function signal<T extends z.ZodType<string>>(schema: T, description: string) {
  return z.union([Absent, schema]).optional().openapi({ description: `${description}; empty or an unexpanded macro counts as absent` });
}

export const SyncQuerySchema = z.object({
  puid: z
    .string()
    .regex(PARTNER_USER_ID, 'printable ASCII without spaces, at most 256, not an unexpanded macro')
    .openapi({ description: "The partner's own user id (required)" }),
  gdpr: signal(z.enum(['0', '1']), '1 when the GDPR applies: the sync then needs a TC string consenting to purpose 1 (storage and access on a device); 0 when not: its `cookie_sync` event then says so (`tcfNotApplicable`), a consent signal a `require` source profiles'),
  gdpr_consent: signal(
    z.string().regex(/^[A-Za-z0-9_.+/=-]{1,4096}$/, 'a TC string: base64 characters and `.`, at most 4096'),
    'TCF v2 TC string; one that cannot be read grants nothing: the sync is then answered as without consent',
  ),
  gpp: signal(
    z.string().regex(/^D[A-Za-z0-9_~.-]{1,4095}$/, 'a GPP string, at most 4096 characters'),
    "GPP string (its US sections' opt-outs and TCF EU section are honoured); one that cannot be read grants nothing: the sync is then answered as without consent",
  ),
  gpp_sid: signal(
    z.string().refine((text) => parseGppSid(text) !== null, 'comma-separated section ids, each -1 to 255'),
    'GPP section ids in force (the consent tool\'s `applicableSections`): only those sections of `gpp` are read (see `gppSid` in Consent); passed on to the partner',
  ),
  us_privacy: signal(
    z.string().regex(/^1[YNyn-]{3}$/, 'a US Privacy string such as 1YNN'),
    'IAB US Privacy string; an opt-out of sale (third character Y) stops the sync like a missing consent',
  ),
});

export type SyncSignals = Omit<z.infer<typeof SyncQuerySchema>, 'puid'>;

/**
 * What a sync may do. `refused`: where the GDPR applies without consent to storage (TCF purpose 1),
 * or the person opted out of sale, sharing or targeted advertising (GPP US sections, US Privacy,
 * the browser's Global Privacy Control):
 * then our cookie is neither read nor set, nothing is recorded, and the partner still gets its
 * redirect, without our id — its sync chain completes and it sees the same consent signal.
 */
export type SyncDecision = { puid: string; signals: SyncSignals; refused: null | 'tcf_storage' | 'us_opt_out' | 'unreadable_consent' };

/** A sync's consent signals as collection takes them (its section ids only beside a GPP string: a macro left without one says nothing). */
export function syncConsentInput(signals: SyncSignals): ConsentInput {
  const { gdpr_consent: tcf, gpp, gpp_sid: sid } = signals;
  const gppSid = gpp !== undefined && sid !== undefined ? parseGppSid(sid) : null;
  return { ...(tcf !== undefined && { tcf }), ...(gpp !== undefined && { gpp }), ...(gppSid && { gppSid }) };
}

/** Reads a sync request's query (and whether the browser sent Global Privacy Control, `Sec-GPC: 1`); errors name `query.<parameter>`. */
export function readSyncQuery(query: Record<string, unknown>, browser: { gpc: boolean } = { gpc: false }, vendorId?: number): { ok: true; sync: SyncDecision } | { ok: false; errors: FieldError[] } {
  const errors: FieldError[] = [];
  for (const param of REDIRECT_PARAMS) {
    if (query[param] !== undefined) errors.push({ path: `query.${param}`, message: "a sync redirects only to the partner's configured match URL; the request cannot choose where" });
  }
  const parsed = SyncQuerySchema.safeParse(query);
  if (!parsed.success) errors.push(...zodIssuesToFieldErrors(parsed.error.issues, ['query']));
  if (!parsed.success || errors.length > 0) return { ok: false, errors };
  const { puid, ...signals } = parsed.data;

  let consent: StoredConsent;
  try {
    consent = decodeConsent(syncConsentInput(signals));
  } catch (error) {
    if (!(error instanceof ConsentError)) throw error;
    // A signal that cannot be read proves no consent (and hides no opt-out): as without consent, the partner still gets its redirect.
    return { ok: true, sync: { puid, signals, refused: 'unreadable_consent' } };
  }
  // gdpr=1 needs a TC string granting storage; gdpr=0 needs none; unknown follows a TC string if there is one.
  const storage = consent.tcf && storageConsented(consent.tcf, vendorId);
  const storageAllowed = signals.gdpr === '0' ? true : signals.gdpr === '1' ? storage === true : storage !== false;
  const optedOut = usOptedOut({ ...consent, gpc: browser.gpc }) || signals.us_privacy?.[2]?.toUpperCase() === 'Y';
  return { ok: true, sync: { puid, signals, refused: !storageAllowed ? 'tcf_storage' : optedOut ? 'us_opt_out' : null } };
}

/** The `cookie_sync` event's id: one per partner, partner id, cookie and UTC day, so repeated syncs that day are duplicates. */
export function cookieSyncEventId(partnerId: string, puid: string, cookieId: string, at: Date): string {
  const day = at.toISOString().slice(0, 10);
  return `cookie_sync:${createHash('sha256').update(`${partnerId}\n${puid}\n${cookieId}\n${day}`, 'utf8').digest('hex').slice(0, 40)}`;
}

/** How one of a sync's two writes went: `none` when it had nothing to write (no source; an id that is not recorded). */
export type SyncWrite = 'done' | 'none' | 'failed';

/**
 * What a sync answers once its writes are settled: the browser keeps a new cookie that anything
 * was recorded under (else a match or an event would name a cookie no browser holds), and the
 * partner gets our id only when its match is recorded (else it would keep an id we cannot map) and
 * the browser holds it (else the partner would keep an id nobody has).
 */
export function syncAnswer(knownCookie: boolean, match: SyncWrite, event: SyncWrite): { setCookie: boolean; sendId: boolean } {
  // Something was written under it, or nothing had to be (no source, an id not recorded): not when all that was to be written failed.
  const recorded = match === 'done' || event === 'done' || (match === 'none' && event === 'none');
  const setCookie = !knownCookie && recorded;
  return { setCookie, sendId: match !== 'failed' && (knownCookie || setCookie) };
}

// ---- match tables ------------------------------------------------------------------------------

/** One side of a match: an id of the other side and when the pair was last seen. */
export interface MatchEntry {
  id: string;
  lastSeen: Date;
}

export interface MatchLimits {
  /** Entries kept per key: the newest. */
  cap: number;
  ttlMs: number;
}

export function matchLimits(config: { DMP_MATCH_TTL_DAYS: number; DMP_MATCH_CAP: number }): MatchLimits {
  return { cap: config.DMP_MATCH_CAP, ttlMs: config.DMP_MATCH_TTL_DAYS * 86_400_000 };
}

/**
 * A pair seen again this soon after its last sighting is not written again: a browser syncs the
 * same partner many times a day, and `lastSeen` only matters against a TTL of days.
 */
function refreshAfterMs(limits: MatchLimits): number {
  return Math.min(3_600_000, limits.ttlMs / 24);
}

/** The live entries, newest first, at most `cap` of them. */
export function liveEntries(entries: readonly MatchEntry[], now: Date, limits: MatchLimits): MatchEntry[] {
  const from = now.getTime() - limits.ttlMs;
  return entries
    .filter((entry) => entry.lastSeen.getTime() > from)
    .sort((a, b) => b.lastSeen.getTime() - a.lastSeen.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .slice(0, limits.cap);
}

/**
 * The entries after seeing `id` at `at`: it is added or refreshed, expired entries leave and only
 * the newest `cap` stay. Null when nothing needs writing (the pair was seen lately and nothing else
 * expired or overflows).
 */
export function withSighting(entries: readonly MatchEntry[], id: string, at: Date, limits: MatchLimits): MatchEntry[] | null {
  const known = entries.find((entry) => entry.id === id);
  const live = liveEntries(entries, at, limits);
  if (known && live.length === entries.length && live.includes(known) && at.getTime() - known.lastSeen.getTime() < refreshAfterMs(limits)) return null;
  // A clock behind another API process's never moves a sighting back.
  const seen = { id, lastSeen: known && known.lastSeen > at ? known.lastSeen : at };
  return liveEntries([...entries.filter((entry) => entry.id !== id), seen], at, limits);
}
