import { createHash } from 'node:crypto';
import { AccessExportSchema } from '../../domain/privacy';
import { privacyRemovalWorkflowId, privacyRequestWorkflowId } from '../../domain/workflowIds';
import { call } from '../support/http';
import { PartnerServer } from '../support/partners';
import { settledRequest as settled } from '../support/privacyRequests';
import { SegmentRunStore } from '../../store/segmentRuns';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const minutesAgo = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString();
const ALICE_EMAIL = 'Alice.Example@Example.com';
const aliceHash = createHash('sha256').update('alice.example@example.com').digest('hex');
const CAROL_PHONE = '+1 415 555 0123';
const INITIAL_EVENTS = 6;

describe('privacy requests: access and opt-out, with every step audited', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  let partner: PartnerServer;
  let segmentId: string;
  let destinationId: string;
  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const exportNow = async () => {
    const started = await admin(`/v1/destinations/${destinationId}/exports`, { body: {} });
    return waitFor('the export', async () => {
      const view = (await admin(`/v1/destinations/${destinationId}/exports/${started.body.exportId}`)).body;
      return view.state === 'completed' ? view : null;
    }, 60_000);
  };
  const settledRequest = (id: string) => settled(admin, id);

  beforeAll(async () => {
    // One round per removal run: a retried removal goes on as new, as one does after 40 rounds by default.
    platform = await startPlatform('privacy', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'], DMP_DESTINATION_TIMEOUT_SECONDS: 2, DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN: 1 });
    ({ api } = platform);
    source = await newSource(api, 'shop');
    // Alice's cookie and her email meet on one event: one profile, with two identities from this source.
    const events = [
      { id: 'a1', type: 'page_view', timestamp: minutesAgo(30), identities: { cookie_id: 'ck-alice' }, traits: { plan: 'gold' } },
      { id: 'a2', type: 'purchase', timestamp: minutesAgo(20), identities: { cookie_id: 'ck-alice', email: ALICE_EMAIL }, properties: { item: 'tent', price: 120 } },
      { id: 'b1', type: 'purchase', timestamp: minutesAgo(10), identities: { cookie_id: 'ck-bob' }, traits: { plan: 'gold' }, properties: { item: 'pen' } },
      { id: 'd1', type: 'page_view', timestamp: minutesAgo(10), identities: { cookie_id: 'ck-dave' }, traits: { plan: 'gold' } },
      // Carol, as two profiles the graph has not joined yet: her web cookie, and her app's cookie with her phone.
      { id: 'c1', type: 'page_view', timestamp: minutesAgo(10), identities: { cookie_id: 'ck-carol-web' }, traits: { plan: 'gold' } },
      { id: 'c2', type: 'page_view', timestamp: minutesAgo(9), identities: { cookie_id: 'ck-carol-app', phone: CAROL_PHONE } },
    ];
    expect((await source.send(events)).body.accepted).toBe(events.length);
    await source.folded(INITIAL_EVENTS);
    segmentId = (await admin('/v1/segments', { body: { name: 'Gold plan', rule: { trait: 'plan', op: 'eq', value: 'gold' } } })).body.id;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segmentId}`)).body.lastRun?.state === 'completed');
    partner = await new PartnerServer({ kind: 'webhook', secret: 'webhook-secret-0123456789', stallMs: 4000 }).start();
    destinationId = (await admin('/v1/destinations', { body: { name: 'Hooked', connector: 'webhook', idType: 'cookie_id', segments: [segmentId], config: { url: `${partner.url}/dmp`, secret: 'webhook-secret-0123456789' } } })).body.id;
    await exportNow();
    expect(partner.audience(segmentId)).toEqual(['ck-alice', 'ck-bob', 'ck-carol-web', 'ck-dave']);
  }, 180_000);
  afterAll(async () => {
    await partner?.stop();
    await platform.stop();
  });

  it('exports everything held about the subject: profile, identities with sources, events, segments, and the partners holding them', async () => {
    const started = await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'email', value: ALICE_EMAIL }, requestedBy: 'ticket 4711' } });
    expect(started.status).toBe(202);
    expect(started.body.id).toMatch(/^pr_access_[A-Za-z0-9_-]{22}_1$/);
    // The request keeps a salted hash of the subject, never the email or its plain hash.
    expect(started.body.id).not.toContain(aliceHash.slice(0, 12));

    const view = await settledRequest(started.body.id);
    expect(view).toMatchObject({ type: 'access', state: 'completed', requestedBy: 'ticket 4711', error: null });
    expect(view.subject).toMatch(/^email_sha256:/);
    expect(new Date(view.deadline).getTime() - new Date(view.receivedAt).getTime()).toBeGreaterThanOrEqual(28 * 86_400_000);
    expect(new Date(view.target).getTime() - new Date(view.receivedAt).getTime()).toBe(72 * 3_600_000);
    expect(view.steps.map((step: { name: string; state: string }) => [step.name, step.state])).toEqual([
      ['resolve', 'done'],
      ['collect', 'done'],
      ['complete', 'done'],
    ]);
    expect(view.steps[1].touched).toMatchObject({ profiles: 1, profile_events: 2 });
    expect(view.result).toMatchObject({ found: true, profiles: 1, identities: 2, events: 2, segments: 1, destinations: 1, exportUrl: `/v1/privacy/requests/${started.body.id}/export` });

    const download = await admin(view.result.exportUrl);
    expect(download.status).toBe(200);
    const exported = download.body;
    // The download is what the OpenAPI says it is.
    expect(AccessExportSchema.safeParse(exported).error).toBeUndefined();
    expect(exported.request).toMatchObject({ id: started.body.id, subject: view.subject });
    expect(exported.profile.identities.map((identity: { type: string; value: string; sourceId: string }) => [identity.type, identity.value, identity.sourceId]).sort()).toEqual([
      ['cookie_id', 'ck-alice', source.sourceId],
      ['email_sha256', aliceHash, source.sourceId],
    ]);
    expect(exported.profile.traits).toEqual({ plan: 'gold' });
    expect(exported.events.map((event: { id: string }) => event.id).sort()).toEqual(['a1', 'a2']);
    expect(exported.segments).toEqual([{ id: segmentId, name: 'Gold plan' }]);
    expect(exported.destinations).toEqual([{ id: destinationId, name: 'Hooked', connector: 'webhook', idType: 'cookie_id', segments: [{ segmentId, exportId: expect.any(String), state: 'held' }] }]);
    // Nothing of Bob's.
    expect(JSON.stringify(exported)).not.toContain('ck-bob');
  });

  it('audits every step, and lets the subject key go when the request ends', async () => {
    const listed = (await admin('/v1/privacy/requests?state=completed')).body.requests;
    expect(listed.length).toBeGreaterThanOrEqual(1);
    const id = listed[0].id;
    const audit = await platform.store.db.collection('privacy_audit').find({ requestId: id }).toArray();
    expect(audit.map((entry) => entry.step).sort()).toEqual(['collect', 'complete', 'resolve']);
    for (const entry of audit) expect(entry).toMatchObject({ actor: 'admin for ticket 4711', at: expect.any(Date) });
    expect(await platform.store.db.collection('privacy_subjects').countDocuments({ _id: id as never })).toBe(0);
    // The audit and the request name the subject only by its salted hash.
    const kept = JSON.stringify([await platform.store.db.collection('privacy_requests').findOne({ _id: id as never }), audit]);
    expect(kept).not.toContain(aliceHash);
    expect(kept).not.toContain('ck-alice');
  });

  it('finds the open request when asked again, and makes a new one once it has ended', async () => {
    const first = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'ck-bob' } } })).body.id;
    const again = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'ck-bob' } } })).body.id;
    expect(again).toBe(first);
    await settledRequest(first);
    const later = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'ck-bob' } } })).body.id;
    expect(later).toBe(first.replace(/_1$/, '_2'));
    expect((await settledRequest(later)).state).toBe('completed');
  });

  it('answers requests of one subject sent at once with one request', async () => {
    const ask = () => admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'cookie_id', value: 'ck-at-once' } } });
    const answers = await Promise.all(Array.from({ length: 6 }, ask));
    expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(202));
    expect(new Set(answers.map((answer) => answer.body.id))).toEqual(new Set([answers[0].body.id]));
    expect((await settledRequest(answers[0].body.id)).state).toBe('completed');
  });

  it('completes an access request about an identity nobody holds, with nothing found', async () => {
    const id = (await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'email', value: 'nobody@example.com' } } })).body.id;
    const view = await settledRequest(id);
    expect(view.result).toMatchObject({ found: false, profiles: 0, events: 0, destinations: 0 });
    expect((await admin(view.result.exportUrl)).body).toMatchObject({ profile: null, events: [], segments: [], destinations: [] });
  });

  it('opts a subject out: out of every segment at once, removed at the partner through a 5xx and a timeout, the ledger acknowledged', async () => {
    const aliceId = (await source.lookup('cookie_id', 'ck-alice')).body.id;
    const bobId = (await source.lookup('cookie_id', 'ck-bob')).body.id;
    partner.failNext('http500', 'stall');
    const started = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'email', value: ALICE_EMAIL }, requestedBy: 'ccpa form' } });
    expect(started.status).toBe(202);
    expect(started.body.id).toMatch(/^pr_opt_out_/);
    const view = await settledRequest(started.body.id);
    expect(view).toMatchObject({ type: 'opt_out', state: 'completed', error: null });
    expect(view.steps.map((step: { name: string; state: string }) => [step.name, step.state])).toEqual([
      ['resolve', 'done'],
      ['mark', 'done'],
      ['remove', 'done'],
      ['complete', 'done'],
    ]);
    expect(view.destinations).toEqual([{ destinationId, name: 'Hooked', state: 'acknowledged', round: 1, exportId: expect.any(String), lastError: null, updatedAt: expect.any(String) }]);
    expect(view.result).toMatchObject({ found: true, profiles: 1, segments: 1, destinations: 1, exportUrl: null });
    // The partner removed her (the batch came again after the 5xx and the stall), and holds Bob still.
    expect(partner.audience(segmentId)).toEqual(['ck-bob', 'ck-carol-web', 'ck-dave']);
    const removal = (await admin(`/v1/destinations/${destinationId}/exports/${view.destinations[0].exportId}`)).body;
    expect(removal).toMatchObject({ state: 'completed', trigger: 'privacy', removes: 1, adds: 0 });
    // She left the segment when the request marked her, not at the next batch run.
    expect((await admin(`/v1/segments/${segmentId}/members?limit=10`)).body.members).not.toContain(aliceId);
    expect((await admin(`/v1/segments/${segmentId}/members?limit=10`)).body.members).toContain(bobId);
    expect((await admin(`/v1/profiles/${aliceId}`)).body.segments).toEqual([]);
    // Recorded for every segment under any version of its rule, so a run under way when she was marked takes her out too.
    const recorded = await new SegmentRunStore(platform.store).changesSince(new Date(0));
    expect(recorded.find((change) => change._id === `privacy:${started.body.id}`)?.changes).toEqual({ [segmentId]: { entered: [], exited: [aliceId] } });
  });

  it('profiles an opted-out subject no more: later events change nothing but consent, a new identity joins the mark, batch runs and exports leave them out', async () => {
    const aliceId = (await source.lookup('cookie_id', 'ck-alice')).body.id;
    const before = (await admin(`/v1/profiles/${aliceId}`)).body;
    const events = [
      { id: 'a3', type: 'purchase', timestamp: minutesAgo(2), identities: { cookie_id: 'ck-alice' }, traits: { plan: 'platinum' }, properties: { item: 'stove' } },
      { id: 'a4', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: 'ck-alice-2', email: ALICE_EMAIL }, traits: { plan: 'gold' } },
    ];
    expect((await source.send(events)).body.accepted).toBe(events.length);
    await source.folded(INITIAL_EVENTS + events.length);
    const after = (await admin(`/v1/profiles/${aliceId}`)).body;
    expect(after.traits).toEqual({ plan: 'gold' });
    expect(after.counters).toEqual(before.counters);
    expect(after.segments).toEqual([]);
    // Her new cookie finds her profile, and her profile is still out of every segment.
    expect((await source.lookup('cookie_id', 'ck-alice-2')).body).toMatchObject({ id: aliceId, segments: [] });

    const run = await admin(`/v1/segments/${segmentId}/runs`, { method: 'POST' });
    expect(run.status).toBe(202);
    const done = await waitFor('the batch run', async () => {
      const state = (await admin(`/v1/segments/${segmentId}/runs/${run.body.runId}`)).body;
      return state.state === 'completed' ? state : null;
    }, 60_000);
    expect(done.members).toBe(3);
    // An estimate neither samples her nor counts her in the population it scales to: Bob, Dave and Carol's two documents.
    const estimate = await admin('/v1/segments/estimate', { body: { rule: { trait: 'plan', op: 'exists' } } });
    expect(estimate.body).toMatchObject({ estimate: 3, sampled: 4, population: 4 });
    await exportNow();
    expect(partner.audience(segmentId)).toEqual(['ck-bob', 'ck-carol-web', 'ck-dave']);
    // Models built from people leave her out: the recommendations' item model holds Bob's pen alone, not her tent.
    expect((await admin('/v1/recommendations/model', { method: 'POST', body: { full: true } })).status).toBe(202);
    const model = await waitFor('the item model', async () => {
      const body = (await admin('/v1/recommendations/model')).body;
      return body.state === 'built' ? body : null;
    }, 60_000);
    expect(model).toMatchObject({ people: 1, items: 1 });
  });

  it('keeps the mark through a merge: a profile joined to an opted-out one leaves its segments and its partners', async () => {
    const opted = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'phone', value: CAROL_PHONE } } });
    // Her app profile was in no exported segment: nothing to remove anywhere.
    expect(await settledRequest(opted.body.id)).toMatchObject({ state: 'completed', destinations: [], result: { found: true, segments: 0, destinations: 0 } });
    const web = (await source.lookup('cookie_id', 'ck-carol-web')).body;
    expect(web.segments).toEqual([segmentId]);
    // One event shows her web cookie with her phone: the graph joins the two profiles into one person, who opted out.
    expect((await source.send([{ id: 'c3', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: 'ck-carol-web', phone: CAROL_PHONE } }])).body.accepted).toBe(1);
    await source.folded(INITIAL_EVENTS + 3);
    const joined = await waitFor('the profiles joined', async () => {
      const view = (await source.lookup('cookie_id', 'ck-carol-web')).body;
      return view.profileIds.length === 2 ? view : null;
    });
    expect(joined.segments).toEqual([]);
    expect((await admin(`/v1/segments/${segmentId}/members?limit=10`)).body.members).not.toContain(joined.id);
    await exportNow();
    expect(partner.audience(segmentId)).toEqual(['ck-bob', 'ck-dave']);
    // Her web document, joined to her after the opt-out, is hers: its later events are not profiled either.
    expect((await source.send([{ id: 'c4', type: 'purchase', timestamp: minutesAgo(1), identities: { cookie_id: 'ck-carol-web' }, traits: { plan: 'platinum' } }])).body.accepted).toBe(1);
    await source.folded(INITIAL_EVENTS + 4);
    const after = (await source.lookup('cookie_id', 'ck-carol-web')).body;
    expect(after.counters).toEqual(joined.counters);
    expect(after.traits).toEqual(joined.traits);
  });

  it('keeps the mark through an unlink: the parts an opted-out person splits into stay out of segments, in real time and in batch runs', async () => {
    const aliceId = (await source.lookup('cookie_id', 'ck-alice')).body.id;
    // Everyone with a cookie: a part of hers would qualify but for the mark.
    const cookied = (await admin('/v1/segments', { body: { name: 'Has a cookie', rule: { identity: 'cookie_id' } } })).body.id;
    const members = async () => (await admin(`/v1/segments/${cookied}/members?limit=100`)).body.members as string[];
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${cookied}`)).body.lastRun?.state === 'completed');
    expect(await members()).not.toContain(aliceId);
    // Her second cookie came with her email (a4): unlinked, it is a part of its own that descends from her document.
    const accepted = await admin('/v1/identity/unlink', { body: { identities: [{ type: 'cookie_id', value: 'ck-alice-2' }, { type: 'email', value: ALICE_EMAIL }] } });
    expect(accepted.status).toBe(202);
    await waitFor('the unlink to complete', async () => (await admin(accepted.body.statusUrl)).body.state === 'completed', 60_000);
    const part = await waitFor('the part of its own', async () => {
      const view = (await source.lookup('cookie_id', 'ck-alice-2')).body;
      return view.id && view.id !== aliceId ? view : null;
    });
    expect(part.segments).toEqual([]);
    // A later event of the part is folded as hers are: it enters nothing in real time.
    expect((await source.send([{ id: 'a5', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: 'ck-alice-2' } }])).body.accepted).toBe(1);
    await source.folded(INITIAL_EVENTS + 4);
    expect(await members()).not.toContain(part.id);
    const run = await admin(`/v1/segments/${cookied}/runs`, { method: 'POST' });
    await waitFor('the batch run', async () => (await admin(`/v1/segments/${cookied}/runs/${run.body.runId}`)).body.state === 'completed', 60_000);
    const after = await members();
    expect(after).not.toContain(part.id);
    expect(after).not.toContain(aliceId);
    expect(after).toContain((await source.lookup('cookie_id', 'ck-bob')).body.id);
  });

  it('keeps a removal on the ledger as failed and retrying until the partner confirms it, its workflow going on as new between rounds', async () => {
    partner.failNext('http400');
    const started = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'ck-dave' } } });
    const failing = await waitFor('the refused removal on the ledger', async () => {
      const view = (await admin(`/v1/privacy/requests/${started.body.id}`)).body;
      return view.destinations[0]?.state === 'failed_retrying' ? view : null;
    }, 60_000);
    expect(failing.state).toBe('running');
    expect(failing.destinations[0]).toMatchObject({ destinationId, round: 1, lastError: expect.stringContaining('failed') });
    const view = await settledRequest(started.body.id);
    expect(view.destinations).toEqual([expect.objectContaining({ destinationId, state: 'acknowledged', round: 2, lastError: null })]);
    expect(partner.audience(segmentId)).toEqual(['ck-bob']);
    // The removal is a workflow per destination: round 1 in one run, round 2 in the run it went on as.
    const removalId = privacyRemovalWorkflowId(privacyRequestWorkflowId(platform.store.db.databaseName, started.body.id), destinationId);
    const runs = await waitFor('both runs of the removal listed', async () => {
      const statuses: string[] = [];
      for await (const execution of platform.temporal.workflow.list({ query: `WorkflowId = "${removalId}"` })) statuses.push(execution.status.name);
      return statuses.length === 2 ? statuses.sort() : null;
    });
    expect(runs).toEqual(['COMPLETED', 'CONTINUED_AS_NEW']);
  });

  it('opts out someone no profile holds yet: their first events are not profiled, and a profile they join later leaves its segments', async () => {
    const shop = await newSource(api, 'erin-shop');
    // Erin's tablet is known, by its cookie alone: a gold-plan member. Her email is known to no one.
    expect((await shop.send([{ id: 'e1', type: 'page_view', timestamp: minutesAgo(5), identities: { cookie_id: 'ck-erin-tab' }, traits: { plan: 'gold' } }])).body.accepted).toBe(1);
    await shop.folded(1);
    const tablet = await waitFor('the tablet in its segment', async () => {
      const view = (await shop.lookup('cookie_id', 'ck-erin-tab')).body;
      return view.segments?.includes(segmentId) ? view : null;
    });
    const opted = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'email', value: 'Erin@Example.com' } } });
    const view = await settledRequest(opted.body.id);
    expect(view).toMatchObject({ state: 'completed', result: { found: false, profiles: 0, destinations: 0 } });
    // Her first events, with her email: the document they make is hers, opted out before it was written.
    const first = [
      { id: 'e2', type: 'purchase', timestamp: minutesAgo(3), identities: { cookie_id: 'ck-erin', email: 'erin@example.com' }, traits: { plan: 'gold' }, properties: { item: 'tent' } },
      { id: 'e3', type: 'page_view', timestamp: minutesAgo(2), identities: { cookie_id: 'ck-erin' }, traits: { plan: 'gold' } },
    ];
    expect((await shop.send(first)).body.accepted).toBe(first.length);
    await shop.folded(3);
    const erin = (await shop.lookup('cookie_id', 'ck-erin')).body;
    expect(erin).toMatchObject({ traits: {}, segments: [] });
    expect(erin.counters.events ?? 0).toBe(0);
    expect((await shop.lookup('email', 'erin@example.com')).body.id).toBe(erin.id);
    // Her tablet shows up with her email: joined to her, it is opted out with her and leaves its segment at once.
    expect((await shop.send([{ id: 'e4', type: 'page_view', timestamp: minutesAgo(1), identities: { cookie_id: 'ck-erin-tab', email: 'erin@example.com' } }])).body.accepted).toBe(1);
    await shop.folded(4);
    const joined = await waitFor('the tablet joined to her', async () => {
      const view = (await shop.lookup('cookie_id', 'ck-erin-tab')).body;
      return view.profileIds?.length === 2 ? view : null;
    });
    expect(joined.profileIds).toEqual(expect.arrayContaining([tablet.id, erin.id]));
    expect(joined.segments).toEqual([]);
    const run = await admin(`/v1/segments/${segmentId}/runs`, { method: 'POST' });
    await waitFor('the batch run', async () => (await admin(`/v1/segments/${segmentId}/runs/${run.body.runId}`)).body.state === 'completed', 60_000);
    const members = (await admin(`/v1/segments/${segmentId}/members?limit=100`)).body.members as string[];
    expect(members).not.toContain(joined.id);
    expect(members).not.toContain(tablet.id);
    expect(members).not.toContain(erin.id);
    // The request claimed her email for a document of its own: the one her first events made.
    expect(view.steps.find((step: { name: string }) => step.name === 'mark').touched).toMatchObject({ identities: 1, privacy_marks: 1 });
  });

  it('removes a subject an export under way when they opted out adds at its partner: the removal goes after it, on the ledger', async () => {
    const shop = await newSource(api, 'frank-shop');
    expect((await shop.send([{ id: 'f1', type: 'page_view', timestamp: minutesAgo(5), identities: { cookie_id: 'ck-frank' }, traits: { plan: 'gold' } }])).body.accepted).toBe(1);
    await shop.folded(1);
    const run = await admin(`/v1/segments/${segmentId}/runs`, { method: 'POST' });
    await waitFor('the batch run', async () => (await admin(`/v1/segments/${segmentId}/runs/${run.body.runId}`)).body.state === 'completed', 60_000);
    // The export plans with Frank in it, and its first batch waits at the partner.
    const release = partner.hold();
    const asked = partner.requests;
    const exported = await admin(`/v1/destinations/${destinationId}/exports`, { body: {} });
    await waitFor('the export at the partner', async () => partner.requests > asked);
    const opted = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'ck-frank' } } });
    const read = await waitFor('the request past finding the partners', async () => {
      const view = (await admin(`/v1/privacy/requests/${opted.body.id}`)).body;
      return view.destinations.length > 0 || view.state === 'completed' ? view : null;
    }, 60_000);
    release();
    const done = await waitFor('the export', async () => {
      const view = (await admin(`/v1/destinations/${destinationId}/exports/${exported.body.exportId}`)).body;
      return view.state === 'completed' ? view : null;
    }, 60_000);
    expect(done).toMatchObject({ adds: 1, removes: 0 });
    const view = await settledRequest(opted.body.id);
    expect(partner.audience(segmentId)).toEqual(['ck-bob']);
    // The destination was on the ledger as soon as the request looked for partners, before the export ended.
    expect(read.destinations).toEqual([expect.objectContaining({ destinationId })]);
    expect(view.destinations).toEqual([expect.objectContaining({ destinationId, state: 'acknowledged', lastError: null })]);
  });

  it('refuses what it cannot take, naming the field', async () => {
    const bad = await admin('/v1/privacy/requests', { body: { type: 'forget', identity: { type: 'email', value: 'a@b.co' } } });
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].path).toBe('type');
    // Well-formed, but no profile can hold such an identity.
    const badEmail = await admin('/v1/privacy/requests', { body: { type: 'access', identity: { type: 'email', value: 'not an email' } } });
    expect(badEmail.status).toBe(404);
    expect(badEmail.body.errors[0].path).toBe('identity.value');
    // A placeholder many people send names no one: erased, every later event carrying it would be dropped.
    for (const identity of [{ type: 'crm_id', value: '0' }, { type: 'email', value: ' Test@Example.com' }, { type: 'phone', value: '+1 555 555 5555' }]) {
      const placeholder = await admin('/v1/privacy/requests', { body: { type: 'erase', identity } });
      expect({ identity, status: placeholder.status, path: placeholder.body.errors?.[0]?.path }).toEqual({ identity, status: 404, path: 'identity.value' });
      expect(placeholder.body.errors[0].message).toMatch(/placeholder/);
    }
    const noIdentity = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'email' } } });
    expect(noIdentity.status).toBe(400);
    expect(noIdentity.body.errors[0].path).toBe('identity.value');
    expect((await admin('/v1/privacy/requests/pr_access_nothing_1')).status).toBe(404);
    expect((await admin('/v1/privacy/requests?state=lost')).status).toBe(400);
    expect((await call(`${api.url}/v1/privacy/requests`, { body: { type: 'access', identity: { type: 'email', value: ALICE_EMAIL } } })).status).toBe(401);
  });

  it('ends a removal at a destination deleted while it was retrying: the ledger says its partner was not told, and the request completes', async () => {
    partner.failNext('http400');
    const started = await admin('/v1/privacy/requests', { body: { type: 'opt_out', identity: { type: 'cookie_id', value: 'ck-bob' } } });
    await waitFor('the refused removal on the ledger', async () => (await admin(`/v1/privacy/requests/${started.body.id}`)).body.destinations[0]?.state === 'failed_retrying', 60_000);
    expect((await admin(`/v1/destinations/${destinationId}`, { method: 'DELETE' })).status).toBe(204);
    const view = await settledRequest(started.body.id);
    expect(view).toMatchObject({ state: 'completed', error: null });
    expect(view.destinations).toEqual([expect.objectContaining({ destinationId, state: 'destination_deleted', round: 2, lastError: 'the destination was deleted: its partner was not told' })]);
    expect(partner.audience(segmentId)).toEqual(['ck-bob']);
  });
});
