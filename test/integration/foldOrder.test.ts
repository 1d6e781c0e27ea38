import { createProfileWriterActivities } from '../../activities/profileWriter';
import { decodeConsent } from '../../domain/consent';
import type { StoredIdentityType } from '../../domain/identity';
import type { Store } from '../../store/db';
import { ProfileEventLog, routedBatchId, type RoutedEvent } from '../../store/profileEvents';
import { PrivacyMarks } from '../../store/privacyMarks';
import { ProfileStore } from '../../store/profiles';
import { idsInPartition } from '../support/profiles';
import { baseConfig, testStore, uniqueName } from '../support/services';
import { buildTcString } from '../unit/tcfFixture';

const PARTITION = 0;

/**
 * A fold takes the batches of several sources at once. Whether an event is held to a withdrawal
 * depends on the consent folded before it, so the fold goes by the events' times, not by which
 * source's batch it reads first.
 */
describe('a fold of several sources at once', () => {
  let store: Store;
  let log: ProfileEventLog;
  beforeAll(async () => {
    store = await testStore('fold_order');
    log = new ProfileEventLog(store);
  });
  afterAll(() => store.close());

  const at = (minute: number) => new Date(Date.UTC(2026, 5, 1, 0, minute));
  const cookie = (profileId: string) => [{ type: 'cookie_id' as StoredIdentityType, value: `ck-${profileId}` }];

  /** Routes one batch of a source to partition 0, with the documents it links; returns the source. */
  async function route(events: Array<Omit<RoutedEvent, 'seq'>>, linked?: string[]): Promise<string> {
    const sourceId = uniqueName('src');
    const profiles = [...new Set(events.map((event) => event.profileId))];
    await log.write([{ _id: routedBatchId(PARTITION, sourceId, 0), partition: PARTITION, sourceId, party: 'first', from: 0, to: 1, events: events.map((event) => ({ ...event, seq: 0 })), profiles, ...(linked && { linked }), createdAt: at(0) }]);
    return sourceId;
  }

  it("holds an event to a withdrawal dated before it that another source's batch brought into the same fold, whichever batch is read first", async () => {
    const activities = createProfileWriterActivities({ store, config: baseConfig });
    const people = idsInPartition(uniqueName('order'), 2, PARTITION, baseConfig.DMP_PROFILE_PARTITIONS);
    const granted = decodeConsent({ tcf: buildTcString({ purposeConsents: [1, 3, 4] }) });
    const withdrawn = decodeConsent({ tcf: buildTcString({ purposeConsents: [1] }) });
    const first = await route(people.map((profileId) => ({ id: uniqueName('visit'), type: 'page_view', timestamp: at(1), receivedAt: at(1), identities: cookie(profileId), consent: granted, profileId })));
    const folded = await activities.foldPartitionBatch({ partition: PARTITION, sourceIds: [first], includeKnown: false, maxEvents: 1000, lastWriter: null });
    expect(folded.applied).toBe(2);
    let lastWriter = folded.writer;

    for (const [index, profileId] of people.entries()) {
      // The server's order (no signal, minute 5) and the site's withdrawal (minute 3), routed before either is folded.
      const server = await route([{ id: uniqueName('order'), type: 'order', timestamp: at(5), receivedAt: at(5), identities: cookie(profileId), profileId }]);
      const site = await route([{ id: uniqueName('withdrawal'), type: 'page_view', timestamp: at(3), receivedAt: at(3), identities: [], evidence: cookie(profileId), consent: withdrawn, consentOnly: true, profileId }]);
      const sourceIds = index === 0 ? [server, site] : [site, server];
      const result = await activities.foldPartitionBatch({ partition: PARTITION, sourceIds, includeKnown: false, maxEvents: 1000, lastWriter });
      lastWriter = result.writer;
      expect(result.eventsWithoutConsent).toBe(1);
      const doc = await new ProfileStore(store).get(profileId);
      expect(doc?.counters.order).toBeUndefined();
      expect(doc?.consent?.tcf?.purposeConsents).toEqual([1]);
    }
  });

  it("marks linked a document linked before its first version, when the batch that makes it is folded after the link's; the note of one erased meanwhile goes", async () => {
    const [known, newcomer, erased] = idsInPartition(uniqueName('ahead'), 3, PARTITION, baseConfig.DMP_PROFILE_PARTITIONS);
    const visit = (profileId: string, minute: number, identities = cookie(profileId)) => ({ id: uniqueName('visit'), type: 'page_view', timestamp: at(minute), receivedAt: at(minute), identities, profileId });
    // Another source's event joined the three: it went to the known document, and all are linked.
    const link = await route([visit(known, 2, [...cookie(known), ...cookie(newcomer), ...cookie(erased)])], [known, newcomer, erased]);
    const folded = await createProfileWriterActivities({ store, config: baseConfig }).foldPartitionBatch({ partition: PARTITION, sourceIds: [link], includeKnown: false, maxEvents: 1000, lastWriter: null });
    expect(folded.applied).toBe(1);
    const profiles = new ProfileStore(store);
    expect({ known: (await profiles.get(known))?.linked, newcomer: await profiles.get(newcomer) }).toEqual({ known: true, newcomer: null });
    expect(Object.keys((await log.loadPosition(PARTITION)).linkedAhead ?? {})).toEqual(expect.arrayContaining([newcomer, erased]));
    // One of them is erased before its document was ever written.
    await new PrivacyMarks(store).add(uniqueName('pr'), [erased], ['tombstone-of-the-erased']);
    // The batch that makes the newcomer's document, routed first, is folded after (by a writer that reads the marks afresh).
    const first = await route([visit(newcomer, 1)]);
    expect((await createProfileWriterActivities({ store, config: baseConfig }).foldPartitionBatch({ partition: PARTITION, sourceIds: [first], includeKnown: false, maxEvents: 1000, lastWriter: null })).applied).toBe(1);
    expect((await profiles.get(newcomer))?.linked).toBe(true);
    expect(Object.keys((await log.loadPosition(PARTITION)).linkedAhead ?? {})).not.toEqual(expect.arrayContaining([newcomer]));
    expect(Object.keys((await log.loadPosition(PARTITION)).linkedAhead ?? {})).not.toEqual(expect.arrayContaining([erased]));
  });
});
