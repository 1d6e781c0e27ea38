import type { Collection } from 'mongodb';
import type { StoredIdentityType } from '../domain/identity';
import { COLLECTIONS, isDuplicateKeyError, type Store } from './db';

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

  constructor(store: Store) {
    this.identities = store.db.collection<IdentityDoc>(COLLECTIONS.identities);
    this.links = store.db.collection<IdentityLinkDoc>(COLLECTIONS.identityLinks);
  }

  async resolve(keys: string[]): Promise<Map<string, string>> {
    const docs = await findByIds(this.identities, keys);
    return new Map([...docs].map(([key, doc]) => [key, doc.profileId]));
  }

  async profileIdFor(key: string): Promise<string | null> {
    return (await this.identities.findOne({ _id: key }))?.profileId ?? null;
  }

  addIdentities(docs: IdentityDoc[]): Promise<void> {
    return insertKeyed(this.identities, docs);
  }

  addLinks(docs: IdentityLinkDoc[]): Promise<void> {
    return insertKeyed(this.links, docs);
  }
}
