import type { Client } from '@temporalio/client';
import { sourceWorkflowId } from '../../domain/workflowIds';
import { SA } from '../../domain/searchAttributes';
import { call } from '../support/http';
import { startPlatform, waitFor, type RunningApi, type RunningPlatform } from '../support/services';

describe('source connections', () => {
  let platform: RunningPlatform;
  let temporal: Client;
  let api: RunningApi;

  beforeAll(async () => {
    // An idle poll of an hour: only the API's wake-up can make a drain happen within these tests.
    platform = await startPlatform('sources', { DMP_SOURCE_IDLE_POLL_SECONDS: 3600 });
    ({ temporal, api } = platform);
  });
  afterAll(() => platform.stop());

  it('answers /healthz with 200 when the API, Temporal and the store are reachable', async () => {
    const health = await call(`${api.url}/healthz`);
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ status: 'ok', api: 'ok', store: 'ok', temporal: 'ok' });
  });

  it('serves an OpenAPI document generated from the request schemas', async () => {
    const doc = await call(`${api.url}/openapi.json`);
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe('3.1.0');
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/v1/sources', '/v1/collect', '/v1/profiles/lookup', '/v1/sources/{id}']));
    expect(doc.body.components.schemas.Event.properties.identities).toBeDefined();
    const variants = doc.body.components.schemas.CreateSourceRequest.oneOf;
    expect(variants.map((variant: { properties: { kind: { enum: string[] } } }) => variant.properties.kind.enum)).toEqual([['events'], ['crm'], ['feed']]);
    for (const variant of variants) expect(variant.required).toEqual(expect.arrayContaining(['name', 'kind', 'party']));
    expect(variants[1].required).toContain('mapping');
    // Every path answers undeclared methods with 405 and the methods it takes.
    const trace = await fetch(`${api.url}/v1/sources`, { method: 'DELETE' });
    expect(trace.status).toBe(405);
    expect(trace.headers.get('allow')).toBe('GET, HEAD, POST');
  });

  it('starts one workflow per source under a deterministic id, findable by its search attributes', async () => {
    const created = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'crm', kind: 'events', party: 'second', labels: ['partner_only'] } });
    expect(created.status).toBe(201);
    const { id } = created.body;
    const description = await temporal.workflow.getHandle(sourceWorkflowId(id)).describe();
    expect(description.status.name).toBe('RUNNING');
    expect(description.typedSearchAttributes.get(SA.sourceId)).toBe(id);
    expect(description.typedSearchAttributes.get(SA.party)).toBe('second');
    expect(description.typedSearchAttributes.get(SA.sourceKind)).toBe('events');
    const found = await waitFor('the visibility store to index the source', async () => {
      const ids: string[] = [];
      for await (const execution of temporal.workflow.list({ query: `DmpSourceId = "${id}"` })) ids.push(execution.workflowId);
      return ids.length > 0 ? ids : undefined;
    });
    expect(found).toEqual([sourceWorkflowId(id)]);
    const status = await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey });
    expect(status.body).toMatchObject({ id, name: 'crm', party: 'second', labels: ['partner_only'], workflowStatus: 'RUNNING', progress: { state: 'active' } });
  });

  it('pauses and resumes draining while collection keeps accepting events', async () => {
    const { id, writeKey } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'paused', kind: 'events', party: 'first' } })).body;
    const paused = await call(`${api.url}/v1/sources/${id}/pause`, { key: api.adminKey, method: 'POST' });
    expect(paused.status).toBe(202);
    await waitFor('the pause to take effect', async () => (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body.progress?.state === 'paused');

    const events = Array.from({ length: 50 }, (_, n) => ({ id: `p-${n}`, type: 'page_view', identities: { cookie_id: `pc-${n % 5}` } }));
    const accepted = await call(`${api.url}/v1/collect`, { key: writeKey, body: { events } });
    expect(accepted.body.accepted).toBe(50);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const whilePaused = (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body;
    expect(whilePaused.progress.eventsProcessed).toBe(0);
    expect(whilePaused.pending).toMatchObject({ chunks: 1, events: 50 });
    const lookupWhilePaused = await call(`${api.url}/v1/profiles/lookup?type=cookie_id&value=pc-1`, { key: api.adminKey });
    expect(lookupWhilePaused.status).toBe(404);

    await call(`${api.url}/v1/sources/${id}/resume`, { key: api.adminKey, method: 'POST' });
    const drained = await waitFor('the drain after resume', async () => {
      const body = (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body;
      // The source's own status can lag the partitions by the turn that routed the events (see collectToProfiles).
      return body.profiles?.eventsApplied === 50 && body.progress?.eventsProcessed === 50 ? body : undefined;
    });
    expect(drained.pending.chunks).toBe(0);
    const profile = await call(`${api.url}/v1/profiles/lookup?type=cookie_id&value=pc-1`, { key: api.adminKey });
    expect(profile.body.counters.page_view.count).toBe(10);
  });

  it('drains collected events within seconds because the API wakes the idle source', async () => {
    const { id, writeKey } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'woken', kind: 'events', party: 'first' } })).body;
    // Let the new workflow make its first look and fall asleep on its hour-long idle poll.
    await waitFor('the source to settle', async () => (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body.progress?.state === 'active');
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const sentAt = Date.now();
    await call(`${api.url}/v1/collect`, { key: writeKey, body: { events: [{ id: 'w-1', type: 'page_view', identities: { cookie_id: 'woken-1' } }] } });
    const profile = await waitFor('the woken drain', async () => {
      const found = await call(`${api.url}/v1/profiles/lookup?type=cookie_id&value=woken-1`, { key: api.adminKey });
      return found.status === 200 ? found.body : undefined;
    }, 10_000, 50);
    expect(profile.counters.page_view.count).toBe(1);
    expect(Date.now() - sentAt).toBeLessThan(10_000);
  });

  it("reports the source's health: events routed in the last hour, the last success, the error rate and the lag", async () => {
    const { id, writeKey } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'healthy', kind: 'events', party: 'first' } })).body;
    const fresh = (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body;
    expect(fresh.health).toMatchObject({ lastSuccessAt: null, eventsLastHour: 0, errorRate: null });
    const events = Array.from({ length: 30 }, (_, i) => ({ id: `h-${i}`, type: 'page_view', identities: { cookie_id: `healthy-${i % 3}` } }));
    await call(`${api.url}/v1/collect`, { key: writeKey, body: { events: events.slice(0, 20) } });
    await call(`${api.url}/v1/collect`, { key: writeKey, body: { events: events.slice(10) } }); // ten of them again
    // The ten repeats were acknowledged and are routed too; the partition writers drop them.
    const status = await waitFor('40 events routed, the ten repeats dropped', async () => {
      const body = (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body;
      return body.health.eventsLastHour === 40 && body.profiles.duplicatesDropped === 10 ? body : undefined;
    });
    expect(status.health.turnsLastHour).toBeGreaterThanOrEqual(1);
    expect(status.health.errorRate).toBe(0);
    expect(status.health.lastFailureAt).toBeNull();
    expect(Date.now() - Date.parse(status.health.lastSuccessAt)).toBeLessThan(60_000);
    expect(status.health.lagSeconds).toBeNull(); // nothing pending
  });

  it('resumes a terminated source workflow at its saved cursor without counting events twice', async () => {
    const { id, writeKey } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'restarted', kind: 'events', party: 'first' } })).body;
    const send = (prefix: string) =>
      call(`${api.url}/v1/collect`, { key: writeKey, body: { events: Array.from({ length: 20 }, (_, n) => ({ id: `${prefix}-${n}`, type: 'page_view', identities: { cookie_id: `r-${n % 4}` } })) } });
    const progressOf = async () => (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body.progress;
    await send('a');
    const applied = async () => (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body.profiles?.eventsApplied;
    await waitFor('the first drain', async () => (await applied()) === 20);

    await temporal.workflow.getHandle(sourceWorkflowId(id)).terminate('operator test');
    // Collecting wakes the source, which starts its workflow again; it resumes at the saved cursor.
    await send('b');
    const resumed = await waitFor('the drain after the restart', async () => {
      const progress = await progressOf();
      return progress?.eventsProcessed >= 40 ? progress : undefined;
    });
    expect(resumed).toMatchObject({ eventsProcessed: 40, cursor: 2, batchesApplied: 2 });
    await waitFor('the partitions to fold the second batch', async () => (await applied()) === 40);
    const profile = await call(`${api.url}/v1/profiles/lookup?type=cookie_id&value=r-1`, { key: api.adminKey });
    expect(profile.body.counters.page_view.count).toBe(10);
  });

  it('keeps a paused source paused when its workflow is started again', async () => {
    const { id } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'stays paused', kind: 'events', party: 'first' } })).body;
    await call(`${api.url}/v1/sources/${id}/pause`, { key: api.adminKey, method: 'POST' });
    await temporal.workflow.getHandle(sourceWorkflowId(id)).terminate('operator test');
    const status = await waitFor('the restarted workflow', async () => {
      const body = (await call(`${api.url}/v1/sources/${id}`, { key: api.adminKey })).body;
      return body.workflowStatus === 'RUNNING' && body.progress?.state === 'paused' ? body : undefined;
    });
    expect(status.progress.state).toBe('paused');
  });
});
