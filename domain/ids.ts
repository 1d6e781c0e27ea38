import { createHash, createHmac, randomBytes } from 'node:crypto';

export function newSourceId(): string {
  return `src_${randomBytes(10).toString('hex')}`;
}

export function newWriteKey(): string {
  return `wk_${randomBytes(24).toString('base64url')}`;
}

/**
 * The write key of a source made under an Idempotency-Key: derived from the request (its id and
 * fingerprint) and a secret of the server's, so a repeat answers with the key the first one made
 * though only its hash is stored.
 */
export function keyedWriteKey(secret: string, sourceId: string, createdWith: string): string {
  return `wk_${createHmac('sha256', secret).update(`write-key\u0000${sourceId}\u0000${createdWith}`).digest('base64url')}`;
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/**
 * A new profile's id comes from the event that created it, so a retried drain that creates it again
 * picks the same id instead of a second profile.
 */
export function profileIdForEvent(sourceId: string, eventId: string): string {
  return `p_${createHash('sha256').update(`${sourceId}\u0000${eventId}`).digest('base64url').slice(0, 22)}`;
}

/**
 * The document an opt-out of someone nobody holds yet claims their identity for (see
 * activities/privacy `markOptOut`): one per request, so a retried request claims the same one.
 * Hashed as an empty source's would be, and no source id is empty: it never meets an event's document.
 */
export function profileIdForOptOut(requestId: string): string {
  return profileIdForEvent('\u0000opt_out', requestId);
}
