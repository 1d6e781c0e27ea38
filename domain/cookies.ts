import { randomUUID } from 'node:crypto';

/**
 * The platform's own browser id. The pixel and the cookie sync read and set it on the platform's
 * domain (`DMP_COOKIE_NAME` there); the JS tag sets its own first-party copy on the site's domain.
 * Both land in profiles as `cookie_id`.
 */
export const DMP_COOKIE_NAME = 'dmp_uid';

/** Kept 13 months: the longest a consent-based identifier should live under the EU regulators' guidance. */
export const DMP_COOKIE_MAX_AGE_SECONDS = 395 * 24 * 3600;

const COOKIE_ID = /^[A-Za-z0-9_-]{16,64}$/;

export function newCookieId(): string {
  return randomUUID();
}

/** Whether a value read back from a cookie is one we could have set (anything else is ignored and replaced). */
export function isCookieId(value: string | undefined): value is string {
  return value !== undefined && COOKIE_ID.test(value);
}

/** The value of one cookie in a `Cookie` request header; undefined when absent or not decodable (not one we set). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== name) continue;
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return undefined; // a malformed %-escape
    }
  }
  return undefined;
}
