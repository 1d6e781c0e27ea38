import { COLLECTIONS, type Store } from '../../store/db';
import { SourceStore, type SourceDoc } from '../../store/sources';
import { testStore } from '../support/services';

describe('a source create made twice under one Idempotency-Key, as stored', () => {
  let store: Store;
  let sources: SourceStore;
  beforeAll(async () => {
    store = await testStore('source_creates');
    sources = new SourceStore(store);
  });
  afterAll(() => store.close());

  const source = (id: string): SourceDoc => ({ _id: id, name: id, kind: 'events', party: 'first', labels: [], writeKeyHash: `hash-of-${id}`, createdAt: new Date(), createdWith: 'fingerprint' });

  it('keeps the source when the repeat wrote its write key lookup first, and finds it there when the repeat comes later', async () => {
    // The first request stalled between its two inserts; the repeat found the source and wrote the lookup.
    await store.db.collection(COLLECTIONS.sourceKeys).insertOne({ _id: 'hash-of-src_keyed' as never, sourceId: 'src_keyed' });
    expect(await sources.create(source('src_keyed'))).toBe(true);
    expect(await sources.get('src_keyed')).toMatchObject({ _id: 'src_keyed', createdWith: 'fingerprint' });
    expect(await sources.sourceIdForKeyHash('hash-of-src_keyed')).toBe('src_keyed');
    // Made again: found, not made twice; the lookup is written again if missing.
    expect(await sources.create(source('src_keyed'))).toBe(false);
    await store.db.collection(COLLECTIONS.sourceKeys).deleteOne({ _id: 'hash-of-src_keyed' as never });
    await sources.ensureKey(source('src_keyed'));
    expect(await sources.sourceIdForKeyHash('hash-of-src_keyed')).toBe('src_keyed');
  });

  it('undoes a create whose write key lookup names another source', async () => {
    await store.db.collection(COLLECTIONS.sourceKeys).insertOne({ _id: 'hash-of-src_clash' as never, sourceId: 'src_other' });
    await expect(sources.create(source('src_clash'))).rejects.toThrow();
    expect(await sources.get('src_clash')).toBeNull();
  });
});
