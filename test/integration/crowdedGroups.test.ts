import { ProfileEventLog } from '../../store/profileEvents';
import { ProfileStore } from '../../store/profiles';
import { startPlatform, waitFor, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

/** Write groups the partition keeps here before merging its smallest (the product keeps 1,000). */
const GROUPS_KEPT = 4;

describe('a partition whose folds bring only new visitors keeps a bounded count of write groups', () => {
  let platform: RunningPlatform;
  let source: SourceClient;

  beforeAll(async () => {
    platform = await startPlatform('crowded_groups', { DMP_PROFILE_PARTITIONS: 1 }, { groupsKept: GROUPS_KEPT });
    source = await newSource(platform.api);
  });
  afterAll(() => platform.stop());

  it('merges its smallest groups once it holds more than it keeps, and every profile stays whole', async () => {
    const rounds = 24;
    // Each round is folded on its own: a group of five new documents, none of which a later fold replaces.
    for (let round = 0; round < rounds; round++) {
      const events = Array.from({ length: 5 }, (_, n) => ({ id: `r${round}-${n}`, type: 'page_view', identities: { cookie_id: `v-${round}-${n}` }, traits: { round } }));
      expect((await source.send(events)).status).toBe(202);
      await source.folded((round + 1) * 5);
    }
    const groups = async () => Object.keys((await new ProfileEventLog(platform.store).loadPosition(0)).groups).length;
    // Without merging there would be a group per fold; the cap is met once the writer has compacted (the
    // fold's own group, the next fold's reserved one and the one merges carry into come on top).
    await waitFor('the partition to hold few groups', async () => (await groups()) <= GROUPS_KEPT + 3, 30_000, 200);
    const profiles = new ProfileStore(platform.store, 0);
    for (let round = 0; round < rounds; round++) {
      for (let n = 0; n < 5; n++) {
        const profile = (await source.lookup('cookie_id', `v-${round}-${n}`)).body;
        expect(profile.traits).toEqual({ round });
        expect(profile.counters.page_view.count).toBe(1);
        // Carried versions replace the ones merged away: one version per document stays.
        expect((await profiles.versions(profile.id)).length).toBe(1);
      }
    }
  });
});
