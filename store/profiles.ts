import type { AnyBulkWriteOperation, Collection } from 'mongodb';
import type { ProfileDoc } from '../domain/profile';
import { COLLECTIONS, type Store } from './db';
import { findByIds } from './identities';

export class ProfileStore {
  readonly profiles: Collection<ProfileDoc>;

  constructor(store: Store) {
    this.profiles = store.db.collection<ProfileDoc>(COLLECTIONS.profiles);
  }

  load(ids: string[]): Promise<Map<string, ProfileDoc>> {
    return findByIds(this.profiles, ids);
  }

  get(id: string): Promise<ProfileDoc | null> {
    return this.profiles.findOne({ _id: id });
  }

  /** Whole-document replaces by `_id`: each profile's new state, retry guard included, lands in one write. */
  async saveAll(docs: ProfileDoc[]): Promise<void> {
    if (docs.length === 0) return;
    const operations: AnyBulkWriteOperation<ProfileDoc>[] = docs.map((doc) => ({
      replaceOne: { filter: { _id: doc._id }, replacement: doc, upsert: true },
    }));
    await this.profiles.bulkWrite(operations, { ordered: false });
  }
}
