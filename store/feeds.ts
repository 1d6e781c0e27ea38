import { createHash, randomBytes } from 'node:crypto';
import { Binary, type Collection } from 'mongodb';
import type { CursorWindow, FeedPullState, FeedTrigger } from '../domain/feeds';
import { COLLECTIONS, deleteByIds, isDuplicateKeyError, type Store } from './db';
import { VersionClaims } from './versionClaims';

/** A file of a drop folder, as listed: a file is new while no pull imported this name, size and modification time. */
export interface FeedFile {
  name: string;
  size: number;
  modifiedAt: Date;
}

export function feedFileKey(file: FeedFile): string {
  return `${file.name}|${file.size}|${file.modifiedAt.getTime()}`;
}

/** Bytes of a file's digest (the first of SHA-256 over its key): what a feed keeps of each file it imported. */
const FILE_DIGEST_BYTES = 16;

/** A file's digest, as text to look up. */
export function feedFileDigest(file: FeedFile): string {
  return createHash('sha256').update(feedFileKey(file)).digest().subarray(0, FILE_DIGEST_BYTES).toString('base64');
}

/** Digests as stored: one binary value, 16 bytes each (a file's name alone can take 255). */
export function packFileDigests(digests: Iterable<string>): Binary {
  const list = [...digests];
  const bytes = Buffer.alloc(list.length * FILE_DIGEST_BYTES);
  list.forEach((digest, n) => Buffer.from(digest, 'base64').copy(bytes, n * FILE_DIGEST_BYTES));
  return new Binary(bytes);
}

function unpackFileDigests(packed: Binary): string[] {
  const bytes = Buffer.from(packed.buffer.subarray(0, packed.length()));
  return Array.from({ length: bytes.length / FILE_DIGEST_BYTES }, (_, n) => bytes.subarray(n * FILE_DIGEST_BYTES, (n + 1) * FILE_DIGEST_BYTES).toString('base64'));
}

/** The digests of the files a feed imported, of those still in its folder (states saved before digests list the files). */
export function importedFileDigests(state: Pick<FeedStateDoc, 'files' | 'fileDigests'>): string[] {
  return state.fileDigests ? unpackFileDigests(state.fileDigests) : (state.files ?? []).map(feedFileDigest);
}

/** How many files a feed imported, of those still in its folder. */
export function importedFileCount(state: Pick<FeedStateDoc, 'files' | 'fileDigests'>): number {
  return state.fileDigests ? state.fileDigests.length() / FILE_DIGEST_BYTES : (state.files ?? []).length;
}

/** The digests of the files a pull read (pulls recorded before digests list the files). */
export function pulledFileDigests(pull: Pick<FeedPullDoc, 'files' | 'fileDigests'>): string[] {
  return pull.fileDigests ? unpackFileDigests(pull.fileDigests) : pull.files.map(feedFileDigest);
}

/** Files a pull lists by name; it counts them all (`filesRead`) and keeps all their digests. */
export const FILES_LISTED = 1_000;

/** Where a feed stands (`_id` = its source id): what the next pull asks for and reads from. Written by its pulls, one at a time. */
export interface FeedStateDoc {
  _id: string;
  /** The highest cursor value of the completed pulls; the next pull reads rows at or past it. */
  cursor: string | null;
  /**
   * Event ids of rows at `cursor` that completed pulls imported (at most SEEN_AT_CURSOR_MAX): the next
   * pull skips them whatever the dedupe window. Absent from states saved before.
   */
  cursorSeen?: string[];
  /** From the last completed pull's response: sent back as If-None-Match / If-Modified-Since. */
  etag: string | null;
  lastModified: string | null;
  /**
   * A folder feed's files imported, of those still in the folder: their digests (feedFileDigest),
   * 16 bytes a file, so a state holds ~900,000. States saved before list the files in `files`.
   */
  fileDigests?: Binary;
  files?: FeedFile[];
  lastPullId: string | null;
  lastSuccessAt: Date | null;
}

/** One pull of a feed (`_id` = pull id). */
export interface FeedPullDoc {
  _id: string;
  sourceId: string;
  trigger: FeedTrigger;
  state: FeedPullState;
  window: CursorWindow;
  /** The upload its rows were staged in and imported from: the one of the fetch attempt that read the file whole. */
  uploadId: string | null;
  /** Every upload a fetch attempt staged into; those of attempts that failed or were cut short are removed. */
  uploads: string[];
  http: { status: number; etag: string | null; lastModified: string | null } | null;
  /** A folder feed: the first FILES_LISTED new files read, how many there were, and all their digests. */
  files: FeedFile[];
  filesRead?: number;
  fileDigests?: Binary;
  /** The highest cursor value read. */
  cursor: string | null;
  /** Event ids of the rows at `cursor` it staged (see FeedStateDoc). */
  cursorSeen?: string[];
  rowsSkipped: number;
  rowsUnmatched: number;
  /** Attempts that failed, the first ones (see MAX_ATTEMPTS_KEPT). */
  attempts: Array<{ attempt: number; at: Date; error: string }>;
  /**
   * The fetch attempt that owns the pull's staging (absent until the first claims it). An attempt
   * Temporal gave up on can still be running; once a later one has claimed the pull, every write
   * of the earlier one by this fence misses.
   */
  fetchedBy?: FetchAttempt;
  startedAt: Date;
  finishedAt: Date | null;
  error: string | null;
}

/** One attempt of a pull's fetch activity: its workflow run (a reset run counts attempts afresh) and attempt number. */
export interface FetchAttempt {
  runId: string;
  attempt: number;
}

/** What an attempt's fetch records on its pull; a claim clears them for the attempt that takes over. */
export type FetchedFields = Pick<FeedPullDoc, 'uploadId' | 'http' | 'files' | 'filesRead' | 'fileDigests' | 'cursor' | 'cursorSeen' | 'rowsSkipped' | 'rowsUnmatched'>;

const NOTHING_FETCHED: FetchedFields = { uploadId: null, http: null, files: [], filesRead: 0, fileDigests: packFileDigests([]), cursor: null, cursorSeen: [], rowsSkipped: 0, rowsUnmatched: 0 };

/** What a pull records of the folder's new files it read. */
export function filesFetched(files: FeedFile[]): Pick<FetchedFields, 'files' | 'filesRead' | 'fileDigests'> {
  return { files: files.slice(0, FILES_LISTED), filesRead: files.length, fileDigests: packFileDigests(files.map(feedFileDigest)) };
}

/**
 * Most rows at the cursor a feed remembers as imported (~35 bytes each in its state and pull). Past
 * it, as when many rows share a coarse cursor (a date), the rest are told apart from those imported
 * before only by their event ids, within DMP_DEDUPE_WINDOW_HOURS.
 */
export const SEEN_AT_CURSOR_MAX = 50_000;

/** Failed attempts a pull keeps (its activity's retries are bounded well below). */
const MAX_ATTEMPTS_KEPT = 20;

export function newPullId(): string {
  return `pul_${randomBytes(8).toString('hex')}`;
}

/** A pull about to run; its window is that of a backfill, or the feed's cursor once the pull opens. */
export function newFeedPull(pullId: string, sourceId: string, trigger: FeedTrigger, window: CursorWindow, at: Date): FeedPullDoc {
  return {
    _id: pullId,
    sourceId,
    trigger,
    state: 'running',
    window,
    uploads: [],
    ...NOTHING_FETCHED,
    attempts: [],
    startedAt: at,
    finishedAt: null,
    error: null,
  };
}

function emptyFeedState(sourceId: string): FeedStateDoc {
  return { _id: sourceId, cursor: null, etag: null, lastModified: null, fileDigests: packFileDigests([]), lastPullId: null, lastSuccessAt: null };
}

/**
 * Feed states and pulls. Both are read and written by exact `_id`, and have one writer at a time:
 * a feed's pulls run one after the other under one workflow id, and the API only creates a pull
 * before starting that workflow — except a fetch attempt Temporal gave up on that still runs,
 * which the pull's `fetchedBy` fence shuts out, and the retention run, which fails a pull whose
 * workflow is gone (`failRunning`). Pull updates take turns under a claim of the pull (on FerretDB;
 * a claim's insert and delete per update, a handful per pull), so a fence's condition holds on
 * every store. Listing a source's pulls reads them by the index on `sourceId`.
 */
export class FeedStore {
  private readonly states: Collection<FeedStateDoc>;
  private readonly pulls: Collection<FeedPullDoc>;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.states = store.db.collection<FeedStateDoc>(COLLECTIONS.feedStates);
    this.pulls = store.db.collection<FeedPullDoc>(COLLECTIONS.feedPulls);
    this.claims = new VersionClaims(store);
  }

  async state(sourceId: string): Promise<FeedStateDoc> {
    return (await this.states.findOne({ _id: sourceId })) ?? emptyFeedState(sourceId);
  }

  /** Replaces the state by `_id`: writing the same state again (a retry) changes nothing. */
  async saveState(state: FeedStateDoc): Promise<void> {
    const { _id, ...fields } = state;
    await this.states.replaceOne({ _id }, fields, { upsert: true });
  }

  /** Whether it was created: false when the pull exists (a retried open). */
  async createPull(doc: FeedPullDoc): Promise<boolean> {
    try {
      await this.pulls.insertOne(doc);
      return true;
    } catch (error) {
      if (isDuplicateKeyError(error)) return false;
      throw error;
    }
  }

  getPull(pullId: string): Promise<FeedPullDoc | null> {
    return this.pulls.findOne({ _id: pullId });
  }

  async updatePull(pullId: string, set: Partial<Omit<FeedPullDoc, '_id' | 'sourceId'>>): Promise<void> {
    await this.exclusive(pullId, () => this.pulls.updateOne({ _id: pullId }, { $set: set }));
  }

  /**
   * Runs `write` as the one writer of the pull among this class's writers: on FerretDB a conditional
   * update reads, changes and writes back, so a fetch attempt given up on that still runs could
   * otherwise write a pull failed meanwhile back to running (store/versionClaims).
   */
  private exclusive<T>(pullId: string, write: () => Promise<T>): Promise<T> {
    return this.claims.exclusive(`${COLLECTIONS.feedPulls}/${pullId}`, write);
  }

  /**
   * Makes `by` the fetch attempt that owns a running pull and clears what earlier attempts
   * recorded; false when a later attempt of the same run has claimed it, or the pull ended. A
   * compare-and-set on the owner read, so two attempts racing to claim cannot both win.
   */
  async claimFetch(pullId: string, by: FetchAttempt): Promise<boolean> {
    for (;;) {
      const claimed = await this.exclusive(pullId, async () => {
        const pull = await this.getPull(pullId);
        if (!pull || pull.state !== 'running') return false;
        const owner = pull.fetchedBy;
        if (owner && owner.runId === by.runId && owner.attempt >= by.attempt) return false;
        const unchanged = owner ? { 'fetchedBy.runId': owner.runId, 'fetchedBy.attempt': owner.attempt } : { fetchedBy: { $exists: false } };
        const result = await this.pulls.updateOne({ _id: pullId, state: 'running', ...unchanged }, { $set: { fetchedBy: by, ...NOTHING_FETCHED } });
        return result.matchedCount === 1 ? true : null;
      });
      if (claimed !== null) return claimed;
    }
  }

  /** The filter of a running pull still owned by fetch attempt `by`. */
  private owned(pullId: string, by: FetchAttempt) {
    return { _id: pullId, state: 'running' as const, 'fetchedBy.runId': by.runId, 'fetchedBy.attempt': by.attempt };
  }

  /** Lists an upload the owning attempt stages into (so a later attempt removes it); false when `by` no longer owns the pull. */
  async addUpload(pullId: string, by: FetchAttempt, uploadId: string): Promise<boolean> {
    return this.exclusive(pullId, async () => (await this.pulls.updateOne(this.owned(pullId, by), { $addToSet: { uploads: uploadId } })).matchedCount === 1);
  }

  /** Records what the owning attempt fetched; false when `by` no longer owns the pull. */
  async recordFetched(pullId: string, by: FetchAttempt, fetched: Partial<FetchedFields>): Promise<boolean> {
    return this.exclusive(pullId, async () => (await this.pulls.updateOne(this.owned(pullId, by), { $set: fetched })).matchedCount === 1);
  }

  /** Records a failed attempt while it owns the pull, keeping the first MAX_ATTEMPTS_KEPT. */
  async recordAttempt(pullId: string, by: FetchAttempt, failure: { at: Date; error: string }): Promise<void> {
    await this.exclusive(pullId, async () => {
      const pull = await this.getPull(pullId);
      if (!pull || pull.attempts.length >= MAX_ATTEMPTS_KEPT || pull.attempts.some((known) => known.attempt === by.attempt)) return;
      await this.pulls.updateOne(this.owned(pullId, by), { $set: { attempts: [...pull.attempts, { attempt: by.attempt, ...failure }] } });
    });
  }

  /** Pulls recorded as running since before `before` (by the index on `state`). */
  async runningBefore(before: Date): Promise<Array<Pick<FeedPullDoc, '_id' | 'sourceId' | 'trigger' | 'startedAt'>>> {
    const running = await this.pulls.find({ state: 'running' }, { projection: { _id: 1, sourceId: 1, trigger: 1, startedAt: 1 } }).toArray();
    return running.filter((pull) => pull.startedAt < before);
  }

  /** Records a pull still running as failed; false when it ended meanwhile (it keeps its outcome). */
  async failRunning(pullId: string, error: string, at: Date): Promise<boolean> {
    return this.exclusive(pullId, async () => (await this.pulls.updateOne({ _id: pullId, state: 'running' }, { $set: { state: 'failed', error, finishedAt: at } })).matchedCount === 1);
  }

  /** Forgets a pull that never started (its workflow could not be started because another pull runs). */
  async removePull(pullId: string): Promise<void> {
    await this.pulls.deleteOne({ _id: pullId });
  }

  /**
   * Removes the records of pulls that ended before `before`, at most `limit`, except each feed's
   * last pull (`lastPullId`: its status shows it); returns how many. One query on the pulls and a scan
   * of the feed states: a small document per pull and per feed.
   */
  async expirePulls(before: Date, limit: number): Promise<number> {
    const shown = new Set((await this.states.find({}, { projection: { lastPullId: 1 } }).toArray()).map((state) => state.lastPullId));
    const ended = (await this.pulls.find({ finishedAt: { $lt: before } }, { projection: { _id: 1, state: 1 } }).limit(limit + shown.size).toArray())
      .filter((pull) => pull.state !== 'running' && !shown.has(pull._id))
      .slice(0, limit);
    return deleteByIds(this.pulls, ended.map((pull) => pull._id));
  }

  /** The uploads the feeds' last pulls read (their status shows them). */
  async shownUploads(): Promise<Set<string>> {
    const shown = (await this.states.find({}, { projection: { lastPullId: 1 } }).toArray()).flatMap((state) => (state.lastPullId ? [state.lastPullId] : []));
    const pulls = await Promise.all(shown.map((pullId) => this.getPull(pullId)));
    return new Set(pulls.flatMap((pull) => (pull?.uploadId ? [pull.uploadId] : [])));
  }

  /** A source's pulls, newest first: sorted and cut by the store, so a feed pulled every few minutes does not send its whole history for a page. */
  listPulls(sourceId: string, limit: number): Promise<FeedPullDoc[]> {
    return this.pulls.find({ sourceId }).sort({ startedAt: -1, _id: 1 }).limit(limit).toArray();
  }
}
