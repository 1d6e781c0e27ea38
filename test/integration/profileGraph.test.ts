import { emptiedVersion } from '../../domain/identitySplit';
import { linkId } from '../../domain/identityResolution';
import { newProfile, type ProfileDoc } from '../../domain/profile';
import type { Store } from '../../store/db';
import { IdentityIndex } from '../../store/identities';
import { ProfileGraph } from '../../store/profileGraph';
import { ProfileStore } from '../../store/profiles';
import { testStore } from '../support/services';

const at = new Date(Date.UTC(2026, 5, 1));
const person = (id: string, keys: string[]): ProfileDoc => {
  const doc = newProfile(id, at, at);
  doc.identities = keys.map((key) => ({ type: key.slice(0, key.indexOf(':')) as 'cookie_id', value: key.slice(key.indexOf(':') + 1), firstSeen: at, lastSeen: at, sourceId: 'src' }));
  return doc;
};
const link = (a: string, b: string, via: string) => {
  const profiles = [a, b].sort() as [string, string];
  return { _id: linkId(profiles, via), profiles, via, eventId: 'e', sourceId: 'src', createdAt: at };
};

describe('walking the identity graph over a split document', () => {
  let store: Store;
  afterAll(async () => {
    await store?.close();
  });

  it('finds the same component from every start, when links reach the split document through identities of both its sides', async () => {
    store = await testStore('profile_graph');
    // R was split: cookie a went to part P0, cookie b to part P1. X was linked to R through a and Y
    // through b (by drains that did not know of the split), and X and Y are linked to each other.
    const split = person('R', ['cookie_id:a', 'cookie_id:b']);
    const retired = emptiedVersion(split, { rebuildId: 'u1', parts: { '0': 'P0', '1': 'P1' }, keys: { 'cookie_id:a': 0, 'cookie_id:b': 1 }, fallback: 'P0' });
    const parts = [person('P0', ['cookie_id:a']), person('P1', ['cookie_id:b'])].map((part) => ({ ...part, ancestors: ['R'] }));
    const docs = [...parts, person('X', ['cookie_id:x']), person('Y', ['cookie_id:y']), split];
    await new ProfileStore(store, 0).saveVersions(docs, 'g1');
    await new ProfileStore(store, 0).saveVersions([retired], 'g2');
    await new IdentityIndex(store, 0).addLinks([link('X', 'R', 'cookie_id:a'), link('Y', 'R', 'cookie_id:b'), link('X', 'Y', 'cookie_id:y')]);

    const graph = ProfileGraph.open(store);
    for (const start of ['X', 'Y', 'P0', 'P1']) expect({ start, ids: (await graph.component(start)).ids }).toEqual({ start, ids: ['P0', 'P1', 'X', 'Y'] });
  });
});
