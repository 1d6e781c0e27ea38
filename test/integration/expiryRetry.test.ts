import { createProfileWriterActivities } from '../../activities/profileWriter';
import { isExpired } from '../../domain/profileExpiry';
import type { Store } from '../../store/db';
import { IdentityIndex } from '../../store/identities';
import { ProfileEventLog, routedBatchId } from '../../store/profileEvents';
import { expiryPartId, ProfileExpiries } from '../../store/profileExpiries';
import { ProfileStore } from '../../store/profiles';
import { idsInPartition } from '../support/profiles';
import { baseConfig, testStore, uniqueName } from '../support/services';

const PARTITIONS = baseConfig.DMP_PROFILE_PARTITIONS;
const PARTITION = 0;
const LONG_AGO = new Date('2026-03-01T00:00:00Z');


/**
 * A partition writer expiring planned documents, interrupted after it wrote their retired versions
 * and before it released their claims: the retry releases them, and counts each document once.
 * Events routed meanwhile keep a document, and one routed to an expired document by a drain with
 * its owner cached lands in the successor.
 */
describe('a partition writer interrupted while it expires inactive documents', () => {
  let store: Store;
  let log: ProfileEventLog;
  let claims: IdentityIndex;
  let expiries: ProfileExpiries;
  beforeAll(async () => {
    store = await testStore('expiry_retry');
    log = new ProfileEventLog(store);
    claims = new IdentityIndex(store, 0);
    expiries = new ProfileExpiries(store);
  });
  afterAll(() => store.close());

  /** Routes one event of a new source to `profileId` (claiming its identities for it, as a drain does); returns the source. */
  async function route(profileId: string, identities: Array<{ type: 'cookie_id' | 'crm_id'; value: string }>, at: Date, made: boolean): Promise<string> {
    const sourceId = uniqueName('src');
    await claims.claim(identities.map((identity) => ({ key: `${identity.type}:${identity.value}`, type: identity.type, profileId })), at);
    const event = { id: uniqueName('ev'), type: 'page_view', timestamp: at, receivedAt: at, identities, seq: 0, profileId };
    await log.write([{ _id: routedBatchId(PARTITION, sourceId, 0), partition: PARTITION, sourceId, party: 'first', from: 0, to: 1, events: [event], profiles: [profileId], ...(made && { created: [profileId] }), createdAt: at }]);
    return sourceId;
  }
  const owner = async (key: string) => (await claims.identities.findOne({ _id: key }))?.profileId ?? null;

  it('releases the claims on retry, keeps a document an event reached, and folds a late event into the successor', async () => {
    const [gone, kept, changed] = idsInPartition(uniqueName('exp'), 3, PARTITION, PARTITIONS);
    const first = createProfileWriterActivities({ store, config: baseConfig });
    const sources = await Promise.all([gone, kept, changed].map((id) => route(id, [{ type: 'cookie_id', value: `ck-${id}` }], LONG_AGO, true)));
    const folded = await first.foldPartitionBatch({ partition: PARTITION, sourceIds: sources, includeKnown: false, maxEvents: 1000, lastWriter: null });
    expect(folded.applied).toBe(3);

    const expiryId = uniqueName('x');
    const cutoff = new Date('2026-04-01T00:00:00Z');
    await expiries.plan(
      { _id: expiryId, cutoff, plannedAt: new Date(), people: 2, partitions: [PARTITION] },
      [{ _id: expiryPartId(expiryId, PARTITION), expiryId, partition: PARTITION, cutoff, docs: [gone, kept, changed].sort(), versions: [0, 0, 0], next: 0, expired: 0, skipped: 0, identities: 0, done: false }],
      [],
    );
    // `changed` gets a new version after it was planned (an event from long ago, folded before the expiry): it is no longer what was planned.
    const later = await route(changed, [{ type: 'cookie_id', value: `ck-${changed}` }], LONG_AGO, false);
    expect((await first.foldPartitionBatch({ partition: PARTITION, sourceIds: [later], includeKnown: false, maxEvents: 1000, lastWriter: null })).applied).toBe(1);
    // `kept` comes back before its writer gets to it.
    const back = await route(kept, [{ type: 'cookie_id', value: `ck-${kept}` }], new Date(), false);

    let failed = false;
    const interrupted = createProfileWriterActivities({
      store,
      config: baseConfig,
      onFoldStep: (step) => {
        if (step === 'versions-written' && !failed) {
          failed = true;
          throw new Error('killed after writing');
        }
      },
    });
    await expect(interrupted.foldPartitionBatch({ partition: PARTITION, sourceIds: [back], includeKnown: false, maxEvents: 1000, lastWriter: null, expiries: [expiryId] })).rejects.toThrow('killed after writing');
    const profiles = new ProfileStore(store, 0);
    expect(isExpired(await profiles.get(gone))).toBe(true);
    expect(await owner(`cookie_id:ck-${gone}`)).toBe(gone); // not released yet
    expect((await expiries.part(expiryId, PARTITION))?.releasing).toEqual([{ profileId: gone, key: `cookie_id:ck-${gone}` }]);

    const retried = await interrupted.foldPartitionBatch({ partition: PARTITION, sourceIds: [back], includeKnown: false, maxEvents: 1000, lastWriter: null, expiries: [expiryId] });
    // The interrupted attempt had folded kept's event: the retry finds it applied.
    expect(retried).toMatchObject({ profilesExpired: 1, applied: 0, alreadyApplied: 1, expiriesWithMore: [] });
    expect(await owner(`cookie_id:ck-${gone}`)).toBeNull();
    expect(await owner(`cookie_id:ck-${kept}`)).toBe(kept);
    expect(await expiries.part(expiryId, PARTITION)).toMatchObject({ done: true, next: 3, expired: 1, skipped: 2, identities: 1 });
    expect(await owner(`cookie_id:ck-${changed}`)).toBe(changed);
    expect(isExpired(await profiles.get(changed))).toBe(false);
    expect((await expiries.part(expiryId, PARTITION))?.releasing).toBeUndefined();
    expect((await profiles.get(kept))?.counters.page_view.count).toBe(2);

    // A drain that still has `gone` as the cookie's owner routes it there, with a CRM id it claims for `gone` too.
    const late = await route(gone, [{ type: 'cookie_id', value: `ck-${gone}` }, { type: 'crm_id', value: `crm-${gone}` }], new Date(), false);
    const result = await interrupted.foldPartitionBatch({ partition: PARTITION, sourceIds: [late], includeKnown: false, maxEvents: 1000, lastWriter: null });
    expect(result).toMatchObject({ applied: 1, eventsRedirected: 1 });
    const successor = (await profiles.get(gone))!.retired!.fallback;
    expect(await owner(`cookie_id:ck-${gone}`)).toBe(successor);
    expect(await owner(`crm_id:crm-${gone}`)).toBe(successor);
    const doc = await profiles.get(successor);
    expect(doc?.counters.page_view.count).toBe(1);
    expect(doc?.identities.map((entry) => `${entry.type}:${entry.value}`).sort()).toEqual([`cookie_id:ck-${gone}`, `crm_id:crm-${gone}`]);
  });
});
