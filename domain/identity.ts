import { createHash } from 'node:crypto';
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js';
import { redactContactText } from './contactRedaction';

/** Identity types a client may send. Raw `email`/`phone` never reach the store: they become hashes. */
export const INPUT_IDENTITY_TYPES = ['cookie_id', 'maid', 'email', 'phone', 'email_sha256', 'phone_sha256', 'crm_id', 'partner_uid'] as const;
export type InputIdentityType = (typeof INPUT_IDENTITY_TYPES)[number];

/** Identity types as stored in profiles and in the identity index. */
export const STORED_IDENTITY_TYPES = ['cookie_id', 'maid', 'email_sha256', 'phone_sha256', 'crm_id', 'partner_uid'] as const;
export type StoredIdentityType = (typeof STORED_IDENTITY_TYPES)[number];

export interface Identity {
  type: StoredIdentityType;
  value: string;
  /**
   * For an email: its UID2 hashed form (base64 SHA-256 after UID2's normalization), kept only when
   * it is not our own hash in base64 — gmail.com addresses with dots or a `+suffix`. Computed here
   * at the edge, since the raw address is never stored. See `uid2EmailHash`.
   */
  uid2?: string;
  /**
   * For a phone: hex SHA-256 of its digits with the country code and no `+` (`16505551234`), the form
   * Meta and TikTok hash, beside ours of E.164 (`+16505551234`, Google's). Computed here at the edge,
   * since the raw number is never stored; absent for a phone sent already hashed.
   */
  digits?: string;
  /**
   * Only on a stored event, never on a profile: one reading of an id whose type its sender did not
   * know (`previousId`, see `previousIdReadings`). Drains join by the readings the graph knows and
   * leave the others off the event — unless it knows none, when the first is claimed as any identity.
   */
  previous?: true;
}

/** The order in which an event's identities choose its profile when they point at different ones. */
export const IDENTITY_PRIORITY: readonly StoredIdentityType[] = ['crm_id', 'email_sha256', 'phone_sha256', 'maid', 'cookie_id', 'partner_uid'];

/** Orders identity types by IDENTITY_PRIORITY, highest first. */
export function byTypePriority(a: StoredIdentityType, b: StoredIdentityType): number {
  return IDENTITY_PRIORITY.indexOf(a) - IDENTITY_PRIORITY.indexOf(b);
}

export class IdentityError extends Error {}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Trimmed and lowercased; the base form every destination's own rules start from. */
export function normalizeEmail(raw: string): string {
  const email = raw.trim().toLowerCase();
  const at = email.lastIndexOf('@');
  if (at < 1 || at === email.length - 1 || email.indexOf('@') !== at || /\s/.test(email) || !email.slice(at + 1).includes('.')) {
    throw new IdentityError('not a valid email address');
  }
  return email;
}

/** Whether `raw` reads as an email address (normalizeEmail takes it). */
export function isEmailAddress(raw: string): boolean {
  try {
    normalizeEmail(raw);
    return true;
  } catch {
    return false;
  }
}

/** E.164 (`+<country><number>`); numbers without a country code are read in `defaultRegion`. */
export function normalizePhone(raw: string, defaultRegion: string): string {
  const parsed = parsePhoneNumberFromString(raw.trim(), defaultRegion.toUpperCase() as CountryCode);
  if (!parsed || !parsed.isPossible()) throw new IdentityError('not a possible phone number');
  return parsed.number;
}

/**
 * UID2's hashed email: trimmed and lowercased, and for gmail.com the local part without dots and
 * without a `+suffix`; then SHA-256, base64-encoded (UID2 "Normalization and Encoding").
 */
export function uid2EmailHash(raw: string): string {
  let email = raw.trim().toLowerCase();
  const at = email.lastIndexOf('@');
  if (email.slice(at + 1) === 'gmail.com') {
    const local = email.slice(0, at).split('+')[0].replace(/\./g, '');
    email = `${local}@gmail.com`;
  }
  return createHash('sha256').update(email, 'utf8').digest('base64');
}

function hexToBase64(hex: string): string {
  return Buffer.from(hex, 'hex').toString('base64');
}

/**
 * The UID2 hashed email of an `email_sha256` identity: the one computed at the edge, or ours in
 * base64 — the same digest whenever UID2's normalization does not differ from ours (and the best
 * there is for emails that arrived already hashed).
 */
export function uid2Of(identity: Identity): string {
  return identity.uid2 ?? hexToBase64(identity.value);
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;
const BASE64_SHA256 = /^[A-Za-z0-9+/]{43}=$/;

/** Accepts a SHA-256 digest as hex (any case) or base64 and returns lowercase hex. */
export function normalizeSha256(raw: string): string {
  const text = raw.trim();
  if (HEX_SHA256.test(text.toLowerCase())) return text.toLowerCase();
  if (BASE64_SHA256.test(text)) return Buffer.from(text, 'base64').toString('hex');
  throw new IdentityError('not a SHA-256 digest (64 hex characters or 44 base64 characters)');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A sync partner's id: a slug, since it is part of match-table keys and `partner_uid` values (`<partner>:<puid>`) and of the `partner:<id>` id type. */
export const PARTNER_ID = /^[a-z0-9][a-z0-9_-]{0,31}$/;
/** A partner's own user id as a sync passes it: printable ASCII without spaces, not an unexpanded macro (`${UID}`, `{UID}`, `[UID]`, `%%UID%%`, `__UID__`, `$UID`). */
export const PARTNER_USER_ID = /^(?!\$?\{.*\}$|\[.*\]$|%%.*%%$|__[A-Za-z0-9_]+__$|\$[A-Za-z_]+$)[\x21-\x7e]{1,256}$/;

/**
 * What is wrong with a `partner_uid` value, or null: a partner's user id named by the partner (as
 * a cookie sync records it), so the same id at two partners is two people.
 */
export function partnerUserIdProblem(value: string): string | null {
  const colon = value.indexOf(':');
  if (colon < 1 || !PARTNER_ID.test(value.slice(0, colon)) || !PARTNER_USER_ID.test(value.slice(colon + 1))) {
    return 'must be <partner>:<partner user id>: a partner id (lowercase slug), a colon, then printable ASCII without spaces, at most 256';
  }
  const userId = value.slice(colon + 1);
  // What partners send for users who opted out or are unknown (The Trade Desk's all-zero UUID): shared by millions.
  if (/^[0-]+$/.test(userId)) return 'is all zeros: a partner placeholder, never a user';
  // A partner id is a pseudonym: an address or a phone number in its place would be kept raw.
  if ((userId.includes('@') && isEmailAddress(userId)) || (INTERNATIONAL_PHONE.test(userId) && isPossiblePhone(userId, 'US'))) return 'is an email address or a phone number, not a partner\'s pseudonymous user id';
  return null;
}

/** Why `raw` is no mobile advertising id (IDFA/GAID), or null when it is one. */
export function maidProblem(raw: string): string | null {
  const value = raw.trim().toLowerCase();
  if (!UUID.test(value)) return 'not a mobile advertising id (IDFA/GAID UUID)';
  // What iOS and Android report when the user limits ad tracking: shared by millions, never an id.
  if (/^[0-]+$/.test(value)) return 'is all zeros: the device limits ad tracking';
  return null;
}

/** A phone number as an id holds one: a `+`, the country code, then digits with the usual separators. */
const INTERNATIONAL_PHONE = /^\+[1-9][0-9 ().-]{5,24}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

function isPossiblePhone(raw: string, defaultRegion: string): boolean {
  try {
    normalizePhone(raw, defaultRegion);
    return true;
  } catch (error) {
    if (error instanceof IdentityError) return false;
    throw error;
  }
}

/** Turns one client-sent identity into its stored form: hashed when it is PII, validated always. */
export function toStoredIdentity(type: InputIdentityType, raw: string, defaultPhoneRegion: string): Identity {
  switch (type) {
    case 'email': {
      const email = normalizeEmail(raw);
      const value = sha256Hex(email);
      const uid2 = uid2EmailHash(email);
      return uid2 === hexToBase64(value) ? { type: 'email_sha256', value } : { type: 'email_sha256', value, uid2 };
    }
    case 'phone': {
      const e164 = normalizePhone(raw, defaultPhoneRegion);
      return { type: 'phone_sha256', value: sha256Hex(e164), digits: sha256Hex(e164.slice(1)) };
    }
    case 'email_sha256':
    case 'phone_sha256':
      return { type, value: normalizeSha256(raw) };
    case 'maid': {
      const problem = maidProblem(raw);
      if (problem) throw new IdentityError(problem);
      return { type, value: raw.trim().toLowerCase() };
    }
    case 'partner_uid': {
      const value = raw.trim();
      const problem = partnerUserIdProblem(value);
      if (problem) throw new IdentityError(problem);
      return { type, value };
    }
    case 'cookie_id':
    case 'crm_id': {
      const value = raw.trim();
      // Many systems use the email address or the phone number as the customer id (and some senders
      // put one in the anonymous id): kept as the hashed email or phone, never raw.
      if (value.includes('@') && isEmailAddress(value)) return toStoredIdentity('email', value, defaultPhoneRegion);
      if (INTERNATIONAL_PHONE.test(value) && isPossiblePhone(value, defaultPhoneRegion)) return toStoredIdentity('phone', value, defaultPhoneRegion);
      if (value.length === 0 || value.length > 256) throw new IdentityError('must be 1 to 256 characters');
      // An address inside an id (`mailto:ada@example.com`, `Ada <ada@example.com>`) would be kept raw.
      if ((value.includes('@') || value.includes('%40')) && redactContactText(value) !== value) throw new IdentityError('holds an email address: send the address as email, or an id without one');
      // Kept as it is sent: no control character, since identity keys are joined on newlines where
      // a segment's export facts pack them, and the store holds no NUL.
      if (CONTROL_CHARACTER.test(value)) throw new IdentityError('must not hold control characters (NUL, tab, newline and the like)');
      return { type, value };
    }
  }
}

/**
 * The readings of an id whose type its sender did not know — a Segment alias's `previousId` sent
 * from a server, an anonymous id or an earlier user id: as a cookie id first (what it is kept as
 * while the graph knows neither, as such an alias always was), then as a customer id. An address
 * reads only as its hashed email: never kept raw as a cookie id.
 */
export function previousIdReadings(raw: string, defaultPhoneRegion: string): Identity[] {
  const asCustomer: Identity = { ...toStoredIdentity('crm_id', raw, defaultPhoneRegion), previous: true };
  if (asCustomer.type !== 'crm_id') return [asCustomer];
  return [{ ...toStoredIdentity('cookie_id', raw, defaultPhoneRegion), previous: true }, asCustomer];
}

/** An identity as a profile holds it: without the mark of a reading (see `Identity.previous`). */
export function withoutReadingMark({ previous: _reading, ...identity }: Identity): Identity {
  return identity;
}

/** The identity index key: `<type>:<value>`; also the `_id` of the identity document. */
export function identityKey(identity: Identity): string {
  return `${identity.type}:${identity.value}`;
}

/** The type an identity index key (see identityKey) is of. */
export function identityTypeOfKey(key: string): StoredIdentityType {
  return key.slice(0, key.indexOf(':')) as StoredIdentityType;
}

/**
 * The keys an identity an operator names (a lookup, an unlink, a privacy request) may be stored
 * under, in the order to try them: its stored form's, then — for a cookie or customer id — the id
 * as sent, which is how one that is an address or a phone number (or holds a control character)
 * was kept before such ids were hashed (or refused), so what was stored then is still found. Throws
 * as toStoredIdentity does when there is neither.
 */
export function identityKeysOf(type: InputIdentityType, raw: string, defaultPhoneRegion: string): string[] {
  let stored: string | null = null;
  let failure: unknown = null;
  try {
    stored = identityKey(toStoredIdentity(type, raw, defaultPhoneRegion));
  } catch (error) {
    if (!(error instanceof IdentityError)) throw error;
    failure = error;
  }
  const asSent = type === 'cookie_id' || type === 'crm_id' ? raw.trim() : '';
  const legacy = asSent.length > 0 && asSent.length <= 256 && !asSent.includes('\u0000') ? `${type}:${asSent}` : null;
  const keys = [...(stored === null ? [] : [stored]), ...(legacy !== null && legacy !== stored ? [legacy] : [])];
  if (keys.length === 0) throw failure;
  return keys;
}
