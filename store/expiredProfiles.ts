import type { Collection } from 'mongodb';
import { deleteByIds, findByIds, insertKeyed, type Store } from './db';

export const EXPIRED_PROFILES_COLLECTION = 'expired_profiles';

/**
 * What an expired document was known by (domain/profileExpiry): its identity keys, released from the
 * identity graph. Its events stay in the history window (DMP_EVENT_HISTORY_DAYS) after it expired,
 * so a privacy request must still find them by the subject's identity: this record is how, and it
 * leaves with the last of those events.
 */
export interface ExpiredProfileDoc {
  /** The expired document's id. */
  _id: string;
  keys: string[];
  expiryId: string;
  at: Date;
}

/** Records of expired documents, found by document id or by any identity key they held (an indexed field). */
export class ExpiredProfiles {
  private readonly docs: Collection<ExpiredProfileDoc>;

  constructor(store: Store) {
    this.docs = store.db.collection(EXPIRED_PROFILES_COLLECTION);
  }

  /** One insert for many; a retry finds the records its first attempt wrote and leaves them be. */
  async record(docs: ExpiredProfileDoc[]): Promise<void> {
    await insertKeyed(this.docs, docs);
  }

  /** The expired documents that held an identity key. */
  naming(key: string): Promise<ExpiredProfileDoc[]> {
    return this.docs.find({ keys: key }).toArray();
  }

  /** The records of these documents, one read by `_id` each. */
  of(ids: string[]): Promise<Map<string, ExpiredProfileDoc>> {
    return findByIds(this.docs, ids, 16);
  }

  /** Removes the records of these documents; how many there were. */
  forget(ids: string[]): Promise<number> {
    return deleteByIds(this.docs, ids, 16);
  }

  /** Removes the records of documents expired before `before` (one statement; it reads the collection). */
  async forgetBefore(before: Date): Promise<number> {
    return (await this.docs.deleteMany({ at: { $lt: before } })).deletedCount;
  }
}
