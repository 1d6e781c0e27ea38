import { Router } from 'express';
import { z } from 'zod';
import { ItemModelRequestSchema, ItemModelSchema, itemsOf, ProfileSegmentsSchema, recommend, RecommendationsQuerySchema, RecommendationsSchema, type ItemNeighbours } from '../domain/recommendations';
import { EvaluationTime, SegmentEvaluator } from '../domain/segmentRules';
import { ItemModelStore, type ItemModelHead } from '../store/itemModel';
import { definitionsOf, SegmentStore } from '../store/segments';
import { SourcePolicies } from '../store/sourcePolicies';
import { gatedSources } from '../domain/consentGate';
import { requestItemModel } from '../temporal/client';
import type { OpenApiParts } from './openapi';
import { ProfileReader } from '../store/profileReader';
import { Refreshed } from '../store/refreshed';
import { optionalJsonBody, parseOr400, ProblemError } from './problem';
import type { RouterDeps } from './routerDeps';

/** How long a page's answer may use segment definitions or an item model already read: one read per period, not per request. */
const REFRESH_MS = 5_000;

/**
 * On-page personalization: a profile's segments and recommended items, answered from what the API
 * holds in memory (segment definitions and the item model, re-read every few seconds) and one read
 * of the profile.
 */
export function personalizationRouter({ store, temporal, config, admin }: Pick<RouterDeps, 'store' | 'temporal' | 'config' | 'admin'>): Router {
  const reader = new ProfileReader(store);
  const segmentStore = new SegmentStore(store);
  // Read with the segment definitions: a changed policy reaches answers as soon as a changed segment does.
  const sourcePolicies = new SourcePolicies(store, REFRESH_MS);
  const models = new ItemModelStore(store);
  const segments = new Refreshed(REFRESH_MS, async () => {
    const [docs, policies] = await Promise.all([segmentStore.list(), sourcePolicies.read()]);
    return { evaluator: new SegmentEvaluator(definitionsOf(docs), policies), names: new Map(docs.map((doc) => [doc._id, doc.name])) };
  });
  // The model is read whole only when a new build is published; otherwise one read of its head.
  const model = new Refreshed<{ head: ItemModelHead | null; items: Map<string, ItemNeighbours> }>(REFRESH_MS, async (previous) => {
    const head = await models.head();
    if (!head) return { head: null, items: new Map() };
    if (previous?.head?.buildId === head.buildId) return previous;
    return { head, items: await models.read(head) };
  });
  const router = Router();

  async function personOf(id: string) {
    const person = await reader.person(id);
    if (!person) throw new ProblemError(404, 'profile-not-found', 'No such profile', [{ path: 'params.id', message: `no profile ${id}` }]);
    return person;
  }

  router.get('/v1/profiles/:id/segments', admin, async (req, res) => {
    const [person, current] = await Promise.all([personOf(String(req.params.id)), segments.get()]);
    const ids = current.evaluator.evaluate(person, new EvaluationTime(new Date()));
    res.json({ profileId: person.id, segments: ids.sort().map((id) => ({ id, name: current.names.get(id) ?? id })) });
  });

  router.get('/v1/profiles/:id/recommendations', admin, async (req, res) => {
    const query = parseOr400(RecommendationsQuerySchema, req.query, 'recommendations query');
    const [person, current] = await Promise.all([personOf(String(req.params.id)), model.get()]);
    const policies = await sourcePolicies.read(gatedSources([person]));
    // A person who opted out of profiling, or whose consent refuses it, is recommended nothing from what they did.
    const items = current.head && !person.optOut && !policies.refuses(person) ? recommend(current.items, itemsOf(person, current.head.eventTypes), query.limit) : [];
    res.json({ profileId: person.id, modelBuiltAt: current.head?.at.toISOString() ?? null, items });
  });

  router.get('/v1/recommendations/model', admin, async (_req, res) => {
    const head = await models.head();
    res.json({ state: head ? 'built' : 'none', builtAt: head?.at.toISOString() ?? null, fullBuildAt: head?.fullAt?.toISOString() ?? null, items: head?.items ?? 0, people: head?.people ?? 0, eventTypes: head?.eventTypes ?? config.DMP_ITEM_EVENT_TYPES });
  });

  router.post('/v1/recommendations/model', admin, async (req, res) => {
    const body = parseOr400(ItemModelRequestSchema, optionalJsonBody(req), 'item model request');
    const handle = await requestItemModel(temporal, store.db.databaseName, body.full, config);
    res.status(202).json({ workflowId: handle.workflowId });
  });

  return router;
}

export function registerPersonalizationPaths({ registry, problem, json, adminKey }: OpenApiParts): void {
  const security = [{ [adminKey]: [] }];
  const admin = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  const idParam = z.object({ id: z.string() });
  registry.registerPath({
    method: 'get',
    path: '/v1/profiles/{id}/segments',
    summary: "The profile's segments now, for on-page personalization (rules evaluated on the profile as it is; definitions read every few seconds)",
    security,
    request: { params: idParam },
    responses: { 200: { description: 'Its segments', ...json(ProfileSegmentsSchema) }, ...admin, 404: problem('No such profile') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/profiles/{id}/recommendations',
    summary: 'Items the profile has not interacted with, closest first to those it has (item-to-item co-occurrence)',
    description:
      "Interactions are `properties.item` of the profile's recent events of the model's event types (DMP_ITEM_EVENT_TYPES). Each candidate scores the sum of its cosine similarities (people who interacted with both over √(people of each)) to the profile's items. Served from the item model the `itemModel` workflow keeps: every DMP_ITEM_MODEL_REFRESH_MINUTES it applies the interactions folds recorded since (a full pass every DMP_ITEM_MODEL_EVERY_MINUTES), or when POST /v1/recommendations/model asks.",
    security,
    request: { params: idParam, query: RecommendationsQuerySchema },
    responses: { 200: { description: 'Recommended items', ...json(RecommendationsSchema) }, 400: problem('Invalid query'), ...admin, 404: problem('No such profile') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/recommendations/model',
    summary: 'The item model being served: when it was built, over how many items and people',
    security,
    responses: { 200: { description: 'The model', ...json(ItemModelSchema) }, ...admin },
  });
  registry.registerPath({
    method: 'post',
    path: '/v1/recommendations/model',
    summary: 'Update the item model now — a full build (one pass over every profile), or a refresh with the interactions folded since — or join the update running',
    security,
    request: { body: { required: false, content: { 'application/json': { schema: ItemModelRequestSchema } } } },
    responses: { 202: { description: 'The update runs in the background', ...json(z.object({ workflowId: z.string() })) }, 400: problem('Invalid body (the field is named)'), ...admin },
  });
}
