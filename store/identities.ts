import type { Collection } from 'mongodb';
import type { StoredIdentityType } from '../domain/identity';
import { COLLECTIONS, findByIds, forEachConcurrently, insertKeyed, type Store } from './db';
import { BoundedCache } from './keyedSequence';
import type { IdentityClaim } from '../domain/identityResolution';
import type { ProfileLink } from '../domain/profile';

/** The identity index: `_id` is `<type>:<value>`, so resolving an identity is one read by `_id`. */
export interface IdentityDoc {
  _id: string;
  type: StoredIdentityType;
  profileId: string;
  createdAt: Date;
}

/**
 * An edge of the identity graph between two profile documents: an event showed them to be one
 * person. `_id` is the sorted pair and the identity that joined them (domain/identityResolution `linkId`), so an edge is written once; `profiles` is indexed, so a
 * document's edges are one indexed read.
 */
export interface IdentityLinkDoc extends ProfileLink {
  _id: string;
}

/** What a claim found: see `IdentityIndex.claim`. */
export interface ClaimOutcome {
  /** Keys held before this claim; their owners must be read again. */
  held: string[];
  /** Claims sent to the store, and how many of them it already held. */
  sent: number;
  refused: number;
}

/** How long a process trusts an owner it cached (see IdentityIndex.cache). */
export const CACHE_MAX_AGE_MS = 6 * 3_600_000;

export class IdentityIndex {
  readonly identities: Collection<IdentityDoc>;
  readonly links: Collection<IdentityLinkDoc>;

  /**
   * Identity documents change owner only when an unlink splits a document, and the split document
   * redirects to its parts, so an owner read here stays a right place to start from — for
   * `CACHE_MAX_AGE_MS`: an expired document's empty version leaves with the history window (a day
   * at least), and by then no process routes to it from what it cached.
   */
  private readonly cache: BoundedCache<string, { profileId: string; at: number }>;
  /** Keys this process is inserting claims for, and when those inserts end. */
  private readonly claiming = new Map<string, Promise<void>>();

  constructor(
    store: Store,
    cacheSize = 500_000,
    private readonly clock: () => number = Date.now,
  ) {
    this.identities = store.db.collection<IdentityDoc>(COLLECTIONS.identities);
    this.links = store.db.collection<IdentityLinkDoc>(COLLECTIONS.identityLinks);
    this.cache = new BoundedCache(cacheSize);
  }

  /** A cached owner, while it is young enough to trust. */
  private cachedOwner(key: string): string | undefined {
    const entry = this.cache.get(key);
    return entry && this.clock() - entry.at < CACHE_MAX_AGE_MS ? entry.profileId : undefined;
  }

  private remember(key: string, profileId: string): void {
    this.cache.set(key, { profileId, at: this.clock() });
  }

  /** Owners of the keys this process has cached, and the keys it has not. */
  cached(keys: string[]): { owners: Map<string, string>; missing: string[] } {
    const owners = new Map<string, string>();
    const missing: string[] = [];
    for (const key of keys) {
      const profileId = this.cachedOwner(key);
      if (profileId) owners.set(key, profileId);
      else missing.push(key);
    }
    return { owners, missing };
  }


  /**
   * Claims identities for profile documents. The first claim of a key wins (only an unlink moves it later), so
   * concurrent resolvers agree. A key that another claim in this process is inserting is waited
   * for rather than sent again: a duplicate key makes FerretDB insert its whole slice of the batch
   * one document at a time. Returns the keys already held (by an earlier attempt, by another drain
   * of this process or by another resolver), whose owners the caller must read again, and how many
   * claims went to the store and how many of those it refused.
   */
  async claim(claims: IdentityClaim[], createdAt: Date): Promise<ClaimOutcome> {
    const pending = () => new Set(claims.map((claim) => this.claiming.get(claim.key)).filter((claiming) => claiming !== undefined));
    for (let waits = pending(); waits.size > 0; waits = pending()) await Promise.all(waits);
    const held: string[] = [];
    const docs: IdentityDoc[] = [];
    for (const claim of claims) {
      // Cached since the caller looked (a claim of this process won it, or a read found it): held.
      if (this.cachedOwner(claim.key)) held.push(claim.key);
      else docs.push({ _id: claim.key, type: claim.type, profileId: claim.profileId, createdAt });
    }
    let release = () => {};
    const settled = new Promise<void>((resolve) => (release = resolve));
    for (const doc of docs) this.claiming.set(doc._id, settled);
    try {
      const refused = await insertKeyed(this.identities, docs);
      docs.forEach((doc, index) => {
        if (refused.has(index)) {
          this.cache.delete(doc._id);
          held.push(doc._id);
        } else this.remember(doc._id, doc.profileId);
      });
      return { held, sent: docs.length, refused: refused.size };
    } finally {
      for (const doc of docs) this.claiming.delete(doc._id);
      release();
    }
  }

  /** Reads owners from the store, past the cache (one read by `_id` per key), and caches them; keys it does not hold are absent. */
  async reload(keys: string[]): Promise<Map<string, string>> {
    const owners = new Map<string, string>();
    for (const [key, doc] of await findByIds(this.identities, keys)) {
      this.remember(key, doc.profileId);
      owners.set(key, doc.profileId);
    }
    return owners;
  }

  /** Returns the links this call inserted (the rest were there already). */
  async addLinks(links: IdentityLinkDoc[]): Promise<IdentityLinkDoc[]> {
    const existing = await insertKeyed(this.links, links);
    return links.filter((_, index) => !existing.has(index));
  }

  /** A document's links: one indexed read. */
  linksOf(profileId: string): Promise<IdentityLinkDoc[]> {
    return this.links.find({ profiles: profileId }).toArray();
  }

  /** One delete by `_id` per link: only an unlink removes links, and it removes few. */
  async removeLinks(ids: string[]): Promise<void> {
    await forEachConcurrently(ids, 16, async (id) => {
      await this.links.deleteOne({ _id: id });
    });
  }

  /**
   * Takes claims back, each only while it still names the owner given (one delete by `_id` each),
   * and drops their cached owners. Without an owner the claim goes whoever holds it: an erased
   * identity may be owned by no document. Returns how many were taken back.
   */
  async removeClaims(claims: Array<{ key: string; profileId?: string }>): Promise<number> {
    let removed = 0;
    await forEachConcurrently(claims, 16, async ({ key, profileId }) => {
      const { deletedCount } = await this.identities.deleteOne(profileId === undefined ? { _id: key } : { _id: key, profileId });
      removed += deletedCount;
      this.cache.delete(key);
    });
    return removed;
  }

  /**
   * Moves identities to new owners, each only if it is still owned by `from` (a split moves what its
   * plan saw; an identity claimed since by someone else stays theirs). This is the one change ever
   * made to an identity document, so caches elsewhere may hold the old owner for a while: a split
   * document keeps pointing at its parts (see domain/identitySplit), which keeps them right.
   */
  async reassign(moves: Array<{ key: string; from: string; to: string }>): Promise<void> {
    await forEachConcurrently(moves, 16, async ({ key, from, to }) => {
      await this.identities.updateOne({ _id: key, profileId: from }, { $set: { profileId: to } });
      this.cache.delete(key);
    });
  }
}
