import { randomUUID } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { StoredIdentityType } from '../domain/identity';
import type { Refusal } from '../domain/identityResolution';
import { COLLECTIONS, findByIds, forEachConcurrently, insertKeyed, upsertRacing, type Store } from './db';
import { BoundedCache } from './keyedSequence';
import { VersionClaims } from './versionClaims';

interface CapMarkerDoc {
  _id: string;
  types: StoredIdentityType[];
  at: Date;
}

interface CapsStampDoc {
  _id: string;
  token: string;
}

/** Up to this many markers, a drain keeps them all; past it, it reads a document's by `_id` each time. */
const KEEP_ALL_MAX = 20_000;

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
  private readonly stamp: Collection<CapsStampDoc>;
  private readonly refusals: Collection<RefusalDoc>;
  private readonly claims: VersionClaims;
  /** Markers read by `_id`, kept until the stamp changes: a marker only gains types, and every marking changes the stamp. */
  private readonly seen = new BoundedCache<string, Set<StoredIdentityType>>(100_000);
  /** Every marker as of a stamp (null: more than `keepAllMax`). */
  private all: { token: string | null; markers: Map<string, Set<StoredIdentityType>> | null } | null = null;

  constructor(
    store: Store,
    private readonly keepAllMax = KEEP_ALL_MAX,
  ) {
    this.markers = store.db.collection<CapMarkerDoc>(COLLECTIONS.identityCaps);
    this.stamp = store.db.collection<CapsStampDoc>(COLLECTIONS.identityCapsStamp);
    this.refusals = store.db.collection<RefusalDoc>(COLLECTIONS.identityRefusals);
    this.claims = new VersionClaims(store);
  }

  /**
   * The capped types of each document that has any. While there are few markers, they are all kept,
   * read again only when the stamp changed: one read by `_id` a call. "Not capped" can then be
   * answered without reading each document's marker, which was most of a drain's reads (a batch of
   * returning visitors adds to thousands of documents). A marker written meanwhile is seen by the
   * next call, as a marker read by `_id` just before it was written would be.
   */
  async capped(profileIds: string[]): Promise<Map<string, Set<StoredIdentityType>>> {
    const all = await this.allMarkers();
    if (all) {
      const found = new Map<string, Set<StoredIdentityType>>();
      for (const id of profileIds) {
        const types = all.get(id);
        if (types) found.set(id, types);
      }
      return found;
    }
    return this.read(profileIds);
  }

  private async allMarkers(): Promise<Map<string, Set<StoredIdentityType>> | null> {
    const token = (await this.stamp.findOne({ _id: 'caps' }))?.token ?? null;
    if (!this.all || this.all.token !== token) {
      // Some document was marked or unmarked since: a marker kept may have gained types.
      this.seen.clear();
      const docs = await this.markers.find({}, { projection: { types: 1 } }).limit(this.keepAllMax + 1).toArray();
      this.all = { token, markers: docs.length > this.keepAllMax ? null : new Map(docs.map((doc) => [doc._id, new Set(doc.types)])) };
    }
    return this.all.markers;
  }

  /** One read by `_id` per document not known capped. */
  private async read(profileIds: string[]): Promise<Map<string, Set<StoredIdentityType>>> {
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

  /**
   * Marks documents capped for types: their partition writers when a fold brings them to a cap, a
   * drain when its batch refused joins to them because its own claims had. A marker only gains
   * types, as a document's identities only grow; two processes marking one document at once take
   * turns (store/versionClaims), as FerretDB's `$addToSet` reads the marker and writes it back, and
   * would lose the types of the one written first. The stamp changes after the markers are in.
   */
  async mark(docs: Array<{ profileId: string; types: StoredIdentityType[] }>, at: Date): Promise<void> {
    await forEachConcurrently(docs, 16, async ({ profileId, types }) => {
      await this.claims.exclusive(`${COLLECTIONS.identityCaps}/${profileId}`, () =>
        upsertRacing(() => this.markers.updateOne({ _id: profileId }, { $addToSet: { types: { $each: types } }, $set: { at } }, { upsert: true })),
      );
    });
    await upsertRacing(() => this.stamp.replaceOne({ _id: 'caps' }, { token: randomUUID() }, { upsert: true }));
  }

  /** Returns the refusals this call inserted (the rest were recorded already). */
  async record(refusals: Array<Omit<Refusal, 'event'> & { cap: number; sourceId: string }>, at: Date): Promise<RefusalDoc[]> {
    const docs: RefusalDoc[] = refusals.map((refusal) => ({
      _id: `${refusal.profileId}|${refusal.key}`,
      profileId: refusal.profileId,
      key: refusal.key,
      type: refusal.type,
      cap: refusal.cap,
      eventId: refusal.eventId,
      sourceId: refusal.sourceId,
      at,
    }));
    const existing = await insertKeyed(this.refusals, docs);
    return docs.filter((_, index) => !existing.has(index));
  }

  /** One delete by `_id` each. */
  async removeRefusals(ids: string[]): Promise<void> {
    await forEachConcurrently(ids, 16, async (id) => {
      await this.refusals.deleteOne({ _id: id });
    });
  }

  /**
   * The cap markers and refusals of documents that expired. Only a capped document has refusals (the
   * drains refuse by the markers), so only those found capped cost more: one delete by `_id` and one
   * indexed read each. The stamp changes when a marker went.
   */
  async forget(profileIds: string[]): Promise<void> {
    let markers = 0;
    await forEachConcurrently([...(await this.capped(profileIds)).keys()], 16, async (profileId) => {
      const { deletedCount } = await this.markers.deleteOne({ _id: profileId });
      markers += deletedCount;
      this.seen.delete(profileId);
      const refusals = await this.refusals.find({ profileId }, { projection: { _id: 1 } }).toArray();
      await this.removeRefusals(refusals.map((refusal) => refusal._id));
    });
    if (markers > 0) await upsertRacing(() => this.stamp.replaceOne({ _id: 'caps' }, { token: randomUUID() }, { upsert: true }));
  }

  /** Refusals of one document (indexed), or the latest overall. */
  list(options: { profileId?: string; limit: number }): Promise<RefusalDoc[]> {
    const filter = options.profileId ? { profileId: options.profileId } : {};
    return this.refusals.find(filter).sort({ at: -1, _id: 1 }).limit(options.limit).toArray();
  }
}
