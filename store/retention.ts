import type { Collection } from 'mongodb';
import { chunkId } from './eventLog';
import { COLLECTIONS, type Store } from './db';
import { routedBatchId, routeId, type MovedBatchDoc } from './profileEvents';

interface RetentionPositionDoc {
  _id: string;
  /** The first chunk (raw log) or routed batch start (routed events) still in the store; for a sweep, when it last finished. */
  from: number;
}

interface SealDoc {
  _id: string;
  accepted: number;
  chunkCreatedAt: Date;
}

/**
 * What leaves the store with age, oldest first, by exact `_id` (the one lookup FerretDB answers
 * from an index): a source's raw log chunks once drained, and routed events once folded and past the
 * history window. Where each stream's removal stands is kept, so a run never scans what is gone.
 */
export class RetentionStore {
  private readonly positions: Collection<RetentionPositionDoc>;
  private readonly chunks: Collection<{ _id: string; createdAt: Date }>;
  private readonly seals: Collection<SealDoc>;
  private readonly batches: Collection<{ _id: string; to: number; createdAt: Date }>;
  private readonly routes: Collection<{ _id: string }>;
  private readonly moved: Collection<MovedBatchDoc>;

  constructor(store: Store) {
    this.positions = store.db.collection<RetentionPositionDoc>(COLLECTIONS.retentionPositions);
    this.chunks = store.db.collection(COLLECTIONS.events);
    this.seals = store.db.collection<SealDoc>(COLLECTIONS.eventSeals);
    this.batches = store.db.collection(COLLECTIONS.profileEvents);
    this.routes = store.db.collection(COLLECTIONS.eventRoutes);
    this.moved = store.db.collection<MovedBatchDoc>(COLLECTIONS.movedEventBatches);
  }

  /** When a periodic sweep (`name`) last finished, in ms since the epoch; null before its first. */
  async lastSwept(name: string): Promise<number | null> {
    return (await this.positions.findOne({ _id: `sweep:${name}` }))?.from ?? null;
  }

  async swept(name: string, at: Date): Promise<void> {
    await this.advance(`sweep:${name}`, at.getTime());
  }

  private async from(stream: string): Promise<number> {
    return (await this.positions.findOne({ _id: stream }))?.from ?? 0;
  }

  private async advance(stream: string, from: number): Promise<void> {
    await this.positions.replaceOne({ _id: stream }, { from }, { upsert: true });
  }

  /**
   * Removes a source's drained chunks (below `cursor`) sealed before `before`, at most `limit`, and
   * the range a batch starting at one of them routed: only a retry of that batch's turn reads it,
   * and such a turn ended before the drain moved past it. A chunk goes after its seal is read and
   * before the seal goes, so an interrupted run resumes.
   */
  async expireRawChunks(sourceId: string, cursor: number, before: Date, limit: number): Promise<{ chunks: number; events: number }> {
    const stream = `raw:${sourceId}`;
    let seq = await this.from(stream);
    const removed = { chunks: 0, events: 0 };
    while (seq < cursor && removed.chunks < limit) {
      const id = chunkId(sourceId, seq);
      const seal = await this.seals.findOne({ _id: id }, { projection: { accepted: 1, chunkCreatedAt: 1 } });
      // A chunk whose writer died before sealing it is as old as the chunk says (writers trust a slot hint that young).
      const createdAt = seal?.chunkCreatedAt ?? (await this.chunks.findOne({ _id: id }, { projection: { createdAt: 1 } }))?.createdAt;
      if (createdAt && createdAt >= before) break;
      await this.routes.deleteOne({ _id: routeId(sourceId, seq) });
      await this.chunks.deleteOne({ _id: id });
      await this.seals.deleteOne({ _id: id });
      removed.chunks++;
      removed.events += seal?.accepted ?? 0;
      seq++;
    }
    if (removed.chunks > 0) await this.advance(stream, seq);
    return removed;
  }

  /**
   * Removes batches of moved events (an unlink's split, late events after it) written before
   * `before`, at most `limit`: they leave one history window after their move, however old their
   * events. Found through their registrations, a collection of one small document per move that
   * is read whole (moves are rare); each batch goes before its registration, so an interrupted run
   * resumes.
   */
  async expireMovedBatches(before: Date, limit: number): Promise<number> {
    const due = await this.moved.find({ createdAt: { $lt: before } }, { projection: { _id: 1 } }).limit(limit).toArray();
    for (const { _id } of due) {
      await this.batches.deleteOne({ _id });
      await this.moved.deleteOne({ _id });
    }
    return due.length;
  }

  /** Removes a partition's routed batches of a source that are folded (end at or below `cursor`) and older than `before`. */
  async expireRoutedBatches(partition: number, sourceId: string, cursor: number, before: Date, limit: number): Promise<number> {
    const stream = `routed:${partition}:${sourceId}`;
    let from = await this.from(stream);
    let removed = 0;
    while (from < cursor && removed < limit) {
      const id = routedBatchId(partition, sourceId, from);
      const batch = await this.batches.findOne({ _id: id }, { projection: { to: 1, createdAt: 1 } });
      if (!batch || batch.to > cursor || batch.createdAt >= before) break;
      await this.batches.deleteOne({ _id: id });
      removed++;
      from = batch.to;
    }
    if (removed > 0) await this.advance(stream, from);
    return removed;
  }
}
