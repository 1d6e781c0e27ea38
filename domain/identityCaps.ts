import { identityKey, STORED_IDENTITY_TYPES, type StoredIdentityType } from './identity';
import type { ProfileDoc } from './profile';

/** Most identities of each type one profile document takes; past it, joins are refused (see resolveIdentities). */
export type IdentityCaps = Record<StoredIdentityType, number>;

/**
 * Defaults after what anchor products keep: Adobe Audience Manager holds at most 1,000 device ids per
 * cross-device id and 100 mobile ids per CRM id (a partner's user id is a device id of theirs). A person with more emails, phones or CRM ids than
 * these is far likelier a shared or synthetic value than a real customer.
 */
export const DEFAULT_IDENTITY_CAPS = 'cookie_id=1000,maid=100,email_sha256=20,phone_sha256=20,crm_id=5,partner_uid=1000';

/** Parses `type=n,…`; types left out keep their default. Throws naming the bad part. */
export function parseIdentityCaps(text: string): IdentityCaps {
  const caps = Object.fromEntries(DEFAULT_IDENTITY_CAPS.split(',').map((part) => [part.split('=')[0], Number(part.split('=')[1])])) as IdentityCaps;
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [type, value] = part.split('=');
    const cap = Number(value);
    if (!STORED_IDENTITY_TYPES.includes(type as StoredIdentityType)) throw new Error(`unknown identity type '${type}' (one of ${STORED_IDENTITY_TYPES.join(', ')})`);
    if (!Number.isInteger(cap) || cap < 1) throw new Error(`cap of ${type} must be a whole number ≥ 1, got '${value}'`);
    caps[type as StoredIdentityType] = cap;
  }
  return caps;
}

/** The identity types a document holds its cap of. */
export function cappedTypes(doc: Pick<ProfileDoc, 'identities'>, caps: IdentityCaps): StoredIdentityType[] {
  const counts = new Map<StoredIdentityType, Set<string>>();
  for (const identity of doc.identities) counts.set(identity.type, (counts.get(identity.type) ?? new Set()).add(identityKey(identity)));
  return [...counts].filter(([type, keys]) => keys.size >= caps[type]).map(([type]) => type).sort();
}
