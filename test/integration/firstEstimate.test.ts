import type { Client } from '@temporalio/client';
import { applyEvent, newProfile, nextVersion, type ProfileDoc } from '../../domain/profile';
import type { Store } from '../../store/db';
import { ProfileStore } from '../../store/profiles';
import { call } from '../support/http';
import { startApi, testStore, testTemporal, uniqueName, type RunningApi } from '../support/services';

/** Before any run has kept a sample, an estimate reads the first stored versions: a document counts once, as its newest version. */
describe('an estimate before the first run', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  beforeAll(async () => {
    store = await testStore('firstestimate');
    temporal = await testTemporal();
    api = await startApi({ store, temporal, taskQueue: uniqueName('estimate') });
  });
  afterAll(async () => {
    await api.close();
    await temporal.connection.close();
    await store.close();
  });

  it('counts each document once, by its newest version, and the documents stored rather than their versions', async () => {
    const at = new Date('2026-12-01T00:00:00Z');
    const withPlan = (doc: ProfileDoc, plan: string) => {
      applyEvent(doc, { id: uniqueName('e'), type: 'identify', timestamp: at, identities: [{ type: 'cookie_id', value: doc.profileId }], traits: { plan } }, { sourceId: 'src', party: 'first', seq: 0 });
      return doc;
    };
    // Ann: gold in three versions (a fold per visit); Bob: silver, once.
    const ann = withPlan(newProfile('p_ann', at, at), 'gold');
    const profiles = new ProfileStore(store);
    await profiles.saveVersions([ann, withPlan(newProfile('p_bob', at, at), 'silver')], 'g1');
    const again = nextVersion(ann);
    await profiles.saveVersions([again], 'g2');
    await profiles.saveVersions([nextVersion(again)], 'g3');
    const estimate = await call(`${api.url}/v1/segments/estimate`, { key: api.adminKey, body: { rule: { trait: 'plan', op: 'eq', value: 'gold' } } });
    expect(estimate.status).toBe(200);
    expect(estimate.body).toMatchObject({ estimate: 1, sampled: 2, population: 2 });
  });
});
