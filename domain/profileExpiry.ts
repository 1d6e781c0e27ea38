import { identityKey } from './identity';
import { emptiedVersion, partId, type RetiredMarker } from './identitySplit';
import type { ProfileDoc } from './profile';

/**
 * Inactive people leave the store (DMP_INACTIVE_PROFILE_DAYS): a retention run plans the documents
 * of every person last seen before the cutoff, and each partition's writer — the only one that
 * writes them — replaces a planned document by an empty retired version pointing at a successor
 * that does not exist yet, then releases its identities' claims. A process that still has the old
 * owner cached routes a late event to the retired document; its writer folds it into the successor
 * instead, which claims the event's identities afresh. So nothing of the old profile comes back,
 * and a returning visitor starts a new profile.
 */
/** How a retired document says it expired, rather than was split. */
export function isExpired(doc: Pick<ProfileDoc, 'retired'> | null | undefined): boolean {
  return doc?.retired?.expired !== undefined;
}

/** Whether a document is still a live profile last seen before `cutoff` (a retry finds it expired already). */
export function expiresBy(doc: Pick<ProfileDoc, 'retired' | 'lastSeen'>, cutoff: Date): boolean {
  return !doc.retired && doc.lastSeen < cutoff;
}

/**
 * The version that expires a document: emptied like a split document, retired with the successor
 * as its only part. It names no identity: the keys to release travel in the plan (store/profileExpiries).
 */
export function expiredVersion(doc: Readonly<ProfileDoc>, expiryId: string, partitions: number, at: Date): ProfileDoc {
  const successor = partId(doc.profileId, expiryId, 0, partitions);
  const marker: RetiredMarker = { rebuildId: expiryId, parts: { '0': successor }, keys: {}, fallback: successor, expired: { expiryId, at } };
  const expired = emptiedVersion(doc, marker);
  // Late events are folded into the successor, whose own retry guard and recent ids serve them.
  expired.applied = {};
  delete expired.recentEventIds;
  delete expired.recentEventIdsTail;
  return expired;
}

/** The identity keys a document's expiry releases. */
export function keysOf(doc: Pick<ProfileDoc, 'identities'>): string[] {
  return doc.identities.map(identityKey);
}
