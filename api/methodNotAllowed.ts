import type { RequestHandler } from 'express';
import { ProblemError } from './problem';

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

/**
 * Answers 405 with an `Allow` header for a method the OpenAPI document does not declare on a path
 * it does: the document is the contract, so what it leaves out is refused as such, not as a 404 or
 * by express's own OPTIONS answer. Mounted before the routers. A path matching a literal template
 * (`/v1/segments/estimate`) is that path, not an id of a parameterized one (`/v1/segments/{id}`).
 */
export function methodNotAllowed(document: { paths?: Record<string, object> }): RequestHandler {
  const routes = Object.entries(document.paths ?? {}).map(([template, operations]) => {
    const pattern = new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}/]+\}/g, '[^/]+')}$`);
    const allowed = METHODS.filter((method) => method in operations).map((method) => method.toUpperCase());
    // HEAD is answered wherever GET is (as HTTP and express do).
    if (allowed.includes('GET') && !allowed.includes('HEAD')) allowed.push('HEAD');
    return { pattern, allowed, parameters: (template.match(/\{/g) ?? []).length };
  });
  return (req, res, next) => {
    const matching = routes.filter(({ pattern }) => pattern.test(req.path));
    if (matching.length === 0) return next();
    const fewest = Math.min(...matching.map((route) => route.parameters));
    const allowed = [...new Set(matching.filter((route) => route.parameters === fewest).flatMap((route) => route.allowed))].sort();
    const route = { allowed };
    if (route.allowed.includes(req.method)) return next();
    res.set('Allow', route.allowed.join(', '));
    throw new ProblemError(405, 'method-not-allowed', 'Method not allowed', [{ path: 'method', message: `${req.method} is not allowed here; allowed: ${route.allowed.join(', ')}` }]);
  };
}
