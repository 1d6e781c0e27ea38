import type { Collection } from 'mongodb';
import { replaceUnlessNewer, type Store } from '../../store/db';
import { MatchTableStore } from '../../store/matchTables';
import { SharedRewrites } from '../../store/sharedRewrites';
import { VERSION_CLAIMS, VersionClaims } from '../../store/versionClaims';
import { testStore } from '../support/services';

interface ItemsDoc {
  _id: string;
  items: number[];
  erasures?: number;
}

describe('writes of documents several processes change at once, one version at a time', () => {
  let store: Store;
  let docs: Collection<ItemsDoc>;
  beforeAll(async () => {
    store = await testStore('sharedrewrites');
    docs = store.db.collection<ItemsDoc>('shared_docs');
  });
  afterAll(() => store.close());

  const without = (item: number) => (doc: ItemsDoc) => (doc.items.includes(item) ? { doc: { items: doc.items.filter((kept) => kept !== item) }, result: item } : null);

  it('loses no change when two processes rewrite the same documents at the same moments', async () => {
    const ids = Array.from({ length: 20 }, (_, n) => `doc_${n}`);
    await docs.insertMany(ids.map((_id) => ({ _id, items: Array.from({ length: 12 }, (_, k) => k) })));
    // Each process has its own rewriter (its own in-process sharing): one removes the even items, the other the odd ones.
    const processes = [new SharedRewrites(store), new SharedRewrites(store)];
    const results = await Promise.all(
      ids.flatMap((id) => Array.from({ length: 12 }, (_, item) => processes[item % 2].rewrite(docs, id, without(item)))),
    );
    expect(results).toEqual(ids.flatMap(() => Array.from({ length: 12 }, (_, item) => item)));
    for (const doc of await docs.find({ _id: { $in: ids } }).toArray()) expect(doc.items).toEqual([]);
    expect(await store.db.collection(VERSION_CLAIMS).countDocuments({})).toBe(0);
  });

  it('waits while another process holds the document’s claim, and takes over a claim its writer left behind', async () => {
    // A store whose conditional writes are atomic (MongoDB) needs no claims: none is written or read.
    if (store.atomicConditionalWrites) {
      await docs.insertOne({ _id: 'unclaimed', items: [1] });
      await store.db.collection(VERSION_CLAIMS).insertOne({ _id: 'shared_docs/unclaimed@0', at: new Date() } as never);
      await expect(new SharedRewrites(store).rewrite(docs, 'unclaimed', without(1))).resolves.toBe(1);
      return;
    }
    const claims = store.db.collection<{ _id: string; at: Date }>(VERSION_CLAIMS);
    await docs.insertMany([
      { _id: 'held', items: [1, 2] },
      { _id: 'left', items: [1, 2] },
    ]);
    const rewrites = new SharedRewrites(store);

    await claims.insertOne({ _id: 'shared_docs/held@0', at: new Date() });
    let done = false;
    const waiting = rewrites.rewrite(docs, 'held', without(1)).then((result) => ((done = true), result));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(done).toBe(false);
    // The other writer ends: its version written, its claim removed.
    await docs.replaceOne({ _id: 'held' }, { items: [2], erasures: 1 });
    await claims.deleteOne({ _id: 'shared_docs/held@0' });
    expect(await waiting).toBeNull(); // the other writer had removed it already
    await expect(rewrites.rewrite(docs, 'held', without(2))).resolves.toBe(2);
    expect(await docs.findOne({ _id: 'held' })).toMatchObject({ items: [], erasures: 2 });

    // A writer that died after claiming: its claim, older than the lease, is taken over.
    await claims.insertOne({ _id: 'shared_docs/left@0', at: new Date(Date.now() - 5 * 60_000) });
    await expect(rewrites.rewrite(docs, 'left', without(1))).resolves.toBe(1);
    expect(await docs.findOne({ _id: 'left' })).toMatchObject({ items: [2], erasures: 1 });
    expect(await claims.countDocuments({})).toBe(0);
  });

  it('makes a match-table write wait for the claim another process holds on the same version', async () => {
    const matches = new MatchTableStore(store, { cap: 10, ttlMs: 86_400_000 });
    await matches.record('ttd', 'claimed-user', 'ck-1');
    if (store.atomicConditionalWrites) return expect(await store.db.collection(VERSION_CLAIMS).countDocuments({})).toBe(0);
    const claims = store.db.collection<{ _id: string; at: Date }>(VERSION_CLAIMS);
    await claims.insertOne({ _id: 'match_partner_ids/ttd:claimed-user@1', at: new Date() });
    let done = false;
    const sighting = matches.record('ttd', 'claimed-user', 'ck-2').then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(done).toBe(false);
    await claims.deleteOne({ _id: 'match_partner_ids/ttd:claimed-user@1' });
    await sighting;
    expect((await matches.cookieIdsOf('ttd', 'claimed-user')).sort()).toEqual(['ck-1', 'ck-2']);
    expect(await claims.countDocuments({})).toBe(0);
  });

  it('removes the claims dead writers left, never one in use nor the first of a version whose later claim is in use', async () => {
    const claims = store.db.collection<{ _id: string; at: Date }>(VERSION_CLAIMS);
    await claims.deleteMany({});
    const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3_600_000);
    await claims.insertMany([
      { _id: 'docs/left@3', at: hoursAgo(2) }, // its writer died after writing
      { _id: 'docs/busy@1', at: hoursAgo(2) }, // taken over by a writer still writing …
      { _id: 'docs/busy@1#1', at: new Date() },
      { _id: 'docs/tail@2#1', at: hoursAgo(2) }, // a writer that died removing its claims
      { _id: 'docs/live@5', at: new Date() },
    ]);
    const releasing = new VersionClaims(store).releaseStale(hoursAgo(1));
    if (store.atomicConditionalWrites) {
      // No writer claims on MongoDB: whatever is old goes.
      expect(await releasing).toBe(3);
      expect((await claims.find({}).toArray()).map((claim) => claim._id).sort()).toEqual(['docs/busy@1#1', 'docs/live@5']);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    // … whose chain stays whole while it writes; when done it removes both.
    expect(await claims.findOne({ _id: 'docs/busy@1' })).not.toBeNull();
    await claims.deleteMany({ _id: { $in: ['docs/busy@1', 'docs/busy@1#1'] } });
    expect(await releasing).toBe(2);
    expect((await claims.find({}).toArray()).map((claim) => claim._id)).toEqual(['docs/live@5']);
  });

  it('keeps the newest result when results of overlapping passes are written at once, oldest last or not', async () => {
    const results = store.db.collection<{ _id: string; at: Date; pass: number }>('pass_results');
    const at = (pass: number) => new Date(Date.UTC(2026, 10, 20, 10, pass));
    await Promise.all(
      Array.from({ length: 15 }, (_, n) => [3, 0, 5, 1, 4, 2].map((pass) => replaceUnlessNewer(results, { _id: `report_${n}`, at: at(pass), pass }, new VersionClaims(store)))).flat(),
    );
    for (let n = 0; n < 15; n++) expect(await results.findOne({ _id: `report_${n}` })).toMatchObject({ pass: 5 });
  });
});
