import type { RequestHandler } from 'express';
import { documentedRoutes } from './documentedRoutes';
import { ProblemError } from './problem';

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

/**
 * Answers 405 with an `Allow` header for a method the OpenAPI document does not declare on a path
 * it does: the document is the contract, so what it leaves out is refused as such, not as a 404 or
 * by express's own OPTIONS answer. Mounted before the routers.
 */
export function methodNotAllowed(document: { paths?: Record<string, object> }): RequestHandler {
  const routesOf = documentedRoutes(document);
  return (req, res, next) => {
    const matching = routesOf(req.path);
    if (!matching) return next();
    const allowed = new Set(matching.flatMap((operations) => METHODS.filter((method) => method in operations).map((method) => method.toUpperCase())));
    // HEAD is answered wherever GET is (as HTTP and express do).
    if (allowed.has('GET')) allowed.add('HEAD');
    if (allowed.has(req.method)) return next();
    const list = [...allowed].sort().join(', ');
    res.set('Allow', list);
    throw new ProblemError(405, 'method-not-allowed', 'Method not allowed', [{ path: 'method', message: `${req.method} is not allowed here; allowed: ${list}` }]);
  };
}
