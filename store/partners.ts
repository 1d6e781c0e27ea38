import type { Collection } from 'mongodb';
import { COLLECTIONS, isDuplicateKeyError, type Store } from './db';
import { VersionClaims } from './versionClaims';

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
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.partners = store.db.collection<PartnerDoc>(COLLECTIONS.partners);
    this.claims = new VersionClaims(store);
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

  /**
   * Changes the given fields only, so two edits at once keep each other's fields; on FerretDB,
   * which writes a whole document back, also in turn (store/versionClaims).
   */
  async update(id: string, set: Partial<Pick<PartnerDoc, 'name' | 'redirectUrl' | 'sourceId' | 'updatedAt'>>): Promise<void> {
    await this.claims.exclusive(`${COLLECTIONS.partners}/${id}`, () => this.partners.updateOne({ _id: id }, { $set: set }));
  }

  async remove(id: string): Promise<void> {
    await this.partners.deleteOne({ _id: id });
  }
}
