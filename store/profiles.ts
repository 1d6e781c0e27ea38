import type { Collection } from 'mongodb';
import { profileVersionId, type ProfileDoc } from '../domain/profile';
import { COLLECTIONS, type Store } from './db';
import { BoundedCache, firstAbsent } from './keyedSequence';

/**
 * Profiles are stored as versions that are inserted, never updated: on FerretDB an update or delete
 * reads the whole table, an insert does not. The newest version is found by exact-`_id` reads (see
 * keyedSequence). A version carries its own retry guard, so writing the next version is the whole
 * commit of a drain for that profile: a retry finds it and skips the events it already holds.
 * Superseded versions stay until compaction removes them.
 */
export class ProfileStore {
  readonly profiles: Collection<ProfileDoc>;
  /** The newest version this process has seen of each profile: verified with one read before use. */
  private readonly latest: BoundedCache<string, ProfileDoc>;

  constructor(store: Store, cacheSize = 100_000) {
    this.profiles = store.db.collection<ProfileDoc>(COLLECTIONS.profiles);
    this.latest = new BoundedCache(cacheSize);
  }

  private async versionExists(profileId: string, version: number): Promise<boolean> {
    return (await this.profiles.findOne({ _id: profileVersionId(profileId, version) }, { projection: { _id: 1 } })) !== null;
  }

  /**
   * The newest version of a profile, or null when it has none. `trustCache` skips the check for a
   * newer version than the cached one: only for a caller that knows nobody else has written since.
   */
  async get(profileId: string, options: { trustCache?: boolean } = {}): Promise<ProfileDoc | null> {
    const cached = this.latest.get(profileId);
    if (cached && options.trustCache) return structuredClone(cached);
    const head = await firstAbsent((version) => this.versionExists(profileId, version), cached ? cached.version + 1 : 0);
    if (cached && head === cached.version + 1) return structuredClone(cached);
    if (head === 0) return null;
    const doc = await this.profiles.findOne({ _id: profileVersionId(profileId, head - 1) });
    if (doc) this.latest.set(profileId, doc);
    return doc ? structuredClone(doc) : null;
  }

  /** Loads many profiles, a bounded number of reads in flight at once. */
  async load(profileIds: string[], options: { trustCache?: boolean } = {}, concurrency = 16): Promise<Map<string, ProfileDoc>> {
    const found = new Map<string, ProfileDoc>();
    let next = 0;
    const worker = async () => {
      while (next < profileIds.length) {
        const id = profileIds[next++];
        const doc = await this.get(id, options);
        if (doc) found.set(id, doc);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, profileIds.length) }, worker));
    return found;
  }

  /**
   * Inserts new versions in one write. A version that already exists means someone else wrote this
   * profile since it was read: the write fails, and the retry reads again.
   */
  async saveVersions(docs: ProfileDoc[]): Promise<void> {
    if (docs.length === 0) return;
    try {
      await this.profiles.insertMany(docs, { ordered: false });
    } catch (error) {
      for (const doc of docs) this.latest.delete(doc.profileId);
      throw error;
    }
    for (const doc of docs) this.latest.set(doc.profileId, doc);
  }
}
