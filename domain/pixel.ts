import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import type { FieldError } from './collect';
import { ConsentError, decodeConsent, parseGppSid, storageConsented } from './consent';
import type { ConsentInput, EventInput } from './schemas';

extendZodWithOpenApi(z);

/**
 * The pixel's query string (`GET /v1/pixel.gif?writeKey=…&…`), mapped to one event:
 *
 * | parameter      | becomes                                                                 |
 * | -------------- | ----------------------------------------------------------------------- |
 * | `e`            | the event type (default `pixel`)                                        |
 * | `id`           | the event id: a repeated id is a duplicate (e.g. an ad server's impression id) |
 * | `uid`          | identity `crm_id`                                                       |
 * | `em`           | identity `email_sha256` (SHA-256 of the trimmed, lowercased address; a raw address is refused) |
 * | `ph`           | identity `phone_sha256` (SHA-256 of the E.164 number)                   |
 * | `p.<name>`     | property `<name>` (a string; repeated, a list of strings)               |
 * | `t.<name>`     | trait `<name>` (a string; repeated, a list of strings)                  |
 * | `gdpr`         | `1` when the GDPR applies, `0` when not                                 |
 * | `gdpr_consent` | consent `tcf` (TCF v2 TC string)                                        |
 * | `gpp`          | consent `gpp` (GPP string)                                              |
 * | `gpp_sid`      | consent `gppSid`: the GPP sections in force, comma-separated (only beside `gpp`; ignored when unreadable) |
 * | `cb`           | ignored (cache-buster)                                                  |
 *
 * The platform's cookie becomes identity `cookie_id`. A macro the ad server left unexpanded
 * (`${GDPR}`, `[gdpr_consent]`, `%%GDPR%%`) counts as absent; unknown parameters are ignored.
 */
export const PIXEL_DEFAULT_EVENT_TYPE = 'pixel';

const IDENTITY_PARAMS = { uid: 'crm_id', em: 'email_sha256', ph: 'phone_sha256' } as const;
const PROPERTY_PREFIX = 'p.';
const TRAIT_PREFIX = 't.';

/**
 * The pixel's query parameters, for the OpenAPI document (`p.<name>` and `t.<name>` are described in
 * words; the write key is a security scheme). Each is any string: the GIF is answered whatever the
 * query holds, and a value that cannot be recorded is counted as a pixel rejection of the source.
 */
export const PixelQuerySchema = z.object({
  e: z.string().optional().openapi({ description: `Event type (default \`${PIXEL_DEFAULT_EVENT_TYPE}\`)` }),
  id: z.string().optional().openapi({ description: 'Event id; a repeated id is a duplicate' }),
  uid: z.string().optional().openapi({ description: 'Identity `crm_id`' }),
  em: z.string().optional().openapi({ description: 'Identity `email_sha256`: SHA-256 (hex or base64) of the trimmed, lowercased email; raw addresses are refused' }),
  ph: z.string().optional().openapi({ description: 'Identity `phone_sha256`: SHA-256 (hex or base64) of the E.164 number' }),
  gdpr: z.string().optional().openapi({ description: '`1` when the GDPR applies (the cookie is then read and set only with a TC string consenting to purpose 1, and to the source\'s `tcfVendorId` when it names one), `0` when not (the event then says so: `tcfNotApplicable`)' }),
  gdpr_consent: z.string().optional().openapi({ description: 'TCF v2 TC string' }),
  gpp: z.string().optional().openapi({ description: 'GPP string' }),
  gpp_sid: z.string().optional().openapi({ description: 'The GPP sections in force (`${GPP_SID}`, comma-separated ids): only those sections of `gpp` are read (see `gppSid` in Consent); ignored without `gpp`, or when it is not such a list (every section is then read)' }),
  cb: z.string().optional().openapi({ description: 'Cache-buster, ignored' }),
});

/** An event without its cookie: the caller adds `cookie_id` once it knows whether it may use its cookie. */
export type PixelEvent = Omit<EventInput, 'identities'> & { identities: Partial<EventInput['identities']> };

export type PixelRequest =
  | {
      ok: true;
      event: PixelEvent;
      /** Whether the platform's cookie may be read and set (TCF purpose 1, storage on a device, where the GDPR applies). */
      storageAllowed: boolean;
    }
  | { ok: false; errors: FieldError[] };

/** `${GDPR}`, `[GDPR]`, `%%GDPR%%`: what an ad server sends when it did not expand a macro. */
const UNEXPANDED_MACRO = /^(\$\{.*\}|\[.*\]|%%.*%%)$/;

/** The query as an express `simple` parser reads it: a string, or a list of strings for a repeated name. */
export type PixelQuery = Record<string, unknown>;

function single(query: PixelQuery, name: string, errors: FieldError[]): string | undefined {
  const value = query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') {
    errors.push({ path: name, message: 'must be given once' });
    return undefined;
  }
  return value === '' || UNEXPANDED_MACRO.test(value) ? undefined : value;
}

function valuesOf(value: unknown): string | string[] | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.every((item) => typeof item === 'string')) return value as string[];
  return undefined;
}

/**
 * Maps the pixel's query to an event; errors name the query parameter. Where the GDPR applies and
 * no TC string came, the visitor has not decided: the event says so (`tcfPending`), so it is kept
 * but not profiled.
 */
export function readPixelQuery(query: PixelQuery, vendorId?: number): PixelRequest {
  const errors: FieldError[] = [];
  const event: PixelEvent = { type: single(query, 'e', errors) ?? PIXEL_DEFAULT_EVENT_TYPE, identities: {} };
  const id = single(query, 'id', errors);
  if (id !== undefined) event.id = id;
  for (const [param, type] of Object.entries(IDENTITY_PARAMS)) {
    const value = single(query, param, errors);
    if (value !== undefined) event.identities[type] = value;
  }
  const named = { properties: [] as Array<[string, string | string[]]>, traits: [] as Array<[string, string | string[]]> };
  for (const [name, raw] of Object.entries(query)) {
    const field = name.startsWith(PROPERTY_PREFIX) ? 'properties' : name.startsWith(TRAIT_PREFIX) ? 'traits' : null;
    if (!field) continue;
    const value = valuesOf(raw);
    if (value === undefined) errors.push({ path: name, message: 'must be a string or a repeated string' });
    else named[field].push([name.slice(2), value]);
  }
  // Object.fromEntries makes plain own keys even of names such as `__proto__`.
  if (named.properties.length > 0) event.properties = Object.fromEntries(named.properties);
  if (named.traits.length > 0) event.traits = Object.fromEntries(named.traits);

  const gdpr = single(query, 'gdpr', errors);
  if (gdpr !== undefined && gdpr !== '0' && gdpr !== '1') errors.push({ path: 'gdpr', message: 'must be 0 or 1' });
  const consentInput: ConsentInput = {};
  const tcf = single(query, 'gdpr_consent', errors);
  if (tcf !== undefined) consentInput.tcf = tcf;
  const gpp = single(query, 'gpp', errors);
  if (gpp !== undefined) consentInput.gpp = gpp;
  // Section ids the pixel cannot read are ignored (every section of the string is read): the hit is kept.
  const sid = typeof query.gpp_sid === 'string' && gpp !== undefined ? parseGppSid(query.gpp_sid) : null;
  if (sid) consentInput.gppSid = sid;

  // Decoded here as well as at collection: whether the cookie may be touched depends on it.
  let storageConsent: boolean | undefined;
  if (consentInput.tcf !== undefined || consentInput.gpp !== undefined) {
    event.consent = consentInput;
    try {
      const decoded = decodeConsent(consentInput).tcf;
      if (decoded) storageConsent = storageConsented(decoded, vendorId);
    } catch (error) {
      if (!(error instanceof ConsentError)) throw error;
      errors.push({ path: error.field === 'gpp' ? 'gpp' : 'gdpr_consent', message: error.message });
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  // Without a TC string where the GDPR applies the visitor has not decided: not for profiling, until a TC string says otherwise.
  if (gdpr === '1' && storageConsent === undefined) event.consent = { ...event.consent, tcfPending: true };
  // Told the GDPR does not apply (and no TC string says otherwise): that ends an earlier hit's no-decision mark.
  if (gdpr === '0' && consentInput.tcf === undefined) event.consent = { ...event.consent, tcfNotApplicable: true };
  // gdpr=1 needs a TC string that consents; gdpr=0 needs nothing; unknown follows a TC string if there is one.
  const storageAllowed = gdpr === '0' ? true : gdpr === '1' ? storageConsent === true : storageConsent !== false;
  return { ok: true, event, storageAllowed };
}

const FIELD_PARAMS: Array<[string, string]> = [
  ['identities.crm_id', 'uid'],
  ['identities.email_sha256', 'em'],
  ['identities.phone_sha256', 'ph'],
  ['identities.cookie_id', 'cookie'],
  ['consent.tcf', 'gdpr_consent'],
  ['consent.gpp', 'gpp'],
  ['type', 'e'],
  ['id', 'id'],
  ['properties.', PROPERTY_PREFIX],
  ['traits.', TRAIT_PREFIX],
];

/** Names an event field's error (as collection reports it) by the query parameter it came from. */
export function pixelParamOf(path: string): string {
  for (const [field, param] of FIELD_PARAMS) {
    if (field.endsWith('.') ? path.startsWith(field) : path === field || path.startsWith(`${field}.`)) {
      return field.endsWith('.') ? param + path.slice(field.length) : param;
    }
  }
  return path;
}
