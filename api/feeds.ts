import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { Router, type Response } from 'express';
import { z } from 'zod';
import type { Config } from '../config';
import { BackfillRequestSchema, FeedPullViewSchema, type CursorWindow, type FeedConfig, type FeedPullView, type FeedStatus, type FeedTrigger } from '../domain/feeds';
import type { CreateSourceRequest } from '../domain/schemas';
import { UploadListQuerySchema } from '../domain/uploads';
import { feedPullWorkflowId, feedScheduleId } from '../domain/workflowIds';
import { logger } from '../logger';
import type { Store } from '../store/db';
import { FeedStore, importedFileCount, newFeedPull, newPullId, type FeedPullDoc } from '../store/feeds';
import { PartnerStore } from '../store/partners';
import { SourceStore, type SourceDoc } from '../store/sources';
import { rowsImported, UploadStore } from '../store/uploads';
import { deleteFeedSchedule, settleFeedSchedule, startFeedPull, startGated } from '../temporal/client';
import type { ScheduleSyncMark } from '../store/scheduleSyncs';
import { StartGates, startGateKey } from '../store/startGates';
import type { OpenApiParts } from './openapi';
import { checkOutboundUrl } from './outboundUrl';
import { SECRET_SET, urlShown } from '../domain/secrets';
import { parseOr400, ProblemError } from './problem';
import { requireSource } from './requireSource';
import type { RouterDeps } from './routerDeps';

type FeedSource = SourceDoc & { feed: FeedConfig };

/** How long a pull asked for waits for the last pull's workflow to close once that pull is recorded as ended. */
const CLOSING_WAIT_MS = 5_000;

interface FeedDeps {
  store: Store;
  temporal: Client;
  config: Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_DESTINATION_ALLOWLIST'>;
}

/** A pull with the counts of the upload its rows were staged in. */
async function pullView(doc: FeedPullDoc, uploads: UploadStore, databaseName: string): Promise<FeedPullView> {
  const upload = doc.uploadId ? await uploads.get(doc.uploadId) : null;
  const iso = (date: Date) => date.toISOString();
  return {
    pullId: doc._id,
    sourceId: doc.sourceId,
    trigger: doc.trigger,
    state: doc.state,
    window: doc.window,
    http: doc.http,
    files: doc.files.map((file) => ({ name: file.name, size: file.size, modifiedAt: iso(file.modifiedAt) })),
    filesRead: doc.filesRead ?? doc.files.length,
    cursor: doc.cursor,
    rowsReceived: upload?.rowsReceived ?? 0,
    rowsSkipped: doc.rowsSkipped,
    rowsUnmatched: doc.rowsUnmatched,
    rowsRejected: upload?.rowsRejected ?? 0,
    rowsImported: upload ? rowsImported(upload.imported) : 0,
    rowsDuplicate: upload?.imported.duplicates ?? 0,
    rowsErased: upload?.imported.erased ?? 0,
    rowsNonProfiling: upload?.rowsNonProfiling ?? 0,
    rejections: upload?.rejections ?? [],
    attempts: doc.attempts.map(({ attempt, at, error }) => ({ attempt, at: iso(at), error })),
    uploadId: doc.uploadId,
    workflowId: feedPullWorkflowId(databaseName, doc.sourceId),
    startedAt: iso(doc.startedAt),
    finishedAt: doc.finishedAt && iso(doc.finishedAt),
    error: doc.error,
  };
}

/**
 * What the sources API does for feed sources beyond what it does for every source: check a new
 * feed (its URL against the outbound guard, its partner id column against the sync partners), keep
 * its Temporal Schedule in step with the source (created with it, paused and resumed with it), and
 * describe where it stands.
 */
export function feedSourceHooks({ store, temporal, config }: FeedDeps) {
  const feeds = new FeedStore(store);
  const uploads = new UploadStore(store);
  const partners = new PartnerStore(store);
  const sources = new SourceStore(store);
  const databaseName = store.db.databaseName;
  const allowlist = new Set(config.DMP_DESTINATION_ALLOWLIST);

  return {
    /**
     * Refuses a feed whose URL the outbound guard refuses (see checkOutboundUrl) or whose partner id
     * column names no sync partner (404), naming the field.
     */
    async check(body: CreateSourceRequest): Promise<void> {
      if (body.kind !== 'feed') return;
      if (body.feed.url !== undefined) await checkOutboundUrl(body.feed.url, allowlist, 'feed.url');
      for (const type of Object.keys(body.feed.mapping.identities)) {
        const partner = type.startsWith('partner:') ? type.slice('partner:'.length) : null;
        if (partner !== null && !(await partners.get(partner))) {
          throw new ProblemError(404, 'partner-not-found', 'No such sync partner', [{ path: `feed.mapping.identities.${type}`, message: `sync partner ${partner} does not exist` }]);
        }
      }
    },

    /** Makes a feed source's schedule match the source as saved with `mark` (created, paused or resumed), then removes the mark. */
    settleSchedule(sourceId: string, mark: ScheduleSyncMark): Promise<{ exists: boolean }> {
      return settleFeedSchedule(temporal, databaseName, sources.scheduleSyncs, sourceId, mark, config);
    },

    removeSchedule(sourceId: string): Promise<void> {
      return deleteFeedSchedule(temporal, databaseName, sourceId);
    },

    /** A feed source's config (its token and URL query values never shown), cursor, validators and last pull. */
    async describe(source: SourceDoc): Promise<FeedStatus | undefined> {
      if (!source.feed) return undefined;
      const { bearerToken, ...feed } = source.feed;
      const state = await feeds.state(source._id);
      const last = state.lastPullId ? await feeds.getPull(state.lastPullId) : null;
      return {
        ...feed,
        ...(feed.url !== undefined && { url: urlShown(feed.url) }),
        ...(bearerToken !== undefined && { bearerToken: SECRET_SET }),
        scheduleId: feedScheduleId(databaseName, source._id),
        cursor: state.cursor,
        etag: state.etag,
        lastModified: state.lastModified,
        filesImported: importedFileCount(state),
        lastSuccessAt: state.lastSuccessAt && state.lastSuccessAt.toISOString(),
        lastPull: last && (await pullView(last, uploads, databaseName)),
      };
    },
  };
}

/** Pulls of feed sources: run one now, backfill a cursor window, and see how they went. */
export function feedsRouter({ store, temporal, config, admin }: RouterDeps): Router {
  const feeds = new FeedStore(store);
  const uploads = new UploadStore(store);
  const sources = new SourceStore(store);
  const gates = new StartGates(store);
  const databaseName = store.db.databaseName;
  const router = Router();

  async function requireFeedSource(id: string): Promise<FeedSource> {
    const source = await requireSource(sources, id);
    if (!source.feed) throw new ProblemError(409, 'not-a-feed-source', 'Pulls are of feed sources', [{ path: 'kind', message: `source ${id} is of kind "${source.kind}"; pulls are of sources of kind "feed"` }]);
    return source as FeedSource;
  }

  function refusePaused(source: SourceDoc): void {
    if (source.state === 'paused') throw new ProblemError(409, 'paused', 'The source is paused', [{ path: 'params.id', message: `source ${source._id} is paused; resume it first` }]);
  }

  /**
   * Whether the feed's pull workflow is still busy with a pull: false once that pull is recorded
   * as ended and its workflow has closed (it closes right after: waited for, briefly), so a pull
   * asked for as soon as the last one shows completed is not refused. The running pull's id, if so.
   */
  async function busyWith(sourceId: string): Promise<{ pullId: string | null } | null> {
    const handle = temporal.workflow.getHandle(feedPullWorkflowId(databaseName, sourceId));
    let pullId: string | null = null;
    try {
      const { memo } = await handle.describe();
      pullId = typeof memo?.pullId === 'string' ? memo.pullId : null;
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return null;
      throw error;
    }
    const doc = pullId ? await feeds.getPull(pullId) : null;
    if (doc?.state !== 'running') {
      const closed = await Promise.race([handle.result().then(() => true, () => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), CLOSING_WAIT_MS))]);
      if (closed) return null;
    }
    return { pullId };
  }

  /**
   * Records a pull and starts it under the feed's one pull id. When another pull of the feed runs,
   * the record is removed again and the answer is a 409 naming the running pull.
   */
  async function startPull(source: FeedSource, trigger: FeedTrigger, window: CursorWindow | null): Promise<FeedPullDoc> {
    const pull = newFeedPull(newPullId(), source._id, trigger, window ?? { from: null, to: null }, new Date());
    await feeds.createPull(pull);
    for (let attempt = 1; ; attempt++) {
      try {
        // Nothing will run an abandoned start: recorded as failed, not left running for ever.
        await startGated(
          gates,
          startGateKey.feedPull(pull._id),
          () => startFeedPull(temporal, source, { sourceId: source._id, pullId: pull._id, trigger, window, databaseName }, config),
          // Failed only if still running: the retention run may have failed it first, saying why.
          () => feeds.failRunning(pull._id, 'its workflow could not be started', new Date()),
        );
        break;
      } catch (error) {
        if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
        const busy = await busyWith(source._id);
        if (!busy && attempt === 1) continue;
        await feeds.removePull(pull._id);
        throw new ProblemError(409, 'pull-running', 'A pull of this feed is running', [{ path: 'params.id', message: `${busy?.pullId ? `pull ${busy.pullId}` : 'a pull'} of source ${source._id} is running; ask again once it is done` }]);
      }
    }
    logger.info({ sourceId: source._id, pullId: pull._id, trigger, workflowId: feedPullWorkflowId(databaseName, source._id) }, 'feed pull started');
    return pull;
  }

  async function answerStarted(res: Response, pull: FeedPullDoc): Promise<void> {
    res.status(202).location(`/v1/sources/${pull.sourceId}/pulls/${pull._id}`).json(await pullView(pull, uploads, databaseName));
  }

  router.post('/v1/sources/:id/pulls', admin, async (req, res) => {
    const source = await requireFeedSource(String(req.params.id));
    refusePaused(source);
    await answerStarted(res, await startPull(source, 'api', null));
  });

  router.post('/v1/sources/:id/backfill', admin, async (req, res) => {
    const source = await requireFeedSource(String(req.params.id));
    const window = parseOr400(BackfillRequestSchema, req.body, 'backfill');
    if (!source.feed.cursorColumn) {
      throw new ProblemError(409, 'no-cursor-column', 'A backfill needs a cursor column', [{ path: 'feed.cursorColumn', message: `source ${source._id} has no cursor column to take a window of` }]);
    }
    refusePaused(source);
    await answerStarted(res, await startPull(source, 'backfill', window));
  });

  router.get('/v1/sources/:id/pulls', admin, async (req, res) => {
    const source = await requireSource(sources, String(req.params.id));
    const query = parseOr400(UploadListQuerySchema, req.query, 'pulls query');
    const pulls = await feeds.listPulls(source._id, query.limit);
    res.json({ pulls: await Promise.all(pulls.map((doc) => pullView(doc, uploads, databaseName))) });
  });

  router.get('/v1/sources/:id/pulls/:pullId', admin, async (req, res) => {
    const source = await requireSource(sources, String(req.params.id));
    const pullId = String(req.params.pullId);
    const doc = await feeds.getPull(pullId);
    if (!doc || doc.sourceId !== source._id) throw new ProblemError(404, 'pull-not-found', 'No such pull', [{ path: 'params.pullId', message: `no pull ${pullId} of source ${source._id}` }]);
    res.json(await pullView(doc, uploads, databaseName));
  });

  return router;
}

export function registerFeedPaths({ registry, problem, json, adminKey }: OpenApiParts): void {
  const security = [{ [adminKey]: [] }];
  const admin = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  const sourceParam = z.object({ id: z.string() });
  const started = (description: string) => ({
    description,
    ...json(FeedPullViewSchema),
    links: { pull: { operationId: 'getFeedPull', parameters: { id: '$request.path.id', pullId: '$response.body#/pullId' } } },
  });
  const notRunnable = {
    404: problem('No such source'),
    409: problem('Not a feed source (`kind`); the source is paused (resume it first), or a pull of the feed is running (`params.id` names it; ask again once it is done)'),
    503: problem('Temporal is unavailable: the pull was recorded as failed and will not run; ask again'),
  };
  registry.registerPath({
    method: 'post',
    path: '/v1/sources/{id}/pulls',
    summary: 'Pull a feed now (as its schedule would): fetch what is new since the last completed pull, stage it, import it',
    description: [
      "A URL feed is fetched with If-None-Match / If-Modified-Since from the last completed pull (a 304 completes the pull with nothing to import); a folder feed reads the files no pull imported.",
      'With a `cursorColumn`, only rows at or past the cursor the last completed pull reached are imported; the cursor moves on when this pull completes.',
      'A 5xx, a timeout or a file cut short is fetched again with backoff, nothing of the broken attempt imported. Each row is imported once: its event id derives from its content, so a row read again is a duplicate.',
      'Pulls of a feed never overlap: they all run under the workflow `feed-pull:<store>:<source id>`.',
    ].join(' '),
    security,
    request: { params: sourceParam },
    responses: { 202: started('The pull runs in the background; follow `Location`'), ...admin, ...notRunnable },
  });
  registry.registerPath({
    method: 'post',
    path: '/v1/sources/{id}/backfill',
    summary: "Re-read a window of a feed's cursor column, whatever the feed's cursor and validators say",
    description:
      'The rows of the window come in again: those imported already (within DMP_DEDUPE_WINDOW_HOURS, by their event id) are counted as duplicates, the others — rows an earlier pull missed or could not match — are imported. The feed\'s cursor and validators stay as they were.',
    security,
    request: { params: sourceParam, body: { content: { 'application/json': { schema: BackfillRequestSchema } } } },
    responses: {
      202: started('The backfill runs in the background; follow `Location`'),
      400: problem('Invalid window (`from`, `to`)'),
      ...admin,
      ...notRunnable,
      409: problem('Not a feed source (`kind`), a feed without a cursor column (`feed.cursorColumn`), a paused source, or a pull of the feed running'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/sources/{id}/pulls',
    summary: "A feed's pulls, newest first",
    security,
    request: { params: sourceParam, query: UploadListQuerySchema },
    responses: {
      200: { description: 'Pulls', ...json(z.object({ pulls: z.array(FeedPullViewSchema) }).openapi('FeedPulls')) },
      400: problem('Invalid query (`limit`)'),
      ...admin,
      404: problem('No such source'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/sources/{id}/pulls/{pullId}',
    operationId: 'getFeedPull',
    summary: 'Where a pull stands: what the partner answered, rows read, skipped, unmatched, refused, imported and duplicate, and the attempts retried',
    security,
    request: { params: z.object({ id: z.string(), pullId: z.string() }) },
    responses: { 200: { description: 'The pull', ...json(FeedPullViewSchema) }, ...admin, 404: problem('No such source or pull (the records of pulls ended more than DMP_SOURCE_HISTORY_DAYS ago are removed, except a feed’s last one, which its status shows)') },
  });
}
