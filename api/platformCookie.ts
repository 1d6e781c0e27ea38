import type { Request, Response } from 'express';
import { DMP_COOKIE_MAX_AGE_SECONDS, DMP_COOKIE_NAME, isCookieId, newCookieId, readCookie } from '../domain/cookies';

/** Behind a TLS-terminating proxy the request arrives as http; the header only decides the cookie's `Secure`. */
export function cameOverHttps(req: Request): boolean {
  return req.secure || req.get('x-forwarded-proto')?.split(',')[0].trim() === 'https';
}

/**
 * The platform's cookie id, set when the browser has none (or one we could not have set, or one
 * that does not decode). Never extended: a consent-based identifier should not outlive 13 months.
 * Browsers refuse `SameSite=None` without `Secure`, so over plain http the cookie is `Lax`.
 */
export function platformCookieId(req: Request, res: Response, domain: string): string {
  const existing = readCookie(req.headers.cookie, DMP_COOKIE_NAME);
  if (isCookieId(existing)) return existing;
  const id = newCookieId();
  res.cookie(DMP_COOKIE_NAME, id, {
    maxAge: DMP_COOKIE_MAX_AGE_SECONDS * 1000,
    path: '/',
    httpOnly: true,
    ...(cameOverHttps(req) ? { sameSite: 'none', secure: true } : { sameSite: 'lax' }),
    ...(domain && { domain }),
  });
  return id;
}

