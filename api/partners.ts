import { Router } from 'express';
import type { OpenApiParts } from './openapi';
import type { RouterDeps } from './routerDeps';

/** Sync partners, cookie sync and match tables. */
export function partnersRouter(_deps: RouterDeps): Router {
  return Router();
}

export function registerPartnerPaths(_parts: OpenApiParts): void {}
