import { setTimeout as sleep } from 'node:timers/promises';
import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import {
  affinityOf,
  AffinityQuerySchema,
  AffinitySchema,
  ALL_PROFILES,
  insightsOf,
  InsightsQuerySchema,
  InsightsSchema,
  membershipMasks,
  overlapOf,
  OverlapRequestSchema,
  OverlapSchema,
  trendDayOf,
  TrendQuerySchema,
  TrendSchema,
  REPORT_CAMPAIGNS_KEPT,
  type AudienceReport,
} from '../domain/audienceReports';
import { campaignReportOf, CampaignReportQuerySchema, CampaignReportSchema } from '../domain/campaignReports';
import { LookalikeRequestSchema, lookalikeRunId, LookalikeViewSchema, type LookalikeView } from '../domain/lookalike';
import { dayKey } from '../domain/profile';
import { AudienceReportStore } from '../store/audienceReports';
import { DestinationStore } from '../store/destinations';
import { LookalikeRunStore, type LookalikeRunDoc } from '../store/lookalikeRuns';
import { onCurrentSnapshots, SegmentMembership } from '../store/segmentMembership';
import { SegmentStore, type SegmentDoc } from '../store/segments';
import { newScheduleSyncMark } from '../store/scheduleSyncs';
import { logger } from '../logger';
import { requestAudienceReports, settleLookalikeSchedule, startGated, startLookalike } from '../temporal/client';
import { StartGates, startGateKey } from '../store/startGates';
import type { OpenApiParts } from './openapi';
import { optionalJsonBody, parseOr400, ProblemError } from './problem';
import { idempotencyKeyOf, keyUsed, sameCreate } from './idempotency';
import { idForKey, IdempotencyKeySchema, requestFingerprint } from '../domain/idempotency';
import type { RouterDeps } from './routerDeps';

/** What a lookalike run whose workflow could not be started is failed with. */
const START_FAILED = 'its workflow could not be started';

/** Seconds a client is asked to wait before asking again for a report still being counted. */
const RETRY_AFTER_SECONDS = 10;

/**
 * Audience insights: composition (`insights`), over-represented traits (`affinity`) and the daily
 * series (`trend`) read the segment's audience report (activities/audienceReports); overlaps are
 * counted from memberships as they stand now.
 */
export function insightsRouter({ store, temporal, config, admin }: Pick<RouterDeps, 'store' | 'temporal' | 'config' | 'admin'>): Router {
  const segments = new SegmentStore(store);
  const reports = new AudienceReportStore(store);
  const lookalikes = new LookalikeRunStore(store);
  const destinations = new DestinationStore(store);
  const gates = new StartGates(store);
  const router = Router();

  async function evaluated(id: string, path: string): Promise<SegmentDoc & { current: NonNullable<SegmentDoc['current']> }> {
    const doc = await segments.get(id);
    if (!doc) throw new ProblemError(404, 'segment-not-found', 'No such segment', [{ path, message: `no segment ${id}` }]);
    if (!doc.current) throw new ProblemError(409, 'segment-not-evaluated', "The segment's first run has not completed", [{ path, message: `${id} has no members yet; see its lastRun` }]);
    return doc as SegmentDoc & { current: NonNullable<SegmentDoc['current']> };
  }

  /**
   * The segment's report, counted over the members of its current run: when the stored one predates
   * that run, a report is started (or the running one joined) and awaited for up to
   * DMP_REPORT_WAIT_SECONDS (0: started, not awaited). Null when none was ever counted and none finished in time.
   */
  async function reportOf(segment: SegmentDoc & { current: NonNullable<SegmentDoc['current']> }): Promise<{ report: AudienceReport; stale: boolean } | null> {
    let report = await reports.get(segment._id);
    const deadline = Date.now() + config.DMP_REPORT_WAIT_SECONDS * 1000;
    while (report?.runId !== segment.current.runId) {
      const handle = await requestAudienceReports(temporal, store.db.databaseName, config);
      if (Date.now() >= deadline) break;
      // A report that started before the run completed does not count it: the loop asks for the next one.
      const waited = new AbortController();
      await Promise.race([handle.result().catch(() => undefined), sleep(Math.max(0, deadline - Date.now()), undefined, { signal: waited.signal }).catch(() => undefined)]);
      waited.abort();
      report = await reports.get(segment._id);
    }
    return report ? { report, stale: report.runId !== segment.current.runId } : null;
  }

  function stillCounting(res: Response): void {
    res.status(202).set('Retry-After', String(RETRY_AFTER_SECONDS)).json({ state: 'counting', retryAfterSeconds: RETRY_AFTER_SECONDS });
  }

  router.get('/v1/segments/:id/insights', admin, async (req, res) => {
    const query = parseOr400(InsightsQuerySchema, req.query, 'insights query');
    const segment = await evaluated(String(req.params.id), 'params.id');
    const found = await reportOf(segment);
    if (!found) return stillCounting(res);
    res.json(insightsOf(segment._id, found.report, found.stale, query.top));
  });

  router.get('/v1/segments/:id/affinity', admin, async (req, res) => {
    const query = parseOr400(AffinityQuerySchema, req.query, 'affinity query');
    const segment = await evaluated(String(req.params.id), 'params.id');
    const baseSegment = query.base === ALL_PROFILES ? null : await evaluated(query.base, 'query.base');
    const found = await reportOf(segment);
    const base = baseSegment ? await reportOf(baseSegment) : await reports.get(ALL_PROFILES).then((report) => report && { report, stale: false });
    if (!found || !base) return stillCounting(res);
    res.json(affinityOf(segment._id, query.base, found.report, base.report, found.stale || base.stale, query.minSupport, query.limit));
  });

  router.get('/v1/segments/:id/trend', admin, async (req, res) => {
    const query = parseOr400(TrendQuerySchema, req.query, 'trend query');
    const id = String(req.params.id);
    if (!(await segments.get(id))) throw new ProblemError(404, 'segment-not-found', 'No such segment', [{ path: 'params.id', message: `no segment ${id}` }]);
    const days = Array.from({ length: query.days }, (_, n) => dayKey(new Date(Date.now() - (query.days - 1 - n) * 86_400_000)));
    const points = await reports.points(id, days);
    res.json({
      segmentId: id,
      days: days.flatMap((day) => {
        const point = points.get(day);
        return point ? [trendDayOf(day, point)] : [];
      }),
    });
  });

  router.get('/v1/campaigns/:campaign/report', admin, async (req, res) => {
    const query = parseOr400(CampaignReportQuerySchema, req.query, 'campaign report query');
    const segment = await evaluated(query.segment, 'query.segment');
    const found = await reportOf(segment);
    if (!found) return stillCounting(res);
    const campaign = String(req.params.campaign);
    // Its members' campaigns past the report's list were not counted: zeros would be a measure.
    const counted = found.report.campaigns ?? [];
    // Reports counted before the flag was kept: a full list may have been cut.
    const cut = found.report.campaignsCut ?? counted.length >= REPORT_CAMPAIGNS_KEPT;
    if (cut && !counted.some((figures) => figures.campaign === campaign)) {
      throw new ProblemError(404, 'campaign-not-counted', 'Campaign not counted', [{ path: 'params.campaign', message: `not among the ${REPORT_CAMPAIGNS_KEPT} campaigns reaching the most members of ${segment._id}, which alone the report counts` }]);
    }
    const holdouts = found.report.holdouts ?? [];
    let holdout = query.destination === undefined ? null : (holdouts.find((candidate) => candidate.destinationId === query.destination) ?? null);
    if (query.destination !== undefined && !holdout) {
      throw new ProblemError(400, 'validation', 'No holdout to measure against', [{ path: 'query.destination', message: `${query.destination} holds out none of ${segment._id} (as of the report)` }]);
    }
    if (query.destination === undefined && holdouts.length > 1) {
      throw new ProblemError(400, 'validation', 'Several holdouts: name one', [{ path: 'query.destination', message: `destinations ${holdouts.map((h) => h.destinationId).join(', ')} hold out members of ${segment._id}` }]);
    }
    holdout ??= holdouts[0] ?? null;
    const destination = holdout && (await destinations.get(holdout.destinationId));
    const delivery = destination ? { state: destination.state, partnerHolds: destination.held[segment._id]?.ids ?? 0 } : null;
    res.json(campaignReportOf(campaign, segment._id, found.report, found.stale, holdout, delivery));
  });

  router.post('/v1/segments/:id/lookalike', admin, async (req, res) => {
    const body = parseOr400(LookalikeRequestSchema, optionalJsonBody(req), 'lookalike request');
    const seed = await evaluated(String(req.params.id), 'params.id');
    const base = body.base ?? ALL_PROFILES;
    if (base !== ALL_PROFILES) {
      if (base === seed._id) throw new ProblemError(400, 'validation', 'The base cannot be the seed', [{ path: 'base', message: 'name another segment, or all' }]);
      await evaluated(base, 'base');
    }
    const startedAt = new Date();
    // Under an Idempotency-Key the run's id is the key's; else the same request within a second is the same run.
    const key = idempotencyKeyOf(req);
    const createdWith = key === undefined ? undefined : requestFingerprint({ seed: seed._id, ...body });
    const runId = key === undefined ? lookalikeRunId(seed._id, body, startedAt) : idForKey('lk', key);
    const run: LookalikeRunDoc = { _id: runId, ...(createdWith && { createdWith }), seedId: seed._id, base, reach: body.reach ?? null, accuracy: body.accuracy ?? null, state: 'running', auc: null, holdoutSize: 0, trainingSize: 0, threshold: null, reachFound: null, segmentId: null, topFeatures: [], excluded: [], error: null, retrain: body.retrain ?? null, retrainOf: null, latestRetrain: null, ...(body.retrain && { scheduleSync: newScheduleSyncMark(startedAt) }), startedAt, finishedAt: null };
    let made = run;
    if (!(await lookalikes.create(run)) && createdWith !== undefined) {
      // Sent again: answered as the first was, starting it if that one stopped before its start; an ended run is not trained again.
      made = sameCreate(await lookalikes.get(runId), createdWith);
      // Its start failed (answered 503), and a run given up at its start never runs: the key is spent.
      if (made.state === 'failed' && made.error === START_FAILED) throw keyUsed('the run it started could not be started (answered 503); a new run needs a new key');
      if (made.state !== 'running') return void res.status(202).location(`/v1/segments/${seed._id}/lookalike/${runId}`).json({ runId });
    }
    // Nothing will train an abandoned start: recorded as failed, not left running for ever.
    await startGated(
      gates,
      startGateKey.lookalike(runId),
      () => startLookalike(temporal, store.db.databaseName, runId, config),
      () => lookalikes.saveOutcome(runId, { state: 'failed', error: START_FAILED, finishedAt: new Date() }),
    );
    if (made.scheduleSync) {
      // The run is under way: asking again would start another. Its mark stays, and the retention run makes the schedule.
      await settleLookalikeSchedule(temporal, store.db.databaseName, lookalikes.scheduleSyncs, runId, made.scheduleSync, config).catch((error: unknown) =>
        logger.warn({ runId, err: error }, 'lookalike started; its re-training schedule is left to the retention run'),
      );
    }
    res.status(202).location(`/v1/segments/${seed._id}/lookalike/${runId}`).json({ runId });
  });

  const lookalikeRun = async (req: Request): Promise<LookalikeRunDoc> => {
    const run = await lookalikes.get(String(req.params.runId));
    if (!run || run.seedId !== String(req.params.id)) throw new ProblemError(404, 'lookalike-not-found', 'No such lookalike run of this segment', [{ path: 'params.runId', message: `no run ${String(req.params.runId)} of ${String(req.params.id)}` }]);
    return run;
  };

  router.get('/v1/segments/:id/lookalike/:runId', admin, async (req, res) => {
    res.json(lookalikeView(await lookalikeRun(req)));
  });

  router.delete('/v1/segments/:id/lookalike/:runId/retrain', admin, async (req, res) => {
    const run = await lookalikeRun(req);
    // Saved first: a schedule left behind (the API stopped in between) is removed by the retention run.
    const scheduleSync = newScheduleSyncMark();
    await lookalikes.set(run._id, { retrain: null, scheduleSync });
    await settleLookalikeSchedule(temporal, store.db.databaseName, lookalikes.scheduleSyncs, run._id, scheduleSync, config);
    res.status(204).end();
  });

  router.post('/v1/insights/overlap', admin, async (req, res) => {
    const body = parseOr400(OverlapRequestSchema, req.body, 'overlap request');
    const masks = await onCurrentSnapshots(async () => {
      const docs = await Promise.all(body.segments.map((id, k) => evaluated(id, `segments.${k}`)));
      const membership = new SegmentMembership(store);
      const states = await membership.realTime(docs);
      // The segments' members walked side by side in id order: a page of each in memory, not every member.
      return membershipMasks(docs.map((doc) => membership.pages(doc, states)));
    });
    res.json(overlapOf(body.segments, masks));
  });

  return router;
}

export function registerInsightPaths({ registry, problem, json, adminKey }: OpenApiParts): void {
  const security = [{ [adminKey]: [] }];
  const admin = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  const idParam = z.object({ id: z.string() });
  const notEvaluated = problem("The segment's first batch run has not completed (`params.id`, `query.base` or `query.segment`)");
  const counting = {
    description: 'No report has counted the segment yet and the one started did not finish in time: ask again after `Retry-After` seconds',
    ...json(z.object({ state: z.literal('counting'), retryAfterSeconds: z.number().int() })),
  };
  const reportNote =
    'Counted by the audience report: one pass over every profile for every segment, run daily (a point of the trend) and whenever this is asked of a segment whose report predates its last completed run — the answer then waits for the new report for up to DMP_REPORT_WAIT_SECONDS, and says `stale` if it did not finish.';
  registry.registerPath({
    method: 'get',
    path: '/v1/segments/{id}/insights',
    summary: "Who the segment's members are: top trait values, events, identity and consent coverage",
    description: reportNote,
    security,
    request: { params: idParam, query: InsightsQuerySchema },
    responses: { 200: { description: 'The insights', ...json(InsightsSchema) }, 202: counting, 400: problem('Invalid query'), ...admin, 404: problem('No such segment'), 409: notEvaluated },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/segments/{id}/affinity',
    summary: 'Trait values over-represented in the segment against a base (all profiles, or another segment)',
    description: `index = audienceShare / baseShare × 100: 100 means as common as in the base, 300 three times as common. Values held by fewer than \`minSupport\` members are left out, as are values the base's report does not keep. ${reportNote}`,
    security,
    request: { params: idParam, query: AffinityQuerySchema },
    responses: { 200: { description: 'Items, highest index first', ...json(AffinitySchema) }, 202: counting, 400: problem('Invalid query'), ...admin, 404: problem('No such segment (`params.id` or `query.base`)'), 409: notEvaluated },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/segments/{id}/trend',
    summary: "The segment's size and coverage per day, from the daily audience reports",
    security,
    request: { params: idParam, query: TrendQuerySchema },
    responses: { 200: { description: 'The series', ...json(TrendSchema) }, 400: problem('Invalid query'), ...admin, 404: problem('No such segment') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/campaigns/{campaign}/report',
    summary: "A campaign's response among a segment's members — reach, frequency, CTR, conversions — and its lift against a destination's holdout",
    description: `Counted from impression, click and conversion events carrying \`properties.campaign\` (conversions' \`properties.value\` summed), as profiles keep them (the 100 most recently seen campaigns per profile document). With a destination holding out a share of the segment (\`holdoutShare\`), \`holdout\` and \`treated\` compare the members it held out with those it exported, and \`lift\` is their conversion rates' ratio − 1 with a 95% interval. ${reportNote}`,
    security,
    request: { params: z.object({ campaign: z.string() }), query: CampaignReportQuerySchema },
    responses: {
      200: { description: 'The report', ...json(CampaignReportSchema) },
      202: counting,
      400: problem('Invalid query; or `query.destination` holds out none of the segment, or is needed because several destinations do'),
      ...admin,
      404: problem(`No such segment (\`query.segment\`); or its members' profiles record more than ${REPORT_CAMPAIGNS_KEPT} campaigns and \`params.campaign\` is not among the ${REPORT_CAMPAIGNS_KEPT} reaching the most of them, which alone a report counts (\`campaign-not-counted\`; a campaign with no response among no more than that is a 200 of zeros)`),
      409: notEvaluated,
    },
  });
  const runParams = z.object({ id: z.string(), runId: z.string() });
  registry.registerPath({
    method: 'post',
    path: '/v1/segments/{id}/lookalike',
    summary: 'Extend a segment to profiles like its members: train a model on it against a base, and create the extension as an ordinary segment',
    description:
      "A durable workflow passes over every profile once, trains a logistic regression of membership on binary features (trait values, event types, events in the last 30 days, identity types) — never those the seed's rule is defined by — on the seed against the rest of the base (up to 20,000 profiles a class, 20% held out to measure the AUC), scores the base, and creates the extension: a segment whose rule is the model (a `score` rule) and not the seed, holding the `reach` best-scored base profiles (or those at `accuracy` probability or more). Follow `Location`.",
    security,
    request: { params: idParam, headers: z.object({ 'idempotency-key': IdempotencyKeySchema.optional() }), body: { required: false, content: { 'application/json': { schema: LookalikeRequestSchema } } } },
    responses: {
      202: { description: 'The run started (or, sent again with its Idempotency-Key, the run the first request started, trained once)', ...json(z.object({ runId: z.string() })) },
      400: problem('Invalid body (the field is named), or the base is the seed; or an invalid Idempotency-Key (`headers.idempotency-key`)'),
      ...admin,
      404: problem('No such segment (`params.id`, or `base`)'),
      409: problem("The seed's or the base's first batch run has not completed; or the Idempotency-Key came with another request, or with one whose run could not be started (naming `headers.idempotency-key`)"),
      503: problem('Temporal is unavailable: the run was recorded as failed and will not run; ask again (a run that started is answered 202 even when its re-training schedule could not be made yet: the hourly retention run makes it)'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/segments/{id}/lookalike/{runId}',
    summary: 'Where a lookalike run stands: its holdout AUC, threshold, reach, extension segment and strongest features',
    security,
    request: { params: runParams },
    responses: { 200: { description: 'The run', ...json(LookalikeViewSchema) }, ...admin, 404: problem('No such run of this segment') },
  });
  registry.registerPath({
    method: 'delete',
    path: '/v1/segments/{id}/lookalike/{runId}/retrain',
    summary: "Stop a lookalike's re-training schedule (the extension segment keeps the model it holds)",
    security,
    request: { params: runParams },
    responses: {
      204: { description: 'Stopped (or there was none)' },
      ...admin,
      404: problem('No such run of this segment'),
      503: problem('Temporal is unavailable: the stop is saved and its schedule removed by the next retention run; sending it again removes it now'),
    },
  });
  registry.registerPath({
    method: 'post',
    path: '/v1/insights/overlap',
    summary: 'Pairwise overlaps of 2 to 20 segments: sizes, intersections and Jaccard indexes, from memberships as they stand now',
    security,
    request: { body: { content: { 'application/json': { schema: OverlapRequestSchema } } } },
    responses: {
      200: { description: 'The overlaps', ...json(OverlapSchema) },
      400: problem('Invalid body (`segments`)'),
      ...admin,
      404: problem('No such segment (`segments.<i>`)'),
      409: notEvaluated,
      503: problem("A segment's snapshot was replaced while it was read, three times in a row (`snapshot-replaced`): retry"),
    },
  });
}

function lookalikeView(run: LookalikeRunDoc): LookalikeView {
  return {
    runId: run._id,
    state: run.state,
    seedId: run.seedId,
    base: run.base,
    auc: run.auc,
    holdoutSize: run.holdoutSize,
    trainingSize: run.trainingSize,
    threshold: run.threshold,
    reach: run.reachFound,
    segmentId: run.segmentId,
    topFeatures: run.topFeatures,
    excluded: run.excluded,
    error: run.error,
    retrain: run.retrain ?? null,
    retrainOf: run.retrainOf ?? null,
    latestRetrain: run.latestRetrain ?? null,
    startedAt: run.startedAt.toISOString(),
    finishedAt: run.finishedAt?.toISOString() ?? null,
  };
}
