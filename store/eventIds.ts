import type { Collection, Db } from 'mongodb';
import { forEachConcurrently, insertKeyed } from './db';
import type { VersionClaims } from './versionClaims';

export interface EventIdDoc {
  _id: string;
  chunk: number;
}

const PREFIX = 'event_ids_';

/**
 * The ids a drain found unclaimed in a chunk whose writer it gave up waiting for (`_id` = the chunk's
 * id). The drain skipped them; if the writer claims them afterwards, its append fails unacknowledged,
 * and the retry takes those claims back from the fenced chunk instead of finding them duplicates.
 * Few and small: read by `sourceId` without an index.
 */
interface FenceDoc {
  _id: string;
  sourceId: string;
  chunk: number;
  /** Claim keys, as in the generations (none until confirmed). */
  ids: string[];
  /** The chunk's creation: its claims were made in the generations of this time. */
  at: Date;
  /** Written before the drain's seal, which may lose to the writer's: confirmed once the drain's is known to stand. */
  confirmed: boolean;
}

export const EVENT_ID_FENCES = 'event_id_fences';
const TAKE_BACKS_AT_ONCE = 16;

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

  /**
   * Records that a chunk is about to be fenced, before the drain's seal decides it (see
   * EventLog.fence): unconfirmed, and without ids, until that seal is known to be the drain's. Safe to repeat.
   */
  async recordFence(doc: Omit<FenceDoc, 'confirmed' | 'ids'>): Promise<void> {
    await insertKeyed(this.fences(), [{ ...doc, ids: [], confirmed: false }]);
  }

  /** The drain's seal stands: the fence holds the ids it skipped (written whole if it went missing). */
  async confirmFence(doc: Omit<FenceDoc, 'confirmed'>): Promise<void> {
    if ((await this.fences().updateOne({ _id: doc._id }, { $set: { confirmed: true, ids: doc.ids } })).matchedCount === 0) await insertKeyed(this.fences(), [{ ...doc, confirmed: true }]);
  }

  /** The writer's seal won: nothing was skipped for want of a claim. */
  async dropFence(id: string): Promise<void> {
    await this.fences().deleteOne({ _id: id });
  }

  /**
   * Of the `held` indexes of a claim for `docs`, takes back those a fenced chunk of `sourceId`
   * claimed and skipped: they are claimed for `docs`' chunk instead and leave `held`. One look at the
   * source's fences (few: only chunks whose writer stalled past the drain's grace) when anything is
   * held; `skippedBy` answers for a fence not confirmed yet (from its seal: null when the writer's).
   */
  async takeBack(sourceId: string, docs: EventIdDoc[], held: Set<number>, at: number, skippedBy: (chunk: number) => Promise<string[] | null>, claims: VersionClaims): Promise<void> {
    if (held.size === 0) return;
    const fencedBy = new Map<string, number[]>();
    for (const fence of await this.fences().find({ sourceId }).toArray()) {
      const ids = fence.confirmed ? fence.ids : ((await skippedBy(fence.chunk)) ?? []);
      for (const id of ids) fencedBy.set(id, [...(fencedBy.get(id) ?? []), fence.chunk]);
    }
    if (fencedBy.size === 0) return;
    const current = this.number(at);
    // Concurrently: a chunk whose claims all came late has thousands to take back, each a few round trips.
    await forEachConcurrently([...held], TAKE_BACKS_AT_ONCE, async (index) => {
      const { _id, chunk } = docs[index];
      for (const fenced of fencedBy.get(_id) ?? []) {
        // Conditional on the fenced chunk still holding the claim: a repeat within `docs`, or another
        // retry that took it first, finds it held by someone else and stays a duplicate. Through a
        // claim of the change, as FerretDB's conditional updates are not atomic.
        const took = await claims.hold(`${EVENT_ID_FENCES}/${_id}@${fenced}`, async () => {
          let taken = false;
          for (const generation of [current, current - 1]) {
            taken = (await this.collection(generation).updateOne({ _id, chunk: fenced }, { $set: { chunk } })).modifiedCount > 0 || taken;
          }
          // A generation the fenced chunk's writer had not claimed in yet is claimed now, so its late claim there is refused.
          if (taken) for (const generation of [current, current - 1]) await insertKeyed(this.collection(generation), [{ _id, chunk }]);
          return taken;
        });
        if (took?.value) {
          held.delete(index);
          break;
        }
      }
    });
  }

  /** Removes erased ids from the fences (see SubjectErasure.forgetIds): how many fences changed. */
  static async forgetFenced(db: Db, ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    const fences = db.collection<FenceDoc>(EVENT_ID_FENCES);
    let changed = 0;
    for (const fence of await fences.find({ ids: { $in: ids } }, { projection: { _id: 1 } }).toArray()) {
      changed += (await fences.updateOne({ _id: fence._id }, { $pullAll: { ids } })).modifiedCount;
    }
    return changed;
  }

  private fences(): Collection<FenceDoc> {
    return this.db.collection<FenceDoc>(EVENT_ID_FENCES);
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
    // A fence matters while its chunk's claims can: they live in the generations kept.
    await this.fences().deleteMany({ at: { $lt: new Date((this.number(now) - 1) * this.windowMs) } });
    return { generations: names.length, ids };
  }
}
