import { Router } from 'express';
import type { OpenApiParts } from './openapi';
import type { RouterDeps } from './routerDeps';

/** JS tag and pixel. */
export function tagRouter(_deps: RouterDeps): Router {
  return Router();
}

export function registerTagPaths(_parts: OpenApiParts): void {}
