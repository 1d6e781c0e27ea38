import { randomBytes } from 'node:crypto';
import { EVENT_TYPES_KEPT } from '../../domain/profile';
import { call, inParallel } from '../support/http';
import { startPlatform, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource } from '../support/sourceClient';

/** 100 strings of 1,024 random characters: the longest list a property or trait may hold, ~100 KB that deflates little. */
const randomList = () => Array.from({ length: 100 }, () => randomBytes(768).toString('base64'));

/** An event of ~900 KB: nine such lists as properties, one as a trait of a name no other event uses, and a small property. */
function largeEvent(n: number, cookie: string): object {
  const properties: Record<string, unknown> = { category: 'shoes' };
  for (let k = 0; k < 9; k++) properties[`list_${k}`] = randomList();
  return { id: `big-${n}`, type: 'viewed', timestamp: new Date(Date.UTC(2026, 4, 1, 0, n)).toISOString(), identities: { cookie_id: cookie }, properties, traits: { [`seen_${n}`]: randomList() } };
}

describe('large events: the log, the drain and the profile stay within what one stored document holds', () => {
  let platform: RunningPlatform;
  let api: RunningApi;

  beforeAll(async () => {
    // A body limit far above the default, so one request can carry more than a chunk holds.
    platform = await startPlatform('large_events', { DMP_MAX_BODY_BYTES: 32 * 1024 * 1024 });
    ({ api } = platform);
  });
  afterAll(() => platform.stop());

  it('acknowledges forty ~900 KB requests for one person sent together, folds every event, and keeps the profile bounded', async () => {
    const source = await newSource(api, 'large');
    // Drained paused, the forty chunks are then read as one range: all of it for one partition.
    expect((await call(`${api.url}/v1/sources/${source.sourceId}/pause`, { key: api.adminKey, method: 'POST' })).status).toBe(202);
    const responses = await inParallel(
      Array.from({ length: 40 }, (_, n) => () => source.send([largeEvent(n, 'c-large')])),
      24,
    );
    expect(responses.map((response) => response.status)).toEqual(Array(40).fill(202));
    expect(responses.reduce((sum, response) => sum + response.body.accepted, 0)).toBe(40);
    expect((await call(`${api.url}/v1/sources/${source.sourceId}/resume`, { key: api.adminKey, method: 'POST' })).status).toBe(202);
    // Every event goes to one document, hence one partition: its routed batches and versions are the large ones.
    await source.folded(40);
    const profile = (await source.lookup('cookie_id', 'c-large')).body;
    expect(profile.counters.viewed.count).toBe(40);
    // About 1 MB of traits: a few of the ~100 KB ones, the rest counted as kept out.
    const traits = Object.keys(profile.traits).filter((name) => name.startsWith('seen_'));
    expect(traits.length).toBeGreaterThan(0);
    expect(traits.length + profile.limited.traits).toBe(40);
    expect(profile.limited.eventTypes).toBe(0);

    // The partition goes on folding after them.
    await source.send([{ id: 'small-1', type: 'purchase', identities: { cookie_id: 'c-large' }, properties: { value: 3 } }]);
    await source.folded(41);
    expect((await source.lookup('cookie_id', 'c-large')).body.counters.purchase.count).toBe(1);
  });

  it('refuses with a 413 one request whose events take more than a chunk holds, storing none of them', async () => {
    const source = await newSource(api, 'too large');
    const events = Array.from({ length: 12 }, (_, n) => largeEvent(n, `c-too-large-${n}`));
    const response = await source.send(events);
    expect(response.status).toBe(413);
    expect(response.body.errors).toEqual([{ path: '(body)', message: expect.stringContaining('12 events take more than a stored chunk holds') }]);
    // Nothing of it was stored: a small event after it is the source's only one.
    expect((await source.send([{ id: 'after', type: 'page_view', identities: { cookie_id: 'c-after' } }])).status).toBe(202);
    await source.folded(1);
    const status = (await call(`${api.url}/v1/sources/${source.sourceId}`, { key: api.adminKey })).body;
    expect(status.progress.eventsProcessed).toBe(1);
    expect((await source.lookup('cookie_id', 'c-too-large-0')).status).toBe(404);
  });

  it(`counts a person's events of the first ${EVENT_TYPES_KEPT} types to come and shows the others as limited`, async () => {
    const source = await newSource(api, 'many types');
    const types = Array.from({ length: EVENT_TYPES_KEPT + 5 }, (_, n) => `type_${n}`);
    const events = types.map((type, n) => ({ id: `t-${n}`, type, timestamp: new Date(Date.UTC(2026, 4, 1, 0, 0, n)).toISOString(), identities: { cookie_id: 'c-types' } }));
    expect((await source.send(events)).status).toBe(202);
    await source.folded(events.length);
    const profile = (await source.lookup('cookie_id', 'c-types')).body;
    // A fold takes its events in time order: the earliest types are the first to come.
    expect(Object.keys(profile.counters).sort()).toEqual(types.slice(0, EVENT_TYPES_KEPT).sort());
    expect(profile.limited).toEqual({ traits: 0, eventTypes: 5 });
  });
});
