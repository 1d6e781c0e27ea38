import fc from 'fast-check';
import { cursorAfter, newestFirst, pageAfter, readCursor, type EventPlace } from '../../domain/eventPages';

const event = (at: number, id: string, sourceId = 'src_a', profileId = 'p_1'): EventPlace => ({ timestamp: new Date(at), id, sourceId, profileId });
const key = (place: EventPlace) => `${place.timestamp.getTime()}|${place.id}|${place.sourceId}|${place.profileId}`;

/** Reads every page of the history `read()` returns at each request, as a client following `next` would. */
function walk(read: (page: number) => EventPlace[], limit: number): EventPlace[] {
  const seen: EventPlace[] = [];
  let cursor: string | null | undefined;
  for (let n = 0; cursor !== null; n++) {
    const { page, next } = pageAfter(read(n), limit, cursor === undefined ? null : readCursor(cursor));
    seen.push(...page);
    cursor = next;
  }
  return seen;
}

const places = fc.uniqueArray(
  fc.record({ at: fc.integer({ min: 0, max: 20 }), id: fc.constantFrom('a', 'b', 'c'), sourceId: fc.constantFrom('src_a', 'src_b'), profileId: fc.constantFrom('p_1', 'p_2') }),
  { selector: (place) => `${place.at}|${place.id}|${place.sourceId}|${place.profileId}`, maxLength: 40 },
).map((list) => list.map((place) => event(place.at, place.id, place.sourceId, place.profileId)).sort(newestFirst));

describe('paging a profile history by place', () => {
  it('orders events newest first, then by id, source and document, so that no two places tie', () => {
    const sorted = [event(1, 'a'), event(2, 'a'), event(2, 'b'), event(2, 'b', 'src_b'), event(2, 'b', 'src_b', 'p_2')].sort(newestFirst);
    expect(sorted.map(key)).toEqual(['2|b|src_b|p_2', '2|b|src_b|p_1', '2|b|src_a|p_1', '2|a|src_a|p_1', '1|a|src_a|p_1']);
  });

  it('gives every event exactly once over the pages of a history that does not change', () => {
    fc.assert(
      fc.property(places, fc.integer({ min: 1, max: 7 }), (history, limit) => {
        expect(walk(() => history, limit).map(key)).toEqual(history.map(key));
      }),
    );
  });

  it('repeats and skips nothing of the history it started from while events arrive between pages', () => {
    fc.assert(
      fc.property(places, places, fc.integer({ min: 1, max: 7 }), (before, arriving, limit) => {
        const start = new Set(before.map(key));
        const added = arriving.filter((place) => !start.has(key(place)));
        // Before page n is read, the first n of the arriving events have come in.
        const seen = walk((n) => [...before, ...added.slice(0, n)].sort(newestFirst), limit).map(key);
        expect(new Set(seen).size).toBe(seen.length);
        for (const place of before) expect(seen).toContain(key(place));
      }),
    );
  });

  it('reads back the place of a cursor it made, whatever the ids hold, and refuses other shapes', () => {
    for (const place of [event(Date.UTC(2026, 5, 1), 'ev-1', 'src_x', 'p_9'), event(0, 'id.with.dots/ünï', 'src_y', 'p_1~2'), event(-1, '', 'src_z', 'p_3')]) {
      expect(readCursor(cursorAfter(place))).toEqual(place);
    }
    // The longest event id (128 characters of 4 bytes each) still fits.
    const long = event(1, '𝄞'.repeat(128));
    expect(readCursor(cursorAfter(long))).toEqual(long);
    for (const bad of ['0', '100', 'a.b.c.d', '1.a.b', '1.a.b.c.d', '1.a b.c.d', `${'9'.repeat(16)}.a.b.c`]) expect(readCursor(bad)).toBeNull();
  });
});
