import { storeRetention, type RetentionReport } from '../../workflows/storeRetention';
import { sha256Hex } from '../../domain/identity';
import { AccessExportSchema } from '../../domain/privacy';
import { COLLECTIONS } from '../../store/db';
import { EXPIRED_PROFILES_COLLECTION } from '../../store/expiredProfiles';
import { MARKS_REFRESH_MS } from '../../store/privacyMarks';
import { PROFILE_EXPIRY_COLLECTION } from '../../store/profileExpiries';
import { ProfileStore } from '../../store/profiles';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { findResidue } from '../support/residue';
import { startPlatform, uniqueName, waitFor, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const DAY = 86_400_000;
const withoutUpdatedAt = ({ updatedAt: _, ...profile }: Record<string, unknown>) => profile;

describe('inactive people leave the store: profile documents, identity claims and links, while the active stay and a returning visitor starts afresh', () => {
  let platform: RunningPlatform;
  let source: SourceClient;
  const admin = (path: string, init: { method?: string; body?: unknown } = {}) => call(`${platform.api.url}${path}`, { key: platform.api.adminKey, ...init });
  const retain = (inactiveProfileTtlMs: number): Promise<RetentionReport> =>
    platform.temporal.workflow.execute(storeRetention, {
      workflowId: uniqueName('retention'),
      taskQueue: platform.taskQueue,
      args: [{ inactiveProfileTtlMs, rawEventTtlMs: 3_600_000, eventHistoryTtlMs: 365 * DAY }],
    });
  const daysAgo = (days: number) => new Date(Date.now() - days * DAY).toISOString();
  let events = 0;
  async function send(list: Array<{ id: string; days: number; identities: Record<string, string>; traits?: Record<string, unknown> }>): Promise<void> {
    const response = await source.send(list.map(({ id, days, identities, traits }) => ({ id, type: 'page_view', timestamp: daysAgo(days), identities, traits })));
    expect(response.status).toBe(202);
    events += list.length;
    await source.folded(events);
  }
  const lookup = async (type: string, value: string) => source.lookup(type, value);

  /** While set, a partition writer asked to expire people waits for it before it reads the opt-outs (`held` says one is waiting). */
  let hold: Promise<void> | null = null;
  let held = false;
  beforeAll(async () => {
    const onFoldStep = async (step: string) => {
      if (step !== 'expiries-asked' || !hold) return;
      held = true;
      await hold;
    };
    platform = await startPlatform('inactive', {}, { onFoldStep });
    source = await newSource(platform.api);
  });
  afterAll(() => platform.stop());

  it('expires a person of one document and a person of two linked documents last seen before the cutoff, and keeps one seen since', async () => {
    await send([
      { id: 'a1', days: 60, identities: { cookie_id: 'old-a', email: 'old.a@example.org' }, traits: { plan: 'gold' } },
      { id: 'b1', days: 50, identities: { cookie_id: 'old-b' } },
      { id: 'b2', days: 50, identities: { crm_id: 'crm-old-b' } },
      { id: 'c1', days: 1, identities: { cookie_id: 'new-c' } },
    ]);
    // B's two documents are joined by a later event, still long ago.
    await send([{ id: 'b3', days: 45, identities: { cookie_id: 'old-b', crm_id: 'crm-old-b' } }]);
    const a = (await lookup('cookie_id', 'old-a')).body;
    const b = (await lookup('cookie_id', 'old-b')).body;
    expect(b.profileIds).toHaveLength(2);
    const segment = (await admin('/v1/segments', { body: { name: 'Visitors', rule: { event: 'page_view' } } })).body;
    const members = async () => (await admin(`/v1/segments/${segment.id}/members?limit=100`)).body.members.sort();
    await waitFor('the first run to complete', async () => (await admin(`/v1/segments/${segment.id}/runs/${segment.lastRun.runId}`)).body.state === 'completed', 30_000, 200);
    const c = (await lookup('cookie_id', 'new-c')).body;
    expect(await members()).toEqual([a.id, b.id, c.id].sort());

    const report = await retain(30 * DAY);
    expect(report).toMatchObject({ inactivePeoplePlanned: 2, inactiveDocumentsExpired: 3, inactiveDocumentsKept: 0, inactiveLinksRemoved: 1 });
    // A: cookie and the email's hashes; B: cookie and CRM id.
    expect(report.inactiveIdentitiesReleased).toBe(a.identities.length + b.identities.length);

    for (const [type, value] of [['cookie_id', 'old-a'], ['email', 'old.a@example.org'], ['cookie_id', 'old-b'], ['crm_id', 'crm-old-b']]) {
      expect({ type, status: (await lookup(type, value)).status }).toEqual({ type, status: 404 });
    }
    for (const id of [a.id, ...b.profileIds]) {
      expect((await admin(`/v1/profiles/${id}`)).status).toBe(404);
      expect((await admin(`/v1/profiles/${id}/events`)).status).toBe(404);
    }
    const store = platform.store.db;
    const gone = [a.id, ...b.profileIds];
    expect(await store.collection(COLLECTIONS.identities).countDocuments({ profileId: { $in: gone } })).toBe(0);
    expect(await store.collection(COLLECTIONS.identityLinks).countDocuments({ profiles: { $in: gone } })).toBe(0);
    // What stays of an expired document is its newest version, retired and empty: no identity, trait or counter.
    const profiles = new ProfileStore(platform.store, 0);
    for (const id of gone) {
      const newest = await profiles.get(id);
      expect(newest).toMatchObject({ identities: [], traits: {}, counters: {}, consent: null, retired: { expired: expect.anything() } });
    }
    // The active person is as they were (compaction may have carried their document forward meanwhile).
    expect(withoutUpdatedAt((await lookup('cookie_id', 'new-c')).body)).toEqual(withoutUpdatedAt(c));
    // A person of one document leaves the segment at once; the next run leaves out both.
    await waitFor('A out of the segment', async () => !(await members()).includes(a.id), 30_000, 200);
    const run = (await admin(`/v1/segments/${segment.id}/runs`, { method: 'POST' })).body.runId as string;
    await waitFor('the run to complete', async () => (await admin(`/v1/segments/${segment.id}/runs/${run}`)).body.state === 'completed', 30_000, 200);
    expect(await members()).toEqual([c.id]);
    // The plan leaves with the run, and the next run finds nobody inactive.
    expect(await store.collection(PROFILE_EXPIRY_COLLECTION).countDocuments({})).toBe(0);
    expect(await retain(30 * DAY)).toMatchObject({ inactivePeoplePlanned: 0, inactiveDocumentsExpired: 0 });
  });

  it('starts a new profile for a returning visitor, with nothing of the expired one, even where a drain still has the old owner cached', async () => {
    const before = (await lookup('cookie_id', 'new-c')).body;
    await send([{ id: 'd1', days: 40, identities: { cookie_id: 'back-d' }, traits: { tier: 'old' } }]);
    const d = (await lookup('cookie_id', 'back-d')).body;
    expect((await retain(30 * DAY)).inactiveDocumentsExpired).toBe(1);
    expect((await lookup('cookie_id', 'back-d')).status).toBe(404);

    // The worker's drain resolved back-d before and keeps its owner cached: the event is routed to
    // the expired document, whose writer folds it into a successor that claims back-d afresh.
    await send([{ id: 'd2', days: 0, identities: { cookie_id: 'back-d', email: 'back.d@example.org' } }]);
    const back = (await lookup('cookie_id', 'back-d')).body;
    expect(back.id).not.toBe(d.id);
    expect(back.id.startsWith(`${d.id.split('~')[0]}~`)).toBe(true); // the expired document's successor
    expect(back.traits).toEqual({});
    expect(Object.fromEntries(Object.entries(back.counters).map(([type, counter]: [string, any]) => [type, counter.count]))).toEqual({ page_view: 1 });
    expect((await lookup('email', 'back.d@example.org')).body).toEqual(back);
    expect((await admin(`/v1/profiles/${back.id}/events`)).body.events.map((event: { id: string }) => event.id)).toEqual(['d2']);
    const owners = await platform.store.db.collection(COLLECTIONS.identities).find({ _id: 'cookie_id:back-d' as never }).toArray();
    expect(owners.map((owner) => owner.profileId)).toEqual([back.id]);
    // It is active now: the next run keeps it, and the active person stays untouched.
    expect((await retain(30 * DAY)).inactiveDocumentsExpired).toBe(0);
    expect(withoutUpdatedAt((await lookup('cookie_id', 'new-c')).body)).toEqual(withoutUpdatedAt(before));
    // Inactive in turn (here: everyone is, past a cutoff of a moment ago), the successor — a document
    // with an ancestor, visited as a person — leaves like anyone else.
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await retain(1)).toMatchObject({ inactivePeoplePlanned: 2, inactiveDocumentsExpired: 2, inactiveDocumentsKept: 0 });
    expect((await lookup('cookie_id', 'back-d')).status).toBe(404);
    expect((await lookup('cookie_id', 'new-c')).status).toBe(404);
  });

  it('keeps an opt-out: a person who opted out is not expired (the mark names their document), and is not profiled when they come back', async () => {
    await send([{ id: 'e1', days: 40, identities: { cookie_id: 'opt-e' } }]);
    const opted = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'opt-e' } } });
    expect(opted.status).toBe(202);
    expect(await settledRequest((path) => admin(path), opted.body.id)).toMatchObject({ state: 'completed' });
    const before = (await lookup('cookie_id', 'opt-e')).body;
    expect(await retain(30 * DAY)).toMatchObject({ inactivePeoplePlanned: 0, inactiveDocumentsExpired: 0 });
    // Their cookie still names the marked document, whichever process routes their next event.
    expect((await lookup('cookie_id', 'opt-e')).body.id).toBe(before.id);

    await send([{ id: 'e2', days: 0, identities: { cookie_id: 'opt-e' }, traits: { plan: 'gold' } }]);
    const back = (await lookup('cookie_id', 'opt-e')).body;
    // Only consent reaches an opted-out person: the event is not counted, its traits not kept.
    expect(back.id).toBe(before.id);
    expect(back.counters).toEqual(before.counters);
    expect(back.counters.page_view.count).toBe(1);
    expect(back.traits).toEqual({});
  });

  it('keeps a person who opts out after their expiry was planned: the partition writer reads the mark before it expires anyone', async () => {
    await send([{ id: 'f1', days: 40, identities: { cookie_id: 'opt-f' } }]);
    const before = (await lookup('cookie_id', 'opt-f')).body;
    let release = () => {};
    hold = new Promise<void>((resolve) => (release = resolve));
    const running = retain(30 * DAY);
    try {
      await waitFor('a partition writer asked to expire', async () => held, 60_000, 100);
      const opted = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'opt-f' } } });
      expect(await settledRequest((path) => admin(path), opted.body.id)).toMatchObject({ state: 'completed' });
      // Every process sees a mark once a refresh has passed since it was added.
      await new Promise((resolve) => setTimeout(resolve, MARKS_REFRESH_MS + 250));
    } finally {
      hold = null;
      release();
    }
    expect(await running).toMatchObject({ inactivePeoplePlanned: 1, inactiveDocumentsExpired: 0, inactiveDocumentsKept: 1, inactiveIdentitiesReleased: 0 });
    expect((await lookup('cookie_id', 'opt-f')).body.id).toBe(before.id);
  });

  it("still finds an expired person's retained events by their identities: an access request lists them, an erasure removes them with every trace", async () => {
    const email = 'gone.f@example.org';
    await send([
      { id: 'ev-gone-f1', days: 40, identities: { cookie_id: 'gone-f', email }, traits: { plan: 'silver' } },
      { id: 'ev-gone-f2', days: 35, identities: { cookie_id: 'gone-f' } },
    ]);
    const f = (await lookup('email', email)).body;
    expect((await retain(30 * DAY)).inactiveDocumentsExpired).toBe(1);
    expect((await lookup('email', email)).status).toBe(404);
    const record = await platform.store.db.collection(EXPIRED_PROFILES_COLLECTION).findOne({ _id: f.id as never });
    expect(record?.keys.sort()).toEqual(f.identities.map((identity: { type: string; value: string }) => `${identity.type}:${identity.value}`).sort());

    const access = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'email', value: email } } })).body.id;
    const accessed = await settledRequest((path) => admin(path), access);
    expect(accessed).toMatchObject({ state: 'completed', result: { found: true, profiles: 0, events: 2 } });
    const exported = (await admin(accessed.result.exportUrl)).body;
    expect(AccessExportSchema.safeParse(exported).error).toBeUndefined();
    expect(exported.profile).toBeNull();
    expect(exported.expired).toEqual([{ profileId: f.id, expiredAt: expect.any(String) }]);
    expect(exported.events.map((event: { id: string }) => event.id)).toEqual(['ev-gone-f2', 'ev-gone-f1']);

    const needles = ['gone-f', sha256Hex(email), 'ev-gone-f1', 'ev-gone-f2', f.id];
    expect((await findResidue(platform.store.db, needles)).map((found) => found.collection)).toEqual(expect.arrayContaining([COLLECTIONS.profileEvents, EXPIRED_PROFILES_COLLECTION]));
    const erase = (await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'email', value: email } } })).body.id;
    const erased = await settledRequest((path) => admin(path), erase, 120_000);
    expect(erased).toMatchObject({ state: 'completed', result: { found: true, events: 2 } });
    expect(erased.steps.find((step: { name: string }) => step.name === 'erase').touched).toMatchObject({ expired_profiles: 1 });
    expect(await findResidue(platform.store.db, needles)).toEqual([]);
  });

  it('lists in an access request the expired documents of any identity the person holds now, not only the one asked about', async () => {
    await send([{ id: 'ev-gone-g1', days: 40, identities: { cookie_id: 'gone-g' } }]);
    const anonymous = (await lookup('cookie_id', 'gone-g')).body;
    expect((await retain(30 * DAY)).inactiveDocumentsExpired).toBe(1);
    // The same browser signs in today: the person holds its cookie again, with an email.
    const email = 'back.g@example.org';
    await send([{ id: 'ev-gone-g2', days: 0, identities: { cookie_id: 'gone-g', email } }]);
    expect((await lookup('email', email)).body.identities.map((identity: { type: string }) => identity.type).sort()).toEqual(['cookie_id', 'email_sha256']);
    const access = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'email', value: email } } })).body.id;
    const accessed = await settledRequest((path) => admin(path), access);
    const exported = (await admin(accessed.result.exportUrl)).body;
    expect(exported.expired).toEqual([{ profileId: anonymous.id, expiredAt: expect.any(String) }]);
    expect(exported.events.map((event: { id: string }) => event.id).sort()).toEqual(['ev-gone-g1', 'ev-gone-g2']);
  });
});
