import { hash } from 'node:crypto';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

/** The `Idempotency-Key` a client sends with a create it may send again (its answer lost): the same key, the same resource. */
export const IdempotencyKeySchema = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[\x21-\x7e]+$/, 'visible ASCII characters, no spaces')
  .openapi({ description: 'Sent again with the same request, answers with the resource the first one made (finishing it if that one stopped half way) instead of making another; with another request, a 409', example: 'crm-sync-2026-12-05' });

/** The id of the resource a create under `key` makes (`prefix` as random ids have it): a repeat finds it. */
export function idForKey(prefix: string, key: string): string {
  return `${prefix}_${hash('sha256', `${prefix}\u0000${key}`, 'hex').slice(0, 16)}`;
}

/** What tells one request from another under the same key: its body, as parsed. */
export function requestFingerprint(body: unknown): string {
  return hash('sha256', JSON.stringify(body) ?? '', 'base64url').slice(0, 22);
}
