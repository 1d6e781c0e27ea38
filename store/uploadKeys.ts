import type { Collection } from 'mongodb';
import { insertKeyed, type Store } from './db';
import { VersionClaims } from './versionClaims';

export const UPLOAD_KEYS = 'upload_keys';

interface UploadKeyDoc {
  /** Derived from the source and the key (api/uploads `uploadKeyId`). */
  _id: string;
  /** The upload the key stands for now. */
  uploadId: string;
  at: Date;
}

/**
 * Which upload each `Idempotency-Key` of a source stands for. A key passes from an upload that
 * imported nothing (it failed first, or its file stopped arriving) to the next request under it,
 * so it is a document of its own rather than the upload's id. One small document per keyed upload,
 * read and written by `_id`; it leaves with its upload's record.
 */
export class UploadKeys {
  private readonly keys: Collection<UploadKeyDoc>;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.keys = store.db.collection<UploadKeyDoc>(UPLOAD_KEYS);
    this.claims = new VersionClaims(store);
  }

  /** Makes `uploadId` the key's upload unless it has one: the upload it stands for now. */
  async claim(keyId: string, uploadId: string): Promise<string> {
    if ((await insertKeyed(this.keys, [{ _id: keyId, uploadId, at: new Date() }])).size === 0) return uploadId;
    return (await this.keys.findOne({ _id: keyId }))?.uploadId ?? (await this.claim(keyId, uploadId));
  }

  /** Passes the key from upload `from` to `to`; false when another request took it from `from` first. */
  async takeOver(keyId: string, from: string, to: string): Promise<boolean> {
    return this.whileHeldBy(keyId, from, async () => (await this.keys.updateOne({ _id: keyId, uploadId: from }, { $set: { uploadId: to, at: new Date() } })).matchedCount === 1);
  }

  /** Forgets the key while it stands for `uploadId` (its record is removed). */
  async release(keyId: string, uploadId: string): Promise<void> {
    await this.whileHeldBy(keyId, uploadId, async () => (await this.keys.deleteOne({ _id: keyId, uploadId })).deletedCount === 1);
  }

  /** Changes the key only as the one writer of it as it stands for `uploadId`: on FerretDB two conditional writes could both pass. */
  private async whileHeldBy(keyId: string, uploadId: string, write: () => Promise<boolean>): Promise<boolean> {
    return (await this.claims.hold(`${UPLOAD_KEYS}/${keyId}@${uploadId}`, write))?.value ?? false;
  }
}
