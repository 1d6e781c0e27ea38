import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { Store } from './db';
import { VersionClaims } from './versionClaims';

/**
 * A change saved whose Temporal Schedule is still to be made to match it. The API writes the mark
 * with the change (a destination's or a feed source's) and removes it once the schedule is updated;
 * one an API that stopped in between left is the retention run's to finish. A schedule no change
 * is owed to is left as it is, paused from the Temporal UI or not.
 */
export interface ScheduleSyncMark {
  token: string;
  at: Date;
}

export function newScheduleSyncMark(at = new Date()): ScheduleSyncMark {
  return { token: randomBytes(8).toString('hex'), at };
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

  /** Removes `mark` once the schedule matches; a later change's mark stays. */
  async synced(id: string, mark: ScheduleSyncMark): Promise<void> {
    await this.exclusive(id, () => this.collection.updateOne({ _id: id, 'scheduleSync.token': mark.token }, { $unset: { scheduleSync: '' } }));
  }

  /** Documents marked before `before`: changes whose schedule update an API that stopped left owed (a scan of the collection). */
  async owedBefore(before: Date): Promise<T[]> {
    const marked = await this.collection.find({ scheduleSync: { $exists: true } }).toArray();
    return marked.filter((doc) => doc.scheduleSync !== undefined && doc.scheduleSync.at < before) as unknown as T[];
  }

  /** The document as it is now, for a sync that must not use what an earlier read saw. */
  get(id: string): Promise<T | null> {
    return this.collection.findOne({ _id: id }) as unknown as Promise<T | null>;
  }
}
