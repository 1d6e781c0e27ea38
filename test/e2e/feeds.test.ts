import { appendFileSync, mkdirSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sha256Hex } from '../../domain/identity';
import { feedScheduleId } from '../../domain/workflowIds';
import { COLLECTIONS } from '../../store/db';
import { EventIdGenerations } from '../../store/eventIds';
import { FeedServer } from '../support/feeds';
import { call } from '../support/http';
import { sourceLogEventIds } from '../support/sourceLog';
import { baseConfig, startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource } from '../support/sourceClient';

const TOKEN = 'partner-token-0123456789';
const hash = (i: number) => sha256Hex(`person${i}@example.com`);
const at = (hour: number) => `2026-03-01T${String(hour).padStart(2, '0')}:00:00Z`;
const HEADER = 'hashed_email,income,segments,updated_at,notes';
/** Person `i` as the broker lists them at `hour`: odd people are in IAB segments 607 and 608, even ones in 609. */
const brokerRow = (i: number, hour: number, income = i % 3 === 0 ? 'high' : 'low') => `${hash(i)},${income},${i % 2 ? '607|608' : '609'},${at(hour)},"note, ${i}"`;
/** The broker's first file: people 0–19 stamped at hours 0–4, a row with a hash that is none and a row without identity. */
const FIRST_ROWS = [...Array.from({ length: 20 }, (_, i) => brokerRow(i, i % 5)), `not-a-hash,high,607,${at(0)},`, `,low,609,${at(0)},`];
const brokerFile = (rows: string[]) => [HEADER, ...rows].join('\n') + '\n';
/** Feeds the tests pull themselves are scheduled once a year, so no scheduled pull comes in between. */
const YEARLY = { cron: '0 0 1 1 *' };

describe('feeds: partner and provider files pulled on a schedule, incrementally, into profiles with provenance', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let server: FeedServer;
  let broker: string;
  const feedDir = mkdtempSync(join(tmpdir(), 'dmp-feeds-'));

  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const createFeed = async (body: Record<string, unknown>) => {
    const created = await admin('/v1/sources', { body: { kind: 'feed', consent: { mode: 'not_required' }, ...body } });
    expect(created.status).toBe(201);
    return created.body.id as string;
  };
  const finished = (sourceId: string, pullId: string) =>
    waitFor(
      `pull ${pullId}`,
      async () => {
        const view = (await admin(`/v1/sources/${sourceId}/pulls/${pullId}`)).body;
        return view.state === 'running' ? null : view;
      },
      120_000,
    );
  /** Starts a pull (or a backfill) and waits for it to end. */
  const pull = async (sourceId: string, backfill?: { from: string; to: string }) => {
    const started = await admin(`/v1/sources/${sourceId}/${backfill ? 'backfill' : 'pulls'}`, { method: 'POST', ...(backfill && { body: backfill }) });
    expect(started.status).toBe(202);
    expect(started.body).toMatchObject({ state: 'running', trigger: backfill ? 'backfill' : 'api' });
    return finished(sourceId, started.body.pullId);
  };
  const folded = (sourceId: string, count: number) =>
    waitFor(`${count} events of ${sourceId} folded`, async () => (await admin(`/v1/sources/${sourceId}`)).body.profiles.eventsApplied >= count, 120_000);
  const lookup = async (type: string, value: string) => (await admin(`/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`)).body;
  const logged = (sourceId: string) => sourceLogEventIds(platform.store, sourceId);

  beforeAll(async () => {
    // Drop-folder files settle in 2 s here (30 s by default).
    platform = await startPlatform('feeds', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'], DMP_DESTINATION_TIMEOUT_SECONDS: 1, DMP_FEED_DIR: feedDir, DMP_FEED_SETTLE_SECONDS: 2 });
    ({ api } = platform);
    server = await new FeedServer({ token: TOKEN, stallMs: 3000 }).start();
    server.publish('/broker.csv', brokerFile(FIRST_ROWS), new Date('2026-03-01T05:00:00Z'));
  }, 120_000);
  afterAll(async () => {
    await server.stop();
    await platform.stop();
  });

  it('creates a feed source with its schedule, paused and resumed with the source, its token never shown', async () => {
    broker = await createFeed({
      name: 'Audience broker',
      party: 'third',
      labels: ['broker'],
      feed: {
        url: `${server.url}/broker.csv`,
        schedule: YEARLY,
        mapping: { identities: { email_sha256: 'hashed_email' }, traits: { income: 'income_band' } },
        cursorColumn: 'updated_at',
        taxonomy: { column: 'segments', provider: 'iab' },
        bearerToken: TOKEN,
      },
    });
    const status = await admin(`/v1/sources/${broker}`);
    expect(status.body).toMatchObject({ kind: 'feed', party: 'third', labels: ['broker'] });
    const scheduleId = feedScheduleId(platform.store.db.databaseName, broker);
    expect(status.body.feed).toMatchObject({ url: `${server.url}/broker.csv`, format: 'csv', bearerToken: '(set)', scheduleId, cursor: null, etag: null, lastPull: null, lastSuccessAt: null });
    expect(JSON.stringify(status.body)).not.toContain(TOKEN);

    expect((await platform.temporal.schedule.getHandle(scheduleId).describe()).action).toMatchObject({ type: 'startWorkflow', workflowType: 'scheduledFeedPull' });

    const hourly = await createFeed({ name: 'Hourly', party: 'second', feed: { url: `${server.url}/hourly.csv`, schedule: { every: 'PT1H' }, mapping: { identities: { crm_id: 'id' } } } });
    const schedule = platform.temporal.schedule.getHandle(feedScheduleId(platform.store.db.databaseName, hourly));
    const described = await schedule.describe();
    expect(described.state.paused).toBe(false);
    expect(described.spec.intervals?.[0].every).toBe(3_600_000);
    expect((await admin(`/v1/sources/${hourly}/pause`, { method: 'POST' })).status).toBe(202);
    expect((await schedule.describe()).state.paused).toBe(true);
    const refused = await admin(`/v1/sources/${hourly}/pulls`, { method: 'POST' });
    expect(refused.status).toBe(409);
    expect(refused.body.errors).toEqual([{ path: 'params.id', message: `source ${hourly} is paused; resume it first` }]);
    expect((await admin(`/v1/sources/${hourly}/resume`, { method: 'POST' })).status).toBe(202);
    expect((await schedule.describe()).state.paused).toBe(false);
    // Paused again: no hourly pull may come in the middle of the other tests.
    expect((await admin(`/v1/sources/${hourly}/pause`, { method: 'POST' })).status).toBe(202);
    expect((await admin(`/v1/sources/${hourly}`)).body.feed).not.toHaveProperty('bearerToken');
  });

  it('refuses a bad feed naming the field (malformed 400, unreachable 403, not found 404), and creates nothing', async () => {
    const before = (await admin('/v1/sources')).body.sources.length;
    const feed = { url: `${server.url}/broker.csv`, schedule: { every: 'PT1H' }, mapping: { identities: { email_sha256: 'hashed_email' } } };
    // Malformed is a 400; an address outbound calls may not reach is forbidden, and what does not exist is not found.
    const cases: Array<[Record<string, unknown> | undefined, string, number]> = [
      [{ ...feed, url: 'http://10.1.2.3/audience.csv' }, 'feed.url', 403],
      [{ ...feed, url: 'https://no-such-host.invalid/audience.csv' }, 'feed.url', 404],
      [{ ...feed, url: 'ftp://partner.example/audience.csv' }, 'feed.url', 400],
      [{ ...feed, mapping: { identities: { 'partner:nobody': 'uid' } } }, 'feed.mapping.identities.partner:nobody', 404],
      [{ ...feed, folder: 'drop' }, 'feed.folder', 400],
      [{ ...feed, url: undefined, folder: '../etc' }, 'feed.folder', 400],
      [{ ...feed, schedule: { every: 'often' } }, 'feed.schedule', 400],
      [{ ...feed, cursor: 'updated_at' }, 'feed', 400],
      [undefined, 'feed', 400],
    ];
    for (const [body, path, status] of cases) {
      const response = await admin('/v1/sources', { body: { name: 'bad', kind: 'feed', party: 'third', feed: body } });
      expect({ path, status: response.status, type: response.contentType }).toEqual({ path, status, type: expect.stringContaining('application/problem+json') });
      expect(response.body.errors.map((error: { path: string }) => error.path)).toContainEqual(expect.stringMatching(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`)));
    }
    expect((await admin('/v1/sources')).body.sources).toHaveLength(before);
  });

  it('imports the whole file on the first pull — hashed emails onto first-party profiles, segment ids as a list trait with provenance — and nothing on a 304', async () => {
    const web = await newSource(api, 'web');
    await web.send([0, 3].map((i) => ({ id: `visit-${i}`, type: 'page_view', identities: { cookie_id: `ck-${i}`, email: `Person${i}@Example.com` } })));
    await web.folded(2);

    const first = await pull(broker);
    expect(first).toMatchObject({
      state: 'completed',
      trigger: 'api',
      window: { from: null, to: null },
      http: { status: 200, etag: expect.stringMatching(/^"/), lastModified: 'Sun, 01 Mar 2026 05:00:00 GMT' },
      cursor: at(4),
      rowsReceived: 22,
      rowsImported: 20,
      rowsDuplicate: 0,
      rowsErased: 0,
      rowsSkipped: 0,
      rowsUnmatched: 0,
      rowsRejected: 2,
      attempts: [],
      error: null,
    });
    expect(first.rejections).toEqual([
      { row: 22, errors: [{ path: 'hashed_email', message: expect.any(String) }] },
      { row: 23, errors: [{ path: '(row)', message: 'no identity: "hashed_email" is empty' }] },
    ]);
    expect(server.requests.at(-1)).toMatchObject({ path: '/broker.csv', authorization: `Bearer ${TOKEN}`, ifNoneMatch: null, status: 200 });
    await folded(broker, 20);

    // The broker's traits land on the profile the site built from the same (hashed) email.
    const person3 = await lookup('cookie_id', 'ck-3');
    expect(person3.traits).toMatchObject({ income_band: 'high', 'provider_segments.iab': ['607', '608'] });
    expect(person3.traitOrigins['provider_segments.iab']).toMatchObject({ sourceId: broker, party: 'third', labels: ['broker'] });
    expect(person3.traitOrigins.income_band).toMatchObject({ sourceId: broker, party: 'third', labels: ['broker'] });
    expect((await lookup('email', 'person3@example.com')).id).toBe(person3.id);

    // Segment rules test the provider's segment ids.
    const segment = (await admin('/v1/segments', { body: { name: 'IAB 607', rule: { trait: 'provider_segments.iab', op: 'contains', value: '607' } } })).body;
    await waitFor('the segment evaluated', async () => (await admin(`/v1/segments/${segment.id}`)).body.lastRun?.state === 'completed');
    const members: string[] = (await admin(`/v1/segments/${segment.id}/members?limit=100`)).body.members;
    expect(members).toHaveLength(10);
    expect(members).toContain(person3.id);
    expect(members).not.toContain((await lookup('cookie_id', 'ck-0')).id);

    const status = (await admin(`/v1/sources/${broker}`)).body.feed;
    expect(status).toMatchObject({ cursor: at(4), etag: first.http.etag, lastModified: first.http.lastModified, lastPull: { pullId: first.pullId, rowsImported: 20, rowsRejected: 2 } });
    expect(status.lastSuccessAt).not.toBeNull();

    const again = await pull(broker);
    expect(again).toMatchObject({ state: 'completed', http: { status: 304 }, rowsReceived: 0, rowsImported: 0, uploadId: null, window: { from: at(4), to: null } });
    expect(server.requests.at(-1)).toMatchObject({ ifNoneMatch: first.http.etag, ifModifiedSince: first.http.lastModified, status: 304 });
    expect(await logged(broker)).toHaveLength(20);
  });

  it('imports only rows at or past the cursor of the last completed pull, skipping those at it that it imported', async () => {
    // Person 0 moved up a band at hour 5, and five people joined; a sixth appears at hour 4, the cursor.
    server.publish('/broker.csv', brokerFile([...FIRST_ROWS, brokerRow(0, 5, 'medium'), ...Array.from({ length: 5 }, (_, k) => brokerRow(20 + k, 5)), brokerRow(90, 4)]));
    const next = await pull(broker);
    // Hours 0–3 (16 people and the two bad rows) are behind the cursor; hour 4's 4 people were imported already (remembered by the feed, not
    // found duplicates), and the new one at hour 4 is not one of them.
    expect(next).toMatchObject({ state: 'completed', http: { status: 200 }, window: { from: at(4), to: null }, cursor: at(5), rowsReceived: 29, rowsSkipped: 22, rowsDuplicate: 0, rowsImported: 7, rowsRejected: 0 });
    await folded(broker, 27);
    expect((await lookup('cookie_id', 'ck-0')).traits.income_band).toBe('medium');
    expect((await lookup('email', 'person24@example.com')).traits['provider_segments.iab']).toEqual(['609']);
    const ids = await logged(broker);
    expect(ids).toHaveLength(27);
    expect(new Set(ids).size).toBe(27);
    expect((await admin(`/v1/sources/${broker}`)).body.feed.cursor).toBe(at(5));
  });

  it('imports the rows at its cursor no second time once the dedupe window has passed and their event ids are forgotten', async () => {
    // The retention run drops the event-id generations once the window has passed: as a week later.
    const generations = new EventIdGenerations(platform.store.db, baseConfig.DMP_DEDUPE_WINDOW_HOURS);
    expect((await generations.dropExpired(Date.now() + 3 * baseConfig.DMP_DEDUPE_WINDOW_HOURS * 3_600_000)).generations).toBeGreaterThan(0);
    // The partner's file changes behind the cursor only (a correction at hour 1): its rows at the cursor, hour 5, are those imported.
    server.publish('/broker.csv', brokerFile([...FIRST_ROWS, brokerRow(0, 5, 'medium'), ...Array.from({ length: 5 }, (_, k) => brokerRow(20 + k, 5)), brokerRow(90, 4), brokerRow(91, 1)]));
    const again = await pull(broker);
    expect(again).toMatchObject({ state: 'completed', http: { status: 200 }, window: { from: at(5), to: null }, cursor: at(5), rowsReceived: 30, rowsSkipped: 30, rowsDuplicate: 0, rowsImported: 0 });
    expect(await logged(broker)).toHaveLength(27);
  });

  it("never shows a signed feed URL's query values, nor a partner's answer quoting them, and pulls with them", async () => {
    const signature = 'feed-signature-0123456789';
    const path = `/signed.csv?expires=2026-12-31&sig=${signature}`;
    const signed = await createFeed({ name: 'Signed', party: 'third', feed: { url: `${server.url}${path}`, schedule: YEARLY, mapping: { identities: { email_sha256: 'hashed_email' } }, bearerToken: TOKEN } });
    const status = await admin(`/v1/sources/${signed}`);
    expect(status.body.feed.url).toBe(`${server.url}/signed.csv?expires=(set)&sig=(set)`);
    expect(JSON.stringify(status.body)).not.toContain(signature);
    // Not published yet: the partner's 404 quotes the URL it was asked for, signature and all.
    const missing = await pull(signed);
    expect(missing.state).toBe('failed');
    expect(missing.error).toMatch(/^HTTP 404: no such file: \/signed\.csv\?expires=\(secret\)&sig=\(secret\)/);
    expect(JSON.stringify(await admin(`/v1/sources/${signed}/pulls/${missing.pullId}`))).not.toContain(signature);
    expect(server.requests.at(-1)).toMatchObject({ path, status: 404 });
    server.publish(path, brokerFile([brokerRow(40, 6)]));
    expect(await pull(signed)).toMatchObject({ state: 'completed', rowsImported: 1 });
  });

  it('retries a partner that answers 5xx, honouring its Retry-After, and imports the file once', async () => {
    server.publish('/broker.csv', brokerFile([brokerRow(30, 6), brokerRow(31, 6)]));
    server.fail('http500', 'http503');
    const done = await pull(broker);
    expect(done).toMatchObject({ state: 'completed', rowsImported: 2, rowsDuplicate: 0 });
    expect(done.attempts.map((attempt: { attempt: number; error: string }) => [attempt.attempt, attempt.error])).toEqual([
      [1, 'HTTP 500: partner down'],
      [2, 'HTTP 503: partner down'],
    ]);
    expect(await logged(broker)).toHaveLength(29);
  });

  it('gives up on a partner that stalls before answering or in the middle of the file, and retries', async () => {
    server.publish('/broker.csv', brokerFile([brokerRow(32, 7), brokerRow(33, 7)]));
    server.fail('stall', 'stallBody');
    const done = await pull(broker);
    expect(done).toMatchObject({ state: 'completed', rowsImported: 2 });
    expect(done.attempts).toHaveLength(2);
    expect(done.attempts[0].error).toMatch(/Headers Timeout/);
    expect(done.attempts[1].error).toMatch(/^\(body\): the transfer broke off: .*Body Timeout/);
    expect(await logged(broker)).toHaveLength(31);
  });

  it('imports nothing of a transfer cut short or a file cut inside a row, and the good retry imports each row once', async () => {
    server.publish('/broker.csv', brokerFile(Array.from({ length: 40 }, (_, k) => brokerRow(40 + k, 8))));
    server.fail('truncate', 'cutRow');
    const done = await pull(broker);
    expect(done).toMatchObject({ state: 'completed', rowsReceived: 40, rowsImported: 40, rowsDuplicate: 0 });
    expect(done.attempts.map((attempt: { error: string }) => attempt.error)).toEqual([
      expect.stringMatching(/^\(body\): the transfer broke off: /),
      'row 41: the file ends inside this row: it was cut short',
    ]);
    // The broken attempts' uploads failed with nothing staged left; the good one was imported.
    const attempts = await platform.store.db.collection(COLLECTIONS.uploads).find({ _id: { $in: [`${done.pullId}_1`, `${done.pullId}_2`] } as never }).toArray();
    expect(attempts.map((upload) => upload.state)).toEqual(['failed', 'failed']);
    expect(await platform.store.db.collection(COLLECTIONS.uploadRows).countDocuments({ uploadId: { $in: [`${done.pullId}_1`, `${done.pullId}_2`] } })).toBe(0);
    expect(done.uploadId).toBe(`${done.pullId}_3`);
    const ids = await logged(broker);
    expect(ids).toHaveLength(71);
    expect(new Set(ids).size).toBe(71);
  });

  it("maps a partner's user ids to our cookies through a real cookie sync, counts the unmatched, and backfills a window without duplicates", async () => {
    const partnerBody = { id: 'ttd', name: 'The Trade Desk', redirectUrl: 'https://match.ttd.example/sync?dmp=${DMP_UID}' };
    expect((await admin('/v1/partners', { body: partnerBody })).status).toBe(201);
    const sync = async (puid: string) => {
      const response = await fetch(`${api.url}/v1/sync/ttd?puid=${puid}`, { redirect: 'manual' });
      expect(response.status).toBe(302);
      return new URL(response.headers.get('location') as string).searchParams.get('dmp') as string;
    };
    const cookie1 = await sync('tdid-1');
    const cookie2 = await sync('tdid-2');
    const web = await newSource(api, 'shop');
    await web.send([{ id: 'shop-1', type: 'page_view', identities: { cookie_id: cookie1 } }]);
    await web.folded(1);

    const shared = await createFeed({
      name: 'Partner audience',
      party: 'second',
      labels: ['partner_shared'],
      feed: { url: `${server.url}/partner.csv`, schedule: YEARLY, mapping: { identities: { 'partner:ttd': 'tdid' }, traits: { interest: 'interest' } }, cursorColumn: 'seq', bearerToken: TOKEN },
    });
    server.publish('/partner.csv', 'tdid,interest,seq\ntdid-1,travel,1\ntdid-2,golf,2\ntdid-3,chess,3\n');
    const first = await pull(shared);
    expect(first).toMatchObject({ state: 'completed', rowsReceived: 3, rowsImported: 2, rowsUnmatched: 1, rowsRejected: 0, cursor: '3' });
    await folded(shared, 2);
    const profile1 = await lookup('cookie_id', cookie1);
    expect(profile1.counters.page_view.count).toBe(1);
    expect(profile1.traits.interest).toBe('travel');
    expect(profile1.traitOrigins.interest).toMatchObject({ sourceId: shared, party: 'second', labels: ['partner_shared'] });
    expect((await lookup('cookie_id', cookie2)).traits.interest).toBe('golf');

    // The third user syncs later: a backfill of the window brings them in, and the two imported already are duplicates.
    const cookie3 = await sync('tdid-3');
    const etag = (await admin(`/v1/sources/${shared}`)).body.feed.etag;
    const backfill = await pull(shared, { from: '1', to: '3' });
    expect(backfill).toMatchObject({ state: 'completed', trigger: 'backfill', window: { from: '1', to: '3' }, rowsReceived: 3, rowsImported: 1, rowsDuplicate: 2, rowsUnmatched: 0 });
    expect(server.requests.at(-1)).toMatchObject({ path: '/partner.csv', ifNoneMatch: null, status: 200 });
    await folded(shared, 3);
    expect((await lookup('cookie_id', cookie3)).traits.interest).toBe('chess');
    const ids = await logged(shared);
    expect(ids).toHaveLength(3);
    expect(new Set(ids).size).toBe(3);
    // A backfill leaves the feed where it was.
    expect((await admin(`/v1/sources/${shared}`)).body.feed).toMatchObject({ cursor: '3', etag, lastPull: { pullId: backfill.pullId } });

    // Its schedule starts the same pull: the feed is unchanged, so the partner answers 304.
    const scheduleId = feedScheduleId(platform.store.db.databaseName, shared);
    await platform.temporal.schedule.getHandle(scheduleId).trigger();
    const scheduled = await waitFor('the scheduled pull', async () => {
      const pulls = (await admin(`/v1/sources/${shared}/pulls`)).body.pulls as Array<{ trigger: string; state: string }>;
      return pulls.find((view) => view.trigger === 'schedule' && view.state !== 'running');
    });
    expect(scheduled).toMatchObject({ state: 'completed', http: { status: 304 }, rowsImported: 0 });
    expect((await admin(`/v1/sources/${shared}/pulls`)).body.pulls.map((view: { trigger: string }) => view.trigger)).toEqual(['schedule', 'backfill', 'api']);
  });

  it("holds a partner's unmatched rows under its user id (refusing a placeholder, naming the column), and the partner's later cookie sync joins them to our cookie", async () => {
    const syncs = await newSource(api, 'liveramp syncs');
    expect((await admin('/v1/partners', { body: { id: 'lr', name: 'LiveRamp', redirectUrl: 'https://sync.lr.example/m?u=${DMP_UID}', sourceId: syncs.sourceId } })).status).toBe(201);
    const holding = await createFeed({
      name: 'Partner audience, held',
      party: 'second',
      labels: ['partner_shared'],
      feed: { url: `${server.url}/held.csv`, schedule: YEARLY, mapping: { identities: { 'partner:lr': 'uid' }, traits: { interest: 'interest' }, unmatched: 'hold' }, bearerToken: TOKEN },
    });
    expect((await admin(`/v1/sources/${holding}`)).body.feed.mapping).toMatchObject({ unmatched: 'hold' });
    server.publish('/held.csv', 'uid,interest\nlr-1,travel\nlr-2,golf\n0000-0000,chess\n');
    const first = await pull(holding);
    expect(first.error).toBeNull();
    expect(first).toMatchObject({ state: 'completed', rowsReceived: 3, rowsImported: 2, rowsUnmatched: 3, rowsRejected: 1, rejections: [{ row: 4, errors: [{ path: 'uid', message: 'cannot be held: is all zeros: a partner placeholder, never a user' }] }] });
    await folded(holding, 2);
    const held = await lookup('partner_uid', 'lr:lr-1');
    expect(held).toMatchObject({ traits: { interest: 'travel' }, identities: [{ type: 'partner_uid', value: 'lr:lr-1' }] });

    const response = await fetch(`${api.url}/v1/sync/lr?puid=lr-1`, { redirect: 'manual' });
    const cookie = new URL(response.headers.get('location') as string).searchParams.get('u') as string;
    await syncs.folded(1);
    const joined = await lookup('cookie_id', cookie);
    expect(joined).toMatchObject({ traits: { interest: 'travel' }, counters: { cookie_sync: { count: 1 }, feed_record: { count: 1 } } });
    expect((await lookup('partner_uid', 'lr:lr-1')).id).toBe(joined.id);
    expect((await lookup('partner_uid', 'lr:lr-2')).traits).toEqual({ interest: 'golf' });

    // A partner whose ids a feed maps is not removed.
    const removal = await admin('/v1/partners/lr', { method: 'DELETE' });
    expect({ status: removal.status, errors: removal.body.errors }).toEqual({ status: 409, errors: [{ path: 'id', message: `feed source ${holding} maps a partner:lr column` }] });
  });

  it('refuses a second pull while one runs, naming it; a scheduled turn meanwhile is skipped', async () => {
    server.publish('/broker.csv', brokerFile([brokerRow(90, 9)]));
    server.fail('stall', 'stall');
    const running = await admin(`/v1/sources/${broker}/pulls`, { method: 'POST' });
    expect(running.status).toBe(202);
    const second = await admin(`/v1/sources/${broker}/backfill`, { method: 'POST', body: { from: at(0), to: at(9) } });
    expect(second.status).toBe(409);
    expect(second.body.errors).toEqual([{ path: 'params.id', message: `pull ${running.body.pullId} of source ${broker} is running; ask again once it is done` }]);
    const schedule = platform.temporal.schedule.getHandle(feedScheduleId(platform.store.db.databaseName, broker));
    await schedule.trigger();
    const action = await waitFor('the scheduled turn', async () => (await schedule.describe()).info.recentActions.at(-1));
    const turn = await platform.temporal.workflow.getHandle(action.action.workflow.workflowId).result();
    expect(turn).toEqual({ state: 'skipped' });
    expect(await finished(broker, running.body.pullId)).toMatchObject({ state: 'completed', rowsImported: 1 });
    // Only the two pulls asked for were recorded meanwhile, not the refused one or the skipped turn.
    expect((await admin(`/v1/sources/${broker}/pulls?limit=1`)).body.pulls.map((view: { pullId: string }) => view.pullId)).toEqual([running.body.pullId]);
  });

  it('imports each new file of a drop folder once (NDJSON, gzip too), skipping files still being written', async () => {
    const folder = join(feedDir, 'partner-c');
    mkdirSync(folder);
    const line = (i: number, interest: string) => JSON.stringify({ hash: hash(100 + i), interest, segments: ['IAB-1', 'IAB-2'] });
    writeFileSync(join(folder, 'day1.ndjson'), [0, 1, 2].map((i) => line(i, 'news')).join('\n') + '\n');
    writeFileSync(join(folder, 'day2.ndjson.gz'), gzipSync([3, 4].map((i) => line(i, 'sport')).join('\n') + '\n'));
    writeFileSync(join(folder, 'day3.ndjson.part'), line(5, 'half'));
    writeFileSync(join(folder, '.hidden'), line(6, 'hidden'));
    const dropped = await createFeed({
      name: 'Drop folder',
      party: 'third',
      feed: { folder: 'partner-c', format: 'ndjson', schedule: YEARLY, mapping: { identities: { email_sha256: 'hash' }, traits: { interest: 'interest' } }, taxonomy: { column: 'segments', provider: 'acme' } },
    });
    const first = await pull(dropped);
    expect(first).toMatchObject({ state: 'completed', http: null, filesRead: 2, rowsReceived: 5, rowsImported: 5 });
    expect(first.files.map((file: { name: string }) => file.name).sort()).toEqual(['day1.ndjson', 'day2.ndjson.gz']);
    expect(await pull(dropped)).toMatchObject({ state: 'completed', files: [], filesRead: 0, uploadId: null, rowsReceived: 0 });
    expect((await admin(`/v1/sources/${dropped}`)).body.feed.filesImported).toBe(2);

    // A new file, and day1 written again with one more line: both read, day1's old lines duplicates.
    writeFileSync(join(folder, 'day1.ndjson'), [0, 1, 2, 7].map((i) => line(i, 'news')).join('\n') + '\n');
    writeFileSync(join(folder, 'day4.ndjson'), `${line(8, 'cars')}\n{"hash": 12}\n`);
    const third = await pull(dropped);
    expect(third.files.map((file: { name: string }) => file.name).sort()).toEqual(['day1.ndjson', 'day4.ndjson']);
    expect(third).toMatchObject({ rowsReceived: 6, rowsImported: 2, rowsDuplicate: 3, rowsRejected: 1 });
    expect(third.rejections).toEqual([{ file: 'day4.ndjson', row: 2, errors: [{ path: 'hash', message: expect.any(String) }] }]);
    expect((await admin(`/v1/sources/${dropped}`)).body.feed.filesImported).toBe(3);
    await folded(dropped, 7);
    expect((await lookup('email', 'person108@example.com')).traits).toMatchObject({ interest: 'cars', 'provider_segments.acme': ['IAB-1', 'IAB-2'] });
  });

  it("waits for a drop-folder file whose writer paused mid-row to settle, and reads its last row whole", async () => {
    const folder = join(feedDir, 'partner-slow');
    mkdirSync(folder);
    // The writer stops half way through a row's last value: "spo" would read as a whole row.
    const slow = await createFeed({ name: 'Drop folder, slow writer', party: 'third', feed: { folder: 'partner-slow', schedule: YEARLY, mapping: { identities: { email_sha256: 'hash' }, traits: { interest: 'interest' } } } });
    const file = join(folder, 'slow.csv');
    writeFileSync(file, `hash,interest\n${hash(300)},news\n${hash(301)},spo`);
    // Stamped 4 s ahead (a clock a little fast), the file settles 6 s from now: the pull waits that long,
    // and the rest of the row comes meanwhile, whatever the pull's start takes.
    const ahead = new Date(Date.now() + 4_000);
    utimesSync(file, ahead, ahead);
    const started = await admin(`/v1/sources/${slow}/pulls`, { method: 'POST' });
    expect(started.status).toBe(202);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    appendFileSync(file, 'rt\n');
    expect(await finished(slow, started.body.pullId)).toMatchObject({ state: 'completed', filesRead: 1, rowsReceived: 2, rowsImported: 2 });
    await folded(slow, 2);
    expect((await lookup('email', 'person301@example.com')).traits).toMatchObject({ interest: 'sport' });
  });

  it("reads none of a cursor feed's folder while a file in it has not settled, so that the cursor the others move does not pass its rows", async () => {
    const folder = join(feedDir, 'partner-skewed');
    mkdirSync(folder);
    writeFileSync(join(folder, 'early.csv'), `hash,interest,updated_at\n${hash(310)},news,${at(6)}\n`);
    // Stamped an hour ahead (a writer's clock far off): it cannot settle within the pull's wait.
    const skewed = join(folder, 'skewed.csv');
    writeFileSync(skewed, `hash,interest,updated_at\n${hash(311)},sport,${at(5)}\n`);
    const hourAhead = new Date(Date.now() + 3_600_000);
    utimesSync(skewed, hourAhead, hourAhead);
    const feed = await createFeed({ name: 'Drop folder, cursor', party: 'third', feed: { folder: 'partner-skewed', schedule: YEARLY, cursorColumn: 'updated_at', mapping: { identities: { email_sha256: 'hash' }, traits: { interest: 'interest' } } } });
    const started = await admin(`/v1/sources/${feed}/pulls`, { method: 'POST' });
    expect(started.status).toBe(202);
    const refused = await waitFor('an attempt refused for the unsettled file', async () => {
      const view = (await admin(`/v1/sources/${feed}/pulls/${started.body.pullId}`)).body;
      return view.attempts?.length > 0 ? view : null;
    });
    expect(refused.state).toBe('running');
    expect(refused.attempts[0].error).toContain('skewed.csv');
    // Its clock put right, the next attempt reads both files: the row at 05:00 is not behind a cursor moved to 06:00.
    const now = new Date();
    utimesSync(skewed, new Date(now.getTime() - 60_000), new Date(now.getTime() - 60_000));
    expect(await finished(feed, started.body.pullId)).toMatchObject({ state: 'completed', filesRead: 2, rowsImported: 2, cursor: at(6) });
  });

  it("imports the rest of a drop folder when one file is refused whole (a header the mapping does not fit), lists it, and reads it again only once it changes; job markers and empty files are not read", async () => {
    const folder = join(feedDir, 'partner-d');
    mkdirSync(folder);
    writeFileSync(join(folder, 'good.csv'), `hash,interest\n${hash(200)},news\n`);
    writeFileSync(join(folder, 'bad.csv'), `email_hash,interest\n${hash(201)},sport\n`);
    writeFileSync(join(folder, '_SUCCESS'), '');
    writeFileSync(join(folder, 'empty.csv'), '');
    const dropped = await createFeed({ name: 'Drop folder, CSV', party: 'third', feed: { folder: 'partner-d', schedule: YEARLY, mapping: { identities: { email_sha256: 'hash' }, traits: { interest: 'interest' } } } });
    const first = await pull(dropped);
    expect(first).toMatchObject({ state: 'completed', rowsReceived: 1, rowsImported: 1, rowsRejected: 0 });
    expect(first.files.map((file: { name: string }) => file.name).sort()).toEqual(['bad.csv', 'good.csv']);
    expect(first.rejections).toEqual([{ file: 'bad.csv', row: 1, errors: [{ path: expect.stringContaining('mapping'), message: expect.stringContaining('"hash"') }] }]);
    expect(await pull(dropped)).toMatchObject({ state: 'completed', files: [], rowsReceived: 0 });
    // The partner sends it again, fixed.
    writeFileSync(join(folder, 'bad.csv'), `hash,interest\n${hash(201)},sport\n`);
    const fixed = await pull(dropped);
    expect(fixed).toMatchObject({ state: 'completed', rowsImported: 1, rejections: [] });
    expect(fixed.files.map((file: { name: string }) => file.name)).toEqual(['bad.csv']);
  });

  it('sets aside a drop-folder file it cannot read past some row, none of its rows imported though a chunk of them was staged, nor its cursor kept, and reads it again once it changes', async () => {
    const folder = join(feedDir, 'partner-e');
    mkdirSync(folder);
    const rows = Array.from({ length: 2_100 }, (_, i) => `${hash(1_000 + i)},news,${at(3)}`);
    writeFileSync(join(folder, 'good.csv'), `hash,interest,updated_at\n${hash(999)},sport,${at(2)}\n`);
    // More rows than a staged chunk holds, later than the good file's, one later still, then a quote that never closes.
    writeFileSync(join(folder, 'broken.csv'), `hash,interest,updated_at\n${rows.join('\n')}\n${hash(3_100)},news,${at(5)}\n${hash(3_200)},"news,${at(5)}\n`);
    const dropped = await createFeed({ name: 'Drop folder, broken', party: 'third', feed: { folder: 'partner-e', schedule: YEARLY, cursorColumn: 'updated_at', mapping: { identities: { email_sha256: 'hash' }, traits: { interest: 'interest' } } } });
    const first = await pull(dropped);
    expect(first).toMatchObject({ state: 'completed', rowsReceived: 1, rowsImported: 1, rowsRejected: 0, cursor: at(2) });
    expect(first.rejections).toEqual([{ file: 'broken.csv', row: 1, errors: [{ path: 'broken.csv row 2103', message: 'not valid CSV (CSV_QUOTE_NOT_CLOSED)' }] }]);
    expect(await pull(dropped)).toMatchObject({ state: 'completed', files: [], rowsReceived: 0 });
    // Fixed, it is read again from the cursor the good file left, not the one its refused rows reached: none is behind it.
    writeFileSync(join(folder, 'broken.csv'), `hash,interest,updated_at\n${rows.join('\n')}\n${hash(3_100)},news,${at(5)}\n`);
    expect(await pull(dropped)).toMatchObject({ state: 'completed', rowsImported: 2_101, rowsSkipped: 0, rejections: [] });
  });

  it('names what is wrong with a pull request', async () => {
    const { sourceId: events } = await newSource(api, 'plain');
    expect((await admin('/v1/sources/src_nope/pulls', { method: 'POST' })).status).toBe(404);
    const notFeed = await admin(`/v1/sources/${events}/pulls`, { method: 'POST' });
    expect(notFeed.status).toBe(409);
    expect(notFeed.body.errors).toEqual([{ path: 'kind', message: `source ${events} is of kind "events"; pulls are of sources of kind "feed"` }]);
    const backwards = await admin(`/v1/sources/${broker}/backfill`, { method: 'POST', body: { from: at(5), to: at(1) } });
    expect(backwards.status).toBe(400);
    expect(backwards.body.errors).toEqual([{ path: 'to', message: 'must not come before `from`' }]);
    const noCursor = (await admin('/v1/sources')).body.sources.find((source: { name: string }) => source.name === 'Drop folder').id;
    const uncursored = await admin(`/v1/sources/${noCursor}/backfill`, { method: 'POST', body: { from: '1', to: '2' } });
    expect(uncursored.status).toBe(409);
    expect(uncursored.body.errors).toEqual([{ path: 'feed.cursorColumn', message: `source ${noCursor} has no cursor column to take a window of` }]);
    expect((await admin(`/v1/sources/${broker}/pulls/pul_nope`)).status).toBe(404);
    expect((await admin(`/v1/sources/${broker}/pulls?limit=0`)).body.errors).toEqual([{ path: 'limit', message: expect.any(String) }]);
    expect((await call(`${api.url}/v1/sources/${broker}/pulls`, { method: 'POST' })).status).toBe(401);
  });

  it('documents the feed routes with every status', async () => {
    const doc = (await call(`${api.url}/openapi.json`)).body;
    expect(Object.keys(doc.paths['/v1/sources/{id}/pulls'].post.responses)).toEqual(expect.arrayContaining(['202', '401', '403', '404', '409']));
    expect(Object.keys(doc.paths['/v1/sources/{id}/backfill'].post.responses)).toEqual(expect.arrayContaining(['202', '400', '401', '403', '404', '409', '413']));
    expect(Object.keys(doc.paths['/v1/sources/{id}/pulls'].get.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '403', '404']));
    expect(Object.keys(doc.paths['/v1/sources/{id}/pulls/{pullId}'].get.responses)).toEqual(expect.arrayContaining(['200', '401', '403', '404']));
    expect(doc.components.schemas.SourceKind?.enum ?? doc.components.schemas.SourceStatus.properties.kind.enum).toContain('feed');
    expect(doc.components.schemas.FeedPull.properties.rowsUnmatched).toBeDefined();
  });
});
