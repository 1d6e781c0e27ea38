import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Binary } from 'mongodb';
import type { Config } from '../config';
import { checkUnchanged, feedFolder, feedRecords, listFeedFiles, openFeedFile } from '../connectors/feedFiles';
import { DeliveryError, Outbound } from '../connectors/outbound';
import type { PrepareOptions } from '../domain/collect';
import { compareCursors, cursorKind, feedColumnOf, feedRowToEvent, laterCursor, readFeedHeader, rowCursor, seenAtCursorAfter, windowKind, type CursorKind, type CursorWindow, type FeedColumns, type FeedConfig, type FeedTrigger } from '../domain/feeds';
import { matchLimits } from '../domain/partners';
import { fileProblems, FileRefused, FileUnreadable } from '../domain/uploads';
import { querySecrets, withoutSecrets } from '../domain/secrets';
import { forEachConcurrently, type Store } from '../store/db';
import { StartGates, startGateKey } from '../store/startGates';
import { FeedStore, feedFileDigest, filesFetched, importedFileDigests, newFeedPull, packFileDigests, pulledFileDigests, SEEN_AT_CURSOR_MAX, type FeedFile, type FeedPullDoc, type FeedStateDoc, type FetchAttempt } from '../store/feeds';
import { MatchTableStore } from '../store/matchTables';
import { SourceStore, type SourceDoc } from '../store/sources';
import { rowsImported, UploadStore } from '../store/uploads';
import { attemptSignal, withHeartbeats } from './heartbeat';
import { beginGated } from './startGate';
import { newUpload, prepareMappedRows, UploadStaging, UploadSuperseded, type MappedRow, type NumberedRow, type PreparedRows } from './uploadStaging';

export interface FeedDeps {
  store: Store;
  config: Pick<Config, 'DMP_FEED_DIR' | 'DMP_FEED_SETTLE_SECONDS' | 'DMP_CHUNK_MAX_EVENTS' | 'DMP_DEFAULT_PHONE_REGION' | 'DMP_DESTINATION_ALLOWLIST' | 'DMP_DESTINATION_TIMEOUT_SECONDS' | 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP'>;
  now?: () => Date;
}

export interface FeedPullOutcome {
  pullId: string;
  state: 'completed';
  rowsImported: number;
  rowsDuplicate: number;
}

/** The longest a partner's Retry-After holds a fetch back; the next scheduled pull comes anyway. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/** A file of a pull: where it is, how it is opened, and a check once it is read. */
interface PulledFile {
  path: string;
  /** Names the file in rejections when a pull reads several (a folder's). */
  label?: string;
  open(): Readable;
  verify?(): Promise<void>;
}

/** What a fetch attempt read besides the staged rows. */
interface ReadCounts {
  skipped: number;
  unmatched: number;
  cursor: string | null;
  /** Event ids of the rows staged at `cursor`, up to SEEN_AT_CURSOR_MAX. */
  seen: Set<string>;
  /** The kind of value the feed's cursor holds, once known (see prepareFeedRows). */
  kind: CursorKind | null;
}

type FeedSource = SourceDoc & { feed: FeedConfig };

/**
 * This fetch attempt no longer owns its pull: Temporal gave up on it (its heartbeats stopped
 * arriving) and a later attempt claimed the pull, or the pull ended. It stops without a trace;
 * nobody waits for its result (unless an attempt of an earlier run took the pull from it: then its
 * next attempt takes it back).
 */
class FetchSuperseded extends Error {
  constructor(pullId: string, by: FetchAttempt) {
    super(`attempt ${by.attempt} of pull ${pullId}'s fetch was taken over`);
    this.name = 'FetchSuperseded';
  }
}

/**
 * A fetch attempt's failure as the workflow's retry policy should see it: a partner that is down,
 * slow or rate-limiting, and a file cut short or broken, are tried again (after the partner's
 * Retry-After); a refusal (4xx) or a file whose header lacks mapped columns is not — the next
 * scheduled pull tries again. A partner's answer quoted in the message loses the feed's `secrets`.
 */
function asFailure(error: unknown, secrets: readonly string[] = []): unknown {
  if (error instanceof DeliveryError) {
    const message = withoutSecrets(error.message, secrets);
    if (!error.retryable) return ApplicationFailure.nonRetryable(message, 'FeedRefused');
    const delay = error.retryAfterMs === null ? undefined : Math.min(error.retryAfterMs, MAX_RETRY_AFTER_MS);
    return ApplicationFailure.create({ message, type: 'FeedUnavailable', nextRetryDelay: delay });
  }
  if (error instanceof FileRefused) return ApplicationFailure.nonRetryable(error.message, 'FeedFileRefused');
  // Retryable: an attempt given up on ends here unheard; a live one that lost its pull to an attempt
  // of an earlier run (one stalled before claiming, its workflow since reset) claims it back next attempt.
  if (error instanceof FetchSuperseded || error instanceof UploadSuperseded) return ApplicationFailure.retryable(error.message, 'FetchSuperseded');
  const problems = fileProblems(error);
  if (problems) return ApplicationFailure.retryable(`${problems[0].path}: ${problems[0].message}`, 'FeedFileBroken');
  return error;
}

/** How long a pull waits at most for a drop folder's files to settle (see readFolder). */
const SETTLE_WAIT_MAX_MS = 5 * 60_000;

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The activities of a feed's pull: open it, fetch the partner's file (or a drop folder's new
 * files) and stage its rows into an upload — which the upload import then appends to the source
 * log — and finish or fail it. Every row's event id derives from its content (domain/feeds), so a
 * row fetched again by a retry, a later pull or a backfill is a duplicate in the log, never a
 * second event; the feed's cursor and validators move only when a pull completes.
 */
export function createFeedActivities(deps: FeedDeps) {
  const now = deps.now ?? (() => new Date());
  const feeds = new FeedStore(deps.store);
  const gates = new StartGates(deps.store);
  const sources = new SourceStore(deps.store);
  const uploads = new UploadStore(deps.store);
  const matches = new MatchTableStore(deps.store, matchLimits(deps.config), now);
  const outbound = new Outbound(new Set(deps.config.DMP_DESTINATION_ALLOWLIST), deps.config.DMP_DESTINATION_TIMEOUT_SECONDS * 1000);

  async function requirePull(pullId: string): Promise<FeedPullDoc> {
    const pull = await feeds.getPull(pullId);
    if (!pull) throw ApplicationFailure.nonRetryable(`pull ${pullId} does not exist`, 'PullGone');
    return pull;
  }

  async function requireFeedSource(sourceId: string): Promise<FeedSource> {
    const source = await sources.get(sourceId);
    if (!source?.feed) throw ApplicationFailure.nonRetryable(`source ${sourceId} is not a feed`, 'NotAFeed');
    return source as FeedSource;
  }

  /**
   * Fails and empties the uploads of a pull's earlier attempts: a killed attempt leaves its upload
   * receiving, its chunks staged; one given up on may still be staging, and stops at its next
   * write to the upload once it is failed (removing what it staged since).
   */
  async function discardStaged(pullId: string, reason: string): Promise<void> {
    const pull = await requirePull(pullId);
    for (const uploadId of pull.uploads) {
      const upload = await uploads.get(uploadId);
      if (!upload || upload.state === 'completed') continue;
      await uploads.failUnfinished(uploadId, reason, now());
      await uploads.dropStaged(uploadId);
    }
  }

  /** The cookie id the match table holds for each partner id of the rows in the window (the newest): one read by `_id` per distinct id. */
  async function matchPartnerIds(rows: NumberedRow[], columns: FeedColumns, window: CursorWindow): Promise<Map<string, string | null>> {
    const found = new Map<string, string | null>();
    if (!columns.partner) return found;
    const { partnerId, index } = columns.partner;
    const wanted = rows.filter(({ fields }) => !columns.cursor || rowCursor(fields, columns, window) !== null);
    const ids = [...new Set(wanted.map(({ fields }) => (fields[index] ?? '').trim()).filter((id) => id !== ''))];
    await forEachConcurrently(ids, 16, async (id) => {
      found.set(id, (await matches.cookieIdsOf(partnerId, id))[0] ?? null);
    });
    return found;
  }

  async function prepareFeedRows(rows: NumberedRow[], columns: FeedColumns, window: CursorWindow, read: ReadCounts, options: PrepareOptions): Promise<PreparedRows> {
    const cookieIds = await matchPartnerIds(rows, columns, window);
    const mapped: MappedRow[] = [];
    let kinded = { ...window, kind: read.kind };
    for (const { row, fields } of rows) {
      // The feed's cursor holds one kind of value: its window's (read.kind from the start), else the first this pull reads.
      if (columns.cursor && read.kind === null && fields.length === columns.width) {
        read.kind = cursorKind(fields[columns.cursor.index].trim());
        kinded = { ...window, kind: read.kind };
      }
      const cursor = rowCursor(fields, columns, kinded);
      if (cursor !== null && (read.cursor === null || compareCursors(cursor, read.cursor) > 0)) read.seen.clear();
      read.cursor = laterCursor(read.cursor, cursor);
      const result = feedRowToEvent(fields, columns, kinded, (id) => cookieIds.get(id) ?? null);
      if (cursor !== null && 'event' in result && result.event.id !== undefined && read.seen.size < SEEN_AT_CURSOR_MAX && compareCursors(cursor, read.cursor!) === 0) read.seen.add(result.event.id);
      if ('unmatched' in result) read.unmatched++;
      if ('skipped' in result) read.skipped++;
      else if ('event' in result || 'errors' in result) mapped.push({ row, mapped: result });
    }
    return prepareMappedRows(mapped, (path) => feedColumnOf(path, columns), options);
  }

  /**
   * Stages the files of one fetch attempt into an upload of its own (`<pullId>_<attempt>`),
   * recorded on the pull first so that a later attempt removes whatever this one leaves. Only a
   * pull whose files were all read whole records what it read and the upload to import.
   */
  async function stage(pull: FeedPullDoc, source: FeedSource, state: FeedStateDoc, by: FetchAttempt, files: PulledFile[], found: Pick<FeedPullDoc, 'http'> | ReturnType<typeof filesFetched>): Promise<{ uploadId: string }> {
    const upload = newUpload(`${pull._id}_${by.attempt}`, source._id, now());
    // Created before it is listed on the pull, so a later attempt's discard never misses it.
    await uploads.create(upload);
    if (!(await feeds.addUpload(pull._id, by, upload._id))) {
      await uploads.remove(upload._id);
      throw new FetchSuperseded(pull._id, by);
    }
    const staging = new UploadStaging(uploads, upload, deps.config.DMP_CHUNK_MAX_EVENTS);
    const read: ReadCounts = { skipped: 0, unmatched: 0, cursor: null, seen: new Set(), kind: windowKind(pull.window) };
    // Rows at the feed's cursor that its completed pulls imported are skipped (a backfill re-reads its window whole).
    const window: CursorWindow = pull.trigger !== 'backfill' && state.cursorSeen?.length && state.cursor === pull.window.from ? { ...pull.window, seen: new Set(state.cursorSeen) } : pull.window;
    const options: PrepareOptions = { now: upload.startedAt, defaultPhoneRegion: deps.config.DMP_DEFAULT_PHONE_REGION, consentPolicy: source.consent };
    try {
      for (const file of files) {
        const readHeader = (header: string[]) => {
          const located = readFeedHeader(header, source.feed);
          return 'errors' in located ? located : { prepare: (rows: NumberedRow[]) => prepareFeedRows(rows, located.columns, window, read, options) };
        };
        const stream = file.open();
        const lineNumbers = source.feed.format === 'ndjson';
        try {
          // A folder's file refused whole (a header the mapping does not fit, a row it cannot read) stages nothing: the others
          // import, it is listed with the rejections, and is read again only once it changes. (A URL feed's one file fails its pull.)
          if ('files' in found) {
            // What the file's rows moved (the cursor, its kind, the counts) goes back with them when it is refused.
            const before = { ...read, seen: new Set(read.seen) };
            if (!(await staging.readFileWhole(feedRecords(stream, source.feed), readHeader, { file: file.label ?? file.path, lineNumbers }))) Object.assign(read, before);
          } else await staging.readFile(feedRecords(stream, source.feed), readHeader, { file: file.label, lineNumbers });
        } finally {
          stream.destroy(); // a file left unread (a refused header, a broken row) is let go of
        }
        await file.verify?.();
      }
      // What was read is recorded while this attempt owns the pull; then the upload moves on, unless a later attempt failed it meanwhile.
      if (!(await feeds.recordFetched(pull._id, by, { ...found, uploadId: upload._id, cursor: read.cursor, cursorSeen: [...read.seen], rowsSkipped: read.skipped, rowsUnmatched: read.unmatched }))) throw new FetchSuperseded(pull._id, by);
      await staging.complete();
    } catch (error) {
      const problems = fileProblems(error);
      await staging.abandon(error, problems ? `${problems[0].path}: ${problems[0].message}` : messageOf(error));
      throw error;
    }
    return { uploadId: upload._id };
  }

  /** A conditional GET (not for a backfill, which re-reads a window whatever changed): a 304 is nothing to do. */
  async function fetchUrl(pull: FeedPullDoc, source: FeedSource, url: string, state: FeedStateDoc, by: FetchAttempt): Promise<{ uploadId: string | null }> {
    const { feed } = source;
    const headers: Record<string, string> = {};
    if (pull.trigger !== 'backfill' && state.etag) headers['if-none-match'] = state.etag;
    if (pull.trigger !== 'backfill' && state.lastModified) headers['if-modified-since'] = state.lastModified;
    if (feed.bearerToken) headers.authorization = `Bearer ${feed.bearerToken}`;
    const response = await outbound.download(url, headers);
    const http = { status: response.status, etag: response.headers.get('etag'), lastModified: response.headers.get('last-modified') };
    const body = response.body;
    if (!body) {
      if (!(await feeds.recordFetched(pull._id, by, { http }))) throw new FetchSuperseded(pull._id, by);
      return { uploadId: null };
    }
    try {
      return await stage(pull, source, state, by, [{ path: new URL(url).pathname, open: () => body }], { http });
    } finally {
      body.destroy(); // also when staging failed before reading it: the connection is let go of
    }
  }

  /**
   * The folder's files no completed pull imported (a backfill reads them all), once settled: a file
   * modified within DMP_FEED_SETTLE_SECONDS may be one whose writer paused mid-row, and its cut last
   * row would read as a whole one. The pull waits for them (file times are the wall clock's), up to
   * SETTLE_WAIT_MAX_MS; a file still changing then is left to the next pull.
   */
  async function readFolder(pull: FeedPullDoc, source: FeedSource, folder: string, state: FeedStateDoc, by: FetchAttempt): Promise<{ uploadId: string | null }> {
    const dir = await feedFolder(deps.config.DMP_FEED_DIR, folder);
    const imported = new Set(importedFileDigests(state));
    const settleMs = deps.config.DMP_FEED_SETTLE_SECONDS * 1000;
    const unread = async () => (await listFeedFiles(dir)).filter((file) => pull.trigger === 'backfill' || !imported.has(feedFileDigest(file)));
    let files = await unread();
    for (const giveUpAt = Date.now() + SETTLE_WAIT_MAX_MS; ; files = await unread()) {
      // Files that settle within the wait are waited for; one stamped later (a writer's clock ahead) is not.
      const settledAt = files.map((file) => file.modifiedAt.getTime() + settleMs).filter((at) => at > Date.now() && at <= giveUpAt);
      if (settledAt.length === 0) break;
      await sleep(settledAt.reduce((latest, at) => Math.max(latest, at)) - Date.now(), undefined, { signal: attemptSignal() });
    }
    const settled = (file: FeedFile) => file.modifiedAt.getTime() + settleMs <= Date.now();
    const writing = files.find((file) => !settled(file));
    // A cursor feed reads none then: the cursor the others would move may pass that file's rows (a backfill moves none).
    if (writing && source.feed.cursorColumn && pull.trigger !== 'backfill') throw new FileUnreadable(writing.name, `modified ${writing.modifiedAt.toISOString()}, not settled within ${SETTLE_WAIT_MAX_MS / 60_000} minutes of waiting: the folder is read once it has`);
    files = files.filter(settled);
    if (files.length === 0) return { uploadId: null };
    const pulled = files.map((file) => ({ path: file.name, label: file.name, open: () => openFeedFile(dir, file), verify: () => checkUnchanged(dir, file) }));
    return stage(pull, source, state, by, pulled, filesFetched(files));
  }

  /**
   * The digests of the files the feed has imported, less those gone from its folder (a file gone
   * will not come back as the same file); all of them when the folder cannot be listed now.
   */
  async function filesKept(folder: string, digests: string[]): Promise<Binary> {
    const listed = await feedFolder(deps.config.DMP_FEED_DIR, folder)
      .then(listFeedFiles)
      .catch(() => null);
    const present = listed && new Set(listed.map(feedFileDigest));
    return packFileDigests(new Set(digests.filter((digest) => !present || present.has(digest))));
  }

  async function fetchStep(pullId: string): Promise<{ uploadId: string | null }> {
    const { info } = Context.current();
    const by: FetchAttempt = { runId: info.workflowExecution?.runId ?? '', attempt: info.attempt };
    const claimed = await feeds.claimFetch(pullId, by);
    const pull = await requirePull(pullId);
    if (pull.state !== 'running') throw ApplicationFailure.nonRetryable(`pull ${pullId} is ${pull.state}`, 'PullNotRunning');
    if (!claimed) throw asFailure(new FetchSuperseded(pullId, by));
    const source = await requireFeedSource(pull.sourceId);
    await discardStaged(pullId, 'a later attempt of its pull read the file again');
    const state = await feeds.state(source._id);
    const { url, folder, bearerToken } = source.feed;
    const secrets = [...(bearerToken ? [bearerToken] : []), ...(url ? querySecrets(url) : [])];
    try {
      if (url !== undefined) return await fetchUrl(pull, source, url, state, by);
      return await readFolder(pull, source, folder as string, state, by);
    } catch (error) {
      const failure = asFailure(error, secrets);
      if (!(error instanceof FetchSuperseded || error instanceof UploadSuperseded)) await feeds.recordAttempt(pullId, by, { at: now(), error: messageOf(failure) });
      throw failure;
    }
  }

  return {
    /** Records the pull (the API records those it is asked for) with its window, and makes it the feed's last. Safe to retry: both writes are by `_id` and the same again. */
    async openFeedPull(input: { sourceId: string; pullId: string; trigger: FeedTrigger; window: CursorWindow | null }): Promise<void> {
      const known = await feeds.getPull(input.pullId);
      // Only pulls the API recorded and started can have had their start given up.
      if (input.trigger !== 'schedule') {
        await beginGated(gates, startGateKey.feedPull(input.pullId), async () => {
          if (known?.state === 'running') await feeds.updatePull(input.pullId, { state: 'failed', error: 'its workflow could not be started', finishedAt: now() });
        });
      }
      const state = await feeds.state(input.sourceId);
      // A cursor saved before values were checked may be none (a stray `N/A` that stalled the feed): the pull reads from the start.
      const window = input.window ?? { from: state.cursor !== null && cursorKind(state.cursor) !== null ? state.cursor : null, to: null };
      if (!known) await feeds.createPull(newFeedPull(input.pullId, input.sourceId, input.trigger, window, now()));
      else if (known.state === 'running') await feeds.updatePull(input.pullId, { window });
      if (state.lastPullId !== input.pullId) await feeds.saveState({ ...state, lastPullId: input.pullId });
    },

    /**
     * Fetches the feed and stages what is new; null when there is nothing (a 304, no new file).
     * Safe to retry: each attempt stages into an upload of its own and first removes those of
     * earlier attempts, so only a file read whole by one attempt is ever imported.
     */
    fetchFeed(input: { pullId: string }): Promise<{ uploadId: string | null }> {
      return withHeartbeats(() => fetchStep(input.pullId));
    },

    /**
     * Completes an imported pull and moves the feed on: its cursor to the highest value read, its
     * ETag / Last-Modified to the response's, its folder's imported files (a backfill moves
     * nothing). Safe to retry: the feed's new state derives from what the pull recorded, not from counts.
     */
    async finishFeedPull(input: { pullId: string; uploadId: string | null }): Promise<FeedPullOutcome> {
      const pull = await requirePull(input.pullId);
      const upload = input.uploadId ? await uploads.get(input.uploadId) : null;
      const outcome: FeedPullOutcome = { pullId: pull._id, state: 'completed', rowsImported: upload ? rowsImported(upload.imported) : 0, rowsDuplicate: upload?.imported.duplicates ?? 0 };
      if (pull.state === 'completed') return outcome;
      if (pull.state !== 'running') throw ApplicationFailure.nonRetryable(`pull ${pull._id} is ${pull.state}`, 'PullNotRunning');
      const source = await requireFeedSource(pull.sourceId);
      const at = now();
      const state = await feeds.state(source._id);
      const next: FeedStateDoc = { ...state, lastSuccessAt: at };
      if (pull.trigger !== 'backfill') {
        next.cursor = laterCursor(state.cursor, pull.cursor);
        next.cursorSeen = seenAtCursorAfter({ cursor: state.cursor, seen: state.cursorSeen }, { cursor: pull.cursor, seen: pull.cursorSeen }, SEEN_AT_CURSOR_MAX);
        if (pull.http && pull.http.status !== 304) Object.assign(next, { etag: pull.http.etag, lastModified: pull.http.lastModified });
        if (source.feed.folder !== undefined) {
          next.fileDigests = await filesKept(source.feed.folder, [...importedFileDigests(state), ...pulledFileDigests(pull)]);
          delete next.files;
        }
      }
      await feeds.saveState(next);
      await feeds.updatePull(pull._id, { state: 'completed', uploadId: input.uploadId, finishedAt: at });
      return outcome;
    },

    /** Records why a pull failed and removes what its attempts staged; the feed stays where it was. Safe to retry. */
    async failFeedPull(input: { pullId: string; error: string }): Promise<void> {
      const pull = await feeds.getPull(input.pullId);
      if (!pull || pull.state === 'completed') return;
      // Failed first: a fetch attempt given up on that still runs can then record nothing on it.
      if (pull.state === 'running') await feeds.updatePull(pull._id, { state: 'failed', error: input.error, finishedAt: now() });
      await discardStaged(pull._id, input.error);
    },
  };
}

export type FeedActivities = ReturnType<typeof createFeedActivities>;
