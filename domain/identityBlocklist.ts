import { identityKey, sha256Hex, type Identity } from './identity';

/**
 * Identity values that many unrelated people share: linking on them would merge strangers into one
 * profile. An all-zero mobile ad id is what iOS and Android report when tracking is limited; the
 * others are placeholders and test addresses that forms and SDKs commonly send.
 */
const JUNK: Identity[] = [
  { type: 'maid', value: '00000000-0000-0000-0000-000000000000' },
  ...['', 'undefined', 'null', '0', '-1', 'none', 'unknown', 'anonymous', 'NaN'].flatMap((value) => [
    { type: 'cookie_id' as const, value },
    { type: 'crm_id' as const, value },
  ]),
  ...['test@test.com', 'test@example.com', 'example@example.com', 'email@example.com', 'user@example.com', 'noreply@example.com', 'a@a.com', 'no@email.com', 'none@none.com'].map(
    (email) => ({ type: 'email_sha256' as const, value: sha256Hex(email) }),
  ),
  ...['+10000000000', '+11111111111', '+15555555555'].map((phone) => ({ type: 'phone_sha256' as const, value: sha256Hex(phone) })),
];

/** A check for identity keys (`<type>:<value>`) that never join profiles: the built-in junk plus `extra`. */
export function identityBlocklist(extra: string[] = []): (key: string) => boolean {
  const keys = new Set([...JUNK.map(identityKey), ...extra]);
  return (key) => keys.has(key);
}
