import { newProfile, nextVersion } from '../../domain/profile';
import { COLLECTIONS, type Store } from '../../store/db';
import { ProfileStore } from '../../store/profiles';
import { testStore } from '../support/services';

describe('profile write groups: what a group holds is read from its slices, not from the versions', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('profile_groups');
  });
  afterAll(() => store.close());

  const at = new Date('2026-05-01T00:00:00Z');
  const slices = () => store.db.collection(COLLECTIONS.profileGroupSlices);
  const ids = (members: Array<{ _id: string }>) => members.map((member) => member._id).sort();

  it('lists every version each write put in a group, and removes the group and its slices together', async () => {
    const profiles = new ProfileStore(store);
    const [a, b, c] = ['a', 'b', 'c'].map((id) => newProfile(`p_${id}`, at, at));
    await profiles.saveVersions([a, b], 'g1');
    await profiles.saveVersions([c], 'g1');
    await profiles.saveVersions([nextVersion(a)], 'g2');
    expect(ids(await profiles.groupMembers('g1'))).toEqual(['p_a@00000000', 'p_b@00000000', 'p_c@00000000']);
    expect(await profiles.groupMembers('g1')).toContainEqual({ _id: 'p_a@00000000', profileId: 'p_a', version: 0 });
    expect(await slices().countDocuments({ group: 'g1' })).toBe(2);

    const listed = ids(await profiles.groupMembers('g1'));
    // Written after the group was listed (by a writer still running after it was taken over): it stays.
    await profiles.saveVersions([nextVersion(c)], 'g1');
    expect(await profiles.dropGroup('g1', listed)).toBe(3);
    expect(await slices().countDocuments({ group: 'g1' })).toBe(0);
    expect(await profiles.groupMembers('g1')).toEqual([{ _id: 'p_c@00000001', profileId: 'p_c', version: 1 }]);
    expect(ids(await profiles.groupMembers('g2'))).toEqual(['p_a@00000001']);
    expect((await profiles.get('p_a'))?._id).toBe('p_a@00000001');
  });

  it('reads the versions themselves for a group written before slices were kept', async () => {
    const profiles = new ProfileStore(store);
    const [d, e] = ['d', 'e'].map((id) => newProfile(`p_${id}`, at, at));
    await profiles.saveVersions([d, e], 'old');
    await slices().deleteMany({ group: 'old' });
    expect(ids(await profiles.groupMembers('old'))).toEqual(['p_d@00000000', 'p_e@00000000']);
  });

  it('takes a version another writer made first out of the slice of the write it refused', async () => {
    const profiles = new ProfileStore(store);
    const f = newProfile('p_f', at, at);
    await profiles.saveVersions([f], 'g3');
    // The same version again fails (someone else wrote the document since it was read) after its slice is written.
    await expect(profiles.saveVersions([f, newProfile('p_g', at, at)], 'g4')).rejects.toThrow();
    expect(ids(await profiles.groupMembers('g4'))).toEqual(['p_g@00000000']);
    expect((await profiles.get('p_f'))?.group).toBe('g3');
    // So erasing the document leaves no slice naming it.
    expect(await profiles.removeDocuments(['p_f'])).toBe(1);
    expect(await slices().countDocuments({ 'versions.profileId': 'p_f' })).toBe(0);
    expect(await profiles.dropGroup('g4', ['p_f@00000000', 'p_g@00000000'])).toBe(1); // p_g was inserted (unordered), p_f was not (its version is in g3)
  });

  it('takes erased documents out of the slices along with their versions, and leaves the others', async () => {
    const profiles = new ProfileStore(store);
    const [h, i, j] = ['h', 'i', 'j'].map((id) => newProfile(`p_${id}`, at, at));
    await profiles.saveVersions([h, i, j], 'g5');
    await profiles.saveVersions([nextVersion(h)], 'g6');
    expect(await profiles.removeDocuments(['p_h', 'p_j'])).toBe(3);
    expect(ids(await profiles.groupMembers('g5'))).toEqual(['p_i@00000000']);
    expect(await profiles.groupMembers('g6')).toEqual([]);
    expect(await store.db.collection(COLLECTIONS.profiles).countDocuments({ profileId: { $in: ['p_h', 'p_j'] } })).toBe(0);
    expect((await profiles.get('p_i'))?._id).toBe('p_i@00000000');
  });

  it('finds the slices of versions written before versions named their slice through their group', async () => {
    const profiles = new ProfileStore(store);
    const [k, l] = ['k', 'l'].map((id) => newProfile(`p_${id}`, at, at));
    await profiles.saveVersions([k, l], 'g8');
    await store.db.collection(COLLECTIONS.profiles).updateMany({ group: 'g8' }, { $unset: { slice: '' } });
    expect(await profiles.removeDocuments(['p_k'])).toBe(1);
    expect(ids(await profiles.groupMembers('g8'))).toEqual(['p_l@00000000']);
  });

  it('loses no erased document from a slice when erasures of documents sharing it run at once', async () => {
    const docs = Array.from({ length: 40 }, (_, n) => newProfile(`p_many${n}`, at, at));
    await new ProfileStore(store).saveVersions(docs, 'g7');
    const erased = docs.slice(0, 30).map((doc) => doc.profileId);
    // Each erasure is its own writer, as requests in different workers are.
    await Promise.all(erased.map((profileId) => new ProfileStore(store).removeDocuments([profileId])));
    expect(ids(await new ProfileStore(store).groupMembers('g7'))).toEqual(ids(docs.slice(30)));
  });
});
