import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { IdempotencyKeySchema } from '../domain/idempotency';
import {
  collectRequestSchema,
  CollectResponseSchema,
  CreateSourceRequestSchema,
  CreateSourceResponseSchema,
  EventInputSchema,
  PartySchema,
  SourceKindSchema,
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
import {
  CreateSegmentRequestSchema,
  EstimateRequestSchema,
  EstimateSchema,
  HistoryQuerySchema,
  HistorySchema,
  MembersQuerySchema,
  MembersSchema,
  PatchSegmentRequestSchema,
  RunViewSchema,
  SegmentListQuerySchema,
  SegmentViewSchema,
} from '../domain/segments';
import { DestinationViewSchema, ExportListQuerySchema, ExportRequestSchema, ExportViewSchema, PatchDestinationRequestSchema } from '../domain/destinations';
import { RuleSchema } from '../domain/segmentRules';
import { MAX_TAXONOMY_CELL, TaxonomyImportQuerySchema, TaxonomyImportResponseSchema, TaxonomyTreeSchema } from '../domain/taxonomy';
import type { ApiConfig } from './app';
import { registerPartnerPaths } from './partners';
import { registerSegmentApiPaths } from './segmentApi';
import { createDestinationRequestSchema } from './destinations';
import { PIXEL_PATH } from './pixel';
import { MANAGEMENT_PATHS } from './problem';
import { registerTagPaths } from './tag';
import { TAXONOMY_FILE_TYPES } from './taxonomy';
import { registerUploadPaths } from './uploads';
import { registerFeedPaths } from './feeds';
import { registerInsightPaths } from './insights';
import { registerPersonalizationPaths } from './personalization';
import { registerPrivacyPaths } from './privacy';

/** What a router's module needs to document its own paths. */
export interface OpenApiParts {
  registry: OpenAPIRegistry;
  problem: (description: string) => object;
  json: <T extends z.ZodType>(schema: T) => object;
  adminKey: string;
  writeKey: string;
  config: DocumentConfig;
}

/** The settings the document states limits from. */
export type DocumentConfig = Pick<ApiConfig, 'DMP_MAX_BATCH_EVENTS' | 'DMP_MAX_BODY_BYTES' | 'DMP_DESTINATION_ALLOWLIST'>;

/** The OpenAPI document, generated from the same zod schemas the handlers validate with. */
export function buildOpenApiDocument(config: DocumentConfig) {
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
    request: { headers: z.object({ 'idempotency-key': IdempotencyKeySchema.optional() }), body: json(CreateSourceRequestSchema) },
    responses: {
      201: { description: 'Created (or, sent again with its Idempotency-Key, the source the first request made, with the same write key)', ...json(CreateSourceResponseSchema) },
      400: problem('Invalid body, naming each field; or an invalid Idempotency-Key (`headers.idempotency-key`)'),
      401: problem('No admin key'),
      403: problem("A feed's `feed.url` resolves to a private, loopback or link-local address (not in `DMP_DESTINATION_ALLOWLIST`), or is plain http to a host not allowlisted"),
      404: problem("A feed's `feed.url` host does not resolve, or a `partner:<id>` column of `feed.mapping.identities` names no sync partner"),
      409: problem('The Idempotency-Key came with another request, or the source it made has a write key this server cannot give again (its admin key changed since), naming `headers.idempotency-key`'),
      503: problem('Temporal is unavailable, or the create took so long it was undone: nothing was created (under an Idempotency-Key, maybe only part of it); send it again'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/openapi.json',
    summary: 'This document',
    responses: { 200: { description: 'The OpenAPI 3.1 document', content: { 'application/json': { schema: z.object({}).passthrough() } } } },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/sources',
    summary: 'Every source, oldest first',
    security: [{ [admin.name]: [] }],
    responses: {
      200: {
        description: 'Sources',
        ...json(z.object({ sources: z.array(z.object({ id: z.string(), name: z.string(), kind: SourceKindSchema, party: PartySchema, labels: z.array(z.string()), createdAt: z.string() })) })),
      },
    },
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
    request: { body: json(collectRequestSchema(config.DMP_MAX_BATCH_EVENTS)) },
    responses: {
      202: {
        description:
          'Stored; invalid events are listed with their index and reasons. Repeats within what was stored together are counted in `duplicates`; a repeat of an event acknowledged by an earlier request is stored too and dropped when folded into its profile (counted on the source as `profiles.duplicatesDropped`)',
        ...json(CollectResponseSchema),
      },
      400: problem('Malformed JSON or envelope (`events`: 1 to DMP_MAX_BATCH_EVENTS of them)'),
      401: problem('Missing or unknown write key'),
      413: problem('Body larger than DMP_MAX_BODY_BYTES'),
      415: problem('Not JSON'),
      503: problem('Store unavailable or too slow; nothing was acknowledged, yet what was written may still be applied: send the same request again — events with an `id` are dropped as repeats when folded, events without one may then count twice'),
    },
  });
  const adminProblems = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  registry.registerPath({
    method: 'get',
    path: '/v1/profiles/lookup',
    summary: 'Find a profile by any of its identities (raw emails and phones are hashed first)',
    security: [{ [admin.name]: [] }],
    request: { query: LookupQuerySchema },
    responses: { 200: { description: 'The profile', ...json(ProfileSchema) }, 400: problem('Invalid query'), ...adminProblems, 404: problem('No profile has this identity, or can have it (the value is not one of its type; the problem names `value`)') },
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
      400: problem('Invalid request (the field is named), or the same identity twice as normalized (an email in another case, a hash in another encoding)'),
      ...adminProblems,
      404: problem('An identity has no profile, or none can have it (the value is not one of its type; the problem names `identities.<i>.value`)'),
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

  // ---- segments ---------------------------------------------------------------------------------
  registry.register('Rule', RuleSchema);
  const ruleProblem = problem('Invalid body or rule: each problem names its path (`rule.all[1].within`), e.g. an unknown field, a window longer than the 90 days kept, more than 500 conditions');
  const missingSegment = 'a segment the rule refers to does not exist (named by its path, `rule.all[1].segment`)';
  const deletedMeanwhile = 'a segment the rule refers to was deleted while the request was stored (`segment-deleted`, named by its path): nothing is changed';
  const runIdParam = z.object({ id: z.string(), runId: z.string() });
  /** A start that failed: its work was recorded as failed and never runs (a start that went through despite the error is answered as started). */
  const notStarted = (what: string) => problem(`Temporal is unavailable: ${what} was recorded as failed and will not run; ask again`);
  /** Creates a client may send again (its answer lost) take an Idempotency-Key (api/idempotency). */
  const idempotencyHeader = z.object({ 'idempotency-key': IdempotencyKeySchema.optional() });
  const segmentPaths: Array<{ method: 'get' | 'post' | 'patch' | 'delete'; path: string; summary: string; request?: object; ok: [number, string, z.ZodType | null]; extra?: object }> = [
    {
      method: 'post',
      path: '/v1/segments',
      summary: 'Create a segment; a batch run evaluates it over every existing profile at once, and partition writers keep it current in real time',
      request: { headers: idempotencyHeader, body: json(CreateSegmentRequestSchema) },
      ok: [201, 'Created (or, sent again with its Idempotency-Key, the segment the first request made)', SegmentViewSchema],
      extra: { 400: ruleProblem, 404: problem(`Not found: ${missingSegment}`), 409: problem(`The Idempotency-Key came with another request, or what it made was deleted (naming \`headers.idempotency-key\`); or ${deletedMeanwhile}`), 503: problem('Temporal is unavailable: the segment was stored (listed by GET /v1/segments) and its first run recorded as failed; start one with POST /v1/segments/{id}/runs. Or the same create sent again while a segment its rule refers to is being deleted (`segment-deleting`): send it again') },
    },
    {
      method: 'get',
      path: '/v1/segments',
      summary: 'The segments with their sizes and runs, oldest first: all of them, or a page of `limit` at a time',
      request: { query: SegmentListQuerySchema },
      ok: [200, 'Segments', z.object({ segments: z.array(SegmentViewSchema), next: z.string().nullable().openapi({ description: 'The cursor of the next page; null on the last' }) })],
      extra: { 400: problem('Invalid query (`limit`, `cursor`)') },
    },
    { method: 'get', path: '/v1/segments/{id}', summary: 'A segment', request: { params: idParam }, ok: [200, 'The segment', SegmentViewSchema], extra: { 404: problem('No such segment') } },
    {
      method: 'patch',
      path: '/v1/segments/{id}',
      summary: 'Change a segment; a changed rule is a new version, evaluated over every profile by a new run',
      request: { params: idParam, body: json(PatchSegmentRequestSchema) },
      ok: [200, 'The segment', SegmentViewSchema],
      extra: {
        400: ruleProblem,
        404: problem(`No such segment, or ${missingSegment}`),
        409: problem(`Changed meanwhile, or the rule would make segments refer to each other (\`rule\`, naming the cycle), or ${deletedMeanwhile}`),
        503: problem('Temporal is unavailable: the change was stored and its run recorded as failed; send the change again to start the run'),
      },
    },
    {
      method: 'delete',
      path: '/v1/segments/{id}',
      summary: 'Delete a segment (refused while another segment refers to it)',
      request: { params: idParam },
      ok: [204, 'Deleted', null],
      extra: { 404: problem('No such segment'), 409: problem('Another segment refers to it') },
    },
    {
      method: 'get',
      path: '/v1/segments/{id}/members',
      summary: 'Members in ascending profile id order, in pages: the last completed run with real-time changes since',
      request: { params: idParam, query: MembersQuerySchema },
      ok: [200, 'A page of members', MembersSchema],
      extra: { 400: problem('Invalid query'), 404: problem('No such segment'), 503: problem("The segment's snapshot was replaced while it was read, three times in a row (`snapshot-replaced`): retry") },
    },
    {
      method: 'post',
      path: '/v1/segments/{id}/runs',
      summary: 'Start a batch run now of this segment, the segments that refer to it, and those of runs whose pass has not begun (one pass for all of them); its id derives from the segment versions and the second',
      request: { params: idParam },
      ok: [202, 'Started', z.object({ runId: z.string() })],
      extra: { 404: problem('No such segment'), 503: notStarted('the run') },
    },
    {
      method: 'get',
      path: '/v1/segments/{id}/runs/{runId}',
      summary: 'Where a batch run stands',
      request: { params: runIdParam },
      ok: [200, 'The run', RunViewSchema],
      extra: { 404: problem('No such segment or run (the records of runs ended more than DMP_SEGMENT_RUN_DAYS ago are removed, unless the segment still reads or shows the run)') },
    },
    {
      method: 'post',
      path: '/v1/segments/estimate',
      summary: "Estimate a rule's audience from the uniform sample the last run kept (well under a second)",
      request: { body: json(EstimateRequestSchema) },
      ok: [200, 'The estimate', EstimateSchema],
      extra: { 400: ruleProblem, 404: problem(`Not found: ${missingSegment}`) },
    },
    {
      method: 'get',
      path: '/v1/segments/{id}/history',
      summary: 'Profiles that entered and exited per day (real-time changes and batch runs)',
      request: { params: idParam, query: HistoryQuerySchema },
      ok: [200, 'Per day', HistorySchema],
      extra: { 400: problem('Invalid query'), 404: problem('No such segment') },
    },
  ];
  registry.registerPath({
    method: 'get',
    path: '/v1/taxonomy',
    summary: 'The taxonomy: folders of segments (by their taxonomyPath), and each imported category taxonomy',
    security: [{ [admin.name]: [] }],
    responses: { 200: { description: 'The tree', ...json(TaxonomyTreeSchema) }, ...adminProblems },
  });
  registry.registerPath({
    method: 'post',
    path: '/v1/taxonomy/imports',
    summary: "Import the IAB Audience Taxonomy (TSV/CSV: Unique ID, Parent ID, Name or Condensed Name, Tier 1–6) or a data provider's own (CSV: id, parent_id, name, description?); replaces that taxonomy whole",
    security: [{ [admin.name]: [] }],
    // One object exploded into the query parameters (`format=provider&name=acme`): a parameter each could not say that `provider` needs a `name`.
    parameters: [{ name: 'import', in: 'query', required: true, style: 'form', explode: true, description: '`format` (`iab` or `provider`) and `name`, the taxonomy to replace: required for `provider`, `iab-audience-1.1` by default for `iab`', schema: inputJsonSchema(TaxonomyImportQuerySchema) }],
    request: { body: { content: Object.fromEntries(TAXONOMY_FILE_TYPES.map((type) => [type, { schema: z.string().min(1).openapi({ description: 'The file' }) }])) } },
    responses: {
      201: { description: 'Imported', ...json(TaxonomyImportResponseSchema) },
      400: problem('Invalid query (`format`, `name`), or no file'),
      ...adminProblems,
      409: problem('A later import of the same taxonomy replaced this one'),
      413: problem('File larger than 20 MB'),
      415: problem('Not a text file'),
      422: problem(
        `Refused for what only its rows tell — empty or repeated ids, unknown parents, cycles, too deep, an id longer than ${MAX_TAXONOMY_CELL.id} characters (a name ${MAX_TAXONOMY_CELL.name}, a description ${MAX_TAXONOMY_CELL.description}) or a cell holding a NUL, a header without the columns: ` +
          'nothing was imported (an import is all or nothing), and each problem (`errors`, at most 100) names its row and column (`row 4.parent_id`), its header (`header.Parent ID`) or the whole file (`(body)`)',
      ),
    },
  });
  // ---- destinations -----------------------------------------------------------------------------
  const destinationProblem = problem('Invalid body: each problem names its field — `config.url` not https (http only for hosts in DMP_DESTINATION_ALLOWLIST), `idType` the connector does not take');
  const destinationForbidden = problem('Not an admin key, or `config.url` resolves to a private, loopback or link-local address (allow the host with DMP_DESTINATION_ALLOWLIST)');
  const destinationReferences = 'a segment (`segments.<i>`) or the sync partner of a `partner:<id>` idType (`idType`) does not exist, or the host of `config.url` does not resolve';
  const exportIdParam = z.object({ id: z.string(), exportId: z.string() });
  /** A change saved whose schedule update Temporal did not take: the retention run makes it (schedulesResynced). */
  const scheduleOwed = problem('Temporal is unavailable: the change is saved and its schedule is made to match by the next retention run; sending it again makes it now');
  segmentPaths.push(
    {
      method: 'post',
      path: '/v1/destinations',
      summary: 'Create a destination: a partner, the segments it receives, as which ids, on which schedule (a Temporal Schedule per destination)',
      request: { headers: idempotencyHeader, body: json(createDestinationRequestSchema(new Set(config.DMP_DESTINATION_ALLOWLIST))) },
      ok: [201, 'Created (or, sent again with its Idempotency-Key, the destination the first request made)', DestinationViewSchema],
      extra: {
        400: destinationProblem,
        403: destinationForbidden,
        404: problem(`Not found: ${destinationReferences}`),
        409: problem('The Idempotency-Key came with another request, or what it made was deleted (naming `headers.idempotency-key`); or a secret was sent as `"(set)"`, which stands for a stored one (naming `config.<field>`)'),
        503: problem('Temporal is unavailable, or the create took so long it was undone: send it again (under its Idempotency-Key, a repeat answers with what was made)'),
      },
    },
    { method: 'get', path: '/v1/destinations', summary: 'Every destination (secrets never shown)', ok: [200, 'Destinations', z.object({ destinations: z.array(DestinationViewSchema) })] },
    { method: 'get', path: '/v1/destinations/{id}', summary: 'A destination, with what the partner holds per segment', request: { params: idParam }, ok: [200, 'The destination', DestinationViewSchema], extra: { 404: problem('No such destination') } },
    {
      method: 'patch',
      path: '/v1/destinations/{id}',
      summary: 'Change a destination; segments taken off are emptied at the partner by the next export',
      request: { params: idParam, body: json(PatchDestinationRequestSchema) },
      ok: [200, 'The destination', DestinationViewSchema],
      extra: {
        400: problem('Invalid body, naming the field'),
        403: destinationForbidden,
        404: problem(`No such destination, or ${destinationReferences}`),
        409: problem("The config or the segments do not fit the destination's connector (naming `config.<field>` or `segments`: a people-based list takes one), the address changes without the secret sent again, or a secret is sent as `\"(set)\"` where none is stored"),
        503: scheduleOwed,
      },
    },
    {
      method: 'delete',
      path: '/v1/destinations/{id}',
      summary: 'Delete a destination, its schedule and the partner state its exports kept',
      request: { params: idParam },
      ok: [204, 'Deleted', null],
      extra: { 404: problem('No such destination'), 503: problem('Temporal is unavailable: the destination is left paused; send the DELETE again') },
    },
    { method: 'post', path: '/v1/destinations/{id}/pause', summary: 'Pause its schedule; manual exports are refused while paused', request: { params: idParam }, ok: [200, 'The destination', DestinationViewSchema], extra: { 404: problem('No such destination'), 503: scheduleOwed } },
    { method: 'post', path: '/v1/destinations/{id}/resume', summary: 'Resume its schedule', request: { params: idParam }, ok: [200, 'The destination', DestinationViewSchema], extra: { 404: problem('No such destination'), 503: scheduleOwed } },
    {
      method: 'post',
      path: '/v1/destinations/{id}/exports',
      summary: 'Export now: the delta since the last confirmed export, or everything with `full` (and removal of what the partner should no longer hold)',
      request: { params: idParam, body: { ...json(ExportRequestSchema), required: false } },
      ok: [202, 'Started', z.object({ exportId: z.string() })],
      extra: { 400: problem('Invalid body'), 404: problem('No such destination'), 409: problem('The destination is paused'), 503: notStarted('the export') },
    },
    { method: 'get', path: '/v1/destinations/{id}/exports', summary: 'Its exports, newest first', request: { params: idParam, query: ExportListQuerySchema }, ok: [200, 'Exports', z.object({ exports: z.array(ExportViewSchema) })], extra: { 400: problem('Invalid query'), 404: problem('No such destination') } },
    { method: 'get', path: '/v1/destinations/{id}/exports/{exportId}', summary: 'One export: counts, match rate, batches and what export controls withheld', request: { params: exportIdParam }, ok: [200, 'The export', ExportViewSchema], extra: { 404: problem('No such export (the records of exports ended more than DMP_EXPORT_HISTORY_DAYS ago are removed, except a destination’s last)') } },
  );
  for (const { method, path, summary, request, ok, extra } of segmentPaths) {
    const [status, description, schema] = ok;
    registry.registerPath({
      method,
      path,
      summary,
      security: [{ [admin.name]: [] }],
      request,
      responses: { [status]: schema ? { description, ...json(schema) } : { description }, ...adminProblems, ...extra },
    });
  }

  const parts: OpenApiParts = { registry, problem, json, adminKey: admin.name, writeKey: writeKey.name, config };
  registerSegmentApiPaths(parts);
  registerTagPaths(parts);
  registerPartnerPaths(parts);
  registerUploadPaths(parts);
  registerFeedPaths(parts);
  registerInsightPaths(parts);
  registerPersonalizationPaths(parts);
  registerPrivacyPaths(parts);

  // A copy: the generator's nodes can be the schemas' own metadata objects, which the marking below would change for every later document.
  const document = structuredClone(
    new OpenApiGeneratorV31(registry.definitions).generateDocument({
      openapi: '3.1.0',
      info: { title: 'DMP API', version: '0.1.0', description: 'Collection, sources, profiles, segments and destinations of the Data Management Platform' },
    }),
  );
  documentCommonProblems(document, admin.name);
  documentNulRefusal(document);
  return document;
}

/** What management routes accept in a string or a key: anything but NUL (api/problem `refuseNul`). */
const WITHOUT_NUL = '^[^\\u0000]*$';
const NUL_FREE_VALUE = 'NulFreeValue';

/**
 * States in the schemas of management routes' bodies and queries what `refuseNul` refuses: every
 * string and every key of a free-form object is without NUL. Those schemas are theirs alone (no
 * collection route reads one), so the components they refer to are marked in place.
 */
function documentNulRefusal(document: ReturnType<OpenApiGeneratorV31['generateDocument']>): void {
  const components = (document.components?.schemas ?? {}) as Record<string, Record<string, unknown>>;
  const freeForm = { $ref: `#/components/schemas/${NUL_FREE_VALUE}` };
  components[NUL_FREE_VALUE] = { description: 'Any JSON value without NUL in a string or a key', pattern: WITHOUT_NUL, propertyNames: { pattern: WITHOUT_NUL }, additionalProperties: freeForm, items: freeForm };
  const marked = new Set<object>([components[NUL_FREE_VALUE]]);
  const constrain = (schema: Record<string, unknown>, keyword: 'pattern' | 'propertyNames', value: unknown) => {
    if (schema[keyword] === undefined) return void (schema[keyword] = value);
    const added = { [keyword]: value };
    marked.add(added);
    schema.allOf = [...((schema.allOf as unknown[]) ?? []), added];
  };
  const mark = (node: unknown): void => {
    if (!node || typeof node !== 'object' || Array.isArray(node) || marked.has(node)) return;
    marked.add(node);
    const schema = node as Record<string, unknown>;
    if (typeof schema.$ref === 'string') return mark(components[schema.$ref.split('/').pop() as string]);
    // A free-form value (a connector's config, `{}`): NUL nowhere in it, at any depth.
    if (Object.keys(schema).length === 0) return void (schema.$ref = `#/components/schemas/${NUL_FREE_VALUE}`);
    const types = ([] as unknown[]).concat(schema.type ?? []);
    if (types.includes('string')) constrain(schema, 'pattern', WITHOUT_NUL);
    if (types.includes('object') && schema.additionalProperties !== false) constrain(schema, 'propertyNames', { pattern: WITHOUT_NUL });
    // Not into `not`: what it refuses must stay refused (`not: {}`, a field that must be absent).
    for (const keyword of ['additionalProperties', 'items', 'contains']) mark(schema[keyword]);
    for (const keyword of ['anyOf', 'oneOf', 'allOf', 'prefixItems']) for (const sub of (schema[keyword] as unknown[] | undefined) ?? []) mark(sub);
    for (const keyword of ['properties', 'patternProperties']) for (const sub of Object.values((schema[keyword] as Record<string, unknown> | undefined) ?? {})) mark(sub);
  };
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    if (!MANAGEMENT_PATHS.some((prefix) => path.startsWith(prefix))) continue;
    for (const operation of Object.values(item) as Operation[]) {
      if (!operation || typeof operation !== 'object') continue;
      for (const parameter of (operation.parameters ?? []) as Array<{ in?: string; schema?: unknown }>) if (parameter.in === 'query') mark(parameter.schema);
      for (const content of Object.values(operation.requestBody?.content ?? {})) mark((content as { schema?: unknown }).schema);
    }
  }
}

/** A zod schema's input as JSON Schema, for a parameter the registry's `request` cannot describe. */
function inputJsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...json } = z.toJSONSchema(schema, { io: 'input' }) as Record<string, unknown>;
  return json;
}

type Operation = { security?: Array<Record<string, string[]>>; parameters?: unknown[]; requestBody?: { required?: boolean; content?: Record<string, unknown> }; responses?: Record<string, unknown> };

/**
 * Adds what every route of a kind shares where its own registration left it out: a body is
 * required (a route that reads none without one says so); 401 (and 403 for the admin key) on
 * secured routes, 400 on routes that read parameters or a body (each problem names its field) and
 * on every management route, and 413 and 415 on routes with a JSON body.
 */
function documentCommonProblems(document: ReturnType<OpenApiGeneratorV31['generateDocument']>, adminScheme: string): void {
  const problem = (description: string) => ({ description, content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } });
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    // The pixel answers its GIF whatever it is sent: an image tag cannot show an error.
    if (path === PIXEL_PATH) continue;
    for (const operation of Object.values(item) as Operation[]) {
      if (!operation || typeof operation !== 'object' || !operation.responses) continue;
      const responses = operation.responses;
      // Routes that serve an asset (the pixel's GIF, the tag's script) answer every request with it.
      const servesAsset = Object.entries(responses).every(([status, response]) => !status.startsWith('2') || !(response as { content?: object }).content || !('application/json' in ((response as { content: object }).content)));
      if (servesAsset && Object.keys(responses).every((status) => status.startsWith('2') || status.startsWith('3'))) continue;
      const add = (status: number, description: string) => {
        responses[status] ??= problem(description);
      };
      if (operation.requestBody) operation.requestBody.required ??= true;
      const schemes = (operation.security ?? []).flatMap((requirement) => Object.keys(requirement));
      if (schemes.length > 0) add(401, 'Missing or unknown key');
      if (schemes.includes(adminScheme)) add(403, 'Not an admin key');
      if ((operation.parameters?.length ?? 0) > 0 || operation.requestBody) add(400, 'Invalid request: each problem names its field');
      if (operation.requestBody?.content?.['application/json']) {
        add(413, 'Body too large');
        add(415, 'A charset or Content-Encoding the API does not read (where the body may be left out, also a body not sent as JSON)');
      }
      // Management routes refuse a NUL anywhere in a query or body (the store can hold none).
      if (MANAGEMENT_PATHS.some((prefix) => path.startsWith(prefix))) add(400, 'Invalid request: each problem names its field');
    }
  }
}
