import type { Store } from '../../store/db';
import { expectedProfiles, userEvent, type GeneratedEvent } from '../support/audience';
import { call, inParallel } from '../support/http';
import { profileDifferences } from '../support/profiles';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';

const USERS = 2000;
const EVENTS_PER_USER = 10;
const DUPLICATES = 2000; // 10% of the unique events, sent again
const INVALID = 300;

function invalidEvent(n: number): unknown {
  switch (n % 3) {
    case 0:
      return { id: `bad-${n}`, type: 'page_view', identities: { phone: 'not a phone' } };
    case 1:
      return { id: `bad-${n}`, identities: { cookie_id: `c-${n}` } }; // no type
    default:
      return { id: `bad-${n}`, type: 'page_view', identities: { fax: '123' } };
  }
}

describe('collect → profiles, end to end', () => {
  let platform: RunningPlatform;
  let store: Store;
  let api: RunningApi;

  beforeAll(async () => {
    platform = await startPlatform('e2e');
    ({ store, api } = platform);
  });
  afterAll(() => platform.stop());

  it('turns 20,000 events for 2,000 users, with 10% repeats and invalid events, into exact profiles', async () => {
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'web events', kind: 'events', party: 'first' } });
    expect(created.status).toBe(201);
    const { id: sourceId, writeKey } = created.body;

    const unique: GeneratedEvent[] = [];
    for (let user = 0; user < USERS; user++) for (let n = 0; n < EVENTS_PER_USER; n++) unique.push(userEvent(user, n));
    // Repeats are spread over other requests and, for some, placed in the same request as the original.
    const stream: unknown[] = [...unique];
    for (let d = 0; d < DUPLICATES; d++) stream.splice((d * 7919) % stream.length, 0, unique[(d * 104729) % unique.length]);
    for (let n = 0; n < INVALID; n++) stream.splice((n * 4099) % stream.length, 0, invalidEvent(n));
    const requests: unknown[][] = [];
    for (let start = 0; start < stream.length; start += 500) requests.push(stream.slice(start, start + 500));

    const responses = await inParallel(
      requests.map((events) => () => call(`${api.url}/v1/collect`, { key: writeKey, body: { events } })),
      8,
    );
    expect(responses.every((response) => response.status === 202)).toBe(true);
    const accepted = responses.reduce((sum, r) => sum + r.body.accepted, 0);
    const duplicates = responses.reduce((sum, r) => sum + r.body.duplicates, 0);
    const rejected = responses.flatMap((r, requestIndex) => r.body.rejected.map((x: { index: number }) => requests[requestIndex][x.index]));
    // A repeat stored together with its original (same request, or requests committed as one chunk)
    // is answered as a duplicate; any other repeat is acknowledged and dropped by the profile writer.
    const repeatsWithinRequests = requests.reduce<number>((sum, events) => sum + events.length - new Set(events.map((event: any) => event.id)).size, 0);
    expect(repeatsWithinRequests).toBeGreaterThan(0);
    expect(repeatsWithinRequests).toBeLessThan(DUPLICATES);
    expect(duplicates).toBeGreaterThanOrEqual(repeatsWithinRequests);
    expect(accepted + duplicates).toBe(USERS * EVENTS_PER_USER + DUPLICATES);
    expect(rejected).toHaveLength(INVALID);
    expect(new Set(rejected.map((event: any) => event.id))).toEqual(new Set(Array.from({ length: INVALID }, (_, n) => `bad-${n}`)));

    const status = await waitFor(
      'the source to drain',
      async () => {
        const response = await call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey });
        // The partitions may fold the last events before the source's workflow has finished the turn
        // that routed them (its status then comes from the memo of the turn before): both are waited for.
        const drained = response.body.profiles?.eventsApplied === accepted && response.body.progress?.eventsProcessed + response.body.progress?.duplicatesSkipped === accepted + duplicates;
        return drained ? response.body : undefined;
      },
      300_000,
      1000,
    );
    expect(status.progress.eventsProcessed).toBe(accepted);
    expect(status.progress.duplicatesSkipped).toBe(duplicates);
    expect(status.profiles.duplicatesDropped).toBe(DUPLICATES - duplicates);
    expect(status.progress.lastError).toBeNull();
    expect(status.pending.chunks).toBe(0);
    expect(await profileDifferences(store, expectedProfiles(unique))).toEqual([]);

    const byEmail = await call(`${api.url}/v1/profiles/lookup?type=email&value=${encodeURIComponent('USER42@example.com')}`, { key: api.adminKey });
    expect(byEmail.status).toBe(200);
    expect(byEmail.body.identities).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'cookie_id', value: 'c-42' })]));
    const counters = Object.fromEntries(Object.entries(byEmail.body.counters).map(([type, { days, ...counter }]: [string, any]) => [type, counter]));
    expect(counters).toEqual(expectedProfiles(unique).get('c-42')?.counters);
    expect(JSON.stringify(byEmail.body)).not.toMatch(/example\.com/i);
    // Traits are last-write-wins by event time, not by arrival order.
    const newest = unique.filter((event) => event.identities.cookie_id === 'c-42').sort((a, b) => a.timestamp.localeCompare(b.timestamp)).pop();
    expect(byEmail.body.traits).toEqual(newest?.traits);
  });
});
