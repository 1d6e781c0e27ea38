import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import express, { Router, type ErrorRequestHandler, type Request, type RequestHandler } from 'express';
import { z } from 'zod';
import { PixelQuerySchema } from '../domain/pixel';
import { isRecord } from '../domain/records';
import { collectRequestSchema, CollectResponseSchema } from '../domain/schemas';
import type { SourceDoc } from '../store/sources';
import { sentGpc, withBrowserGpc } from './globalPrivacyControl';
import type { OpenApiParts } from './openapi';
import { PIXEL_PATH, pixelHandler } from './pixel';
import { bodySent, checkJsonDepth, parseOr400, ProblemError } from './problem';
import type { RouterDeps } from './routerDeps';

export const TAG_SCRIPT_PATH = '/v1/tag.js';
/** The mark the tag sends (public/tag.js `consentSignal`) where the GDPR applies and it has no TC string yet. */
const TAG_PENDING_MARK = 'profiling';

/**
 * An event as sent by the tag (not yet validated), its no-decision mark (`purposes.profiling:
 * false` without a TC string) read as what it says: the GDPR applies and the visitor has not decided
 * (`tcfPending`) — a TCF statement, which the visitor's TC string replaces on whatever channel it
 * comes, not a purpose the visitor refused.
 */
function withPendingMark(event: unknown): unknown {
  if (!isRecord(event) || !isRecord(event.consent)) return event;
  const { consent } = event;
  if (consent.tcf !== undefined || !isRecord(consent.purposes) || consent.purposes[TAG_PENDING_MARK] !== false || !Object.hasOwn(consent.purposes, TAG_PENDING_MARK)) return event;
  const { [TAG_PENDING_MARK]: _mark, ...others } = consent.purposes;
  const { purposes: _purposes, ...rest } = consent;
  return { ...event, consent: { ...rest, ...(Object.keys(others).length > 0 && { purposes: others }), tcfPending: true } };
}

/** Where the tag sends its batches: its own path with `tag.js` replaced by `tag/events`. */
export const TAG_EVENTS_PATH = '/v1/tag/events';

/** The browser script, served as it is in the repository (read at start, so a missing file fails the start). */
const TAG_SCRIPT_FILE = join(__dirname, 'public', 'tag.js');
/** Where the script holds its source's IAB vendor id: the server writes a source's `tcfVendorId` in, so its cookie needs that vendor's consent. */
const TAG_VENDOR_MARK = '/*tcfVendorId*/ null';

/** The script as served for one vendor id (null: the source names none), with its ETag; one per vendor id, made once. */
function tagScripts(): (vendorId: number | null) => { body: Buffer; etag: string } {
  const template = readFileSync(TAG_SCRIPT_FILE, 'utf8');
  if (template.split(TAG_VENDOR_MARK).length !== 2) throw new Error(`${TAG_SCRIPT_FILE} must hold ${TAG_VENDOR_MARK} once`);
  const made = new Map<number | null, { body: Buffer; etag: string }>();
  return (vendorId) => {
    let script = made.get(vendorId);
    if (!script) {
      const body = Buffer.from(vendorId === null ? template : template.replace(TAG_VENDOR_MARK, String(vendorId)));
      script = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
      made.set(vendorId, script);
    }
    return script;
  };
}
/** Sites embed one URL for good; an hour bounds how long a new version takes to reach them. */
const TAG_CACHE_CONTROL = 'public, max-age=3600';

function tagEventsBody(req: Request): unknown {
  if (typeof req.body === 'string') {
    let body: unknown;
    try {
      body = JSON.parse(req.body);
    } catch (error) {
      throw new ProblemError(400, 'malformed-json', 'Body is not valid JSON', [{ path: '(body)', message: (error as Error).message }]);
    }
    checkJsonDepth(body);
    return body;
  }
  // JSON content types were parsed by the app; anything else sent was not read.
  if (req.body === undefined && bodySent(req)) {
    throw new ProblemError(415, 'unsupported-media-type', 'Send JSON as text/plain', [{ path: 'headers.content-type', message: 'expected text/plain or application/json' }]);
  }
  return req.body;
}

/** The JS tag (`GET /v1/tag.js`), the endpoint its beacons go to, and the pixel. */
export function tagRouter(deps: RouterDeps): Router {
  const { config, collector, writeKeys } = deps;
  const { rejections } = deps;
  const scriptFor = tagScripts();
  const collectRequest = collectRequestSchema(config.DMP_MAX_BATCH_EVENTS);
  const router = Router();

  router.get(TAG_SCRIPT_PATH, async (req, res) => {
    const key = typeof req.query.writeKey === 'string' ? req.query.writeKey : null;
    const source = key ? await writeKeys.resolve(key) : null;
    const { body: script, etag } = scriptFor(source?.consent?.tcfVendorId ?? null);
    res.set({
      'Content-Type': 'application/javascript; charset=utf-8',
      'Cache-Control': TAG_CACHE_CONTROL,
      ETag: etag,
      'Cross-Origin-Resource-Policy': 'cross-origin',
      'X-Content-Type-Options': 'nosniff',
    });
    if (req.fresh) {
      res.status(304).end();
      return;
    }
    res.send(script);
  });

  // Beacons are simple requests (text/plain, no credentials needed), so browsers send them without a
  // preflight; the answer is readable by any page all the same, and a preflight is answered too.
  const cors: RequestHandler = (_req, res, next) => {
    res.set('Access-Control-Allow-Origin', '*');
    next();
  };
  router.options(TAG_EVENTS_PATH, cors, (_req, res) => {
    res.set({ 'Access-Control-Allow-Methods': 'POST', 'Access-Control-Allow-Headers': 'Content-Type', 'Access-Control-Max-Age': '86400' }).status(204).end();
  });
  // A page never reads what it is answered: refusals of a known source are counted for its operators.
  const countRefusal: ErrorRequestHandler = (error, req, _res, next) => {
    const status = (error as { status?: number }).status ?? 500;
    if (req.source && status >= 400 && status < 500) {
      rejections.count(req.source._id, 'tag', error instanceof ProblemError ? (error.errors ?? []) : [{ path: '(body)', message: (error as Error).message }]);
    }
    next(error);
  };
  const collectBatch: RequestHandler = async (req, res) => {
    const source = req.source as SourceDoc;
    const { events, sentAt } = parseOr400(collectRequest, tagEventsBody(req), 'tag events');
    const gpc = sentGpc(req);
    const result = await collector.collect(
      source,
      events.map((event) => withBrowserGpc(withPendingMark(event), gpc, true)),
      new Date(),
      sentAt,
    );
    if (result.rejected.length > 0) {
      const sample = result.rejected[0];
      rejections.count(source._id, 'tag', sample.errors.map((error) => ({ path: `events.${sample.index}.${error.path}`, message: error.message })), result.rejected.length);
    }
    res.status(202).json(result);
  };
  router.post(TAG_EVENTS_PATH, cors, writeKeys.require(['query']), express.text({ type: 'text/plain', limit: config.DMP_MAX_BODY_BYTES }), collectBatch, countRefusal);

  router.get(PIXEL_PATH, pixelHandler(deps));
  return router;
}

export function registerTagPaths({ registry, problem, json, config }: OpenApiParts): void {
  // The write key rides in the query: a script tag, a beacon and an image cannot set headers.
  const writeKeyQuery = registry.registerComponent('securitySchemes', 'writeKeyQuery', {
    type: 'apiKey',
    in: 'query',
    name: 'writeKey',
    description: "A source's write key (public, write-only) as the `writeKey` query parameter",
  });
  registry.registerPath({
    method: 'get',
    path: TAG_SCRIPT_PATH,
    summary:
      'The JS tag. Embed `<script async src="…/v1/tag.js?writeKey=…"></script>`; it reads its endpoint and write key from its own src, keeps a first-party cookie id, sends a page view and `dmp.track`/`dmp.identify` calls with the page\'s TCF/GPP consent in batches (sendBeacon) to `/v1/tag/events`. Its header documents the stub that queues calls made before it loads.',
    request: { query: z.object({ writeKey: z.string().optional().openapi({ description: "The source's write key, which the script reads from its own src; the server writes in the source's \`tcfVendorId\`, so the cookie also needs that vendor's consent (an unknown key gets the script without one, which warns on the page only when the key is missing)" }) }) },
    responses: {
      200: { description: `The script (\`Cache-Control: ${TAG_CACHE_CONTROL}\`)`, content: { 'application/javascript': { schema: z.string() } } },
      304: { description: 'Not modified (`If-None-Match` with its ETag)' },
      503: problem('A backing service is unavailable (the write key could not be looked up); retry later'),
    },
  });
  const collectRequest = collectRequestSchema(config.DMP_MAX_BATCH_EVENTS);
  const problems = {
    400: problem('Malformed JSON or envelope (`events`: 1 to DMP_MAX_BATCH_EVENTS of them), naming the field'),
    401: problem('Missing or unknown write key (`query.writeKey`)'),
    413: problem('Body larger than DMP_MAX_BODY_BYTES'),
    415: problem('Body neither text/plain nor JSON'),
    503: problem('The store is too slow to acknowledge; retry later'),
  };
  registry.registerPath({
    method: 'post',
    path: TAG_EVENTS_PATH,
    summary:
      "The tag's batches: `{events: [...]}` as JSON in a text/plain body (what sendBeacon sends without a CORS preflight; application/json is taken too). Each event as in /v1/collect; events refused one by one are counted on the source as tag rejections.",
    security: [{ [writeKeyQuery.name]: [] }],
    request: { body: { content: { 'text/plain': { schema: collectRequest }, 'application/json': { schema: collectRequest } } } },
    responses: { 202: { description: 'Appended durably; what was accepted, duplicated and refused', ...json(CollectResponseSchema) }, ...problems },
  });
  registry.registerPath({
    method: 'options',
    path: TAG_EVENTS_PATH,
    summary: 'CORS preflight (browsers skip it for text/plain beacons)',
    responses: { 204: { description: 'Any origin may POST' } },
  });
  registry.registerPath({
    method: 'get',
    path: PIXEL_PATH,
    summary:
      "A 1×1 GIF that records one event from its query: `e` event type (default `pixel`), `id` event id, `uid` crm_id, `em` email_sha256, `ph` phone_sha256, `p.<name>` properties and `t.<name>` traits (strings; repeated, lists), `gdpr`/`gdpr_consent`/`gpp` consent, `cb` ignored; unexpanded macros count as absent, unknown parameters are ignored. The platform's cookie (`dmp_uid`; SameSite=None; Secure over https; Domain DMP_COOKIE_DOMAIN) is read or set as the event's cookie_id — unless the GDPR applies (`gdpr=1`, or a TC string) without consent to purpose 1 (or to the source's `tcfVendorId`, when it names one), when the hit gets an id of its own; `gdpr=0` without a TC string says the GDPR does not apply (`tcfNotApplicable`). Always answers the GIF: a missing or unknown write key records nothing, bad parameters are counted on the source as pixel rejections.",
    // Without a key (or with one no source has) the GIF is answered all the same, and nothing is recorded.
    security: [{ [writeKeyQuery.name]: [] }, {}],
    request: { query: PixelQuerySchema },
    responses: {
      200: {
        description: 'The GIF, always (`Cache-Control: no-store`); a `Set-Cookie` when the browser had no cookie id',
        content: { 'image/gif': { schema: z.string().openapi({ format: 'binary' }) } },
      },
    },
  });
}
