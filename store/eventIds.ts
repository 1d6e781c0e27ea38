import type { Collection, Db } from 'mongodb';
import { insertKeyed } from './db';

export interface EventIdDoc {
  _id: string;
  chunk: number;
}

const PREFIX = 'event_ids_';

/**
 * The ids of accepted events, kept for the dedupe window and no longer. On FerretDB a delete costs a
 * table scan per statement, so old ids never leave one by one: they are written to generations (one
 * collection per window-long stretch of time, named after the window and its number), and a
 * generation leaves whole, dropped by the retention run once nothing can need it. A claim inserts
 * into the previous generation and the current one, so an id stays a duplicate for at least the
 * window (at most two) after it was accepted — at the price of a second insert per event.
 */
export class EventIdGenerations {
  private readonly windowMs: number;

  constructor(
    private readonly db: Db,
    readonly windowHours: number,
  ) {
    this.windowMs = windowHours * 3_600_000;
  }

  private number(at: number): number {
    return Math.floor(at / this.windowMs);
  }

  collectionName(generation: number): string {
    return `${PREFIX}${this.windowHours}h_${generation}`;
  }

  private collection(generation: number): Collection<EventIdDoc> {
    return this.db.collection<EventIdDoc>(this.collectionName(generation));
  }

  /** The generations in the store now, under any window: where an id may still be held. */
  static async live(db: Db): Promise<string[]> {
    return (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).filter((name) => name.startsWith(PREFIX));
  }

  /** Claims ids for chunk `seq` at time `at`; returns the indexes already claimed (the duplicates). */
  async claim(docs: EventIdDoc[], at: number): Promise<Set<number>> {
    const current = this.number(at);
    const held = await insertKeyed(this.collection(current - 1), docs);
    const fresh = docs.map((doc, index) => ({ doc, index })).filter(({ index }) => !held.has(index));
    const heldNow = await insertKeyed(
      this.collection(current),
      fresh.map(({ doc }) => doc),
    );
    for (const position of heldNow) held.add(fresh[position].index);
    return held;
  }

  /** Who claimed an id around time `at`: the current generation answers first (a claim writes the previous one first). */
  async owner(id: string, at: number): Promise<EventIdDoc | null> {
    const current = this.number(at);
    return (await this.collection(current).findOne({ _id: id })) ?? this.collection(current - 1).findOne({ _id: id });
  }

  /**
   * Drops the generations nothing can need at time `now`: older than the previous one, or written
   * under another window (a changed setting starts afresh). Returns the ids dropped with them.
   */
  async dropExpired(now: number): Promise<{ generations: number; ids: number }> {
    const keep = new Set([this.collectionName(this.number(now)), this.collectionName(this.number(now) - 1)]);
    const names = (await this.db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).filter((name) => name.startsWith(PREFIX) && !keep.has(name));
    let ids = 0;
    for (const name of names) {
      ids += await this.db.collection(name).estimatedDocumentCount();
      await this.db.collection(name).drop();
    }
    return { generations: names.length, ids };
  }
}
