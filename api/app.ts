import express, { type Express, type Request } from 'express';
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { Config } from '../config';
import { hashSecret, keyedWriteKey, newSourceId, newWriteKey } from '../domain/ids';
import { RetiredIds } from '../store/retiredIds';
import { createIdentity, keyUsed, sameCreate } from './idempotency';
import { sourceWorkflowId } from '../domain/workflowIds';
import { summarizeHealth } from '../domain/sourceHealth';
import { identityKeysOf, IdentityError } from '../domain/identity';
import {
  collectRequestSchema,
  CreateSourceRequestSchema,
  SourceFieldsSchema,
  DEFAULT_CONSENT_POLICY,
  LookupQuerySchema,
  ProfileEventsQuerySchema,
  RefusalsQuerySchema,
  UnlinkRequestSchema,
  type SourceStatus,
} from '../domain/schemas';
import { logger } from '../logger';
import { pingStore, type Store } from '../store/db';
import { EventLog } from '../store/eventLog';
import { IdentityCapStore } from '../store/identityCaps';
import { ProfileEventLog } from '../store/profileEvents';
import { SegmentStore } from '../store/segments';
import { newScheduleSyncMark } from '../store/scheduleSyncs';
import { SourceStore, type SourceDoc } from '../store/sources';
import { ChannelRejections } from '../store/channelRejections';
import { ensureSourceWorkflow, queryWithin, terminateIfRunning, wakeSourceWorkflow } from '../temporal/client';
import { pauseSourceSignal, resumeSourceSignal, sourceStatusQuery } from '../workflows/sourceConnection';
import { requireAdmin, WriteKeys } from './auth';
import { Collector } from './collector';
import { GroupCommitter } from './groupCommit';
import { methodNotAllowed } from './methodNotAllowed';
import { buildOpenApiDocument } from './openapi';
import { bodySent, jsonDepthLimit, MANAGEMENT_PATHS, notFound, parseOr400, problemHandler, ProblemError, refuseNul, requireJsonType } from './problem';
import { requireSource } from './requireSource';
import { pendingWork } from './pendingWork';
import { PrivacyMarks } from '../store/privacyMarks';
import { collectedEvent, ProfileReader } from '../store/profileReader';
import { pageAfter, readCursor } from '../domain/eventPages';
import { SourceWaker } from './sourceWaker';
import { destinationsRouter } from './destinations';
import { insightsRouter } from './insights';
import { personalizationRouter } from './personalization';
import { privacyRouter } from './privacy';
import { partnersRouter } from './partners';
import { allowAnyOrigin, SEGMENT_API_PATHS, segmentApiRouter } from './segmentApi';
import { tagRouter } from './tag';
import { segmentsRouter } from './segments';
import { taxonomyRouter } from './taxonomy';
import { Unlinks, unlinkView } from './unlinks';
import { uploadsRouter } from './uploads';
import { feedSourceHooks, feedsRouter } from './feeds';

export type ApiConfig = Omit<Config, 'DMP_ADMIN_KEY'> & { DMP_ADMIN_KEY: string };

/** How long a source's status waits for its workflow's live progress before showing what it last reported. */
const STATUS_QUERY_WAIT_MS = 2_000;

export interface ApiDeps {
  config: ApiConfig;
  store: Store;
  temporal: Client;
}

/** Whether every percent-escape of a path decodes (the router decodes its parameters before any handler runs). */
function decodes(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

export function createApp({ config, store, temporal }: ApiDeps): Express {
  const sources = new SourceStore(store);
  const log = new EventLog(store, { dedupeWindowHours: config.DMP_DEDUPE_WINDOW_HOURS, rawEventTtlHours: config.DMP_RAW_EVENT_TTL_HOURS });
  const profiles = new ProfileReader(store);
  const routedEvents = new ProfileEventLog(store);
  const unlinks = new Unlinks(store, temporal, config);
  const caps = new IdentityCapStore(store);
  const feeds = feedSourceHooks({ store, temporal, config });
  const waker = new SourceWaker(
    (sourceId) => wakeSourceWorkflow(temporal, sourceId, (id) => sources.get(id), config),
    (sourceId, error) => logger.warn({ sourceId, workflowId: sourceWorkflowId(sourceId), err: error }, 'could not wake the source; its idle poll will'),
  );
  const committer = new GroupCommitter(log, config.DMP_CHUNK_MAX_EVENTS, (sourceId) => waker.notify(sourceId));
  const collector = new Collector(committer, config, new PrivacyMarks(store, config.DMP_PRIVACY_SALT));
  const rejections = new ChannelRejections(store);
  const writeKeys = new WriteKeys(sources);
  const retiredIds = new RetiredIds(store);
  const admin = requireAdmin(config.DMP_ADMIN_KEY);
  const openApi = buildOpenApiDocument(config);
  const collectRequest = collectRequestSchema(config.DMP_MAX_BATCH_EVENTS);

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // First, so that every answer on those paths (a 405 or 404 below too) may be read by a page.
  app.use(SEGMENT_API_PATHS, allowAnyOrigin);
  app.use(methodNotAllowed(openApi));
  // No resource has an id holding NUL, and the store cannot even look one up (domain/text.ts); nor one whose escapes do not decode.
  app.use((req, res, next) => (req.path.includes('%00') || !decodes(req.path) ? notFound(req, res, next) : next()));
  // An empty JSON body is left unread, not read as `{}`: a route that requires one then names it missing (parseOr400).
  app.use(express.json({ limit: config.DMP_MAX_BODY_BYTES, type: (req) => bodySent(req) && Boolean((req as Request).is(['application/json', 'application/*+json'])) }));
  app.use(jsonDepthLimit);
  app.use(MANAGEMENT_PATHS, refuseNul);

  app.get('/healthz', async (_req, res) => {
    const checks = await Promise.allSettled([pingStore(store), temporal.workflowService.getSystemInfo({})]);
    const [storeCheck, temporalCheck] = checks.map((check) => (check.status === 'fulfilled' ? 'ok' : String(check.reason)));
    const ok = storeCheck === 'ok' && temporalCheck === 'ok';
    res.status(ok ? 200 : 503).json({ status: ok ? 'ok' : 'unavailable', api: 'ok', store: storeCheck, temporal: temporalCheck });
  });

  app.get('/openapi.json', (_req, res) => {
    res.json(openApi);
  });

  // ---- sources -------------------------------------------------------------------------------

  app.post('/v1/sources', admin, async (req, res) => {
    parseOr400(SourceFieldsSchema, req.body, 'source');
    const body = parseOr400(CreateSourceRequestSchema, req.body, 'source');
    await feeds.check(body);
    // Scoped to the store: a source's workflow id names no database, and stores may share a Temporal namespace.
    const { id, createdWith } = await createIdentity(req, 'src', newSourceId, retiredIds, store.db.databaseName);
    const writeKey = createdWith ? keyedWriteKey(config.DMP_ADMIN_KEY, id, createdWith) : newWriteKey();
    const createdAt = new Date();
    const source: SourceDoc = { _id: id, ...body, writeKeyHash: hashSecret(writeKey), createdAt, ...(body.kind === 'feed' && { scheduleSync: newScheduleSyncMark(createdAt, true) }), ...(createdWith && { createdWith }) };
    let made = source;
    if (!(await sources.create(source))) {
      // The same create again (only a keyed one can be): answered as the first was, finishing what it may have left undone.
      made = sameCreate(await sources.get(id), createdWith);
      if (made.writeKeyHash !== source.writeKeyHash) throw keyUsed('the source it made has a write key this server cannot give again (its admin key changed since)');
      await sources.ensureKey(made);
    }
    try {
      await ensureSourceWorkflow(temporal, made, config);
      // Gone meanwhile: a create this slow was taken for one never answered, and undone (retention).
      if (made.scheduleSync?.create && !(await feeds.settleSchedule(id, made.scheduleSync)).exists) throw new ProblemError(503, 'unavailable', 'The source took too long to create and was undone; send it again');
    } catch (error) {
      // Under a key, what was made stays for the request sent again to finish (a feed's is undone
      // by retention if none comes): a repeat may have finished it already.
      if (createdWith) throw error;
      await sources.remove(source);
      // Nor a workflow or schedule of a source that is not there (one whose start answered too late).
      await terminateIfRunning(temporal, sourceWorkflowId(source._id), 'its source could not be created').catch(() => undefined);
      if (source.scheduleSync) await feeds.removeSchedule(source._id).catch(() => undefined);
      throw error;
    }
    logger.info({ sourceId: source._id, workflowId: sourceWorkflowId(source._id), kind: source.kind, party: source.party }, 'source created');
    res.status(201).json({ id: source._id, writeKey });
  });

  app.get('/v1/sources', admin, async (_req, res) => {
    const all = await sources.list();
    res.json({ sources: all.map(({ _id, name, kind, party, labels, createdAt }) => ({ id: _id, name, kind, party, labels, createdAt: createdAt.toISOString() })) });
  });

  async function describeSource(source: SourceDoc): Promise<SourceStatus> {
    const handle = temporal.workflow.getHandle(sourceWorkflowId(source._id));
    let workflowStatus = 'NOT_FOUND';
    let progress: SourceStatus['progress'] = null;
    try {
      const description = await handle.describe();
      workflowStatus = description.status.name;
      // A query waits for the workflow's task, which a routing turn holds for up to a minute: then
      // the progress it reported at its last turn's end (its memo) answers instead.
      if (workflowStatus === 'RUNNING') {
        progress = (await queryWithin(temporal, handle, sourceStatusQuery, STATUS_QUERY_WAIT_MS)) ?? ((description.memo?.progress as SourceStatus['progress'] | undefined) ?? null);
      }
    } catch (error) {
      if (!(error instanceof WorkflowNotFoundError)) throw error;
    }
    if (workflowStatus !== 'RUNNING') {
      // A source whose workflow is gone (e.g. terminated by an operator) gets it back.
      await ensureSourceWorkflow(temporal, source, config);
    }
    const pending = await pendingWork(log, source._id, progress?.cursor ?? 0);
    return {
      id: source._id,
      name: source.name,
      kind: source.kind,
      party: source.party,
      labels: source.labels,
      consent: source.consent ?? DEFAULT_CONSENT_POLICY,
      ...(source.mapping && { mapping: source.mapping }),
      ...(source.feed && { feed: await feeds.describe(source) }),
      createdAt: source.createdAt.toISOString(),
      workflowId: sourceWorkflowId(source._id),
      workflowStatus,
      progress,
      pending,
      rejections: await rejections.totalsFor(source._id),
      health: { ...summarizeHealth(progress?.health, Date.now()), lagSeconds: pending.lagSeconds },
      profiles: await routedEvents.foldCounts(source._id, config.DMP_PROFILE_PARTITIONS),
    };
  }

  app.get('/v1/sources/:id', admin, async (req, res) => {
    res.json(await describeSource(await requireSource(sources, String(req.params.id))));
  });

  for (const [action, signal, state] of [['pause', pauseSourceSignal, 'paused'], ['resume', resumeSourceSignal, 'active']] as const) {
    app.post(`/v1/sources/:id/${action}`, admin, async (req, res) => {
      const source = await requireSource(sources, String(req.params.id));
      // Saved first, so a workflow started again later (or right now) begins in this state.
      const scheduleSync = source.feed && newScheduleSyncMark();
      await sources.setState(source._id, state, scheduleSync);
      if (scheduleSync) await feeds.settleSchedule(source._id, scheduleSync);
      await ensureSourceWorkflow(temporal, source, config);
      await temporal.workflow.getHandle(sourceWorkflowId(source._id)).signal(signal);
      logger.info({ sourceId: source._id, workflowId: sourceWorkflowId(source._id) }, `source ${action}d`);
      res.status(202).json(await describeSource(source));
    });
  }

  // ---- collection ----------------------------------------------------------------------------

  app.post('/v1/collect', writeKeys.require(), async (req, res) => {
    requireJsonType(req);
    const { events, sentAt } = parseOr400(collectRequest, req.body, 'collect request');
    res.status(202).json(await collector.collect(req.source as SourceDoc, events, new Date(), sentAt));
  });

  // ---- profiles ------------------------------------------------------------------------------

  app.get('/v1/profiles/lookup', admin, async (req, res) => {
    const query = parseOr400(LookupQuerySchema, req.query, 'lookup query');
    let keys: string[];
    try {
      keys = identityKeysOf(query.type, query.value, config.DMP_DEFAULT_PHONE_REGION);
    } catch (error) {
      if (!(error instanceof IdentityError)) throw error;
      // Well-formed as a query, but no profile can hold such an identity: not found, and why.
      throw new ProblemError(404, 'profile-not-found', 'No profile can have this identity', [{ path: 'value', message: error.message }]);
    }
    let profile = null;
    for (const key of keys) if ((profile = await profiles.byIdentity(key))) break;
    if (!profile) throw new ProblemError(404, 'profile-not-found', 'No profile has this identity', [{ path: 'value', message: 'not found' }]);
    res.json(profile);
  });

  app.get('/v1/profiles/:id', admin, async (req, res) => {
    const id = String(req.params.id);
    const profile = await profiles.byId(id);
    if (!profile) throw new ProblemError(404, 'profile-not-found', 'No such profile', [{ path: 'params.id', message: `no profile ${id}` }]);
    res.json(profile);
  });

  app.get('/v1/profiles/:id/events', admin, async (req, res) => {
    const id = String(req.params.id);
    const query = parseOr400(ProfileEventsQuerySchema, req.query, 'events query');
    const events = await profiles.eventsOf(id);
    if (!events) throw new ProblemError(404, 'profile-not-found', 'No such profile', [{ path: 'params.id', message: `no profile ${id}` }]);
    const { page, next } = pageAfter(events, query.limit, query.cursor === undefined ? null : readCursor(query.cursor));
    res.json({ events: page.map(collectedEvent), next });
  });

  // ---- identity graph ------------------------------------------------------------------------

  app.post('/v1/identity/unlink', admin, async (req, res) => {
    const body = parseOr400(UnlinkRequestSchema, req.body, 'unlink request');
    const view = unlinkView(await unlinks.request(body.identities));
    res.status(202).location(view.statusUrl).json(view);
  });

  app.get('/v1/identity/unlinks/:id', admin, async (req, res) => {
    const id = String(req.params.id);
    const doc = await unlinks.get(id);
    if (!doc) throw new ProblemError(404, 'unlink-not-found', 'No such unlink', [{ path: 'params.id', message: `no unlink ${id}` }]);
    res.json(unlinkView(doc));
  });

  app.get('/v1/identity/refusals', admin, async (req, res) => {
    const query = parseOr400(RefusalsQuerySchema, req.query, 'refusals query');
    const refusals = await caps.list(query);
    res.json({
      refusals: refusals.map((refusal) => ({
        profileId: refusal.profileId,
        identity: refusal.key,
        type: refusal.type,
        cap: refusal.cap,
        eventId: refusal.eventId,
        sourceId: refusal.sourceId,
        at: refusal.at.toISOString(),
      })),
    });
  });

  const routerDeps = { store, temporal, config, admin, writeKeys, collector, rejections };
  app.use(segmentApiRouter(routerDeps));
  app.use(tagRouter(routerDeps));
  app.use(partnersRouter(routerDeps));
  app.use(uploadsRouter(routerDeps));
  app.use(feedsRouter(routerDeps));
  app.use(segmentsRouter({ store, temporal, config, admin }));
  app.use(destinationsRouter({ store, temporal, config, admin }));
  app.use(insightsRouter(routerDeps));
  app.use(personalizationRouter(routerDeps));
  app.use(privacyRouter(routerDeps));
  const segmentStore = new SegmentStore(store);
  app.use(taxonomyRouter({ store, admin, listSegments: async () => (await segmentStore.list()).map((doc) => ({ id: doc._id, name: doc.name, taxonomyPath: doc.taxonomyPath })) }));

  app.use(notFound);
  app.use(problemHandler);
  return app;
}
