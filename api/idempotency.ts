import type { Request } from 'express';
import { IdempotencyKeySchema, idForKey, requestFingerprint } from '../domain/idempotency';
import { ProblemError } from './problem';

/**
 * The id a create makes, and what its resource records of the request (`createdWith`): a random
 * id, or, under an `Idempotency-Key` header, one derived from the key, which a repeat finds taken.
 */
export function createIdentity(req: Request, prefix: string, newId: () => string): { id: string; createdWith?: string } {
  const header = req.headers['idempotency-key'];
  if (header === undefined) return { id: newId() };
  const parsed = IdempotencyKeySchema.safeParse(header);
  if (!parsed.success) throw new ProblemError(400, 'validation', 'Invalid Idempotency-Key header', [{ path: 'headers.idempotency-key', message: parsed.error.issues[0]?.message ?? 'invalid' }]);
  return { id: idForKey(prefix, parsed.data), createdWith: requestFingerprint(req.body) };
}

/** For a create whose id was taken: the resource when it is the same request made again, else a 409 naming the key. */
export function sameCreate<T extends { createdWith?: string }>(existing: T | null, createdWith: string | undefined): T {
  if (existing && createdWith !== undefined && existing.createdWith === createdWith) return existing;
  throw new ProblemError(409, 'idempotency-key-reused', 'This Idempotency-Key came with another request', [{ path: 'headers.idempotency-key', message: 'a new request needs a new key' }]);
}
