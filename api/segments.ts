import { Router, type RequestHandler } from 'express';
import type { z } from 'zod';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { dayKey } from '../domain/profile';
import { EvaluationTime, findCycle, parseRule, referencedSegments, segmentReferences, SegmentEvaluator, type Rule } from '../domain/segmentRules';
import {
  CreateSegmentRequestSchema,
  EstimateRequestSchema,
  HistoryQuerySchema,
  MembersQuerySchema,
  olderSegmentFirst,
  parseSegmentCursor,
  segmentCursor,
  SegmentListQuerySchema,
  PatchSegmentRequestSchema,
  scheduleKey,
  wilson,
  type SegmentSchedule,
  type SegmentView,
} from '../domain/segments';
import { AudienceReportStore } from '../store/audienceReports';
import type { Store } from '../store/db';
import { decodeProfile, ProfileStore } from '../store/profiles';
import { onCurrentSnapshots, SegmentMembership } from '../store/segmentMembership';
import { SegmentRunStore, type RunDoc } from '../store/segmentRuns';
import { SourcePolicies } from '../store/sourcePolicies';
import { definitionsOf, newSegmentId, ruleOf, SegmentStore, type SegmentDoc, type SegmentEdit } from '../store/segments';
import { ensureSegmentSchedule, releaseSegmentSchedule, startRunOfSegments } from '../temporal/client';
import { StartGates } from '../store/startGates';
import { RetiredIds } from '../store/retiredIds';
import { createIdentity, sameCreate } from './idempotency';
import { parseOr400, ProblemError } from './problem';

/** Profiles read for an estimate before any run has kept a sample. */
const FIRST_SAMPLE = 2_000;
/** How long the API keeps the estimate sample before reading it again (a run keeps a new one). */
const SAMPLE_CACHE_MS = 60_000;

/**
 * A segment request: its rule's own problems first, each at its exact path (`rule.all[1].within`),
 * then the request as the document states it.
 */
function parseSegmentRequest<T extends z.ZodType>(schema: T, body: unknown, where: string): z.infer<T> {
  if (typeof body === 'object' && body !== null && 'rule' in body) {
    const parsed = parseRule(body.rule);
    if (!parsed.rule) throw new ProblemError(400, 'validation', 'Invalid segment rule', parsed.errors);
  }
  return parseOr400(schema, body, where);
}

/**
 * A valid rule checked against the segments it refers to (`referenced`: those it names and, in turn,
 * theirs, read by the caller): each segment it names exists (else 404 naming where), and none
 * refers back to `selfId` (else 409).
 */
function checkReferences(referenced: SegmentDoc[], rule: Rule, selfId: string | null): Rule {
  const rules = new Map(referenced.map((doc) => [doc._id, ruleOf(doc)]));
  const missing = segmentReferences(rule).filter(({ id }) => !rules.has(id) && id !== selfId);
  if (missing.length > 0) {
    throw new ProblemError(404, 'segment-not-found', 'The rule refers to a segment that does not exist', missing.map(({ id, path }) => ({ path, message: `no segment ${id}` })));
  }
  rules.set(selfId ?? '(new)', rule);
  const cycle = findCycle(rules);
  if (cycle) throw new ProblemError(409, 'segment-cycle', 'Segments would refer to each other', [{ path: 'rule', message: cycle.join(' → ') }]);
  return rule;
}

/** A rule's references to segments deleted since it was checked (see SegmentStore.markDeleting): a 409 naming each. */
function deletedMeanwhile(rule: Rule, gone: readonly string[]): ProblemError {
  const errors = segmentReferences(rule)
    .filter(({ id }) => gone.includes(id))
    .map(({ id, path }) => ({ path, message: `segment ${id} was deleted meanwhile` }));
  return new ProblemError(409, 'segment-deleted', 'A segment the rule refers to was deleted meanwhile: nothing was changed', errors);
}

function segmentView(doc: SegmentDoc, size: number | null): SegmentView {
  const iso = (date: Date) => date.toISOString();
  return {
    id: doc._id,
    name: doc.name,
    description: doc.description,
    taxonomyPath: doc.taxonomyPath,
    rule: ruleOf(doc),
    schedule: doc.schedule,
    version: doc.version,
    size,
    lastRun: doc.lastRun && { runId: doc.lastRun.runId, state: doc.lastRun.state, startedAt: iso(doc.lastRun.startedAt), finishedAt: doc.lastRun.finishedAt && iso(doc.lastRun.finishedAt) },
    currentRun: doc.current && { runId: doc.current.runId, version: doc.current.version, size: doc.current.size, evaluatedAt: iso(doc.current.now), finishedAt: iso(doc.current.finishedAt) },
    createdAt: iso(doc.createdAt),
    updatedAt: iso(doc.updatedAt),
  };
}

function runView(run: RunDoc, segmentId: string) {
  const iso = (date: Date) => date.toISOString();
  const has = (record: Record<string, number>) => (Object.hasOwn(record, segmentId) ? record[segmentId] : null);
  return {
    runId: run._id,
    state: run.state,
    segments: run.segments.map(({ id, version }) => ({ id, version })),
    evaluatedAt: iso(run.now),
    evaluated: run.evaluated,
    documentsScanned: run.documentsScanned,
    members: has(run.members),
    entered: has(run.entered),
    exited: has(run.exited),
    startedAt: iso(run.startedAt),
    finishedAt: run.finishedAt && iso(run.finishedAt),
    error: run.error,
  };
}

export interface SegmentsRouterDeps {
  store: Store;
  temporal: Client;
  config: Pick<Config, 'DMP_TASK_QUEUE'>;
  admin: RequestHandler;
}

/**
 * The segments API: definitions, membership, batch runs, estimates and history. Every change of a
 * rule starts a batch run over all profiles (no "only profiles seen again" gap); real-time changes
 * come from the partition writers as they fold events.
 */
export function segmentsRouter({ store, temporal, config, admin }: SegmentsRouterDeps): Router {
  const segments = new SegmentStore(store);
  const retiredIds = new RetiredIds(store);
  const runs = new SegmentRunStore(store);
  const gates = new StartGates(store);
  const reports = new AudienceReportStore(store);
  const profiles = new ProfileStore(store, 0);
  const sourcePolicies = new SourcePolicies(store);
  const databaseName = store.db.databaseName;
  const router = Router();

  async function load(id: string): Promise<SegmentDoc> {
    const doc = await segments.get(id);
    if (!doc) throw new ProblemError(404, 'segment-not-found', 'No such segment', [{ path: 'params.id', message: `no segment ${id}` }]);
    return doc;
  }

  // The sample is a few megabytes: kept here for a while rather than read for every estimate.
  let cachedSample: { at: number; sample: Awaited<ReturnType<SegmentRunStore['readSample']>> } | null = null;
  async function latestSample() {
    // None yet is not kept: the first run's sample is used as soon as it is written.
    if (!cachedSample?.sample || Date.now() - cachedSample.at > SAMPLE_CACHE_MS) cachedSample = { at: Date.now(), sample: await runs.readSample() };
    return cachedSample.sample;
  }

  /** Starts a run of the segment and of those its change touches; returns its id. */
  const startRun = (segmentId: string): Promise<string> => startRunOfSegments(temporal, databaseName, { segments, runs, gates }, [segmentId], config);

  /**
   * A segment's schedule changed from `before` to `after`: the schedule it now shares exists, and the
   * one it left goes if no segment has it any more (one left behind by a request cut short goes with
   * the retention run).
   */
  async function moveSchedule(before: SegmentSchedule | null, after: SegmentSchedule | null): Promise<void> {
    if (after) await ensureSegmentSchedule(temporal, databaseName, after, config);
    if (before && (!after || scheduleKey(before) !== scheduleKey(after))) await releaseSegmentSchedule(temporal, databaseName, scheduleKey(before), () => segments.schedules(), config);
  }

  async function views(docs: SegmentDoc[]): Promise<SegmentView[]> {
    const membership = new SegmentMembership(runs);
    const states = await membership.realTime(docs);
    return Promise.all(docs.map(async (doc) => segmentView(doc, await membership.size(doc, states))));
  }

  router.post('/v1/segments', admin, async (req, res) => {
    const body = parseSegmentRequest(CreateSegmentRequestSchema, req.body, 'segment');
    // A new segment has no dependents: its references (read by id) are all its check needs.
    const referenced = await segments.withReferences(referencedSegments(body.rule));
    const rule = checkReferences(referenced, body.rule, null);
    const now = new Date();
    const { id, createdWith } = await createIdentity(req, 'seg', newSegmentId, retiredIds);
    const doc: SegmentDoc = {
      _id: id,
      name: body.name,
      description: body.description ?? null,
      taxonomyPath: body.taxonomyPath ?? null,
      ruleJson: JSON.stringify(rule),
      schedule: body.schedule ?? null,
      version: 1,
      createdAt: now,
      updatedAt: now,
      current: null,
      lastRun: null,
      ...(createdWith && { createdWith }),
    };
    // The same create again is answered as the first was, finishing what that one left undone.
    const made = (await segments.create(doc)) ? doc : sameCreate(await segments.get(id), createdWith);
    // A segment it refers to deleted since the check above: undone, before anything evaluates it.
    const { missing, deleting } = await segments.gone(referencedSegments(rule));
    if (made !== doc && missing.length === 0 && deleting.length > 0) {
      // The same create again, while a DELETE of a segment it refers to is under way: that DELETE may
      // yet find the first request's segment and be refused; only once it is done can this one tell.
      throw new ProblemError(503, 'segment-deleting', 'A segment the rule refers to is being deleted: send the request again', deleting.map((other) => ({ path: 'rule', message: `segment ${other} is being deleted` })));
    }
    if (missing.length > 0 || deleting.length > 0) {
      await segments.remove(id);
      throw deletedMeanwhile(rule, [...missing, ...deleting]);
    }
    await moveSchedule(null, made.schedule);
    // Never evaluated, and no run under way (the first request stopped before it, or its start failed): one now.
    if (made === doc || (!made.current && made.lastRun?.state !== 'running')) await startRun(id);
    res.status(201).location(`/v1/segments/${id}`).json((await views([await load(id)]))[0]);
  });

  router.get('/v1/segments', admin, async (req, res) => {
    const query = parseOr400(SegmentListQuerySchema, req.query, 'segment list query');
    const docs = (await segments.list()).sort(olderSegmentFirst);
    const after = query.cursor === undefined ? null : parseSegmentCursor(query.cursor);
    const rest = after ? docs.filter((doc) => olderSegmentFirst(after, doc) < 0) : docs;
    const page = query.limit === undefined ? rest : rest.slice(0, query.limit);
    res.json({ segments: await views(page), next: page.length < rest.length ? segmentCursor(page[page.length - 1]) : null });
  });

  router.post('/v1/segments/estimate', admin, async (req, res) => {
    const body = parseSegmentRequest(EstimateRequestSchema, req.body, 'estimate request');
    const referenced = await segments.withReferences(referencedSegments(body.rule));
    const rule = checkReferences(referenced, body.rule, null);
    const evaluator = new SegmentEvaluator([...definitionsOf(referenced), { id: '(estimate)', rule }], await sourcePolicies.read());
    let sample = await latestSample();
    if (!sample) {
      // No run has kept a sample yet (no segment exists): the newest of the first versions read stand in, a
      // document each (retired ones, split or expired, are no one), scaled to the versions stored.
      const read = (await profiles.profiles.find({}).limit(FIRST_SAMPLE).toArray()).map(decodeProfile);
      const newest = new Map<string, (typeof read)[number]>();
      for (const doc of read) if ((newest.get(doc.profileId)?.version ?? -1) < doc.version) newest.set(doc.profileId, doc);
      const subjects = [...newest.values()].filter((doc) => !doc.retired);
      const population = Math.round(((await profiles.profiles.estimatedDocumentCount()) * subjects.length) / Math.max(1, read.length));
      sample = { runId: '', population, subjects };
    }
    const at = new EvaluationTime(new Date());
    const hits = sample.subjects.filter((subject) => evaluator.evaluate(subject, at).includes('(estimate)')).length;
    const n = sample.subjects.length;
    const interval = wilson(hits, n);
    const scale = (share: number) => Math.round(share * sample.population);
    res.json({ estimate: n === 0 ? 0 : scale(hits / n), low: scale(interval.low), high: scale(interval.high), sampled: n, population: sample.population });
  });

  router.get('/v1/segments/:id', admin, async (req, res) => {
    res.json((await views([await load(String(req.params.id))]))[0]);
  });

  /**
   * Puts back what an edit changed, field by field, under a newer version (which a run then
   * evaluates) — also over another edit made since, as long as that one left the rule as this one
   * set it; one that changed the rule again replaced it, and is checked on its own.
   */
  async function undoEdit(before: SegmentDoc, change: SegmentEdit): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await segments.get(before._id);
      if (!current || current.ruleJson !== change.ruleJson) return;
      const undo: SegmentEdit = { updatedAt: new Date(), version: current.version + 1 };
      for (const field of ['name', 'description', 'taxonomyPath', 'schedule', 'ruleJson'] as const) {
        if (change[field] !== undefined && JSON.stringify(current[field]) === JSON.stringify(change[field])) Object.assign(undo, { [field]: before[field] });
      }
      if (await segments.edit(before._id, current.version, undo)) return void (await startRun(before._id));
    }
    throw new ProblemError(409, 'segment-changed', 'The segment was changed meanwhile, and its rule names a deleted segment: read it and change the rule');
  }

  router.patch('/v1/segments/:id', admin, async (req, res) => {
    const doc = await load(String(req.params.id));
    const patch = parseSegmentRequest(PatchSegmentRequestSchema, req.body, 'segment change');
    const change: SegmentEdit = { updatedAt: new Date() };
    if (patch.name !== undefined) change.name = patch.name;
    if (patch.description !== undefined) change.description = patch.description;
    if (patch.taxonomyPath !== undefined) change.taxonomyPath = patch.taxonomyPath;
    if (patch.schedule !== undefined) change.schedule = patch.schedule;
    // A cycle through this segment would run through what its new rule refers to: those, read by id, are all the check needs.
    const ruleChanged = patch.rule !== undefined && JSON.stringify(checkReferences(await segments.withReferences(referencedSegments(patch.rule)), patch.rule, doc._id)) !== doc.ruleJson;
    if (ruleChanged) {
      change.ruleJson = JSON.stringify(patch.rule);
      change.version = doc.version + 1;
    }
    const next: SegmentDoc = { ...doc, ...change };
    if (!(await segments.edit(doc._id, doc.version, change))) {
      throw new ProblemError(409, 'segment-changed', 'The segment was changed meanwhile; read it and try again');
    }
    const found = ruleChanged ? await segments.gone(referencedSegments(patch.rule as Rule)) : { missing: [], deleting: [] };
    const gone = [...found.missing, ...found.deleting];
    if (gone.length > 0) {
      await undoEdit(doc, change);
      throw deletedMeanwhile(patch.rule as Rule, gone);
    }
    // A request cut short after the change was stored (Temporal unreachable: a 503) is made whole by
    // sending it again: the run of a version that has none yet starts then, and the schedule is set.
    const unevaluated = next.current?.version !== next.version && next.lastRun?.state !== 'running';
    if (ruleChanged || unevaluated) await startRun(doc._id);
    if (patch.schedule !== undefined) await moveSchedule(doc.schedule, next.schedule);
    res.json((await views([await load(doc._id)]))[0]);
  });

  router.delete('/v1/segments/:id', admin, async (req, res) => {
    const doc = await load(String(req.params.id));
    // Marked before looking: a segment made to refer to it meanwhile either shows up below or sees the mark and undoes itself.
    const mark = await segments.markDeleting(doc._id);
    const users = (await segments.list()).filter((other) => other._id !== doc._id && referencedSegments(ruleOf(other)).includes(doc._id));
    if (users.length > 0) {
      await segments.unmarkDeleting(mark);
      throw new ProblemError(409, 'segment-in-use', 'Other segments refer to this one', users.map((user) => ({ path: 'params.id', message: `used by segment ${user._id}` })));
    }
    // Its key's id is never made again: a run's states written late find no new segment there.
    if (doc.createdWith) await retiredIds.retire(doc._id);
    // Removed first: the shared schedule goes only when no segment has it.
    await segments.remove(doc._id);
    await segments.unmarkDeleting(mark);
    await moveSchedule(doc.schedule, null);
    await reports.remove(doc._id);
    res.status(204).end();
  });

  router.get('/v1/segments/:id/members', admin, async (req, res) => {
    const query = parseOr400(MembersQuerySchema, req.query, 'members query');
    const page = await onCurrentSnapshots(async () => {
      const doc = await load(String(req.params.id));
      const membership = new SegmentMembership(runs);
      return membership.members(doc, await membership.realTime([doc]), query.cursor ?? '', query.limit);
    });
    res.json(page);
  });

  router.post('/v1/segments/:id/runs', admin, async (req, res) => {
    const doc = await load(String(req.params.id));
    const runId = await startRun(doc._id);
    res.status(202).location(`/v1/segments/${doc._id}/runs/${runId}`).json({ runId });
  });

  router.get('/v1/segments/:id/runs/:runId', admin, async (req, res) => {
    const doc = await load(String(req.params.id));
    const run = await runs.getRun(String(req.params.runId));
    if (!run || !run.segments.some((segment) => segment.id === doc._id)) {
      throw new ProblemError(404, 'run-not-found', 'No such run of this segment', [{ path: 'params.runId', message: `no run ${String(req.params.runId)} of ${doc._id}` }]);
    }
    res.json(runView(run, doc._id));
  });

  router.get('/v1/segments/:id/history', admin, async (req, res) => {
    const doc = await load(String(req.params.id));
    const query = parseOr400(HistoryQuerySchema, req.query, 'history query');
    const days = new Map<string, { entered: number; exited: number }>();
    const add = (day: string, entered: number, exited: number) => {
      const entry = days.get(day) ?? { entered: 0, exited: 0 };
      entry.entered += entered;
      entry.exited += exited;
      days.set(day, entry);
    };
    for (const entry of await runs.historyOf(doc._id)) add(entry.day, entry.entered, entry.exited);
    for (const change of await runs.changesSince(new Date(0))) {
      const counts = Object.hasOwn(change.changes, doc._id) ? change.changes[doc._id] : undefined;
      if (counts) add(dayKey(change.at), counts.entered.length, counts.exited.length);
    }
    const first = dayKey(new Date(Date.now() - (query.days - 1) * 86_400_000));
    res.json({
      days: [...days]
        .filter(([day]) => day >= first)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([day, counts]) => ({ day: `${day.slice(0, 4)}-${day.slice(4, 6)}-${day.slice(6)}`, ...counts })),
    });
  });

  return router;
}
