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
  /**
   * Set when the partner was deleted. Its id is never reused: profiles keep its users' ids
   * (`partner_uid` `<id>:…`) and its match entries stay until they expire, so a new partner under the
   * same id would join its users to the old one's.
   */
  retiredAt?: Date;
}

/** How a create went: a retired partner's id is taken for good. */
export type PartnerCreated = 'created' | 'exists' | 'retired';

/** Sync partners: a small collection, read by exact `_id` on the sync path and listed whole by the admin API and erasures. */
export class PartnerStore {
  readonly partners: Collection<PartnerDoc>;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.partners = store.db.collection<PartnerDoc>(COLLECTIONS.partners);
    this.claims = new VersionClaims(store);
  }

  /** A partner that has not been deleted. */
  async get(id: string): Promise<PartnerDoc | null> {
    const doc = await this.partners.findOne({ _id: id });
    return doc?.retiredAt ? null : doc;
  }

  /** The partners that have not been deleted. */
  async list(): Promise<PartnerDoc[]> {
    return (await this.everyOne()).filter((doc) => !doc.retiredAt);
  }

  /** Every partner id there has been, deleted ones too: whose match entries an erasure looks for. */
  async everyId(): Promise<string[]> {
    return (await this.everyOne()).map((doc) => doc._id);
  }

  private everyOne(): Promise<PartnerDoc[]> {
    return this.partners.find({}).sort({ createdAt: 1 }).toArray();
  }

  async create(doc: PartnerDoc): Promise<PartnerCreated> {
    try {
      await this.partners.insertOne(doc);
      return 'created';
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
      return (await this.partners.findOne({ _id: doc._id }))?.retiredAt ? 'retired' : 'exists';
    }
  }

  /**
   * Changes the given fields only, so two edits at once keep each other's fields; on FerretDB,
   * which writes a whole document back, also in turn (store/versionClaims).
   */
  async update(id: string, set: Partial<Pick<PartnerDoc, 'name' | 'redirectUrl' | 'sourceId' | 'updatedAt' | 'retiredAt'>>): Promise<void> {
    await this.claims.exclusive(`${COLLECTIONS.partners}/${id}`, () => this.partners.updateOne({ _id: id }, { $set: set }));
  }

  /** Deletes the partner for every reader, keeping its id taken (see `retiredAt`). */
  async retire(id: string, at: Date): Promise<void> {
    await this.update(id, { retiredAt: at, updatedAt: at });
  }
}
