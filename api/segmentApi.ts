import { Router } from 'express';
import type { OpenApiParts } from './openapi';
import type { RouterDeps } from './routerDeps';

/** Segment-compatible tracking API. */
export function segmentApiRouter(_deps: RouterDeps): Router {
  return Router();
}

export function registerSegmentApiPaths(_parts: OpenApiParts): void {}
