import type { Request } from 'express';
import { IdempotencyKeySchema, idForKey, requestFingerprint } from '../domain/idempotency';
import type { RetiredIds } from '../store/retiredIds';
import { ProblemError } from './problem';

/**
 * The id a create makes, and what its resource records of the request (`createdWith`): a random
 * id, or, under an `Idempotency-Key` header, one derived from the key (and `scope`), which a repeat
 * finds taken.
 */
export async function createIdentity(req: Request, prefix: string, newId: () => string, retired: RetiredIds, scope?: string): Promise<{ id: string; createdWith?: string }> {
  const key = idempotencyKeyOf(req);
  if (key === undefined) return { id: newId() };
  const id = idForKey(prefix, scope === undefined ? key : `${scope}\u0000${key}`);
  if (await retired.isRetired(id)) throw keyUsed('what this key made was deleted; a new resource needs a new key');
  return { id, createdWith: requestFingerprint(req.body) };
}

/** The request's `Idempotency-Key` header, checked (400 naming it); undefined without one. */
export function idempotencyKeyOf(req: Request): string | undefined {
  const header = req.headers['idempotency-key'];
  if (header === undefined) return undefined;
  const parsed = IdempotencyKeySchema.safeParse(header);
  if (!parsed.success) throw new ProblemError(400, 'validation', 'Invalid Idempotency-Key header', [{ path: 'headers.idempotency-key', message: parsed.error.issues[0]?.message ?? 'invalid' }]);
  return parsed.data;
}

export function keyUsed(message: string): ProblemError {
  return new ProblemError(409, 'idempotency-key-reused', 'This Idempotency-Key was used for something else', [{ path: 'headers.idempotency-key', message }]);
}

/** For a create whose id was taken: the resource when it is the same request made again, else a 409 naming the key. */
export function sameCreate<T extends { createdWith?: string }>(existing: T | null, createdWith: string | undefined): T {
  // Taken, then gone: a create under this key being undone as this one came.
  if (existing === null) throw new ProblemError(503, 'unavailable', 'What this Idempotency-Key made is being removed; send it again');
  if (createdWith !== undefined && existing.createdWith === createdWith) return existing;
  throw keyUsed('it came with another request; a new request needs a new key');
}
