import type { Request } from 'express';
import { isRecord } from '../domain/records';

/** Whether the browser sent Global Privacy Control with the request (`Sec-GPC: 1`). */
export function sentGpc(req: Request): boolean {
  return req.get('sec-gpc')?.trim() === '1';
}

/**
 * An event as a browser channel received it (not yet validated), its consent stating the browser's
 * Global Privacy Control: true when the request carried it. With `absenceSaysOff` (a channel only
 * browsers call, the tag's), a request without it states false beside consent the event carries
 * otherwise, so a browser that stopped sending it ends the opt-out (a document keeps the newest);
 * channels servers call too (the Segment routes, a pixel an ad server fires) never state false. An
 * event whose consent is no object, or whose own `gpc` is no boolean, is left for validation to refuse.
 */
export function withBrowserGpc(event: unknown, gpc: boolean, absenceSaysOff: boolean): unknown {
  if (!isRecord(event)) return event;
  const consent = event.consent;
  if (consent !== undefined && (!isRecord(consent) || (consent.gpc !== undefined && typeof consent.gpc !== 'boolean'))) return event;
  if (gpc) return { ...event, consent: { ...consent, gpc: true } };
  if (!absenceSaysOff || consent === undefined || consent.gpc !== undefined) return event;
  return { ...event, consent: { ...consent, gpc: false } };
}
