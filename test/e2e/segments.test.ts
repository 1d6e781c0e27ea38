import { readFileSync } from 'node:fs';
import { call } from '../support/http';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';
import { scheduledSegmentRunWorkflowId, segmentRunWorkflowId, segmentScheduleId } from '../../domain/workflowIds';
import { scheduleKey, type SegmentSchedule } from '../../domain/segments';
import { SegmentRunStore } from '../../store/segmentRuns';
import { newSegmentId, SegmentStore } from '../../store/segments';
import { buildTcString } from '../unit/tcfFixture';

const daysAgo = (days: number) => new Date(Date.now() - days * 86_400_000).toISOString();

describe('segments: rules evaluated over every profile by batch runs and kept current in real time', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  const ids: Record<string, string> = {};

  const segmentsUrl = () => `${api.url}/v1/segments`;
  const create = (body: unknown) => call(segmentsUrl(), { key: api.adminKey, body });
  const get = async (id: string) => (await call(`${segmentsUrl()}/${id}`, { key: api.adminKey })).body;
  const members = async (id: string, query = '') => (await call(`${segmentsUrl()}/${id}/members${query}`, { key: api.adminKey })).body;
  /** Waits for the segment's membership to read from a completed run of its current version. */
  const settled = async (id: string) => {
    let seen: unknown = null;
    try {
      return await waitFor(`segment ${id} evaluated`, async () => {
        const segment = await get(id);
        seen = segment;
        return segment.currentRun?.version === segment.version && segment.lastRun?.state === 'completed' ? segment : null;
      });
    } catch (error) {
      // What the segment showed last says which run it waits on, and in what state.
      const runId = (seen as { lastRun?: { runId?: string } } | null)?.lastRun?.runId;
      const run = runId ? (await call(`${segmentsUrl()}/${id}/runs/${runId}`, { key: api.adminKey })).body : null;
      throw new Error(`${(error as Error).message}: last seen ${JSON.stringify(seen)}, its last run ${JSON.stringify(run)}`);
    }
  };
  const membersOf = async (id: string) => (await members(id, '?limit=100')).members.sort();

  beforeAll(async () => {
    platform = await startPlatform('segments');
    ({ api } = platform);
    source = await newSource(api, 'shop');
    const consent = buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [] });
    await source.send([
      // ann: two purchases this month, gold plan, email, consent to purposes 1, 3, 4
      { id: 'a1', type: 'purchase', timestamp: daysAgo(3), identities: { cookie_id: 'ann', email: 'ann@example.com' }, traits: { plan: 'gold', age: 34 }, properties: { category: 'shoes', total: 120 }, consent: { tcf: consent } },
      { id: 'a2', type: 'purchase', timestamp: daysAgo(10), identities: { cookie_id: 'ann' }, properties: { category: 'books', total: 15 } },
      // bob: one purchase long ago, silver plan, last seen 40 days ago
      { id: 'b1', type: 'purchase', timestamp: daysAgo(40), identities: { cookie_id: 'bob' }, traits: { plan: 'silver', age: 51 }, properties: { category: 'shoes', total: 80 } },
      // cy: only page views, a maid, recently
      { id: 'c1', type: 'page_view', timestamp: daysAgo(1), identities: { cookie_id: 'cy', maid: '6d92078a-8246-4ba4-ae5b-76104861e7dc' }, traits: { interests: ['running', 'chess'] } },
    ]);
    await source.folded(4);
    for (const name of ['ann', 'bob', 'cy']) ids[name] = (await source.lookup('cookie_id', name)).body.id;
  });
  afterAll(() => platform.stop());

  it('evaluates a new segment over every existing profile (backfill), then keeps it current as events arrive', async () => {
    const created = await create({ name: 'Repeat buyers', rule: { event: 'purchase', count: { op: 'gte', value: 2 }, within: 'P30D' }, taxonomyPath: 'Commerce/Buyers' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: 'Repeat buyers', version: 1, size: null, lastRun: { state: 'running' } });
    const id = created.body.id;
    const segment = await settled(id);
    expect(segment.size).toBe(1);
    expect(await membersOf(id)).toEqual([ids.ann]);

    // Real time: bob buys twice now; the writer that folds his events records him entering.
    await source.send([
      { id: 'b2', type: 'purchase', timestamp: daysAgo(0), identities: { cookie_id: 'bob' } },
      { id: 'b3', type: 'purchase', timestamp: daysAgo(0), identities: { cookie_id: 'bob' } },
    ]);
    await waitFor('bob in the segment', async () => (await membersOf(id)).includes(ids.bob));
    expect(await membersOf(id)).toEqual([ids.ann, ids.bob].sort());
    expect((await get(id)).size).toBe(2);
    expect((await call(`${api.url}/v1/profiles/${ids.bob}`, { key: api.adminKey })).body.segments).toContain(id);
    const history = (await call(`${segmentsUrl()}/${id}/history`, { key: api.adminKey })).body.days;
    expect(history.reduce((sum: number, day: any) => sum + day.entered, 0)).toBe(2); // ann by the backfill, bob in real time

    // A new run agrees with what real time built.
    const { runId } = (await call(`${segmentsUrl()}/${id}/runs`, { key: api.adminKey, method: 'POST' })).body;
    const run = await waitFor('run done', async () => {
      const view = (await call(`${segmentsUrl()}/${id}/runs/${runId}`, { key: api.adminKey })).body;
      return view.state === 'completed' ? view : null;
    });
    expect(run).toMatchObject({ members: 2, evaluated: 3 });
    expect(await membersOf(id)).toEqual([ids.ann, ids.bob].sort());
  });

  it("counts no one a run's pass read before a real-time change of theirs as entering or leaving: the change counts them once, and its state stands", async () => {
    const id = (await create({ name: 'Gold now', rule: { trait: 'plan', op: 'eq', value: 'gold' } })).body.id;
    await settled(id);
    expect(await membersOf(id)).toEqual([ids.ann]);
    // Folds record ann leaving, and cy and a newcomer entering, after the next run begins. The run's
    // pass read ann's and cy's documents before those folds wrote them, and found none of the
    // newcomer's yet: its pass holds ann in, and cy and the newcomer out.
    const runs = new SegmentRunStore(platform.store);
    await runs.recordChanges({ _id: `race:${id}`, at: new Date(Date.now() + 60_000), changes: { [id]: { entered: [ids.cy, 'prf_newcomer'], exited: [ids.ann], version: 1 } } });
    const { runId } = (await call(`${segmentsUrl()}/${id}/runs`, { key: api.adminKey, method: 'POST' })).body;
    const run = await waitFor('run done', async () => {
      const view = (await call(`${segmentsUrl()}/${id}/runs/${runId}`, { key: api.adminKey })).body;
      return view.state === 'completed' ? view : null;
    });
    expect(run).toMatchObject({ members: 1, entered: 0, exited: 0 });
    expect(await membersOf(id)).toEqual([ids.cy, 'prf_newcomer'].sort());
    const days = (await call(`${segmentsUrl()}/${id}/history`, { key: api.adminKey })).body.days;
    const total = (field: 'entered' | 'exited') => days.reduce((sum: number, day: Record<string, number>) => sum + day[field], 0);
    // ann entered by the first run and left in real time; cy and the newcomer entered in real time.
    expect({ entered: total('entered'), exited: total('exited') }).toEqual({ entered: 3, exited: 1 });
  });

  it("counts no one its first run finds where real-time changes put them before it as entering, nor anyone as leaving", async () => {
    // A segment whose first run has not begun, and a fold that put ann in it meanwhile.
    const id = newSegmentId();
    const now = new Date();
    const rule = { trait: 'plan', op: 'eq', value: 'gold' };
    await new SegmentStore(platform.store).create({ _id: id, name: 'Gold first', description: null, taxonomyPath: null, ruleJson: JSON.stringify(rule), schedule: null, version: 1, createdAt: now, updatedAt: now, current: null, lastRun: null });
    await new SegmentRunStore(platform.store).recordChanges({ _id: `early:${id}`, at: new Date(now.getTime() - 60_000), changes: { [id]: { entered: [ids.ann], exited: [], version: 1 } } });
    const { runId } = (await call(`${segmentsUrl()}/${id}/runs`, { key: api.adminKey, method: 'POST' })).body;
    const run = await waitFor('run done', async () => {
      const view = (await call(`${segmentsUrl()}/${id}/runs/${runId}`, { key: api.adminKey })).body;
      return view.state === 'completed' ? view : null;
    });
    expect(run).toMatchObject({ members: 1, entered: 0, exited: 0 });
    expect(await membersOf(id)).toEqual([ids.ann]);
  });

  it('evaluates every rule kind with one meaning', async () => {
    const cases: Array<[string, unknown, string[]]> = [
      ['trait eq', { trait: 'plan', op: 'eq', value: 'gold' }, ['ann']],
      ['trait neq (missing counts as not equal)', { trait: 'plan', op: 'neq', value: 'gold' }, ['bob', 'cy']],
      ['trait in', { trait: 'plan', op: 'in', value: ['gold', 'silver'] }, ['ann', 'bob']],
      ['trait gt', { trait: 'age', op: 'gt', value: 40 }, ['bob']],
      ['trait lte', { trait: 'age', op: 'lte', value: 34 }, ['ann']],
      ['trait exists', { trait: 'age', op: 'exists' }, ['ann', 'bob']],
      ['trait contains (list)', { trait: 'interests', op: 'contains', value: 'chess' }, ['cy']],
      ['event with a property filter', { event: 'purchase', where: [{ property: 'category', op: 'eq', value: 'shoes' }] }, ['ann', 'bob']],
      ['event filtered within a window', { event: 'purchase', within: 'P30D', where: [{ property: 'total', op: 'gte', value: 100 }] }, ['ann']],
      ['event count eq', { event: 'purchase', count: { op: 'eq', value: 0 } }, ['cy']],
      ['lastSeen within', { lastSeen: { within: 'P2D' } }, ['bob', 'cy']],
      ['lastSeen notWithin', { lastSeen: { notWithin: 'P2D' } }, ['ann']],
      ['identity', { identity: 'email' }, ['ann']],
      ['identity maid', { identity: 'maid' }, ['cy']],
      ['consent', { consent: { purpose: 4 } }, ['ann']],
      ['not', { not: { consent: { purpose: 4 } } }, ['bob', 'cy']],
      ['any', { any: [{ identity: 'maid' }, { trait: 'plan', op: 'eq', value: 'silver' }] }, ['bob', 'cy']],
    ];
    const made = [];
    for (const [name, rule] of cases) made.push((await create({ name, rule })).body.id);
    for (const id of made) await settled(id);
    for (const [index, [name, , expected]] of cases.entries()) {
      expect({ name, members: await membersOf(made[index]) }).toEqual({ name, members: expected.map((who) => ids[who]).sort() });
    }
    // Segment of segment: members of "trait in" who are not in "trait eq".
    const nested = (await create({ name: 'silver only', rule: { all: [{ segment: made[2] }, { not: { segment: made[0] } }] } })).body.id;
    await settled(nested);
    expect(await membersOf(nested)).toEqual([ids.bob]);
    const profile = (await call(`${api.url}/v1/profiles/${ids.bob}`, { key: api.adminKey })).body;
    expect(profile.segments).toEqual(expect.arrayContaining([nested, made[2]]));
    // A segment others refer to cannot go.
    const refused = await call(`${segmentsUrl()}/${made[2]}`, { key: api.adminKey, method: 'DELETE' });
    expect(refused.status).toBe(409);
    expect(refused.body.errors[0].message).toContain(nested);
  });

  it('never leaves a rule naming a deleted segment: a create or edit racing its DELETE is undone, 409 naming the reference', async () => {
    const target = (await create({ name: 'soon gone', rule: { identity: 'maid' } })).body.id;
    const editable = (await create({ name: 'editable', rule: { identity: 'email' } })).body.id;
    await settled(editable);
    const before = await get(editable);
    // A DELETE of the target has marked it and is looking for segments that refer to it.
    const store = new SegmentStore(platform.store);
    const mark = await store.markDeleting(target);
    // Another DELETE of it, refused meanwhile, takes only its own mark away.
    await store.unmarkDeleting(await store.markDeleting(target));
    const made = await create({ name: 'everyone but the gone', rule: { all: [{ identity: 'email' }, { not: { segment: target } }] } });
    expect({ status: made.status, errors: made.body.errors }).toEqual({ status: 409, errors: [{ path: 'rule.all[1].not.segment', message: `segment ${target} was deleted meanwhile` }] });
    expect((await call(`${segmentsUrl()}?limit=1000`, { key: api.adminKey })).body.segments.map((segment: { name: string }) => segment.name)).not.toContain('everyone but the gone');
    const edited = await call(`${segmentsUrl()}/${editable}`, { key: api.adminKey, method: 'PATCH', body: { name: 'renamed', rule: { not: { segment: target } } } });
    expect({ status: edited.status, paths: edited.body.errors.map((error: { path: string }) => error.path) }).toEqual({ status: 409, paths: ['rule.not.segment'] });
    // Put back whole (the name too), and evaluated again as it was.
    const after = await settled(editable);
    expect({ name: after.name, rule: after.rule, version: after.version }).toEqual({ name: before.name, rule: before.rule, version: before.version + 2 });
    expect(await membersOf(editable)).toEqual([ids.ann]);
    // The same create sent again (its answer lost) while a DELETE of the target is under way: the first
    // request's segment stands — the DELETE may yet find it — and the client is told to send it again.
    await store.unmarkDeleting(mark);
    const keyed = (body: unknown) => call(segmentsUrl(), { key: api.adminKey, body, headers: { 'idempotency-key': 'create-keyed-referrer' } });
    const referrer = { name: 'keyed referrer', rule: { segment: target } };
    const first = await keyed(referrer);
    expect(first.status).toBe(201);
    const during = await store.markDeleting(target);
    const again = await keyed(referrer);
    expect({ status: again.status, type: again.body.type }).toEqual({ status: 503, type: '/problems/segment-deleting' });
    expect((await get(first.body.id)).rule).toEqual({ segment: target });
    await store.unmarkDeleting(during);
    expect((await keyed(referrer)).body.id).toBe(first.body.id);
    // A DELETE refused because a segment refers to it leaves no mark: references to it are made again.
    const user = (await create({ name: 'uses it', rule: { segment: target } })).body.id;
    expect((await call(`${segmentsUrl()}/${target}`, { key: api.adminKey, method: 'DELETE' })).status).toBe(409);
    expect((await create({ name: 'uses it too', rule: { not: { segment: target } } })).status).toBe(201);
    expect(user).toMatch(/^seg_/);
  });

  it('re-evaluates every profile when a rule changes, and pages through members', async () => {
    const id = (await create({ name: 'Gold', rule: { trait: 'plan', op: 'eq', value: 'gold' } })).body.id;
    await settled(id);
    expect(await membersOf(id)).toEqual([ids.ann]);
    const patched = await call(`${segmentsUrl()}/${id}`, { key: api.adminKey, method: 'PATCH', body: { rule: { trait: 'plan', op: 'exists' } } });
    expect(patched.status).toBe(200);
    expect(patched.body.version).toBe(2);
    await settled(id);
    expect(await membersOf(id)).toEqual([ids.ann, ids.bob].sort());
    const first = await members(id, '?limit=1');
    expect(first.members).toHaveLength(1);
    const second = await members(id, `?limit=1&cursor=${encodeURIComponent(first.next)}`);
    expect([...first.members, ...second.members].sort()).toEqual([ids.ann, ids.bob].sort());
    expect(second.next).toBeNull();
  });

  it('lists the segments oldest first, all at once or a page at a time', async () => {
    const list = async (query = '') => call(`${segmentsUrl()}${query}`, { key: api.adminKey });
    const all = (await list()).body as { segments: Array<{ id: string; createdAt: string }>; next: string | null };
    expect(all.next).toBeNull();
    expect(all.segments.length).toBeGreaterThanOrEqual(3);
    const created = all.segments.map((segment) => segment.createdAt);
    expect([...created].sort()).toEqual(created);
    const paged: string[] = [];
    for (let cursor: string | null = null, pages = 0; pages === 0 || cursor; pages++) {
      const page: { segments: Array<{ id: string }>; next: string | null } = (await list(`?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).body;
      expect(page.segments.length).toBeLessThanOrEqual(2);
      paged.push(...page.segments.map((segment) => segment.id));
      cursor = page.next;
    }
    expect(paged).toEqual(all.segments.map((segment) => segment.id));
    const bad = await list('?limit=0&cursor=nope');
    expect(bad.status).toBe(400);
    expect(bad.body.errors.map((error: { path: string }) => error.path).sort()).toEqual(['cursor', 'limit']);
  });

  it('estimates a rule from the sample the last run kept, with bounds around the true count', async () => {
    const estimate = await call(`${segmentsUrl()}/estimate`, { key: api.adminKey, body: { rule: { trait: 'plan', op: 'exists' } } });
    expect(estimate.status).toBe(200);
    expect(estimate.body).toMatchObject({ estimate: 2, sampled: 3, population: 3 });
    expect(estimate.body.low).toBeLessThanOrEqual(2);
    expect(estimate.body.high).toBeGreaterThanOrEqual(2);
  });

  it('refuses invalid rules with the path of each problem', async () => {
    const problems = async (rule: unknown) => {
      const response = await create({ name: 'bad', rule });
      expect(response.status).toBe(400);
      expect(response.contentType).toContain('application/problem+json');
      return response.body.errors;
    };
    expect(await problems({ all: [{ trait: 'x', op: 'eq', value: 1 }, { event: 'buy', within: 'P120D' }] })).toEqual([
      { path: 'rule.all[1].within', message: expect.stringContaining('90 days') },
    ]);
    expect((await problems({ any: [{ trait: 'x', op: 'eq', value: 1, colour: 'red' }] }))[0]).toMatchObject({ path: 'rule.any[0]', message: expect.stringContaining('colour') });
    expect((await problems({ trait: 'x', op: 'in', value: 3 }))[0]).toMatchObject({ path: 'rule.value' });
    expect((await problems({ wat: 1 }))[0]).toMatchObject({ path: 'rule', message: expect.stringContaining('must have one of') });
    // A segment that does not exist is not found, named by where the rule refers to it.
    const missing = await create({ name: 'bad', rule: { any: [{ identity: 'email' }, { segment: 'seg_missing' }] } });
    expect({ status: missing.status, errors: missing.body.errors }).toEqual({ status: 404, errors: [{ path: 'rule.any[1].segment', message: 'no segment seg_missing' }] });
    // A cycle: a refers to b, then b is changed to refer to a.
    const a = (await create({ name: 'a', rule: { identity: 'email' } })).body.id;
    const b = (await create({ name: 'b', rule: { segment: a } })).body.id;
    const cycle = await call(`${segmentsUrl()}/${a}`, { key: api.adminKey, method: 'PATCH', body: { rule: { segment: b } } });
    expect(cycle.status).toBe(409);
    expect(cycle.body.title).toContain('refer to each other');
  });

  const scheduleHandle = (schedule: SegmentSchedule) => platform.temporal.schedule.getHandle(segmentScheduleId(platform.store.db.databaseName, scheduleKey(schedule)));

  it('keeps a Temporal Schedule of batch runs for each schedule segments have, shared by them, and removes it when the last one leaves it', async () => {
    const id = (await create({ name: 'Lapsed', rule: { lastSeen: { notWithin: 'P30D' } }, schedule: { every: 'PT6H' } })).body.id;
    const handle = scheduleHandle({ every: 'PT6H' });
    const described = await handle.describe();
    expect(described.spec.intervals?.[0].every).toBe(6 * 3_600_000);
    expect(described.policies.overlap).toBe('SKIP');
    // A scheduled run evaluates every segment in one pass, as a run of its own id.
    const before = (await settled(id)).lastRun.runId;
    await handle.trigger();
    const scheduled = await waitFor('the scheduled run', async () => {
      const segment = await get(id);
      return segment.lastRun.runId !== before && segment.lastRun.state === 'completed' ? segment : null;
    });
    expect(scheduled.currentRun.runId).toBe(scheduled.lastRun.runId);
    await platform.temporal.workflow.getHandle(segmentRunWorkflowId(platform.store.db.databaseName, scheduled.lastRun.runId)).result();
    const cron = await call(`${segmentsUrl()}/${id}`, { key: api.adminKey, method: 'PATCH', body: { schedule: { cron: '0 3 * * *' } } });
    expect(cron.body.schedule).toEqual({ cron: '0 3 * * *' });
    const cronHandle = scheduleHandle({ cron: '0 3 * * *' });
    expect((await cronHandle.describe()).spec.calendars).toEqual([expect.objectContaining({ hour: [{ start: 3, end: 3, step: 1 }] })]);
    // No segment has the six-hourly schedule any more: it is gone.
    await expect(handle.describe()).rejects.toThrow();
    // A second segment with the same schedule shares it: it stays while one of them has it.
    const other = (await create({ name: 'Lapsed too', rule: { lastSeen: { notWithin: 'P60D' } }, schedule: { cron: '0 3 * * *' } })).body.id;
    await call(`${segmentsUrl()}/${id}`, { key: api.adminKey, method: 'PATCH', body: { schedule: null } });
    expect((await cronHandle.describe()).spec.calendars).toHaveLength(1);
    expect((await call(`${segmentsUrl()}/${other}`, { key: api.adminKey, method: 'DELETE' })).status).toBe(204);
    await expect(cronHandle.describe()).rejects.toThrow();
    const bad = await call(`${segmentsUrl()}/${id}`, { key: api.adminKey, method: 'PATCH', body: { schedule: { every: 'soon' } } });
    expect(bad.status).toBe(400);
    expect(bad.body.errors[0].path).toMatch(/^schedule/);
    const badCron = await call(`${segmentsUrl()}/${id}`, { key: api.adminKey, method: 'PATCH', body: { schedule: { cron: '99 * * * *' } } });
    expect(badCron.status).toBe(400);
    expect(badCron.body.errors[0]).toMatchObject({ path: expect.stringMatching(/^schedule/), message: expect.stringContaining('0-59') });
  });

  it('runs the segments whose schedules fire at the same time in one run: one shared schedule, and one run of that time for schedules that coincide', async () => {
    // The next minute at least 30 s away, so every schedule exists before it comes.
    const due = new Date(Math.ceil((Date.now() + 30_000) / 60_000) * 60_000);
    const hourly = { cron: `${due.getUTCMinutes()} * * * *` };
    // Ten segments on one cron share one schedule; two more, due at the same times by a cron spelled otherwise, share another.
    const sameTimes = { cron: `${due.getUTCMinutes()} 0-23 * * *` };
    const scheduled = [];
    for (let n = 0; n < 12; n++) {
      const created = await create({ name: `Hourly ${n}`, rule: { trait: 'plan', op: 'eq', value: `plan-${n}` }, schedule: n < 10 ? hourly : sameTimes });
      expect(created.status).toBe(201);
      scheduled.push(created.body.id as string);
    }
    expect(Date.now()).toBeLessThan(due.getTime());
    for (const id of scheduled) await settled(id);

    // Both schedules started their workflow for that minute; the one run of that minute evaluated them all.
    const handles = [scheduleHandle(hourly), scheduleHandle(sameTimes)];
    const fired = await waitFor(
      'both schedules fired',
      async () => {
        const actions = await Promise.all(handles.map(async (handle) => (await handle.describe()).info.recentActions.find((action) => action.scheduledAt.getTime() === due.getTime())));
        return actions.every((action) => action) ? actions : null;
      },
      120_000,
    );
    const results = await Promise.all(fired.map((action) => platform.temporal.workflow.getHandle(action!.action.workflow.workflowId, action!.action.workflow.firstExecutionRunId).result()));
    const runIds = new Set(results.map((result) => result.runId).filter((runId) => runId !== null));
    expect(runIds.size).toBe(1);
    const [runId] = [...runIds];
    const meeting = await platform.temporal.workflow.getHandle(scheduledSegmentRunWorkflowId(platform.store.db.databaseName, due)).result();
    expect(meeting.runId).toBe(runId);
    for (const id of scheduled) expect((await get(id)).lastRun).toMatchObject({ runId, state: 'completed' });
    for (const id of scheduled) expect((await call(`${segmentsUrl()}/${id}`, { key: api.adminKey, method: 'DELETE' })).status).toBe(204);
    for (const handle of handles) await expect(handle.describe()).rejects.toThrow();
  }, 180_000);

  it('shows segments in the taxonomy tree beside imported categories', async () => {
    const iab = readFileSync(`${__dirname}/../fixtures/iab-audience-taxonomy-1.1-excerpt.tsv`, 'utf8');
    const imported = await call(`${api.url}/v1/taxonomy/imports?format=iab`, { key: api.adminKey, rawBody: iab, contentType: 'text/tab-separated-values' });
    expect(imported.status).toBe(201);
    expect(imported.body).toMatchObject({ taxonomy: 'iab-audience-1.1', nodes: 40 });
    const provider = await call(`${api.url}/v1/taxonomy/imports?format=provider&name=acme`, {
      key: api.adminKey,
      rawBody: 'id,parent_id,name\nauto,,Auto intenders\nev,auto,Electric vehicles\nev,auto,Twice\n',
      contentType: 'text/csv',
    });
    // Refused for its rows: nothing of it kept, each problem named.
    expect(provider.status).toBe(422);
    expect(provider.body).toMatchObject({ type: '/problems/taxonomy-file-refused', errors: [expect.objectContaining({ path: 'row 4.id' })] });
    const tree = (await call(`${api.url}/v1/taxonomy`, { key: api.adminKey })).body;
    expect(tree.children.some((node: any) => node.taxonomy === 'acme')).toBe(false);
    const iabBranch = tree.children.find((node: any) => node.taxonomy === 'iab-audience-1.1' && node.kind === 'folder');
    const demographic = iabBranch.children.find((node: any) => node.name === 'Demographic');
    expect(demographic).toMatchObject({ kind: 'category', id: '1' });
    expect(demographic.children.find((node: any) => node.name === 'Age Range').children.map((node: any) => node.name)).toContain('18-20');
    const commerce = tree.children.find((node: any) => node.kind === 'folder' && node.name === 'Commerce');
    expect(commerce.children[0]).toMatchObject({ kind: 'folder', name: 'Buyers', children: [expect.objectContaining({ kind: 'segment', name: 'Repeat buyers' })] });
  });
});
