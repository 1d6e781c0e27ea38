import { ScheduleNotFoundError } from '@temporalio/client';
import { lookalikeScheduleId, lookalikeWorkflowId } from '../../domain/workflowIds';
import { extensionSegmentId } from '../../activities/lookalike';
import { LookalikeRunStore } from '../../store/lookalikeRuns';
import { SegmentStore } from '../../store/segments';
import { call } from '../support/http';
import { seededRandom } from '../support/random';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';
import { newSource, type SourceClient } from '../support/sourceClient';

const PEOPLE = 1000;
const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3_600_000).toISOString();

/**
 * Planted: every fourth person bought gear (the seed). 90% of buyers read the alpine magazine against
 * 5% of the others (an AUC near 0.92 for a model that finds it) — a signal the model may learn, since
 * the seed is defined by the purchase, not the magazine. `lucky` is a coin flip independent of
 * everything: a seed defined by it has nothing to learn.
 */
function plantedEvents(): unknown[] {
  const random = seededRandom(7);
  const events: unknown[] = [];
  for (let i = 0; i < PEOPLE; i++) {
    const buyer = i % 4 === 0;
    const alpine = buyer ? i % 40 !== 0 : i % 20 === 1;
    const traits = { region: ['north', 'south', 'east'][i % 3], lucky: random() < 0.5, ...(alpine && { magazine: 'alpine' }) };
    events.push({ id: `v${i}`, type: 'page_view', timestamp: hoursAgo(3), identities: { cookie_id: `ck-${i}` }, traits });
    if (buyer) events.push({ id: `g${i}`, type: 'gear_purchase', timestamp: hoursAgo(2), identities: { cookie_id: `ck-${i}` } });
  }
  return events;
}

describe('lookalike: a model trained on a seed against the base, measured on a holdout, extending the seed as a segment', () => {
  let platform: RunningPlatform;
  let api: RunningApi;
  let source: SourceClient;
  const seeds: Record<'buyers' | 'lucky', string> = { buyers: '', lucky: '' };
  const admin = (path: string, options: { method?: string; body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const settled = (id: string) => waitFor(`segment ${id} evaluated`, async () => ((await admin(`/v1/segments/${id}`)).body.lastRun?.state === 'completed' ? (await admin(`/v1/segments/${id}`)).body : null), 120_000);
  const lookalike = async (seed: string, body: unknown) => {
    const started = await admin(`/v1/segments/${seed}/lookalike`, { body });
    expect(started.status).toBe(202);
    return waitFor(
      `lookalike ${started.body.runId}`,
      async () => {
        const view = (await admin(`/v1/segments/${seed}/lookalike/${started.body.runId}`)).body;
        return view.state === 'running' ? null : view;
      },
      120_000,
    );
  };

  beforeAll(async () => {
    platform = await startPlatform('lookalike');
    ({ api } = platform);
    source = await newSource(api, 'shop');
    const events = plantedEvents();
    for (let start = 0; start < events.length; start += 100) await source.send(events.slice(start, start + 100));
    await source.folded(events.length);
    seeds.buyers = (await admin('/v1/segments', { body: { name: 'Gear buyers', rule: { event: 'gear_purchase' } } })).body.id;
    seeds.lucky = (await admin('/v1/segments', { body: { name: 'Lucky', rule: { trait: 'lucky', op: 'eq', value: true } } })).body.id;
    await settled(seeds.buyers);
    await settled(seeds.lucky);
  }, 180_000);
  afterAll(() => platform.stop());

  it('recovers a planted signal (holdout AUC ≥ 0.8) without reading the seed’s own definition, and extends it as an ordinary segment', async () => {
    const run = await lookalike(seeds.buyers, { reach: 100 });
    expect(run).toMatchObject({ state: 'completed', seedId: seeds.buyers, base: 'all', error: null });
    expect(run.auc).toBeGreaterThanOrEqual(0.8);
    expect(run.holdoutSize).toBeGreaterThan(100);
    expect(run.excluded).toEqual(expect.arrayContaining(['event:gear_purchase', 'recent:gear_purchase']));
    expect(run.topFeatures[0]).toMatchObject({ feature: 'trait:magazine="alpine"' });
    expect(run.topFeatures[0].weight).toBeGreaterThan(0);
    expect(run.topFeatures.some((feature: { feature: string }) => feature.feature.includes('gear_purchase'))).toBe(false);
    // The 50 alpine readers outside the seed score alike and best: the 100th best is below them.
    expect(run.reach).toBeGreaterThanOrEqual(100);

    // The extension is a segment like any other: its run evaluates the model, and agrees with the training's count.
    const extension = await settled(run.segmentId);
    expect(extension.size).toBe(run.reach);
    const members: string[] = (await admin(`/v1/segments/${run.segmentId}/members?limit=1000`)).body.members;
    const seedMembers = new Set<string>((await admin(`/v1/segments/${seeds.buyers}/members?limit=1000`)).body.members);
    expect(members.filter((id) => seedMembers.has(id))).toEqual([]);
    const alpineOutsideSeed = [];
    for (let i = 1; i < PEOPLE; i += 20) alpineOutsideSeed.push((await source.lookup('cookie_id', `ck-${i}`)).body.id);
    expect(members).toEqual(expect.arrayContaining(alpineOutsideSeed));
  });

  it('re-trains on its schedule, replacing the extension’s model in place, until stopped', async () => {
    const run = await lookalike(seeds.buyers, { reach: 50, retrain: { every: 'P1D' } });
    expect(run).toMatchObject({ state: 'completed', retrain: { every: 'P1D' }, retrainOf: null, latestRetrain: null });
    const before = await settled(run.segmentId);
    const schedule = platform.temporal.schedule.getHandle(lookalikeScheduleId(platform.store.db.databaseName, run.runId));
    expect((await schedule.describe()).action).toMatchObject({ type: 'startWorkflow', workflowType: 'lookalikeRetrain' });

    // A firing now rather than tomorrow: a new run, whose model the same segment now holds and is evaluated by.
    await schedule.trigger();
    const retrained = await waitFor('the re-train', async () => {
      const latest = (await admin(`/v1/segments/${seeds.buyers}/lookalike/${run.runId}`)).body.latestRetrain;
      return latest ? (await admin(`/v1/segments/${seeds.buyers}/lookalike/${latest}`)).body : null;
    }, 120_000);
    expect(retrained).toMatchObject({ state: 'completed', retrainOf: run.runId, segmentId: run.segmentId, retrain: null });
    expect(retrained.runId).not.toBe(run.runId);
    expect(retrained.topFeatures[0]).toMatchObject({ feature: 'trait:magazine="alpine"' });
    const after = await waitFor('the extension re-evaluated', async () => {
      const view = (await admin(`/v1/segments/${run.segmentId}`)).body;
      return view.version > before.version && view.lastRun?.state === 'completed' ? view : null;
    }, 120_000);
    expect(after.description).toContain(retrained.runId);
    expect(after.size).toBe(retrained.reach);

    const stopped = await admin(`/v1/segments/${seeds.buyers}/lookalike/${run.runId}/retrain`, { method: 'DELETE' });
    expect(stopped.status).toBe(204);
    await expect(schedule.describe()).rejects.toBeInstanceOf(ScheduleNotFoundError);
    expect((await admin(`/v1/segments/${seeds.buyers}/lookalike/${run.runId}`)).body.retrain).toBeNull();
  });

  it('keeps a schedule stopped while its run trained: the run’s end writes only what it found', async () => {
    const runs = new LookalikeRunStore(platform.store);
    const at = new Date();
    await runs.create({ _id: 'lal_stopped_meanwhile', seedId: seeds.buyers, base: 'all', reach: 10, accuracy: null, state: 'running', auc: null, holdoutSize: 0, trainingSize: 0, threshold: null, reachFound: null, segmentId: null, topFeatures: [], excluded: [], error: null, retrain: { every: 'P1D' }, startedAt: at, finishedAt: null });
    expect((await admin(`/v1/segments/${seeds.buyers}/lookalike/lal_stopped_meanwhile/retrain`, { method: 'DELETE' })).status).toBe(204);
    await runs.saveOutcome('lal_stopped_meanwhile', { state: 'failed', error: 'the seed has too few members', finishedAt: new Date() });
    expect((await admin(`/v1/segments/${seeds.buyers}/lookalike/lal_stopped_meanwhile`)).body).toMatchObject({ state: 'failed', error: 'the seed has too few members', retrain: null });
  });

  it('finds nothing to learn in a seed with no signal (AUC near 0.5)', async () => {
    const run = await lookalike(seeds.lucky, { accuracy: 0.9 });
    expect(run.state).toBe('completed');
    expect(run.excluded).toEqual(['trait:lucky=']);
    expect(run.auc).toBeGreaterThan(0.35);
    expect(run.auc).toBeLessThan(0.65);
    expect(run.threshold).toBe(0.9);
  });

  it('reads membership of other segments (taxonomy nodes) as features, never of one defined as the seed is', async () => {
    const alpine = (await admin('/v1/segments', { body: { name: 'Alpine readers', taxonomyPath: 'Interests/Outdoors', rule: { trait: 'magazine', op: 'eq', value: 'alpine' } } })).body.id;
    const alsoBuyers = (await admin('/v1/segments', { body: { name: 'Gear buyers again', rule: { event: 'gear_purchase', count: { op: 'gte', value: 1 } } } })).body.id;
    await settled(alpine);
    await settled(alsoBuyers);
    const run = await lookalike(seeds.buyers, { reach: 60 });
    expect(run.state).toBe('completed');
    const features = run.topFeatures.map((feature: { feature: string }) => feature.feature);
    const weightOf = (name: string) => run.topFeatures.find((feature: { feature: string }) => feature.feature === name)?.weight ?? 0;
    // The alpine readers' segment carries the planted signal; a segment of the seed's own definition is never read.
    expect(weightOf(`segment:${alpine}`) + weightOf('trait:magazine="alpine"')).toBeGreaterThan(2);
    expect(features).toContain(`segment:${alpine}`);
    expect(features).not.toContain(`segment:${alsoBuyers}`);
    expect(run.auc).toBeLessThan(0.99);
    // The extension's rule reads the alpine segment's membership: it is evaluated like any rule that refers to a segment.
    const extension = await settled(run.segmentId);
    expect(extension.size).toBe(run.reach);
    expect(JSON.stringify(extension.rule)).toContain(`segment:${alpine}`);
  });

  it('fails at its first attempt, naming why, when the seed has no one to learn from', async () => {
    const nobody = (await admin('/v1/segments', { body: { name: 'Nobody', rule: { trait: 'region', op: 'eq', value: 'nowhere' } } })).body.id;
    await settled(nobody);
    const run = await lookalike(nobody, { reach: 10 });
    expect(run).toMatchObject({ state: 'failed', segmentId: null });
    expect(run.error).toContain('the seed has no members in the base');
    // Training again would read the same profiles: no retry is spent on it.
    const handle = platform.temporal.workflow.getHandle(lookalikeWorkflowId(platform.store.db.databaseName, run.runId));
    // The run's record is failed by the second activity, whose start the history records only once it has returned.
    await handle.result().catch(() => undefined);
    const history = await handle.fetchHistory();
    // Two activities, each on its first attempt: the training, then recording its failure.
    const started = (history.events ?? []).filter((event) => event.activityTaskStartedEventAttributes);
    expect(started.map((event) => event.activityTaskStartedEventAttributes?.attempt)).toEqual([1, 1]);
  });

  it('makes no extension when its seed is deleted while the model trains: a rule naming the deleted seed would be left', async () => {
    const doomed = (await admin('/v1/segments', { body: { name: 'Gear buyers, soon deleted', rule: { event: 'gear_purchase' } } })).body.id;
    await settled(doomed);
    // The seed's DELETE has marked it and found no segment referring to it yet, as when it comes in while the model trains.
    await new SegmentStore(platform.store).markDeleting(doomed);
    const run = await lookalike(doomed, { reach: 50 });
    expect(run).toMatchObject({ state: 'failed', segmentId: null });
    expect(run.error).toContain(`segment ${doomed} was deleted while the model trained`);
    expect((await admin(`/v1/segments/${extensionSegmentId(run.runId)}`)).status).toBe(404);
  });

  it('fails, naming why, when the seed is too small to learn from (a model of it would take everyone)', async () => {
    // Buyers in the north who do not read the alpine magazine: every 120th person, 9 of them.
    const rule = { all: [{ event: 'gear_purchase' }, { trait: 'region', op: 'eq', value: 'north' }, { not: { trait: 'magazine', op: 'eq', value: 'alpine' } }] };
    const few = (await admin('/v1/segments', { body: { name: 'Northern buyers, not alpine', rule } })).body.id;
    expect((await settled(few)).size).toBe(9);
    const run = await lookalike(few, { reach: 50 });
    expect(run).toMatchObject({ state: 'failed', segmentId: null });
    expect(run.error).toContain('the seed has 9 members in the base: a model is trained on 10 at least');
  });

  it('answers a request sent again under its Idempotency-Key with the run the first started, trained once; another request under the key is a 409', async () => {
    const under = (body: unknown) => call(`${api.url}/v1/segments/${seeds.lucky}/lookalike`, { key: api.adminKey, body, headers: { 'idempotency-key': 'lookalike-sync-1' } });
    const first = await under({ reach: 50 });
    expect(first.status).toBe(202);
    expect(await under({ reach: 50 })).toMatchObject({ status: 202, body: { runId: first.body.runId } });
    const ended = await waitFor('the run to end', async () => {
      const view = (await admin(`/v1/segments/${seeds.lucky}/lookalike/${first.body.runId}`)).body;
      return view.state === 'running' ? null : view;
    }, 120_000);
    const workflow = platform.temporal.workflow.getHandle(lookalikeWorkflowId(platform.store.db.databaseName, first.body.runId));
    const trained = (await workflow.describe()).runId;
    // Later than a second, and after the run ended: the same run, not trained again.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect(await under({ reach: 50 })).toMatchObject({ status: 202, body: { runId: first.body.runId } });
    expect((await workflow.describe()).runId).toBe(trained);
    expect((await admin(`/v1/segments/${seeds.lucky}/lookalike/${first.body.runId}`)).body).toEqual(ended);
    const other = await under({ reach: 60 });
    expect(other.status).toBe(409);
    expect(other.body.errors).toEqual([expect.objectContaining({ path: 'headers.idempotency-key' })]);
  }, 150_000);

  it('refuses what it cannot run, naming the field', async () => {
    const both = await admin(`/v1/segments/${seeds.buyers}/lookalike`, { body: { reach: 10, accuracy: 0.5 } });
    expect(both.status).toBe(400);
    expect(both.body.errors[0].path).toBe('accuracy');
    const self = await admin(`/v1/segments/${seeds.buyers}/lookalike`, { body: { base: seeds.buyers } });
    expect(self.status).toBe(400);
    expect(self.body.errors[0].path).toBe('base');
    const unknownBase = await admin(`/v1/segments/${seeds.buyers}/lookalike`, { body: { base: 'seg_nope' } });
    expect(unknownBase.status).toBe(404);
    expect(unknownBase.body.errors[0].path).toBe('base');
    expect((await admin(`/v1/segments/${seeds.buyers}/lookalike/lk_nope`)).status).toBe(404);
  });
});
