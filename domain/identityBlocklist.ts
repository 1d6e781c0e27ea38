import { identityKey, sha256Hex, type Identity } from './identity';

/** Values forms, SDKs and partners send in place of an id they do not have. */
const PLACEHOLDERS = ['', 'undefined', 'null', '0', '-1', 'none', 'unknown', 'anonymous', 'NaN'];

/**
 * Identity values that many unrelated people share: linking on them would merge strangers into one
 * profile. An all-zero mobile ad id is what iOS and Android report when tracking is limited; the
 * others are placeholders and test addresses that forms and SDKs commonly send.
 */
const JUNK: Identity[] = [
  { type: 'maid', value: '00000000-0000-0000-0000-000000000000' },
  ...PLACEHOLDERS.flatMap((value) => [
    { type: 'cookie_id' as const, value },
    { type: 'crm_id' as const, value },
  ]),
  ...['test@test.com', 'test@example.com', 'example@example.com', 'email@example.com', 'user@example.com', 'noreply@example.com', 'a@a.com', 'no@email.com', 'none@none.com'].map(
    (email) => ({ type: 'email_sha256' as const, value: sha256Hex(email) }),
  ),
  ...['+10000000000', '+11111111111', '+15555555555'].map((phone) => ({ type: 'phone_sha256' as const, value: sha256Hex(phone) })),
];

const PARTNER_UID = 'partner_uid:';

/**
 * A check for identity keys (`<type>:<value>`) that never join profiles: the built-in junk plus
 * `extra`, and a placeholder as any partner's user id (`partner_uid:<partner>:<placeholder>`).
 */
export function identityBlocklist(extra: string[] = []): (key: string) => boolean {
  const keys = new Set([...JUNK.map(identityKey), ...extra]);
  // Partners spell them in any case (`NULL`, `Undefined`).
  const placeholders = new Set(PLACEHOLDERS.map((value) => value.toLowerCase()));
  return (key) => keys.has(key) || (key.startsWith(PARTNER_UID) && placeholders.has(key.slice(key.indexOf(':', PARTNER_UID.length) + 1).toLowerCase()));
}
