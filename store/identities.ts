import type { Collection } from 'mongodb';
import type { StoredIdentityType } from '../domain/identity';
import { COLLECTIONS, findByIds, insertKeyed, type Store } from './db';
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
 * person. `_id` is the sorted pair, so an edge is written once; `profiles` is indexed, so a
 * document's edges are one indexed read.
 */
export interface IdentityLinkDoc extends ProfileLink {
  _id: string;
}

export class IdentityIndex {
  readonly identities: Collection<IdentityDoc>;
  readonly links: Collection<IdentityLinkDoc>;

  /** Identity documents are written once and never changed, so what was read or written stays true. */
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

  /**
   * The connected component of a profile document: every document reachable over links, and the
   * links themselves. One indexed read per document of the component.
   */
  async componentOf(profileId: string): Promise<{ profileIds: string[]; links: IdentityLinkDoc[] }> {
    const seen = new Set([profileId]);
    const links = new Map<string, IdentityLinkDoc>();
    let frontier = [profileId];
    while (frontier.length > 0) {
      const found = await Promise.all(frontier.map((id) => this.links.find({ profiles: id }).toArray()));
      frontier = [];
      for (const link of found.flat()) {
        links.set(link._id, link);
        for (const id of link.profiles) {
          if (!seen.has(id)) {
            seen.add(id);
            frontier.push(id);
          }
        }
      }
    }
    return { profileIds: [...seen].sort(), links: [...links.values()] };
  }
}
