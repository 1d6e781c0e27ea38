import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { rowsToAppend } from '../domain/erasure';
import { forEachConcurrently, type Store } from '../store/db';
import { EventLog } from '../store/eventLog';
import { PrivacyMarks } from '../store/privacyMarks';
import { SourceStore } from '../store/sources';
import { rowsImported, UploadStore, type ImportAttempt, type ImportCheckpoint, type UploadDoc } from '../store/uploads';
import { StartGates, startGateKey } from '../store/startGates';
import { wakeSourceWorkflow, type SourceWorkflowConfig } from '../temporal/client';
import { heartbeat, withHeartbeats } from './heartbeat';
import { beginGated } from './startGate';

export interface UploadDeps {
  store: Store;
  temporal: Client;
  config: SourceWorkflowConfig & Pick<Config, 'DMP_DEDUPE_WINDOW_HOURS' | 'DMP_RAW_EVENT_TTL_HOURS' | 'DMP_PRIVACY_SALT'>;
  now?: () => Date;
}

/** Where an import stands after a step: its checkpoint, of how many staged chunks, and whether that was the last. */
export interface ImportProgress extends ImportCheckpoint {
  total: number;
  done: boolean;
}

/** What appending one staged chunk did (see ImportCheckpoint). */
interface Appended {
  /** Rows of the chunk in the log. */
  rows: number;
  resumed: number;
  duplicates: number;
  /** Rows of an erased subject, dropped. */
  erased: number;
}

/** How long one import step appends before it returns to its workflow, which records the progress. */
const STEP_MS = 60_000;
/** Staged chunks appended at once: the store takes concurrent inserts faster than one after the other. */
export const APPENDS_IN_FLIGHT = 3;
/** The least time between two wake-ups of the source's drain while an import appends. */
const WAKE_EVERY_MS = 2_000;
/**
 * An append here answers no client, so it is not held to the API's acknowledgement deadline: a
 * slow seal is still a good append (and one that missed a deadline would be appended again, as duplicates).
 */
const APPEND_DEADLINE_MS = 10 * 60_000;

/**
 * The activities of a CRM upload's import: append its staged chunks to the source log from the
 * saved checkpoint, then complete (or fail) the upload. Every row's event id is fixed by its upload
 * and row, so a chunk appended again after a crash comes back as duplicates of itself: retries and
 * killed workers import no row twice.
 */
export function createUploadActivities(deps: UploadDeps) {
  const now = deps.now ?? (() => new Date());
  const uploads = new UploadStore(deps.store);
  const gates = new StartGates(deps.store);
  const sources = new SourceStore(deps.store);
  const log = new EventLog(deps.store, { dedupeWindowHours: deps.config.DMP_DEDUPE_WINDOW_HOURS, rawEventTtlHours: deps.config.DMP_RAW_EVENT_TTL_HOURS, ackDeadlineMs: APPEND_DEADLINE_MS });
  const marks = new PrivacyMarks(deps.store, deps.config.DMP_PRIVACY_SALT);

  async function requireUpload(uploadId: string): Promise<UploadDoc> {
    const upload = await uploads.get(uploadId);
    if (!upload) throw ApplicationFailure.nonRetryable(`upload ${uploadId} does not exist`, 'UploadGone');
    return upload;
  }

  function wakeSource(sourceId: string): Promise<void> {
    return wakeSourceWorkflow(deps.temporal, sourceId, (id) => sources.get(id), deps.config);
  }

  /**
   * Reads staged chunk `n` and appends it to the source log: how many rows it held, and of those
   * that the log held already, how many an interrupted attempt of this import had appended
   * (`resumed`) and how many earlier imports had (`duplicates`). Only a chunk an interrupted attempt
   * may have appended (`mayBeResumed`) has its duplicates' claims read to tell the two apart.
   */
  async function appendStaged(upload: UploadDoc, n: number, logFrom: number, mayBeResumed: boolean): Promise<Appended> {
    const staged = await uploads.readChunk(upload._id, n);
    if (!staged) throw ApplicationFailure.nonRetryable(`staged chunk ${n} of upload ${upload._id} is missing`, 'StagedChunkMissing');
    // Rows of an erased subject are counted and dropped, never appended (as at the API's door).
    await marks.refresh();
    const { events, late } = rowsToAppend(staged, (identities) => marks.erasedBy(identities));
    // Once per staged chunk: a retried step reads it again.
    await marks.countLateOnce(`${upload._id}:${n}`, late);
    const erased = staged.length - events.length;
    if (events.length === 0) return { rows: 0, resumed: 0, duplicates: 0, erased };
    const { duplicateIndexes } = await log.append(upload.sourceId, events);
    let resumed = 0;
    if (mayBeResumed) {
      await forEachConcurrently([...duplicateIndexes], 16, async (index) => {
        const claimedBy = await log.claimingChunk(upload.sourceId, events[index].id, Date.now());
        if (claimedBy !== null && claimedBy >= logFrom) resumed++;
      });
    }
    return { rows: events.length, resumed, duplicates: duplicateIndexes.size - resumed, erased };
  }

  async function importStep(uploadId: string): Promise<ImportProgress> {
    const known = await requireUpload(uploadId);
    if (known.state !== 'importing') throw ApplicationFailure.nonRetryable(`upload ${uploadId} is ${known.state}, not importing`, 'UploadNotImporting');
    const { info } = Context.current();
    const by: ImportAttempt = { runId: info.workflowExecution?.runId ?? '', activityId: info.activityId, attempt: info.attempt };
    // Retryable: an attempt given up on ends here unheard, and a live one that lost its claim (to one
    // of an earlier run that stalled before claiming) claims again as its next attempt.
    const superseded = () => ApplicationFailure.retryable(`another attempt imports upload ${uploadId}`, 'ImportSuperseded');
    const claimed = await uploads.claimImport(uploadId, by);
    if (!claimed) throw superseded();
    const { upload } = claimed;
    const save = async (imported: ImportCheckpoint, stepDone = false) => {
      if (!(await uploads.saveCheckpoint(uploadId, by, imported, stepDone))) throw superseded();
    };
    const started = Date.now();
    let checkpoint = upload.imported;
    if (checkpoint.logFrom === undefined) {
      // Given up: its staged rows go when the workflow fails the import.
      await beginGated(gates, startGateKey.import(uploadId), () => uploads.finish(uploadId, 'importing', 'failed', 'its import workflow could not be started', now()));
      // Saved before the first append, so a retry still knows which claims are this import's own.
      const drained = (await sources.loadPosition(upload.sourceId))?.cursor ?? 0;
      checkpoint = { ...checkpoint, logFrom: await log.findHead(upload.sourceId, drained) };
      await save(checkpoint);
    }
    const logFrom = checkpoint.logFrom as number;
    // A step taken over resumes where the attempt before it had up to APPENDS_IN_FLIGHT chunks under way.
    const resumableUntil = claimed.interrupted ? checkpoint.chunks + APPENDS_IN_FLIGHT : 0;
    let lastWake = started;
    // A few chunks are appended at once; they finish in any order, and the checkpoint follows them in order.
    const inFlight: Array<Promise<Appended>> = [];
    let launched = checkpoint.chunks;
    const launch = () => {
      while (inFlight.length < APPENDS_IN_FLIGHT && launched < upload.chunks && Date.now() - started < STEP_MS) {
        const append = appendStaged(upload, launched, logFrom, launched < resumableUntil);
        launched++;
        append.catch(() => undefined); // awaited in order below
        inFlight.push(append);
      }
    };
    try {
      for (launch(); inFlight.length > 0; launch()) {
        const appended = await (inFlight.shift() as Promise<Appended>);
        checkpoint = {
          ...checkpoint,
          chunks: checkpoint.chunks + 1,
          rows: checkpoint.rows + appended.rows,
          resumed: checkpoint.resumed + appended.resumed,
          duplicates: checkpoint.duplicates + appended.duplicates,
          erased: (checkpoint.erased ?? 0) + appended.erased,
        };
        await save(checkpoint);
        heartbeat(checkpoint);
        if (Date.now() - lastWake >= WAKE_EVERY_MS) {
          await wakeSource(upload.sourceId);
          lastWake = Date.now();
        }
      }
    } catch (error) {
      // No append of this attempt may still run when the next attempt starts.
      await Promise.allSettled(inFlight);
      throw error;
    }
    await save(checkpoint, true);
    await wakeSource(upload.sourceId);
    return { ...checkpoint, total: upload.chunks, done: checkpoint.chunks >= upload.chunks };
  }

  return {
    /**
     * Appends staged chunks to the source log from the saved checkpoint for up to a minute, saving
     * the checkpoint after each. Safe to retry: each step claims the import first, so an attempt given
     * up on stops at its next checkpoint write; the chunks appended but not yet checkpointed (at most
     * APPENDS_IN_FLIGHT) are appended again and found to be duplicates of themselves (counted in
     * `resumed`), so each row is in the log once.
     */
    importUploadChunks(input: { uploadId: string }): Promise<ImportProgress> {
      return withHeartbeats(() => importStep(input.uploadId));
    },

    /** Completes a fully imported upload and removes its staged rows. Safe to retry: removing is by `_id`, and a completed upload stays so. */
    async completeImport(input: { uploadId: string }): Promise<{ state: 'completed'; rowsImported: number; rowsRejected: number }> {
      const upload = await requireUpload(input.uploadId);
      if (upload.state !== 'completed') {
        if (upload.state !== 'importing') throw ApplicationFailure.nonRetryable(`upload ${upload._id} is ${upload.state}`, 'UploadNotImporting');
        if (upload.imported.chunks < upload.chunks) throw ApplicationFailure.nonRetryable(`upload ${upload._id} has chunks left to import`, 'ImportIncomplete');
        await withHeartbeats(() => uploads.dropChunks(upload._id, upload.chunks));
        await uploads.finish(upload._id, 'importing', 'completed', null, now());
      }
      return { state: 'completed', rowsImported: rowsImported(upload.imported), rowsRejected: upload.rowsRejected };
    },

    /** Records why an import failed and removes its staged rows; rows it appended stay in the log. Safe to retry. */
    async failImport(input: { uploadId: string; error: string }): Promise<void> {
      const upload = await uploads.get(input.uploadId);
      if (!upload || upload.state === 'completed') return;
      await withHeartbeats(() => uploads.dropChunks(upload._id, upload.chunks));
      await uploads.finish(upload._id, 'importing', 'failed', input.error, now());
    },
  };
}

export type UploadActivities = ReturnType<typeof createUploadActivities>;
