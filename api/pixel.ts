import type { Request, RequestHandler, Response } from 'express';
import { newCookieId } from '../domain/cookies';
import { pixelParamOf, readPixelQuery } from '../domain/pixel';
import { logger } from '../logger';
import { sentGpc, withBrowserGpc } from './globalPrivacyControl';
import { WriteKeys } from './auth';
import { platformCookieId } from './platformCookie';
import type { RouterDeps } from './routerDeps';

export const PIXEL_PATH = '/v1/pixel.gif';

/** A transparent 1×1 GIF (43 bytes). */
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');

/**
 * `GET /v1/pixel.gif`: records one event from the query (domain/pixel.ts) and always answers the
 * GIF, whatever went wrong: an image tag cannot show an error. Bad parameters are counted per source.
 * A hit costs the cached write-key lookup and the append, nothing more.
 */
export function pixelHandler(deps: RouterDeps): RequestHandler {
  const { rejections } = deps;
  async function record(req: Request, res: Response): Promise<void> {
    const key = WriteKeys.keyOf(req, ['query']);
    const source = key ? await deps.writeKeys.resolve(key) : null;
    if (!source) return;
    const read = readPixelQuery(req.query, source.consent?.tcfVendorId);
    if (!read.ok) {
      rejections.count(source._id, 'pixel', read.errors);
      return;
    }
    // Without consent to storage the cookie is neither read nor set: the hit gets an id of its own.
    const cookieId = read.storageAllowed ? platformCookieId(req, res, deps.config.DMP_COOKIE_DOMAIN) : newCookieId();
    const result = await deps.collector.collect(source, [withBrowserGpc({ ...read.event, identities: { ...read.event.identities, cookie_id: cookieId } }, sentGpc(req), false)]);
    for (const rejected of result.rejected) {
      rejections.count(source._id, 'pixel', rejected.errors.map((error) => ({ path: pixelParamOf(error.path), message: error.message })));
    }
  }

  return async (req, res) => {
    // A HEAD (a link checker, a prefetch) is answered but records nothing.
    if (req.method === 'GET') {
      try {
        await record(req, res);
      } catch (error) {
        logger.warn({ err: error, path: req.path }, 'pixel hit not recorded');
      }
    }
    res
      .status(200)
      .set({ 'Content-Type': 'image/gif', 'Cache-Control': 'no-store', 'Cross-Origin-Resource-Policy': 'cross-origin', 'Content-Length': String(GIF.length) })
      .send(GIF);
  };
}
