import type { HeldEvent } from './identitySplit';

/** What places an event in a profile's history. */
export type EventPlace = Pick<HeldEvent, 'timestamp' | 'id' | 'sourceId' | 'profileId'>;

const descending = (a: string, b: string) => (a < b ? 1 : a > b ? -1 : 0);

/**
 * A profile's history order: newest first, then by event id, source and document, each descending.
 * A total order, so a page boundary is a place in it that events arriving later do not move.
 */
export function newestFirst(a: EventPlace, b: EventPlace): number {
  return b.timestamp.getTime() - a.timestamp.getTime() || descending(a.id, b.id) || descending(a.sourceId, b.sourceId) || descending(a.profileId, b.profileId);
}

/**
 * A cursor: `<time in ms>.<id>.<source>.<document>`, the last three base64url. Every string of this
 * shape names a place (so the OpenAPI pattern says all there is to say); `cursorAfter` makes them.
 */
export const EVENT_CURSOR = /^(-?\d{1,15})\.([A-Za-z0-9_-]{0,1400})\.([A-Za-z0-9_-]{0,1400})\.([A-Za-z0-9_-]{0,1400})$/;

const text = (base64url: string) => Buffer.from(base64url, 'base64url').toString('utf8');

/** The cursor after an event: its place. */
export function cursorAfter(event: EventPlace): string {
  const part = (value: string) => Buffer.from(value, 'utf8').toString('base64url');
  return `${event.timestamp.getTime()}.${part(event.id)}.${part(event.sourceId)}.${part(event.profileId)}`;
}

/** The place a cursor names; null when it is not of EVENT_CURSOR's shape. */
export function readCursor(cursor: string): EventPlace | null {
  const match = EVENT_CURSOR.exec(cursor);
  return match && { timestamp: new Date(Number(match[1])), id: text(match[2]), sourceId: text(match[3]), profileId: text(match[4]) };
}

/**
 * Up to `limit` events that come after `after` (from the first without it), of events in
 * `newestFirst` order, and the cursor of the page after them (null on the last). Events that
 * arrive between two pages' reads shift no page: a newer one sorts before the cursor, an older one
 * takes its place among the pages still to come.
 */
export function pageAfter<T extends EventPlace>(events: readonly T[], limit: number, after: EventPlace | null): { page: T[]; next: string | null } {
  const first = after ? events.findIndex((event) => newestFirst(event, after) > 0) : 0;
  const from = first === -1 ? events.length : first;
  const page = events.slice(from, from + limit);
  return { page, next: from + limit < events.length ? cursorAfter(page[page.length - 1]) : null };
}
