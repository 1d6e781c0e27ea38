import type { Request, Response } from 'express';
import { DMP_COOKIE_MAX_AGE_SECONDS, DMP_COOKIE_NAME, isCookieId, newCookieId, readCookie } from '../domain/cookies';

/** Behind a TLS-terminating proxy the request arrives as http; the header only decides the cookie's `Secure`. */
function cameOverHttps(req: Request): boolean {
  return req.secure || req.get('x-forwarded-proto')?.split(',')[0].trim() === 'https';
}

/** The platform's cookie id the browser sent, unless it is not one we could have set (or does not decode). */
export function platformCookieOf(req: Request): string | null {
  const value = readCookie(req.headers.cookie, DMP_COOKIE_NAME);
  return isCookieId(value) ? value : null;
}

/**
 * Sets a new platform cookie. Never extended: a consent-based identifier should not outlive 13
 * months. Browsers refuse `SameSite=None` without `Secure`, so over plain http the cookie is `Lax`.
 */
export function setPlatformCookie(req: Request, res: Response, cookieId: string, domain: string): void {
  res.cookie(DMP_COOKIE_NAME, cookieId, {
    maxAge: DMP_COOKIE_MAX_AGE_SECONDS * 1000,
    path: '/',
    httpOnly: true,
    ...(cameOverHttps(req) ? { sameSite: 'none', secure: true } : { sameSite: 'lax' }),
    ...(domain && { domain }),
  });
}

/** The platform's cookie id, set at once when the browser has none we could have set. */
export function platformCookieId(req: Request, res: Response, domain: string): string {
  const existing = platformCookieOf(req);
  if (existing) return existing;
  const id = newCookieId();
  setPlatformCookie(req, res, id, domain);
  return id;
}
