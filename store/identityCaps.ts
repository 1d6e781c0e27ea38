import type { Collection } from 'mongodb';
import type { StoredIdentityType } from '../domain/identity';
import type { Refusal } from '../domain/identityResolution';
import { COLLECTIONS, findByIds, insertKeyed, type Store } from './db';
import { BoundedCache } from './keyedSequence';

interface CapMarkerDoc {
  _id: string;
  types: StoredIdentityType[];
  at: Date;
}

/** A join the caps refused, as recorded. */
export interface RefusalDoc {
  _id: string;
  profileId: string;
  key: string;
  type: StoredIdentityType;
  cap: number;
  eventId: string;
  sourceId: string;
  at: Date;
}

/**
 * Over-merge protection in the store: markers of documents that hold their cap of an identity type
 * (written by the document's partition writer, read by drains before they join anything to it), and
 * the record of joins refused.
 */
export class IdentityCapStore {
  private readonly markers: Collection<CapMarkerDoc>;
  private readonly refusals: Collection<RefusalDoc>;
  /** A marker seen is kept: a document's identities only grow (a split retires it, marker and all, for new parts). */
  private readonly seen = new BoundedCache<string, Set<StoredIdentityType>>(100_000);

  constructor(store: Store) {
    this.markers = store.db.collection<CapMarkerDoc>(COLLECTIONS.identityCaps);
    this.refusals = store.db.collection<RefusalDoc>(COLLECTIONS.identityRefusals);
  }

  /** The capped types of each document that has any: one read by `_id` per document not known capped. */
  async capped(profileIds: string[]): Promise<Map<string, Set<StoredIdentityType>>> {
    const found = new Map<string, Set<StoredIdentityType>>();
    const unknown: string[] = [];
    for (const id of new Set(profileIds)) {
      const types = this.seen.get(id);
      if (types) found.set(id, types);
      else unknown.push(id);
    }
    for (const [id, doc] of await findByIds(this.markers, unknown)) {
      const types = new Set(doc.types);
      this.seen.set(id, types);
      found.set(id, types);
    }
    return found;
  }

  /** Only the document's partition writer marks it. */
  async mark(profileId: string, types: StoredIdentityType[], at: Date): Promise<void> {
    await this.markers.replaceOne({ _id: profileId }, { types, at }, { upsert: true });
  }

  async record(refusals: Array<Omit<Refusal, 'event'> & { cap: number; sourceId: string }>, at: Date): Promise<void> {
    await insertKeyed(
      this.refusals,
      refusals.map((refusal) => ({
        _id: `${refusal.profileId}|${refusal.key}`,
        profileId: refusal.profileId,
        key: refusal.key,
        type: refusal.type,
        cap: refusal.cap,
        eventId: refusal.eventId,
        sourceId: refusal.sourceId,
        at,
      })),
    );
  }

  /** Refusals of one document (indexed), or the latest overall. */
  list(options: { profileId?: string; limit: number }): Promise<RefusalDoc[]> {
    const filter = options.profileId ? { profileId: options.profileId } : {};
    return this.refusals.find(filter).sort({ at: -1, _id: 1 }).limit(options.limit).toArray();
  }
}
