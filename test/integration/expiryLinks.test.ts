import type { Store } from '../../store/db';
import { expiryPartId, PROFILE_EXPIRY_COLLECTION, ProfileExpiries, type ExpiryPartDoc } from '../../store/profileExpiries';
import { testStore, uniqueName } from '../support/services';

/**
 * An inactive-profile expiry names the links between the documents it plans, one per planned
 * document or more: with 20,000 documents a partition and links named by two profile ids and an
 * identity of up to 512 characters, more than one document holds. They are stored in chunks.
 */
describe('the links an expiry plan names', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('expiry_links');
  });
  afterAll(() => store.close());

  const part = (expiryId: string, partition: number, done: boolean): ExpiryPartDoc => ({ _id: expiryPartId(expiryId, partition), expiryId, partition, cutoff: new Date(0), docs: [], next: 0, expired: 0, skipped: 0, identities: 0, done });
  const planOf = (expiryId: string) => ({ _id: expiryId, cutoff: new Date(0), plannedAt: new Date(), people: 1, partitions: [0, 1] });
  const linksOf = async (expiries: ProfileExpiries, expiryId: string) => {
    const expiry = await expiries.get(expiryId);
    const chunks: string[][] = [];
    for await (const links of expiries.links(expiry!)) chunks.push(links);
    return chunks;
  };
  const stored = (expiryId: string) => store.db.collection<{ _id: string }>(PROFILE_EXPIRY_COLLECTION).countDocuments({ _id: { $regex: `^${expiryId}` } });

  it('plans 160,000 links of 150 characters (24 MB, more than a document holds) and reads them all back in order', async () => {
    const expiries = new ProfileExpiries(store);
    const expiryId = uniqueName('x');
    const links = Array.from({ length: 160_000 }, (_, n) => `p_${String(n).padStart(8, '0')}~1|p_${String(n + 1).padStart(8, '0')}~1|cookie_id:${'c'.repeat(110)}`);
    const planned = await expiries.plan(planOf(expiryId), [part(expiryId, 0, false), part(expiryId, 1, false)], links);
    expect(planned.linkChunks).toBeGreaterThanOrEqual(6);
    const chunks = await linksOf(expiries, expiryId);
    expect(chunks).toHaveLength(planned.linkChunks!);
    expect(chunks.flat()).toEqual(links);
  });

  it('forgets the link chunks with the plan once every part is done, and a discarded plan leaves none', async () => {
    const expiries = new ProfileExpiries(store, 1000);
    const links = Array.from({ length: 200 }, (_, n) => `link-${n}-${'l'.repeat(40)}`);
    const forgotten = uniqueName('x');
    const expiry = await expiries.plan(planOf(forgotten), [part(forgotten, 0, true), part(forgotten, 1, false)], links);
    expect(expiry.linkChunks).toBeGreaterThan(5);
    expect((await linksOf(expiries, forgotten)).flat()).toEqual(links);
    await expiries.forget(expiry);
    // One part is still under way: its part, the plan and its links stay.
    expect(await stored(forgotten)).toBe(2 + expiry.linkChunks!);
    await store.db.collection<ExpiryPartDoc>(PROFILE_EXPIRY_COLLECTION).updateOne({ _id: expiryPartId(forgotten, 1) }, { $set: { done: true } });
    await expiries.forget(expiry);
    expect(await stored(forgotten)).toBe(0);

    const discarded = uniqueName('x');
    const half = await expiries.plan(planOf(discarded), [part(discarded, 0, false)], links);
    await expiries.discard(half);
    expect(await stored(discarded)).toBe(0);
  });

  it('reads the links of a plan written before they were chunked', async () => {
    const expiries = new ProfileExpiries(store);
    const expiryId = uniqueName('x');
    await store.db.collection(PROFILE_EXPIRY_COLLECTION).insertOne({ ...planOf(expiryId), links: ['a|b|cookie_id:c'] } as never);
    expect(await linksOf(expiries, expiryId)).toEqual([['a|b|cookie_id:c']]);
  });
});
