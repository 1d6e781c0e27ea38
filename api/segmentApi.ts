import express, { Router, type Request, type RequestHandler } from 'express';
import { z } from 'zod';
import type { RejectedEvent } from '../domain/collect';
import type { EventInput } from '../domain/schemas';
import {
  AliasMessageSchema,
  GroupMessageSchema,
  IdentifyMessageSchema,
  MAX_BATCH_BYTES,
  MESSAGE_TYPES,
  PageMessageSchema,
  ScreenMessageSchema,
  segmentBatchSchema,
  SegmentMessageSchema,
  SegmentResponseSchema,
  TrackMessageSchema,
  mapSegmentMessage,
  messagePath,
  type FieldOrigins,
  type MessageEnvelope,
  type MessageType,
  type SegmentResponse,
} from '../domain/trackingApi';
import type { SourceDoc } from '../store/sources';
import { sentGpc, withBrowserGpc } from './globalPrivacyControl';
import type { OpenApiParts } from './openapi';
import { bodySent, jsonDepthLimit, parseOr400, ProblemError } from './problem';
import type { RouterDeps } from './routerDeps';

/**
 * Segment's 500 KB per request, for bodies the app's JSON parser already read (its own limit is
 * larger): the length as sent, or for a compressed body its JSON, which is what was inflated.
 */
function checkBodySize(req: Request): number {
  const encoding = req.headers['content-encoding'] ?? 'identity';
  const length = Number(req.headers['content-length']);
  const bytes = encoding === 'identity' && Number.isFinite(length) ? length : Buffer.byteLength(JSON.stringify(req.body) ?? '');
  if (bytes > MAX_BATCH_BYTES) {
    throw new ProblemError(413, 'body-too-large', 'Body is too large', [{ path: '(body)', message: `larger than ${MAX_BATCH_BYTES} bytes (500 KB)` }]);
  }
  return bytes;
}

/** Maps each message on its own, collects the valid ones, and reports every refusal at the message field it concerns. */
async function collectMessages(
  { collector, rejections }: Pick<RouterDeps, 'collector' | 'rejections'>,
  source: SourceDoc,
  messages: unknown[],
  envelope: MessageEnvelope,
  gpc: boolean,
): Promise<SegmentResponse> {
  const receivedAt = new Date();
  const rejected: RejectedEvent[] = [];
  const mapped: Array<{ index: number; event: EventInput }> = [];
  messages.forEach((message, index) => {
    const result = mapSegmentMessage(message, envelope, receivedAt);
    if (result.errors) rejected.push({ index, errors: result.errors });
    else mapped.push({ index, event: result.event });
  });
  let accepted = 0;
  let duplicates = 0;
  let nonProfiling = 0;
  if (mapped.length > 0) {
    // Browser SDKs (analytics.js) post from the page: its Global Privacy Control comes with the request.
    const result = await collector.collect(
      source,
      mapped.map((m) => withBrowserGpc(m.event, gpc, false)),
      receivedAt,
    );
    ({ accepted, duplicates, nonProfiling } = result);
    for (const refusal of result.rejected) {
      const { index } = mapped[refusal.index];
      const origins: FieldOrigins = new Map();
      mapSegmentMessage(messages[index], envelope, receivedAt, origins);
      rejected.push({ index, errors: refusal.errors.map((error) => ({ path: messagePath(origins, error.path), message: error.message })) });
    }
  }
  rejected.sort((a, b) => a.index - b.index);
  // SDKs do not read the answer: refusals are counted on the source, where an operator sees them.
  if (rejected.length > 0) {
    const sample = rejected[0];
    rejections.count(source._id, 'segment', sample.errors.map((error) => ({ path: `batch.${sample.index}.${error.path}`, message: error.message })), rejected.length);
  }
  return { success: true, accepted, duplicates, nonProfiling, rejected };
}

/** The one-letter paths Segment's browser SDK (analytics.js) posts each type to: `/v1/t` a track, `/v1/b` a batch. */
const SHORT_PATHS: Record<MessageType, string> = { track: '/v1/t', identify: '/v1/i', page: '/v1/p', screen: '/v1/s', alias: '/v1/a', group: '/v1/g' };
const BATCH_PATHS = ['/v1/batch', '/v1/b'];
const messagePaths = (type: MessageType) => [`/v1/${type}`, SHORT_PATHS[type]];
/** Every Segment route: the app answers CORS on them (`allowAnyOrigin`) before it reads a body, so refusals of the body carry it too. */
export const SEGMENT_API_PATHS = [...BATCH_PATHS, ...MESSAGE_TYPES.flatMap(messagePaths)];

/**
 * Request headers browser SDKs send: analytics.js its Basic write key and `X-Retry-Count`; RudderStack's
 * its `AnonymousId`, `SentAt`, and on a retry the attempt's number, reason and timings (`Rsa-*`).
 */
const PREFLIGHT_HEADERS = [
  'Authorization, Content-Type, Content-Encoding, X-Retry-Count',
  'AnonymousId, SentAt, Rsa-Retry-Attempt, Rsa-Retry-Reason, Rsa-Since-First-Attempt, Rsa-Since-Last-Attempt, Rsa-Recovered',
].join(', ');

/**
 * Browser SDKs post from the page's origin: analytics.js sends each message or batch as text/plain
 * with the write key in the body and as the Basic user, so the browser asks a preflight. Any origin
 * may post — the write key says whose the data is, and no cookie is read — and may read the answer,
 * errors included, so an SDK can tell a refusal from a network failure.
 */
export const allowAnyOrigin: RequestHandler = (_req, res, next) => {
  res.set('Access-Control-Allow-Origin', '*');
  next();
};

/**
 * The Segment HTTP Tracking API (which RudderStack implements too), so their SDKs send here
 * unchanged: the write key as the HTTP Basic user (or a Bearer token, or the body's `writeKey`), `{"success": true}` back.
 */
export function segmentApiRouter(deps: RouterDeps): Router {
  const { writeKeys } = deps;
  const router = Router();
  // The body is parsed first: a message may carry the write key itself (Segment's writeKey authentication).
  const auth = writeKeys.require(['basic', 'bearer', 'body']);
  // Bodies the app's JSON parser leaves, such as RudderStack's gzipped JSON sent as a form, are read here whatever their type.
  const parse = express.json({ type: () => true, limit: MAX_BATCH_BYTES });
  const body: RequestHandler = (req, res, next) => parse(req, res, (error?: unknown) => (error ? next(error) : jsonDepthLimit(req, res, next)));
  const batchRequest = segmentBatchSchema();

  router.options(SEGMENT_API_PATHS, (_req, res) => {
    res.set({ 'Access-Control-Allow-Methods': 'POST', 'Access-Control-Allow-Headers': PREFLIGHT_HEADERS, 'Access-Control-Max-Age': '86400' }).status(204).end();
  });

  router.post(BATCH_PATHS, body, auth, async (req, res) => {
    const bodyBytes = checkBodySize(req);
    const envelope = parseOr400(batchRequest, req.body, 'batch request');
    res.json(await collectMessages(deps, req.source as SourceDoc, envelope.batch, { sentAt: envelope.sentAt, context: envelope.context, bodyBytes }, sentGpc(req)));
  });

  for (const type of MESSAGE_TYPES) {
    router.post(messagePaths(type), body, auth, async (req, res) => {
      const bodyBytes = checkBodySize(req);
      // The JSON parser reads an empty body as `{}`: a message never sent is not an empty one.
      if (!bodySent(req) || typeof req.body !== 'object' || req.body === null || Array.isArray(req.body)) {
        throw new ProblemError(400, 'validation', `Invalid ${type} message`, [{ path: '(body)', message: 'expected a JSON object' }]);
      }
      // What the document says a message is, checked here (400); what only the data can tell (no id
      // at all, an email that is not one) is refused in `rejected`, as in a batch, and counted.
      parseOr400(singleMessageSchema(type), req.body, `${type} message`);
      res.json(await collectMessages(deps, req.source as SourceDoc, [req.body], { type, bodyBytes }, sentGpc(req)));
    });
  }
  return router;
}

const SINGLE_MESSAGE_SCHEMAS: Record<MessageType, z.ZodObject> = {
  track: TrackMessageSchema,
  identify: IdentifyMessageSchema,
  page: PageMessageSchema,
  screen: ScreenMessageSchema,
  alias: AliasMessageSchema,
  group: GroupMessageSchema,
};

/** A message sent to its type's own route: `type` may be left out. */
function singleMessageSchema(type: MessageType) {
  return SINGLE_MESSAGE_SCHEMAS[type].partial({ type: true });
}

const SINGLE_MESSAGE_SUMMARIES: Record<MessageType, string> = {
  track: 'A track: an event of the type the event name gives, with its properties',
  identify: 'An identify: the traits of a user (type `identify`)',
  page: 'A page view (type `page`): properties from `context.page`, `properties`, `name` and `category`',
  screen: 'A screen view (type `screen`): properties from `context.page`, `properties`, `name` and `category`',
  alias: 'An alias (type `alias`): `previousId` (as `cookie_id` when it is the `anonymousId`; as the earlier `crm_id` when an `anonymousId` differs from it, as browser SDKs send an alias after an identify; with no `anonymousId`, as servers send it, as whichever of the two the graph knows it as, else as `cookie_id` — an address as its hash) and `userId` (as `crm_id`) in one event, which joins their profiles',
  group: 'A group (type `group`): `groupId` and the group traits as traits under `group.` (`group.id`, `group.name`)',
};

const MAPPING = [
  'Each message becomes one event: `messageId` is the event id (a message sent again is a duplicate); `anonymousId` → `cookie_id`, `userId` → `crm_id`;',
  'the `email` and `phone` traits (an identify’s `traits`, else `context.traits`) → the `email`/`phone` identities, hashed at once and never kept as traits;',
  '`context.device.advertisingId` → `maid`, **not used at all when `context.device.adTrackingEnabled` is false**;',
  '`context.traits` (and an identify’s `traits` over them) → traits; nested objects in traits and properties are flattened into dotted names (`address.city`),',
  'a list of objects into one list per field (`products.sku: ["a", "b"]`); values then follow the Event schema (strings ≤ 1,024 characters, lists ≤ 100);',
  'the time is `timestamp` (or `originalTimestamp`) corrected for clock skew when `sentAt` (the message’s or the batch’s) is known: receivedAt − (sentAt − timestamp),',
  'and refused more than a day in the future; `context.consent.categoryPreferences` → consent purposes (names lowercased, `DataSharing` → `data_sharing`; one with no Latin letter or digit, or too long, gets a hash suffix),',
  '`context.consent.tcf`/`gpp` → the TCF/GPP strings (`gppSid`: the GPP sections in force). Messages over 32 KB are refused.',
].join(' ');

export function registerSegmentApiPaths({ registry, problem, json, writeKey }: OpenApiParts): void {
  registry.register('SegmentMessage', SegmentMessageSchema);
  const basic = registry.registerComponent('securitySchemes', 'writeKeyBasic', {
    type: 'http',
    scheme: 'basic',
    description: "A source's write key as the user name with an empty password, as Segment and RudderStack SDKs send it",
  });
  const security = [{ [basic.name]: [] }, { [writeKey]: [] }];
  const common = {
    401: problem("No write key (in `headers.authorization` as Basic or Bearer, or the body's `writeKey`), or one no source has"),
    415: problem('A Content-Encoding other than gzip, deflate or br'),
    503: problem('The store is too slow to acknowledge right now; nothing was acknowledged, yet what was written may still be applied: send again (messages are dropped as repeats by their `messageId`, which the SDKs always set)'),
  };
  const preflight = (path: string) =>
    registry.registerPath({
      method: 'options',
      path,
      summary: 'CORS preflight: any origin may POST, with the headers browser SDKs send',
      responses: { 204: { description: `Allowed: POST, with ${PREFLIGHT_HEADERS}` } },
    });
  const short = (path: string, long: string) => (path === long ? '' : ` The path Segment's browser SDK (analytics.js) posts to; the same as \`${long}\`.`);
  for (const path of BATCH_PATHS) {
    preflight(path);
    registry.registerPath({
      method: 'post',
      path,
      summary: 'Segment/RudderStack batch: many messages of any type in one request',
      description: `${MAPPING} Each message is checked on its own: one refused does not fail the others. The body is read as JSON whatever its Content-Type (analytics.js sends text/plain), gzip or not.${short(path, '/v1/batch')}`,
      security,
      request: { body: { content: { 'application/json': { schema: segmentBatchSchema() } } } },
      responses: {
        200: {
          description:
            'The messages kept (`accepted`), repeats of messages stored with them (`duplicates`) and refused (`rejected`, by index, naming the fields). A message repeating one acknowledged earlier is kept and dropped when folded into its profile (`profiles.duplicatesDropped` on the source)',
          ...json(SegmentResponseSchema),
        },
        400: problem('Malformed JSON (`(body)`) or envelope (`batch`: at least one message, `sentAt`, `context`)'),
        413: problem('Body larger than 500 KB (`(body)`; a compressed body as inflated)'),
        ...common,
      },
    });
  }
  for (const type of MESSAGE_TYPES) {
    for (const path of messagePaths(type)) {
      preflight(path);
      registry.registerPath({
        method: 'post',
        path,
        summary: SINGLE_MESSAGE_SUMMARIES[type],
        description: `${MAPPING} \`type\` may be left out.${short(path, `/v1/${type}`)}`,
        security,
        request: { body: { content: { 'application/json': { schema: singleMessageSchema(type) } } } },
        responses: {
          200: {
            description:
              'Kept (`accepted: 1`), already kept (`duplicates: 1`), or refused for what only its data can tell — no identity at all, an email that is not one, over 32 KB — in `rejected`, naming the message field (`userId`, `traits.email`, …), as in a batch',
            ...json(SegmentResponseSchema),
          },
          400: problem('Malformed JSON, not an object (`(body)`), or not a message of this type as documented, each problem naming the field (`event`, `timestamp`, …)'),
          413: problem('Body larger than 500 KB (`(body)`)'),
          ...common,
        },
      });
    }
  }
}
