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

export class IdentityIndex {
  readonly identities: Collection<IdentityDoc>;
  readonly links: Collection<IdentityLinkDoc>;

  /**
   * Identity documents change owner only when an unlink splits a document, and the split document
   * redirects to its parts, so an owner read here stays a right place to start from.
   */
  private readonly cache: BoundedCache<string, string>;

  constructor(store: Store, cacheSize = 500_000) {
    this.identities = store.db.collection<IdentityDoc>(COLLECTIONS.identities);
    this.links = store.db.collection<IdentityLinkDoc>(COLLECTIONS.identityLinks);
    this.cache = new BoundedCache(cacheSize);
  }

  /** Maps each known identity key to its profile id; unknown keys are absent from the result. */
  async resolve(keys: string[]): Promise<Map<string, string>> {
    const resolved = new Map<string, string>();
    const missing: string[] = [];
    for (const key of keys) {
      const profileId = this.cache.get(key);
      if (profileId) resolved.set(key, profileId);
      else missing.push(key);
    }
    for (const [key, doc] of await findByIds(this.identities, missing)) {
      this.cache.set(key, doc.profileId);
      resolved.set(key, doc.profileId);
    }
    return resolved;
  }

  async profileIdFor(key: string): Promise<string | null> {
    return (await this.identities.findOne({ _id: key }))?.profileId ?? null;
  }

  /**
   * Claims identities for profile documents. The first claim of a key wins and never changes, so
   * concurrent resolvers agree; returns the keys already held (by an earlier attempt or by another
   * resolver), whose owners the caller must read again.
   */
  async claim(claims: IdentityClaim[], createdAt: Date): Promise<string[]> {
    const docs = claims.map((claim) => ({ _id: claim.key, type: claim.type, profileId: claim.profileId, createdAt }));
    const held = await insertKeyed(this.identities, docs);
    docs.forEach((doc, index) => {
      if (held.has(index)) this.cache.delete(doc._id);
      else this.cache.set(doc._id, doc.profileId);
    });
    return [...held].map((index) => docs[index]._id);
  }

  /** Reads owners from the store, past the cache (for keys whose claim just lost). */
  async reload(keys: string[]): Promise<Map<string, string>> {
    const owners = new Map<string, string>();
    for (const [key, doc] of await findByIds(this.identities, keys)) {
      this.cache.set(key, doc.profileId);
      owners.set(key, doc.profileId);
    }
    return owners;
  }

  async addLinks(links: IdentityLinkDoc[]): Promise<void> {
    await insertKeyed(this.links, links);
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
