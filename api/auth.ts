import { timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { hashSecret } from '../domain/ids';
import type { SourceStore } from '../store/sources';
import { ProblemError } from './problem';

function bearer(header: string | undefined): string | null {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return match ? match[1] : null;
}

/** Management endpoints: the admin key, compared by hash in constant time. */
export function requireAdmin(adminKey: string): RequestHandler {
  const expected = Buffer.from(hashSecret(adminKey), 'hex');
  return (req, _res, next) => {
    const key = bearer(req.headers.authorization);
    if (!key) throw new ProblemError(401, 'unauthorized', 'Missing admin key', [{ path: 'headers.authorization', message: 'expected "Bearer <admin key>"' }]);
    if (!timingSafeEqual(Buffer.from(hashSecret(key), 'hex'), expected)) {
      throw new ProblemError(403, 'forbidden', 'Not an admin key', [{ path: 'headers.authorization', message: 'unknown key' }]);
    }
    next();
  };
}

declare module 'express-serve-static-core' {
  interface Request {
    sourceId?: string;
  }
}

/**
 * Collection endpoints: a source's write key. Keys are looked up by hash and remembered briefly, so
 * the hot path does not read the store for every request.
 */
export function requireWriteKey(sources: SourceStore, cacheMs = 60_000): RequestHandler {
  const cache = new Map<string, { sourceId: string; until: number }>();
  return async (req, _res, next) => {
    const key = bearer(req.headers.authorization);
    if (!key) throw new ProblemError(401, 'unauthorized', 'Missing write key', [{ path: 'headers.authorization', message: 'expected "Bearer <write key>"' }]);
    const keyHash = hashSecret(key);
    const cached = cache.get(keyHash);
    if (cached && cached.until > Date.now()) {
      req.sourceId = cached.sourceId;
      return next();
    }
    const sourceId = await sources.sourceIdForKeyHash(keyHash);
    if (!sourceId) throw new ProblemError(401, 'unknown-write-key', 'Unknown write key', [{ path: 'headers.authorization', message: 'no source has this write key' }]);
    cache.set(keyHash, { sourceId, until: Date.now() + cacheMs });
    req.sourceId = sourceId;
    next();
  };
}
