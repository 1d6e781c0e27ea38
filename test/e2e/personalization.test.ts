import { call } from '../support/http';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();

/**
 * Planted baskets: 12 people bought a tent and a stove, 4 a tent and a lamp, 8 a book and a pen;
 * `solo` only viewed the tent. Co-occurrence: tent–stove 12, tent–lamp 4; people per item: tent 17,
 * stove 12, lamp 4. Cosine similarity: tent–stove 12/√(17·12), tent–lamp 4/√(17·4).
 */
function baskets(): unknown[] {
  const events: unknown[] = [];
  const buy = (person: string, items: string[]) => items.forEach((item, n) => events.push({ id: `${person}-${item}`, type: 'purchase', timestamp: minutesAgo(10 + n), identities: { cookie_id: person }, properties: { item, price: 10 } }));
  for (let i = 0; i < 12; i++) buy(`camper${i}`, ['tent', 'stove']);
  for (let i = 0; i < 4; i++) buy(`hiker${i}`, ['tent', 'lamp']);
  for (let i = 0; i < 8; i++) buy(`reader${i}`, ['book', 'pen']);
  events.push({ id: 'solo-view', type: 'product_view', timestamp: minutesAgo(5), identities: { cookie_id: 'solo' }, properties: { item: 'tent' } });
  // Not an item event type: its item is no interaction.
  events.push({ id: 'solo-page', type: 'page_view', timestamp: minutesAgo(4), identities: { cookie_id: 'solo' }, properties: { item: 'book' } });
  return events;
}

describe('personalization: recommended items from co-occurrence, and a profile’s segments, for a page', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  const ids: Record<string, string> = {};
  const get = (path: string) => call(`${api.url}${path}`, { key: api.adminKey });

  /** Set: the next opt-out attempt stops once it has written its marks, as a worker killed there would. */
  let stopAfterMarking = false;

  beforeAll(async () => {
    const onOptOutMarked = () => {
      if (!stopAfterMarking) return;
      stopAfterMarking = false;
      throw new Error('the worker stopped after marking the opt-out');
    };
    platform = await startPlatform('personalization', {}, { onOptOutMarked });
    ({ api } = platform);
    source = await newSource(api, 'shop');
    const events = baskets();
    expect((await source.send(events)).body.accepted).toBe(events.length);
    await source.folded(events.length);
    for (const person of ['solo', 'camper0', 'hiker0', 'reader0']) ids[person] = (await source.lookup('cookie_id', person)).body.id;
  });
  afterAll(() => platform.stop());

  it('before any build there is no model and nothing to recommend', async () => {
    expect((await get('/v1/recommendations/model')).body).toEqual({ state: 'none', builtAt: null, fullBuildAt: null, items: 0, people: 0, eventTypes: ['product_view', 'add_to_cart', 'purchase'] });
    expect((await get(`/v1/profiles/${ids.solo}/recommendations`)).body).toEqual({ profileId: ids.solo, modelBuiltAt: null, items: [] });
  });

  it('recommends the items most often bought with what the profile has, leaving out what it has', async () => {
    const started = await call(`${api.url}/v1/recommendations/model`, { key: api.adminKey, method: 'POST' });
    expect(started.status).toBe(202);
    const model = await waitFor('the model built', async () => {
      const body = (await get('/v1/recommendations/model')).body;
      return body.state === 'built' ? body : null;
    });
    expect(model).toMatchObject({ items: 5, people: 25 });

    const solo = await waitFor('recommendations served from the model', async () => {
      const body = (await get(`/v1/profiles/${ids.solo}/recommendations`)).body;
      return body.modelBuiltAt ? body : null;
    });
    expect(solo.items).toEqual([
      { item: 'stove', score: 12 / Math.sqrt(17 * 12) },
      { item: 'lamp', score: 4 / Math.sqrt(17 * 4) },
    ]);
    // A camper has the tent and the stove: the lamp is what is left near them.
    expect((await get(`/v1/profiles/${ids.camper0}/recommendations`)).body.items).toEqual([{ item: 'lamp', score: 4 / Math.sqrt(17 * 4) }]);
    expect((await get(`/v1/profiles/${ids.reader0}/recommendations?limit=1`)).body.items).toEqual([]);
    expect((await get(`/v1/profiles/${ids.hiker0}/recommendations?limit=1`)).body.items).toEqual([{ item: 'stove', score: 12 / Math.sqrt(17 * 12) }]);
  });

  it('a new build replaces the one served and removes the chunks of the one it replaced', async () => {
    const first = (await get('/v1/recommendations/model')).body.builtAt;
    await platform.temporal.workflow.execute('itemModel', { workflowId: `item-model-again-${Date.now()}`, taskQueue: platform.taskQueue, args: [{ full: true }] });
    const head = await platform.store.db.collection('item_model_head').findOne({ _id: 'current' as never });
    expect(head?.at.toISOString()).not.toBe(first);
    expect(head?.previous.buildId).toBe(String(new Date(first).getTime()));
    for (const collection of ['item_model_chunks', 'item_model_state']) {
      const chunks = await platform.store.db.collection(collection).find({}, { projection: { _id: 1 } }).toArray();
      expect(chunks.map((chunk) => chunk._id)).toEqual([`${head?.buildId}:0`]);
    }
  });

  it('takes in interactions folded since without a pass, counting as a full build would', async () => {
    const update = (full: boolean) => platform.temporal.workflow.execute('itemModel', { workflowId: `item-model-${full ? 'full' : 'refresh'}-${Date.now()}`, taskQueue: platform.taskQueue, args: [{ full }] });
    const fullBuildAt = (await get('/v1/recommendations/model')).body.fullBuildAt;
    // camper0 adds the lamp to the tent and stove; three cooks buy a stove and a lamp.
    const events = [{ id: 'camper0-lamp', type: 'add_to_cart', timestamp: minutesAgo(3), identities: { cookie_id: 'camper0' }, properties: { item: 'lamp' } }];
    for (let i = 0; i < 3; i++) for (const item of ['stove', 'lamp']) events.push({ id: `cook${i}-${item}`, type: 'purchase', timestamp: minutesAgo(2), identities: { cookie_id: `cook${i}` }, properties: { item } });
    expect((await source.send(events)).body.accepted).toBe(events.length);
    await source.folded(baskets().length + events.length);

    const refreshed = await update(false);
    expect(refreshed).toMatchObject({ kind: 'refresh', documentsScanned: 0, changesApplied: 4, people: 28 });
    expect(await platform.store.db.collection('item_changes').countDocuments()).toBe(0);
    const model = (await get('/v1/recommendations/model')).body;
    expect(model).toMatchObject({ state: 'built', items: 5, people: 28, fullBuildAt });
    // Now tent 17 people, stove 15, lamp 8; tent–stove 12, tent–lamp 5.
    const expected = [
      { item: 'stove', score: 12 / Math.sqrt(17 * 15) },
      { item: 'lamp', score: 5 / Math.sqrt(17 * 8) },
    ];
    const served = () => Promise.all(['solo', 'hiker0', 'reader0'].map(async (person) => (await get(`/v1/profiles/${ids[person]}/recommendations`)).body));
    const afterRefresh = await waitFor('the refreshed model served', async () => {
      const answers = await served();
      return answers[0].modelBuiltAt === model.builtAt ? answers : null;
    });
    expect(afterRefresh[0].items).toEqual(expected);

    // A full build finds exactly the same counts.
    expect(await update(true)).toMatchObject({ kind: 'build', people: 28 });
    const afterBuild = await waitFor('the full build served', async () => {
      const answers = await served();
      return answers[0].modelBuiltAt !== model.builtAt ? answers : null;
    });
    expect(afterBuild.map((answer) => answer.items)).toEqual(afterRefresh.map((answer) => answer.items));
    expect(await update(false)).toMatchObject({ kind: 'unchanged' });
  });

  it('takes out the items of a person whose consent refuses profiling, or who opted out — the refresh as a full build does — and recommends them nothing', async () => {
    const update = (full: boolean) => platform.temporal.workflow.execute('itemModel', { workflowId: `item-model-${full ? 'full' : 'refresh'}-withdrawn-${Date.now()}`, taskQueue: platform.taskQueue, args: [{ full }] });
    const before = (await get('/v1/recommendations/model')).body;
    expect(before.people).toBe(28);
    // hiker0 (tent, lamp) says no to profiling: the fold keeps the signal alone.
    const withdrawal = { id: 'hiker0-no', type: 'consent_update', timestamp: minutesAgo(1), identities: { cookie_id: 'hiker0' }, consent: { purposes: { profiling: false } } };
    expect((await source.send([withdrawal])).body).toMatchObject({ accepted: 1, nonProfiling: 1 });
    await waitFor('the withdrawal on the profile', async () => (await get(`/v1/profiles/${ids.hiker0}`)).body.consent?.purposes?.profiling === false);
    const refreshed = await update(false);
    expect(refreshed).toMatchObject({ kind: 'refresh', changesApplied: 1, people: 27 });
    const served = await waitFor('the refreshed model served', async () => {
      const body = (await get(`/v1/profiles/${ids.hiker0}/recommendations`)).body;
      return body.modelBuiltAt !== before.builtAt ? body : null;
    });
    expect(served.items).toEqual([]);
    // Now tent 16 people, lamp 7; tent–lamp 4: solo's lamp score says so.
    expect((await get(`/v1/profiles/${ids.solo}/recommendations`)).body.items).toContainEqual({ item: 'lamp', score: 4 / Math.sqrt(16 * 7) });
    expect(await update(true)).toMatchObject({ kind: 'build', people: 27 });

    // reader0 (book, pen) opts out through a privacy request: the next refresh takes their items out, as the full build does —
    // also when the attempt that marked them stopped before recording that, and a retry finished it.
    stopAfterMarking = true;
    const optOut = await call(`${api.url}/v1/privacy/requests`, { key: api.adminKey, body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'reader0' } } });
    expect(optOut.status).toBe(202);
    await waitFor('the opt-out done', async () => (await get(`/v1/privacy/requests/${optOut.body.id}`)).body.state === 'completed');
    expect(stopAfterMarking).toBe(false);
    expect(await update(false)).toMatchObject({ kind: 'refresh', changesApplied: 1, people: 26 });
    expect(await update(true)).toMatchObject({ kind: 'build', people: 26 });
  });

  it("lists the profile's segments now, by id and name", async () => {
    const created = await call(`${api.url}/v1/segments`, { key: api.adminKey, body: { name: 'Buyers', rule: { event: 'purchase' } } });
    expect(created.status).toBe(201);
    const buyer = await waitFor('the segment served', async () => {
      const body = (await get(`/v1/profiles/${ids.camper0}/segments`)).body;
      return body.segments.length > 0 ? body : null;
    });
    expect(buyer).toEqual({ profileId: ids.camper0, segments: [{ id: created.body.id, name: 'Buyers' }] });
    expect((await get(`/v1/profiles/${ids.solo}/segments`)).body).toEqual({ profileId: ids.solo, segments: [] });
  });

  it('refuses an update request it cannot read, naming the field', async () => {
    const bad = await call(`${api.url}/v1/recommendations/model`, { key: api.adminKey, method: 'POST', body: { full: 'no' } });
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].path).toBe('full');
  });

  it('answers 404 for a profile that does not exist, and 400 for a bad limit', async () => {
    const missing = await get('/v1/profiles/p_nope/recommendations');
    expect(missing.status).toBe(404);
    expect(missing.body.errors).toEqual([{ path: 'params.id', message: 'no profile p_nope' }]);
    expect((await get('/v1/profiles/p_nope/segments')).status).toBe(404);
    const bad = await get(`/v1/profiles/${ids.solo}/recommendations?limit=0`);
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].path).toBe('limit');
  });
});
