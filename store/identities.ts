import type { Collection } from 'mongodb';
import type { StoredIdentityType } from '../domain/identity';
import { COLLECTIONS, isDuplicateKeyError, type Store } from './db';
import { BoundedCache } from './keyedSequence';

/** The identity index: `_id` is `<type>:<value>`, so resolving an identity is one read by `_id`. */
export interface IdentityDoc {
  _id: string;
  type: StoredIdentityType;
  profileId: string;
  createdAt: Date;
}

/** A recorded claim that two profiles are one person, left for the identity-graph merge to act on. */
export interface IdentityLinkDoc {
  _id: string;
  profiles: [string, string];
  via: string;
  sourceId: string;
  eventId: string;
  createdAt: Date;
}

/** Reads keys concurrently, each by exact `_id` (a `$in` would scan the whole table on FerretDB/SQLite). */
export async function findByIds<T extends { _id: string }>(collection: Collection<T>, ids: string[], concurrency = 32): Promise<Map<string, T>> {
  const found = new Map<string, T>();
  let next = 0;
  async function worker(): Promise<void> {
    while (next < ids.length) {
      const id = ids[next++];
      const doc = (await collection.findOne({ _id: id } as never)) as T | null;
      if (doc) found.set(id, doc);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  return found;
}

/** Inserts keyed documents; a duplicate key means an earlier attempt already wrote it. */
export async function insertKeyed<T extends { _id: string }>(collection: Collection<T>, docs: T[]): Promise<void> {
  if (docs.length === 0) return;
  try {
    await collection.insertMany(docs as never[], { ordered: false });
  } catch (error) {
    const writeErrors = (error as { writeErrors?: Array<{ code: number }> }).writeErrors;
    if (!isDuplicateKeyError(error) || !writeErrors || writeErrors.some((e) => e.code !== 11000)) throw error;
  }
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

  /** Only the profile-writer lock holder adds identities, and new profile ids are deterministic, so a duplicate is an earlier attempt's identical write. */
  async addIdentities(docs: IdentityDoc[]): Promise<void> {
    await insertKeyed(this.identities, docs);
    for (const doc of docs) this.cache.set(doc._id, doc.profileId);
  }

  addLinks(docs: IdentityLinkDoc[]): Promise<void> {
    return insertKeyed(this.links, docs);
  }
}
