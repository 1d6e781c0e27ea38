import type { IncomingMessage } from 'node:http';
import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import { z } from 'zod';
import { zodIssuesToFieldErrors, type FieldError } from '../domain/collect';
import type { Problem } from '../domain/schemas';
import { NUL_MESSAGE } from '../domain/text';
import { logger } from '../logger';
import { SnapshotReleased } from '../store/segmentMembership';

/** An error the API answers as `application/problem+json`; `type` is stable, clients may switch on it. */
export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    readonly errors?: FieldError[],
    readonly detail?: string,
  ) {
    super(title);
  }
}

export function sendProblem(res: Response, problem: ProblemError): void {
  const body: Problem = { type: `/problems/${problem.slug}`, title: problem.title, status: problem.status };
  if (problem.detail) body.detail = problem.detail;
  if (problem.errors) body.errors = problem.errors;
  res.status(problem.status).type('application/problem+json').send(JSON.stringify(body));
}

/** Whether the request carries a body at all (a chunked one, or a non-zero Content-Length). */
export function bodySent(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/** How deeply a JSON body may nest: far beyond any message's need, well within what recursive readers (flattening, validation, `JSON.stringify`) take. */
export const MAX_JSON_DEPTH = 64;

/** Whether `value` nests objects or lists more than `max` levels deep (walked without recursion, stopping there). */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== 'object') continue;
    if (depth >= max) return true;
    for (const inner of Array.isArray(item) ? item : Object.values(item)) if (inner !== null && typeof inner === 'object') stack.push([inner, depth + 1]);
  }
  return false;
}

/** Refuses a parsed JSON body nested deeper than MAX_JSON_DEPTH (400 naming the body). */
export function checkJsonDepth(body: unknown): void {
  if (nestsDeeperThan(body, MAX_JSON_DEPTH)) throw new ProblemError(400, 'validation', 'Invalid body', [{ path: '(body)', message: `nested more than ${MAX_JSON_DEPTH} levels deep` }]);
}

/** checkJsonDepth for the bodies the app's JSON parser read, before any route reads them. */
export const jsonDepthLimit: RequestHandler = (req, _res, next) => {
  try {
    checkJsonDepth(req.body);
    next();
  } catch (error) {
    next(error);
  }
};

/** Where in a parsed body or query a string or key holds NUL (dotted, as field errors name paths), or null. */
function nulAt(value: unknown, path: string[] = []): string | null {
  if (typeof value === 'string') return value.includes('\u0000') ? path.join('.') : null;
  if (value === null || typeof value !== 'object') return null;
  for (const [key, inner] of Object.entries(value)) {
    if (key.includes('\u0000')) return [...path, key.replaceAll('\u0000', '\\0')].join('.');
    const found = nulAt(inner, [...path, key]);
    if (found !== null) return found;
  }
  return null;
}

/** The routes that manage the platform (not those that collect events). */
export const MANAGEMENT_PATHS = ['/v1/campaigns', '/v1/destinations', '/v1/identity', '/v1/insights', '/v1/partners', '/v1/privacy', '/v1/profiles', '/v1/recommendations', '/v1/segments', '/v1/sources', '/v1/taxonomy'];

/**
 * Management requests are stored as documents, and the store cannot hold NUL anywhere in one (nor
 * look one up by it: domain/text.ts): a body or query holding one is refused, naming where. (Events
 * are stored deflated, where NUL is kept: collection routes are not checked.)
 */
export const refuseNul: RequestHandler = (req, _res, next) => {
  const inBody = nulAt(req.body);
  const inQuery = nulAt(req.query);
  if (inBody === null && inQuery === null) return next();
  const path = inBody !== null ? inBody || '(body)' : inQuery || '(query)';
  next(new ProblemError(400, 'validation', 'Invalid request', [{ path, message: NUL_MESSAGE }]));
};

/** A body sent as anything but JSON is refused (415), not read as none. */
export function requireJsonType(req: Request): void {
  if (bodySent(req) && !req.is(['application/json', 'application/*+json'])) {
    throw new ProblemError(415, 'unsupported-media-type', 'Send JSON', [{ path: 'headers.content-type', message: 'expected application/json' }]);
  }
}

/** A route's optional JSON body: `{}` when none was sent. */
export function optionalJsonBody(req: Request): unknown {
  requireJsonType(req);
  return req.body ?? {};
}

/**
 * Parses with a zod schema or throws a 400 naming each offending field. A request body that was never
 * sent is `undefined` here and named as missing, after the route's own authentication has run.
 */
export function parseOr400<T extends z.ZodType>(schema: T, value: unknown, where: string): z.infer<T> {
  if (value === undefined) throw new ProblemError(400, 'validation', 'A body is required', [{ path: '(body)', message: 'missing' }]);
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new ProblemError(400, 'validation', `Invalid ${where}`, zodIssuesToFieldErrors(parsed.error.issues));
  }
  return parsed.data;
}

export const notFound: RequestHandler = (req) => {
  throw new ProblemError(404, 'not-found', 'No such resource', undefined, `${req.method} ${req.path}`);
};

function isUnavailable(error: unknown): boolean {
  const name = (error as { name?: string })?.name ?? '';
  return /^Mongo(ServerSelection|Network|NotConnected|Topology)/.test(name) || /ServiceError|ConnectionError|TransportError/.test(name);
}

/** Body-parser, store and Temporal errors become problems too; only a real bug is a 500. */
export const problemHandler: ErrorRequestHandler = (error, req, res, next) => {
  void next;
  if (error instanceof ProblemError) return sendProblem(res, error);
  const parserType = (error as { type?: string }).type;
  if (parserType === 'entity.parse.failed') {
    return sendProblem(res, new ProblemError(400, 'malformed-json', 'Body is not valid JSON', [{ path: '(body)', message: (error as Error).message }]));
  }
  if (parserType === 'entity.too.large') {
    const limit = (error as { limit?: number }).limit;
    return sendProblem(res, new ProblemError(413, 'body-too-large', 'Body is too large', [{ path: '(body)', message: `larger than ${limit} bytes` }]));
  }
  if (parserType === 'encoding.unsupported' || parserType === 'charset.unsupported') {
    return sendProblem(res, new ProblemError(415, 'unsupported-encoding', 'Unsupported body encoding', [{ path: '(body)', message: (error as Error).message }]));
  }
  // Any other request error a body parser names as the client's (a compressed body that does not inflate, a request cut short).
  const status = (error as { status?: unknown }).status;
  if (typeof status === 'number' && status >= 400 && status < 500 && (error as { expose?: unknown }).expose === true) {
    return sendProblem(res, new ProblemError(status, 'unreadable-body', 'Body could not be read', [{ path: '(body)', message: (error as Error).message }]));
  }
  if (error instanceof SnapshotReleased) {
    // Replaced under three reads in a row: a burst of runs.
    return sendProblem(res, new ProblemError(503, 'snapshot-replaced', "The segment's snapshot was replaced while it was read; retry", [{ path: 'segment', message: error.message }]));
  }
  if (isUnavailable(error)) {
    logger.warn({ err: error, path: req.path }, 'dependency unavailable');
    return sendProblem(res, new ProblemError(503, 'unavailable', 'A backing service is unavailable; retry later'));
  }
  logger.error({ err: error, path: req.path }, 'unhandled error');
  return sendProblem(res, new ProblemError(500, 'internal', 'Internal error'));
};
