import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import {
  CollectRequestSchema,
  CollectResponseSchema,
  CreateSourceRequestSchema,
  CreateSourceResponseSchema,
  EventInputSchema,
  LookupQuerySchema,
  ProblemSchema,
  ProfileEventsQuerySchema,
  ProfileEventsSchema,
  ProfileSchema,
  RefusalsQuerySchema,
  RefusalsSchema,
  UnlinkRequestSchema,
  UnlinkViewSchema,
  SourceStatusSchema,
} from '../domain/schemas';
import type { ApiConfig } from './app';

/** The OpenAPI document, generated from the same zod schemas the handlers validate with. */
export function buildOpenApiDocument(config: Pick<ApiConfig, 'DMP_MAX_BATCH_EVENTS' | 'DMP_MAX_BODY_BYTES'>) {
  const registry = new OpenAPIRegistry();
  const admin = registry.registerComponent('securitySchemes', 'adminKey', { type: 'http', scheme: 'bearer', description: 'Admin API key' });
  const writeKey = registry.registerComponent('securitySchemes', 'writeKey', { type: 'http', scheme: 'bearer', description: "A source's write key" });
  registry.register('Event', EventInputSchema);
  const problem = (description: string) => ({ description, content: { 'application/problem+json': { schema: ProblemSchema } } });
  const json = <T extends z.ZodType>(schema: T) => ({ content: { 'application/json': { schema } } });
  const idParam = z.object({ id: z.string() });

  registry.registerPath({
    method: 'get',
    path: '/healthz',
    summary: 'Healthy only when the API, Temporal and the store are all reachable',
    responses: { 200: { description: 'All reachable' }, 503: { description: 'Something is not reachable' } },
  });
  registry.registerPath({
    method: 'post',
    path: '/v1/sources',
    summary: "Create a source connection and start its workflow (`source:<id>`)",
    security: [{ [admin.name]: [] }],
    request: { body: json(CreateSourceRequestSchema) },
    responses: { 201: { description: 'Created', ...json(CreateSourceResponseSchema) }, 400: problem('Invalid body'), 401: problem('No admin key') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/sources/{id}',
    summary: "A source with its workflow's live status and the work pending",
    security: [{ [admin.name]: [] }],
    request: { params: idParam },
    responses: { 200: { description: 'Status', ...json(SourceStatusSchema) }, 404: problem('No such source') },
  });
  for (const action of ['pause', 'resume']) {
    registry.registerPath({
      method: 'post',
      path: `/v1/sources/{id}/${action}`,
      summary: `${action[0].toUpperCase()}${action.slice(1)} draining the source into profiles (collection continues)`,
      security: [{ [admin.name]: [] }],
      request: { params: idParam },
      responses: { 202: { description: 'Signalled', ...json(SourceStatusSchema) }, 404: problem('No such source') },
    });
  }
  registry.registerPath({
    method: 'post',
    path: '/v1/collect',
    summary: `Collect up to ${config.DMP_MAX_BATCH_EVENTS} events (body ≤ ${config.DMP_MAX_BODY_BYTES} bytes); answered once they are durably stored`,
    security: [{ [writeKey.name]: [] }],
    request: { body: json(CollectRequestSchema) },
    responses: {
      202: { description: 'Stored; invalid events are listed with their index and reasons', ...json(CollectResponseSchema) },
      400: problem('Malformed JSON or envelope'),
      401: problem('Missing or unknown write key'),
      413: problem('Body or batch too large'),
      415: problem('Not JSON'),
      503: problem('Store unavailable; nothing was acknowledged'),
    },
  });
  const adminProblems = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  registry.registerPath({
    method: 'get',
    path: '/v1/profiles/lookup',
    summary: 'Find a profile by any of its identities (raw emails and phones are hashed first)',
    security: [{ [admin.name]: [] }],
    request: { query: LookupQuerySchema },
    responses: { 200: { description: 'The profile', ...json(ProfileSchema) }, 400: problem('Invalid query'), ...adminProblems, 404: problem('No profile has this identity') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/profiles/{id}',
    summary: 'The 360° view of a profile: identities, traits with their origins, behaviour, consent, sources, merge history',
    description: 'Any id of a profile document merged into the profile finds it; `id` in the answer is the profile\'s own id.',
    security: [{ [admin.name]: [] }],
    request: { params: idParam },
    responses: { 200: { description: 'The profile', ...json(ProfileSchema) }, ...adminProblems, 404: problem('No such profile') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/profiles/{id}/events',
    summary: "A profile's retained events, newest first, in pages",
    security: [{ [admin.name]: [] }],
    request: { params: idParam, query: ProfileEventsQuerySchema },
    responses: { 200: { description: 'A page of events', ...json(ProfileEventsSchema) }, 400: problem('Invalid query'), ...adminProblems, 404: problem('No such profile') },
  });
  registry.registerPath({
    method: 'post',
    path: '/v1/identity/unlink',
    summary: 'Unlink identities: they stop counting as seen together, and a profile they no longer join is split in two',
    description:
      'Every co-occurrence of each pair among the identities is severed for good; later events that show them together link them again. ' +
      'When nothing else joins the two sides, a durable workflow rebuilds each side from its own retained events. Follow `statusUrl`.',
    security: [{ [admin.name]: [] }],
    request: { body: { content: { 'application/json': { schema: UnlinkRequestSchema } } } },
    responses: {
      202: { description: 'Accepted; the unlink runs in the background', ...json(UnlinkViewSchema) },
      400: problem('Invalid request (the field is named)'),
      ...adminProblems,
      404: problem('An identity has no profile'),
      409: problem('The identities are not in one profile'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/identity/unlinks/{id}',
    summary: 'Where an unlink stands, and the profiles it left',
    security: [{ [admin.name]: [] }],
    request: { params: idParam },
    responses: { 200: { description: 'The unlink', ...json(UnlinkViewSchema) }, ...adminProblems, 404: problem('No such unlink') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/identity/refusals',
    summary: 'Joins refused by the per-type identity caps (over-merge protection), newest first',
    description: 'A profile document holding its cap of an identity type (`DMP_IDENTITY_CAPS`) takes no more of that type: a new one gets a profile of its own, a known one is not linked.',
    security: [{ [admin.name]: [] }],
    request: { query: RefusalsQuerySchema },
    responses: { 200: { description: 'Refusals', ...json(RefusalsSchema) }, 400: problem('Invalid query'), ...adminProblems },
  });

  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'DMP API', version: '0.1.0', description: 'Collection, sources and profiles of the Data Management Platform' },
  });
}
