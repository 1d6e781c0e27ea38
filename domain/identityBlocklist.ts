import { identityKey, IdentityError, INPUT_IDENTITY_TYPES, sha256Hex, toStoredIdentity, type Identity, type InputIdentityType } from './identity';

/** Values forms, SDKs and partners send in place of an id they do not have. */
const PLACEHOLDERS = ['', 'undefined', 'null', '0', '-1', 'none', 'unknown', 'anonymous', 'NaN', 'n/a'];
/** No placeholder is longer: a longer value is not lower-cased to be looked for. */
const MAX_PLACEHOLDER_LENGTH = Math.max(...PLACEHOLDERS.map((value) => value.length));

/**
 * Identity values that many unrelated people share: linking on them would merge strangers into one
 * profile. An all-zero mobile ad id is what iOS and Android report when tracking is limited; the
 * others are placeholders and test addresses that forms and SDKs commonly send.
 */
const JUNK: Identity[] = [
  { type: 'maid', value: '00000000-0000-0000-0000-000000000000' },
  ...['test@test.com', 'test@example.com', 'example@example.com', 'email@example.com', 'user@example.com', 'noreply@example.com', 'a@a.com', 'no@email.com', 'none@none.com'].map(
    (email) => ({ type: 'email_sha256' as const, value: sha256Hex(email) }),
  ),
  ...['+10000000000', '+11111111111', '+15555555555'].map((phone) => ({ type: 'phone_sha256' as const, value: sha256Hex(phone) })),
];

const PARTNER_UID = 'partner_uid:';
/** Types whose values are kept as sent, so a placeholder comes in any case. */
const PLACEHOLDER_TYPES = ['cookie_id:', 'crm_id:'];

/**
 * A check for identity keys (`<type>:<value>`) that never join profiles: the built-in junk plus
 * `extra`, and a placeholder as a cookie id, a customer id or any partner's user id
 * (`partner_uid:<partner>:<placeholder>`).
 */
export function identityBlocklist(extra: string[] = [], phoneRegion = 'US'): (key: string) => boolean {
  const keys = new Set([...JUNK.map(identityKey), ...extra.flatMap((entry) => storedBlocklistKeys(entry, phoneRegion))]);
  // Spelt in any case (`NULL` from an SQL export, `None` from Python, `Undefined` from a partner).
  const placeholders = new Set(PLACEHOLDERS.map((value) => value.toLowerCase()));
  const placeholderOf = (key: string): string | null => {
    if (key.startsWith(PARTNER_UID)) return key.slice(key.indexOf(':', PARTNER_UID.length) + 1);
    const type = PLACEHOLDER_TYPES.find((prefix) => key.startsWith(prefix));
    return type ? key.slice(type.length) : null;
  };
  return (key) => {
    if (keys.has(key)) return true;
    const value = placeholderOf(key);
    return value !== null && value.length <= MAX_PLACEHOLDER_LENGTH && placeholders.has(value.toLowerCase());
  };
}

/**
 * The keys an extra blocklist entry (`<type>:<value>`) blocks: as written, and as the drains key
 * that identity (an id as iOS shows it, in upper case; a hash in upper case; a raw email or phone,
 * read in `phoneRegion` without a country code) when it normalizes. Throws IdentityError for an
 * entry that names no identity type.
 */
export function blocklistKeys(entry: string, phoneRegion: string): string[] {
  const at = entry.indexOf(':');
  const type = entry.slice(0, Math.max(at, 0));
  if (!(INPUT_IDENTITY_TYPES as readonly string[]).includes(type)) throw new IdentityError(`not <type>:<value> with a type of ${INPUT_IDENTITY_TYPES.join(', ')}`);
  try {
    return [...new Set([entry, identityKey(toStoredIdentity(type as InputIdentityType, entry.slice(at + 1), phoneRegion))])];
  } catch (error) {
    // A value collection refuses (an all-zero ad id, a macro) never reaches the store: blocked as written, which harms nothing.
    if (error instanceof IdentityError) return [entry];
    throw error;
  }
}

/** An entry's keys, or the entry as written when it names no type (configuration refuses those; see config.ts). */
function storedBlocklistKeys(entry: string, phoneRegion: string): string[] {
  try {
    return blocklistKeys(entry, phoneRegion);
  } catch (error) {
    if (error instanceof IdentityError) return [entry];
    throw error;
  }
}
