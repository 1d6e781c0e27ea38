import type { Collection } from 'mongodb';
import { COLLECTIONS, isDuplicateKeyError, type Store } from './db';

/** A cookie-sync partner (`_id` = its slug). */
export interface PartnerDoc {
  _id: string;
  name: string;
  /** The partner's match URL template, with `${DMP_UID}` where our cookie id goes. */
  redirectUrl: string;
  /** The source whose log gets a `cookie_sync` event per recorded sync, if any. */
  sourceId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

/** Sync partners: a small collection, read by exact `_id` on the sync path and listed whole by the admin API. */
export class PartnerStore {
  readonly partners: Collection<PartnerDoc>;

  constructor(store: Store) {
    this.partners = store.db.collection<PartnerDoc>(COLLECTIONS.partners);
  }

  get(id: string): Promise<PartnerDoc | null> {
    return this.partners.findOne({ _id: id });
  }

  list(): Promise<PartnerDoc[]> {
    return this.partners.find({}).sort({ createdAt: 1 }).toArray();
  }

  /** Whether it was created: false when a partner with this id exists. */
  async create(doc: PartnerDoc): Promise<boolean> {
    try {
      await this.partners.insertOne(doc);
      return true;
    } catch (error) {
      if (isDuplicateKeyError(error)) return false;
      throw error;
    }
  }

  async replace(doc: PartnerDoc): Promise<void> {
    await this.partners.replaceOne({ _id: doc._id }, doc);
  }

  async remove(id: string): Promise<void> {
    await this.partners.deleteOne({ _id: id });
  }
}
