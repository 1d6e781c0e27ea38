import { createItemModelActivities } from '../../activities/itemModel';
import type { Store } from '../../store/db';
import { ITEM_MODEL_COLLECTIONS, ItemModelStore } from '../../store/itemModel';
import { testStore } from '../support/services';

describe('item model updates: a refresh never gets a full build under way dropped', () => {
  let store: Store;
  let models: ItemModelStore;
  const config = { DMP_ITEM_EVENT_TYPES: ['purchase'], DMP_ITEM_MODEL_EVERY_MINUTES: 1440 };
  beforeAll(async () => {
    store = await testStore('item_model_updates');
    models = new ItemModelStore(store);
  });
  afterAll(() => store.close());

  it('defers a refresh while a full build is marked under way, and applies its changes once the build has ended', async () => {
    const { updateItemModel } = createItemModelActivities({ store, config });
    const t0 = Date.now() - 60_000;
    expect(await updateItemModel({ at: t0, full: true })).toMatchObject({ kind: 'build', buildId: String(t0) });
    // The build leaves no mark behind.
    expect(await store.db.collection(ITEM_MODEL_COLLECTIONS.builds).countDocuments({})).toBe(0);
    await models.recordChanges({ _id: 'g-1', at: new Date(t0 + 1_000), people: [{ personId: 'p-1', before: [], after: ['boots', 'tent'] }] });

    // A full build begun at t1 is under way: a refresh begun later would be published first, and the build dropped.
    const t1 = t0 + 2_000;
    await models.markFullBuild(new Date(t1), new Date(Date.now() + 60_000));
    expect(await updateItemModel({ at: t1 + 1_000 })).toMatchObject({ kind: 'deferred', buildId: String(t0) });
    expect((await models.head())?.buildId).toBe(String(t0));
    expect((await models.pendingChanges()).map((record) => record._id)).toEqual(['g-1']);

    // Another full build runs beside it (one asked for while a scheduled one was due): each holds its own mark.
    await models.markFullBuild(new Date(t1 + 500), new Date(Date.now() + 60_000));
    await models.endFullBuild(new Date(t1));
    expect(await updateItemModel({ at: t1 + 1_500 })).toMatchObject({ kind: 'deferred' });
    await models.endFullBuild(new Date(t1 + 500));
    // A renewal landing after its build ended makes no mark again.
    await models.renewFullBuild(new Date(t1 + 500), new Date(Date.now() + 60_000));
    expect(await updateItemModel({ at: t1 + 2_000 })).toMatchObject({ kind: 'refresh', buildId: String(t1 + 2_000), changesApplied: 1, people: 1 });
  });

  it('goes on refreshing once the mark of a build that stopped renewing it has run out', async () => {
    const { updateItemModel } = createItemModelActivities({ store, config });
    const head = await models.head();
    const at = Number(head?.buildId) + 1_000;
    await models.recordChanges({ _id: 'g-2', at: new Date(at - 500), people: [{ personId: 'p-2', before: [], after: ['boots'] }] });
    await models.markFullBuild(new Date(at - 100), new Date(Date.now() - 1));
    expect(await updateItemModel({ at })).toMatchObject({ kind: 'refresh', changesApplied: 1, people: 2 });
  });

  it('keeps a catalogue of long item names in as many chunks as it takes, and reads it back whole', async () => {
    // 4,000 items named by 200-character URLs, 50 neighbours each: ~45 MB of neighbour lists, ~1 MB of names.
    const name = (n: number) => `https://shop.example/products/${n}/`.padEnd(200, 'x');
    const neighbours = Array.from({ length: 4_000 }, (_, n) => ({ item: name(n), people: n + 1, neighbours: Array.from({ length: 50 }, (_, k): [string, number] => [name((n + k + 1) % 4_000), 1 / (k + 1)]) }));
    const chunks = await models.writeChunks('long', neighbours);
    expect(chunks).toBeGreaterThan(3);
    const head = { _id: 'current' as const, buildId: 'long', at: new Date(), chunks, items: neighbours.length, people: 1, eventTypes: ['purchase'], previous: null };
    const read = await models.read(head);
    expect(read.size).toBe(4_000);
    expect(read.get(name(17))).toEqual(neighbours[17]);
    // The counts' item names are spread over the chunks too: 60,000 names of 1 KB pass one document.
    const names = Array.from({ length: 60_000 }, (_, n) => `${n}:`.padEnd(1_024, 'y'));
    const state = { names, people: names.map((_, n) => n % 7), pairs: new Float64Array([0, 1, 1, 2, 2, 3]) };
    const stateChunks = await models.writeState('long', state);
    expect(stateChunks).toBeGreaterThan(1);
    expect(await models.readState({ ...head, stateChunks })).toEqual(state);
    await models.drop({ buildId: 'long', chunks, stateChunks });
  });

  it("keeps a fold's item changes of thousands of people with long item names, more than one BSON document holds before deflating", async () => {
    const item = (n: number) => `https://shop.example/products/${n}/`.padEnd(120, 'x');
    const people = Array.from({ length: 3_000 }, (_, p) => ({ personId: `p-many-${p}`, before: Array.from({ length: 30 }, (_, k) => item(p + k)), after: Array.from({ length: 30 }, (_, k) => item(p + k + 1)) }));
    await models.recordChanges({ _id: 'g-many', at: new Date(0), people });
    const [record] = (await models.pendingChanges()).filter((found) => found._id === 'g-many');
    expect(record.people).toEqual(people);
    await models.dropChanges(['g-many']);
  });
});
