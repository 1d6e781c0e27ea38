import { createHash } from 'node:crypto';
import type { StoredEvent } from '../../domain/event';
import { decodeEvents } from '../../store/deflatedBson';
import { expectedProfiles, userEvent, type GeneratedEvent } from '../support/audience';
import { call } from '../support/http';
import { killHard, killTestSetting } from '../support/processes';
import { profileDifferences } from '../support/profiles';
import { findResidue } from '../support/residue';
import { waitFor } from '../support/services';
import { newSource } from '../support/sourceClient';

const SUBJECT_COOKIE = 'c-subject-erased';
const SUBJECT_EMAIL = 'subject.erased@example.com';
const subjectHash = createHash('sha256').update(SUBJECT_EMAIL).digest('hex');

/** The subject: first a cookie alone, then the email alone (a second document), then both (a link), then the cookie on and on. */
function subjectEvent(n: number): GeneratedEvent {
  const identities: Record<string, string> = n === 1 ? { email: SUBJECT_EMAIL } : n === 2 ? { cookie_id: SUBJECT_COOKIE, email: SUBJECT_EMAIL } : { cookie_id: SUBJECT_COOKIE };
  return { id: `subject-${n}`, type: 'page_view', timestamp: new Date(Date.UTC(2026, 10, 1) + n * 60_000).toISOString(), identities, traits: { 'plan.tier': 'pro' } };
}

describe('a worker killed mid-erasure', () => {
  const { setting, startWorkers, spawnAnother } = killTestSetting('erasekill');

  it('finishes the job on another worker: nothing of the subject left, everyone else exactly as before', async () => {
    const first = await startWorkers(500);
    const { api, store } = setting;
    const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
    const source = await newSource(api, 'web');

    // 150 people and the subject, interleaved, sent 40 at a time: the subject's events are in every chunk of the log.
    const others = Array.from({ length: 3000 }, (_, n) => userEvent(1 + (n % 150), Math.floor(n / 150)));
    const subject = Array.from({ length: 200 }, (_, n) => subjectEvent(n));
    const all = others.flatMap((event, n) => (n % 15 === 0 ? [subject[n / 15], event] : [event]));
    for (let start = 0; start < all.length; start += 40) expect((await source.send(all.slice(start, start + 40))).body.accepted).toBe(Math.min(40, all.length - start));
    await source.folded(all.length);
    const segmentId = (await admin('/v1/segments', { body: { name: 'Pro', rule: { trait: 'plan.tier', op: 'eq', value: 'pro' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed', 120_000);

    const documents: string[] = (await admin(`/v1/profiles/lookup?type=cookie_id&value=${SUBJECT_COOKIE}`)).body.profileIds;
    expect(documents).toHaveLength(2);
    const needles = [SUBJECT_COOKIE, subjectHash, ...documents];
    const eventNeedles = subject.map((event) => event.id);
    const batchesHolding = () => store.db.collection('profile_events').countDocuments({ profiles: { $in: documents } });
    const before = await batchesHolding();
    expect(before).toBeGreaterThan(4);

    const id = (await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'email', value: SUBJECT_EMAIL } } })).body.id;
    // Killed once the erasure is rewriting the shared batches: some done, most not.
    const atKill = await waitFor('the erasure under way', async () => {
      const left = await batchesHolding();
      return left < before ? left : undefined;
    }, 120_000, 10);
    await killHard(first);
    expect(atKill).toBeGreaterThan(0);
    expect((await admin(`/v1/privacy/requests/${id}`)).body.steps.find((step: { name: string }) => step.name === 'erase').state).toBe('pending');

    spawnAnother();
    const view = await waitFor('the erasure to finish on the new worker', async () => {
      const found = (await admin(`/v1/privacy/requests/${id}`)).body;
      return found.state === 'completed' || found.state === 'failed' ? found : undefined;
    }, 240_000, 500);
    expect(view).toMatchObject({ state: 'completed', error: null, result: { found: true, profiles: 2, identities: 2 } });

    expect(await findResidue(store.db, needles)).toEqual([]);
    // Event ids are short words: looked for as whole values in the decoded chunks and batches.
    const chunks = await store.db.collection('events').find({}).toArray();
    const logged = chunks.flatMap((chunk) => decodeEvents<StoredEvent>(chunk.events));
    expect(logged.filter((event) => eventNeedles.includes(event.id))).toEqual([]);
    expect(logged.filter((event) => event.erased)).toHaveLength(subject.length);
    expect(logged.filter((event) => !event.erased).map((event) => event.id).sort()).toEqual(others.map((event) => event.id).sort());
    const routed = (await store.db.collection('profile_events').find({}).toArray()).flatMap((batch) => decodeEvents<StoredEvent>(batch.events));
    expect(routed.filter((event) => eventNeedles.includes(event.id))).toEqual([]);
    expect(await profileDifferences(store, expectedProfiles(others))).toEqual([]);
    expect((await admin(`/v1/segments/${segmentId}`)).body.size).toBe(75);
  }, 480_000);
});
