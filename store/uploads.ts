import { randomBytes } from 'node:crypto';
import type { Binary, Collection } from 'mongodb';
import type { StoredEvent } from '../domain/event';
import type { UploadRejection, UploadState } from '../domain/uploads';
import { COLLECTIONS, deleteByIds, forEachConcurrently, idsByOwner, insertKeyed, type Store } from './db';
import { decodeEvents, encodeEvents } from './deflatedBson';
import { UploadKeys } from './uploadKeys';
import { VersionClaims } from './versionClaims';

/** Where an import stands: saved after each staged chunk is appended, so a retried import resumes there. */
export interface ImportCheckpoint {
  /** Staged chunks in the source log; the next to append is this one. */
  chunks: number;
  /** Rows of those chunks in the log. */
  rows: number;
  /** Of `rows`, those an interrupted attempt had appended already (they came back as duplicates of themselves). */
  resumed: number;
  /** Of `rows`, those the log held from an earlier import (a feed's rows pulled again): not imported by this one. */
  duplicates: number;
  /** Rows of those chunks dropped, not appended: their subject was erased (absent: none). */
  erased?: number;
  /** The source log's head when this import began: a duplicate claimed at or past it was claimed by this import. */
  logFrom?: number;
}

/** Rows an import appended to the log itself: in the log, and not there before it. */
export function rowsImported(imported: ImportCheckpoint): number {
  return imported.rows - imported.duplicates;
}

/** An attempt at an import step: its workflow run, the step's activity in that run, and the attempt's number. */
export interface ImportAttempt {
  runId: string;
  activityId: string;
  attempt: number;
}

/** An upload's checkpoint before any of it is appended. */
export const NOTHING_IMPORTED: ImportCheckpoint = { chunks: 0, rows: 0, resumed: 0, duplicates: 0 };

export interface UploadDoc {
  _id: string;
  sourceId: string;
  state: UploadState;
  rowsReceived: number;
  rowsRejected: number;
  rowsNonProfiling: number;
  /** The first rejected rows (UPLOAD_REJECTIONS_KEPT); `rowsRejected` counts them all. */
  rejections: UploadRejection[];
  /** Staged chunks, final once the file is received. */
  chunks: number;
  imported: ImportCheckpoint;
  startedAt: Date;
  receivedAt: Date | null;
  finishedAt: Date | null;
  error: string | null;
  /** The import step writing the checkpoint, and whether it ended its step (else it stopped half way). */
  importedBy?: ImportAttempt & { stepDone: boolean };
  /** The last progress write while receiving: an upload silent for long was left by its reader. */
  progressAt?: Date;
  /** Sent under an `Idempotency-Key`: the key's document (store/uploadKeys), and, once received whole, the file's fingerprint. */
  keyId?: string;
  createdWith?: string;
}

/** A staged chunk: its events as one binary value (see store/deflatedBson), never read field by field. */
interface StagedChunk {
  _id: string;
  uploadId: string;
  events: Binary;
}

export function newUploadId(): string {
  return `upl_${randomBytes(8).toString('hex')}`;
}

export function stagedChunkId(uploadId: string, n: number): string {
  return `${uploadId}:${n}`;
}

/**
 * Uploads and their staged rows. An upload document has one writer at a time — the API while it
 * receives the file, then the import workflow's activities — except whoever fails one that stopped
 * (the retention run, a later fetch attempt of its feed, a request sent again under its key):
 * state changes take turns under a claim of the upload. Staged chunks are read and written by
 * exact `_id` only.
 */
export class UploadStore {
  private readonly uploads: Collection<UploadDoc>;
  private readonly rows: Collection<StagedChunk>;
  private readonly keys: UploadKeys;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.uploads = store.db.collection<UploadDoc>(COLLECTIONS.uploads);
    this.rows = store.db.collection<StagedChunk>(COLLECTIONS.uploadRows);
    this.keys = new UploadKeys(store);
    this.claims = new VersionClaims(store);
  }

  async create(doc: UploadDoc): Promise<void> {
    await this.uploads.insertOne(doc);
  }

  get(uploadId: string): Promise<UploadDoc | null> {
    return this.uploads.findOne({ _id: uploadId });
  }

  /** A source's uploads, newest first: sorted and cut by the store, so a long history is not all sent for a page. */
  listForSource(sourceId: string, limit: number): Promise<UploadDoc[]> {
    return this.uploads.find({ sourceId }).sort({ startedAt: -1, _id: 1 }).limit(limit).toArray();
  }

  /**
   * Removes the records of uploads that ended before `before`, at most `limit`, except each
   * source's newest ended one and those in `keep`, and the Idempotency-Keys they hold; returns how many. One
   * scan of the uploads: a small document per file. Their staged chunks left already (`dropLeftChunks`).
   */
  async expire(before: Date, keep: ReadonlySet<string>, limit: number): Promise<number> {
    const all = await this.uploads.find({}, { projection: { _id: 1, sourceId: 1, state: 1, startedAt: 1, finishedAt: 1, keyId: 1 } }).toArray();
    const ended = (upload: Pick<UploadDoc, 'state'>) => upload.state === 'completed' || upload.state === 'failed';
    const newest = new Map<string, Pick<UploadDoc, '_id' | 'startedAt'>>();
    for (const upload of all) {
      if (!ended(upload)) continue;
      const known = newest.get(upload.sourceId);
      if (!known || upload.startedAt > known.startedAt) newest.set(upload.sourceId, upload);
    }
    const kept = new Set([...keep, ...[...newest.values()].map((upload) => upload._id)]);
    const old = all.filter((upload) => ended(upload) && upload.finishedAt && upload.finishedAt < before && !kept.has(upload._id)).slice(0, limit);
    // A key goes with the record it stands for (after it, for a run stopped in between leaves a key whose upload is gone: free, as after a refused file).
    const removed = await deleteByIds(this.uploads, old.map((upload) => upload._id));
    await forEachConcurrently(old, 8, async (upload) => {
      if (upload.keyId !== undefined) await this.keys.release(upload.keyId, upload._id);
    });
    return removed;
  }

  /** Forgets an upload refused before any row was read. */
  async remove(uploadId: string): Promise<void> {
    await this.uploads.deleteOne({ _id: uploadId });
  }

  async update(uploadId: string, set: Partial<Omit<UploadDoc, '_id' | 'sourceId'>>): Promise<void> {
    await this.uploads.updateOne({ _id: uploadId }, { $set: set });
  }

  /** Updates an upload still receiving its rows; false when it is not (a later attempt of its feed's fetch failed it). */
  async updateReceiving(uploadId: string, set: Partial<Omit<UploadDoc, '_id' | 'sourceId' | 'state'>> & { state?: 'importing' }): Promise<boolean> {
    return this.exclusive(uploadId, async () => (await this.uploads.updateOne({ _id: uploadId, state: 'receiving' }, { $set: { ...set, progressAt: new Date() } })).matchedCount === 1);
  }

  /**
   * Runs a change of an upload's state, or of its import's owner and checkpoint, as its one writer
   * among these: on FerretDB a conditional update reads, changes and writes back, so a reader's move
   * to importing and another's fail of the same receiving upload could both pass (store/versionClaims).
   * A claim's insert and delete per change: a few per upload, one per progress write and checkpoint.
   */
  private exclusive<T>(uploadId: string, write: () => Promise<T>): Promise<T> {
    return this.claims.exclusive(`${COLLECTIONS.uploads}/${uploadId}`, write);
  }

  /**
   * Fails the uploads still receiving that wrote no progress since `before`: the API process or the
   * fetch reading the file stopped without saying so. One scan of the uploads collection.
   */
  async failStalled(before: Date, at: Date): Promise<number> {
    const receiving = await this.uploads.find({ state: 'receiving' }).toArray();
    let failed = 0;
    for (const upload of receiving) {
      if ((upload.progressAt ?? upload.startedAt) >= before) continue;
      if (await this.finish(upload._id, 'receiving', 'failed', 'abandoned: its file stopped arriving before it was read whole', at)) failed++;
    }
    return failed;
  }

  /**
   * Removes the staged chunks no import will read: those of uploads that ended before `endedBefore`,
   * or are gone. They are left by an import that could not start, a writer stopped between failing
   * its upload and removing its chunks, or a fetch attempt given up on and killed before its next
   * write. One scan of the chunks' ids: the collection holds only uploads in flight and such leftovers.
   */
  async dropLeftChunks(endedBefore: Date): Promise<number> {
    const byUpload = await idsByOwner(this.rows, (id) => id.slice(0, id.lastIndexOf(':')));
    let dropped = 0;
    for (const [uploadId, ids] of byUpload) {
      const upload = await this.get(uploadId);
      if (upload && !(upload.finishedAt && upload.finishedAt < endedBefore)) continue;
      dropped += await deleteByIds(this.rows, ids);
    }
    return dropped;
  }

  /**
   * Makes attempt `by` the only writer of an importing upload's checkpoint: the upload as it was
   * when taken, and whether the attempt before stopped half way (its last appends may be in the log
   * beyond its checkpoint); null when a later attempt of the same step has it, or it is not importing.
   * A run's steps follow one another, so a later step (or run) takes over from whichever held it.
   * An attempt given up on that runs on finds its next checkpoint write refused.
   */
  async claimImport(uploadId: string, by: ImportAttempt): Promise<{ upload: UploadDoc; interrupted: boolean } | null> {
    for (;;) {
      const claimed = await this.exclusive(uploadId, async () => {
        const upload = await this.get(uploadId);
        if (!upload || upload.state !== 'importing') return { taken: null };
        const owner = upload.importedBy;
        if (owner && owner.runId === by.runId && owner.activityId === by.activityId && owner.attempt >= by.attempt) return { taken: null };
        const unchanged = owner ? { 'importedBy.runId': owner.runId, 'importedBy.activityId': owner.activityId, 'importedBy.attempt': owner.attempt } : { importedBy: { $exists: false } };
        const result = await this.uploads.updateOne({ _id: uploadId, state: 'importing', ...unchanged }, { $set: { importedBy: { ...by, stepDone: false } } });
        // An upload imported before steps claimed it has no owner: one with chunks appended may have been interrupted.
        return result.matchedCount === 1 ? { taken: { upload, interrupted: owner ? !owner.stepDone : upload.imported.chunks > 0 } } : null;
      });
      if (claimed) return claimed.taken;
    }
  }

  /** Saves the checkpoint of the import step `by` (and whether the step ended); false when it no longer owns the import. */
  async saveCheckpoint(uploadId: string, by: ImportAttempt, imported: ImportCheckpoint, stepDone = false): Promise<boolean> {
    const owned = { _id: uploadId, state: 'importing' as const, 'importedBy.runId': by.runId, 'importedBy.activityId': by.activityId, 'importedBy.attempt': by.attempt };
    return this.exclusive(uploadId, async () => (await this.uploads.updateOne(owned, { $set: { imported, 'importedBy.stepDone': stepDone } })).matchedCount === 1);
  }

  /** Fails an upload that has not ended, whichever state it is in as this runs; false when it had already ended. */
  async failUnfinished(uploadId: string, error: string, at: Date): Promise<boolean> {
    for (;;) {
      const upload = await this.get(uploadId);
      if (!upload || upload.state === 'completed' || upload.state === 'failed') return false;
      if (await this.finish(uploadId, upload.state, 'failed', error, at)) return true;
    }
  }

  /** Uploads importing whose rows were all received before `before` (one scan of the uploads collection). */
  async importingBefore(before: Date): Promise<UploadDoc[]> {
    const importing = await this.uploads.find({ state: 'importing' }).toArray();
    return importing.filter((upload) => (upload.receivedAt ?? upload.startedAt) < before);
  }

  /** Moves an upload from `from` to a final state; false when it was not in `from` (already moved). */
  async finish(uploadId: string, from: UploadState, state: 'completed' | 'failed', error: string | null, at: Date): Promise<boolean> {
    return this.exclusive(uploadId, async () => (await this.uploads.updateOne({ _id: uploadId, state: from }, { $set: { state, error, finishedAt: at } })).matchedCount === 1);
  }

  /** Stages chunk `n` of an upload; writing it again (a retry) leaves the first write. */
  async stageChunk(uploadId: string, n: number, events: StoredEvent[]): Promise<void> {
    await insertKeyed(this.rows, [{ _id: stagedChunkId(uploadId, n), uploadId, events: encodeEvents(events) }]);
  }

  async readChunk(uploadId: string, n: number): Promise<StoredEvent[] | null> {
    const staged = await this.rows.findOne({ _id: stagedChunkId(uploadId, n) });
    return staged ? decodeEvents<StoredEvent>(staged.events) : null;
  }

  /**
   * Removes the chunks an upload staged before its writer stopped, however far it got: chunks are
   * staged one after the other from 0, so deleting by `_id` in order until one is missing finds them all.
   */
  async dropStaged(uploadId: string): Promise<void> {
    let n = 0;
    while ((await this.rows.deleteOne({ _id: stagedChunkId(uploadId, n) })).deletedCount === 1) n++;
  }

  /** Removes chunks `from`..`count - 1` of an upload (those already gone are skipped). */
  async dropChunks(uploadId: string, count: number, from = 0): Promise<void> {
    // Highest first, one at a time: cut short, what is left is still chunks from `from` on, which `dropStaged` finds.
    for (let n = count - 1; n >= from; n--) await this.rows.deleteOne({ _id: stagedChunkId(uploadId, n) });
  }
}
