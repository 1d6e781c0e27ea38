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

/**
 * Where a route accepts the write key: `Authorization: Bearer`, HTTP Basic user, the `writeKey` query
 * parameter (tags, pixels), or the JSON body's `writeKey` (the Segment API's writeKey authentication;
 * the body must be parsed first).
 */
export type WriteKeyCarrier = 'bearer' | 'basic' | 'query' | 'body';

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

  /** The write keys a request carries in `carriers`, in their order, each once. */
  static keysOf(req: Request, carriers: readonly WriteKeyCarrier[]): string[] {
    const keys: string[] = [];
    for (const carrier of carriers) {
      const body = req.body as { writeKey?: unknown } | undefined;
      const key =
        carrier === 'bearer'
          ? bearer(req.headers.authorization)
          : carrier === 'basic'
            ? basicUser(req.headers.authorization)
            : carrier === 'query'
              ? typeof req.query.writeKey === 'string' ? req.query.writeKey : null
              : body && typeof body === 'object' && typeof body.writeKey === 'string' ? body.writeKey : null;
      if (key && !keys.includes(key)) keys.push(key);
    }
    return keys;
  }

  /** The write key a request carries in one of `carriers` (the first), or null. */
  static keyOf(req: Request, carriers: readonly WriteKeyCarrier[]): string | null {
    return WriteKeys.keysOf(req, carriers)[0] ?? null;
  }

  /**
   * Middleware: sets `req.source` or answers 401 naming where the key was expected. Of several keys
   * (a Segment SDK under OAuth sends its access token as the Bearer and the write key in the body),
   * the first a source has counts.
   */
  require(carriers: readonly WriteKeyCarrier[] = ['bearer']): RequestHandler {
    const names: Record<WriteKeyCarrier, string> = {
      bearer: '"Authorization: Bearer <write key>"',
      basic: 'HTTP Basic with the write key as user',
      query: 'the writeKey query parameter',
      body: "the body's writeKey",
    };
    const expected = carriers.map((carrier) => names[carrier]).join(' or ');
    const path = carriers.includes('query') && carriers.length === 1 ? 'query.writeKey' : 'headers.authorization';
    return async (req, _res, next) => {
      const keys = WriteKeys.keysOf(req, carriers);
      if (keys.length === 0) throw new ProblemError(401, 'unauthorized', 'Missing write key', [{ path, message: `expected ${expected}` }]);
      for (const key of keys) {
        const source = await this.resolve(key);
        if (source) {
          req.source = source;
          return next();
        }
      }
      throw new ProblemError(401, 'unknown-write-key', 'Unknown write key', [{ path, message: 'no source has this write key' }]);
    };
  }
}
