import { timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import { hashSecret } from '../domain/ids';
import type { SourceDoc, SourceStore } from '../store/sources';
import { ProblemError } from './problem';

function bearer(header: string | undefined): string | null {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return match ? match[1] : null;
}

/** HTTP Basic with the key as the user and an empty password: how Segment and RudderStack SDKs send a write key. */
function basicUser(header: string | undefined): string | null {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!match) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const user = colon === -1 ? decoded : decoded.slice(0, colon);
  return user.length > 0 ? user : null;
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
    source?: SourceDoc;
  }
}

/** Where a route accepts the write key: `Authorization: Bearer`, HTTP Basic user, or the `writeKey` query parameter (tags, pixels). */
export type WriteKeyCarrier = 'bearer' | 'basic' | 'query';

/**
 * Resolves write keys to their sources. Keys are looked up by hash and remembered briefly, so the
 * hot path does not read the store for every request; a changed source takes effect within `cacheMs`.
 */
export class WriteKeys {
  private readonly cache = new Map<string, { source: SourceDoc | null; until: number }>();

  constructor(
    private readonly sources: SourceStore,
    private readonly cacheMs = 60_000,
    /** Unknown keys are remembered too, briefly: a pixel fired with a stale key must not cost a store read per hit. */
    private readonly missMs = 10_000,
    /** Bounds the memory that random keys could take; the cache starts afresh when full. */
    private readonly maxEntries = 100_000,
  ) {}

  async resolve(key: string): Promise<SourceDoc | null> {
    const keyHash = hashSecret(key);
    const cached = this.cache.get(keyHash);
    if (cached && cached.until > Date.now()) return cached.source;
    const sourceId = await this.sources.sourceIdForKeyHash(keyHash);
    const source = sourceId ? await this.sources.get(sourceId) : null;
    if (this.cache.size >= this.maxEntries) this.cache.clear();
    this.cache.set(keyHash, { source, until: Date.now() + (source ? this.cacheMs : this.missMs) });
    return source;
  }

  /** The write key a request carries in one of `carriers`, or null. */
  static keyOf(req: Request, carriers: readonly WriteKeyCarrier[]): string | null {
    for (const carrier of carriers) {
      const key =
        carrier === 'bearer' ? bearer(req.headers.authorization) : carrier === 'basic' ? basicUser(req.headers.authorization) : typeof req.query.writeKey === 'string' ? req.query.writeKey : null;
      if (key) return key;
    }
    return null;
  }

  /** Middleware: sets `req.source` or answers 401 naming where the key was expected. */
  require(carriers: readonly WriteKeyCarrier[] = ['bearer']): RequestHandler {
    const expected = carriers.map((c) => (c === 'bearer' ? '"Authorization: Bearer <write key>"' : c === 'basic' ? 'HTTP Basic with the write key as user' : 'the writeKey query parameter')).join(' or ');
    const path = carriers.includes('query') && carriers.length === 1 ? 'query.writeKey' : 'headers.authorization';
    return async (req, _res, next) => {
      const key = WriteKeys.keyOf(req, carriers);
      if (!key) throw new ProblemError(401, 'unauthorized', 'Missing write key', [{ path, message: `expected ${expected}` }]);
      const source = await this.resolve(key);
      if (!source) throw new ProblemError(401, 'unknown-write-key', 'Unknown write key', [{ path, message: 'no source has this write key' }]);
      req.source = source;
      next();
    };
  }
}
