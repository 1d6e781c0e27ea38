import type { Request } from 'express';

/** Whether the browser sent Global Privacy Control with the request (`Sec-GPC: 1`). */
export function sentGpc(req: Request): boolean {
  return req.get('sec-gpc')?.trim() === '1';
}

/**
 * An event as a browser channel received it (not yet validated), its consent stating the browser's
 * Global Privacy Control: true when the request carried it; false when it did not and the event
 * states consent otherwise, so a browser that stopped sending it ends the opt-out (a document keeps
 * the newest). An event without consent from a browser without it stays as it was: a profile gains
 * no consent record from every page view.
 */
export function withBrowserGpc(event: unknown, gpc: boolean): unknown {
  const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);
  if (!isObject(event)) return event;
  if (gpc) return { ...event, consent: { ...(isObject(event.consent) ? event.consent : {}), gpc: true } };
  if (!isObject(event.consent) || event.consent.gpc !== undefined) return event;
  return { ...event, consent: { ...event.consent, gpc: false } };
}
