import type { RequestHandler } from 'express';
import { documentedRoutes } from './documentedRoutes';
import { ProblemError } from './problem';

/**
 * Refuses a request that sent no body where the OpenAPI document requires a JSON one, before the
 * JSON parser reads the nothing it sent as `{}`. Mounted before the routers. Routes that stream
 * another type (a CSV upload) read the body themselves and name what an empty one lacks.
 */
export function requiredBody(document: { paths?: Record<string, object> }): RequestHandler {
  const routesOf = documentedRoutes(document);
  return (req, _res, next) => {
    const sent = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (sent) return next();
    const operation = routesOf(req.path)?.map((operations) => operations[req.method.toLowerCase()]).find(Boolean);
    if (!operation?.requestBody?.required || !('application/json' in (operation.requestBody.content ?? {}))) return next();
    throw new ProblemError(400, 'validation', 'A body is required', [{ path: '(body)', message: 'missing' }]);
  };
}
