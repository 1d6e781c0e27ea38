import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { Store } from './db';
import { VersionClaims } from './versionClaims';

/**
 * A change saved whose Temporal Schedule is still to be made to match it. The API writes the mark
 * with the change (a destination's, a feed source's, a lookalike run's) and removes it once the
 * schedule is updated; one an API that stopped in between left is the retention run's to finish —
 * or, for a create never answered, to undo, as the API does when its create fails. A schedule no
 * change is owed to is left as it is, paused from the Temporal UI or not.
 */
export interface ScheduleSyncMark {
  token: string;
  at: Date;
  /** The mark of a create: one left owed is of a create never answered, undone rather than finished. */
  create?: true;
}

export function newScheduleSyncMark(at = new Date(), create = false): ScheduleSyncMark {
  return { token: randomBytes(8).toString('hex'), at, ...(create && { create: true as const }) };
}

interface Marked {
  _id: string;
  scheduleSync?: ScheduleSyncMark;
}

/** The marks of one collection's documents. */
export class ScheduleSyncs<T extends Marked> {
  private readonly claims: VersionClaims;
  private readonly collection: Collection<Marked>;

  constructor(store: Store, collection: Collection<T>) {
    this.claims = new VersionClaims(store);
    this.collection = collection as unknown as Collection<Marked>;
  }

  /**
   * Runs `update` of document `id` as its only writer among those writing through this: FerretDB
   * reads, changes and writes back a document, so a mark removed while another change was saved
   * could undo that change.
   */
  exclusive<R>(id: string, update: () => Promise<R>): Promise<R> {
    return this.claims.exclusive(`${this.collection.collectionName}/${id}`, update);
  }

  /**
   * Makes the schedule of document `id` match it and removes `mark` (a later change's mark stays).
   * `sync` is given the document as it is now (null once it is gone), and is called again while
   * what the schedule follows (`follows`) moved since: of two changes saved at once, each request
   * reads the other's or syncs after it, so the last schedule update made is of the newest document.
   */
  async settle(id: string, mark: ScheduleSyncMark, sync: (doc: T | null) => Promise<unknown>, follows: (doc: T) => unknown[]): Promise<{ exists: boolean }> {
    const followed = (doc: T | null) => (doc === null ? null : JSON.stringify(follows(doc)));
    let synced: T | null = null;
    for (let current = await this.get(id); synced === null || followed(current) !== followed(synced); current = await this.get(id)) {
      await sync(current);
      if (current === null) return { exists: false };
      synced = current;
    }
    const cleared = await this.exclusive(id, () => this.collection.updateOne({ _id: id, 'scheduleSync.token': mark.token }, { $unset: { scheduleSync: '' } }));
    // Removed between the last read and the mark's removal (an unanswered create undone): gone.
    return { exists: cleared.matchedCount === 1 || (await this.get(id)) !== null };
  }

  /** Removes the document while it still holds `mark` (no request answered for it meanwhile); whether it did. */
  async deleteIfMarked(id: string, mark: ScheduleSyncMark): Promise<boolean> {
    return (await this.exclusive(id, () => this.collection.deleteOne({ _id: id, 'scheduleSync.token': mark.token }))).deletedCount === 1;
  }

  /** Documents marked before `before`: changes whose schedule update an API that stopped left owed (a scan of the collection). */
  async owedBefore(before: Date): Promise<Array<T & { scheduleSync: ScheduleSyncMark }>> {
    const marked = await this.collection.find({ scheduleSync: { $exists: true } }).toArray();
    return marked.filter((doc) => doc.scheduleSync !== undefined && doc.scheduleSync.at < before) as unknown as Array<T & { scheduleSync: ScheduleSyncMark }>;
  }

  private get(id: string): Promise<T | null> {
    return this.collection.findOne({ _id: id }) as unknown as Promise<T | null>;
  }
}
