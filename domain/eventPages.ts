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

/** The cursor after an event: its place, opaque to clients. */
export function cursorAfter(event: EventPlace): string {
  return Buffer.from(JSON.stringify([event.timestamp.getTime(), event.id, event.sourceId, event.profileId]), 'utf8').toString('base64url');
}

/** The place a cursor names; null when it is not one `cursorAfter` made. */
export function readCursor(cursor: string): EventPlace | null {
  try {
    const place: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Array.isArray(place) || place.length !== 4) return null;
    const [time, id, sourceId, profileId] = place as unknown[];
    if (typeof time !== 'number' || !Number.isSafeInteger(time) || Math.abs(time) > 8.64e15 || typeof id !== 'string' || typeof sourceId !== 'string' || typeof profileId !== 'string') return null;
    return { timestamp: new Date(time), id, sourceId, profileId };
  } catch {
    return null;
  }
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
