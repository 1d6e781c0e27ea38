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
    platform = await startPlatform('sources');
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
    expect(doc.body.components.schemas.CreateSourceRequest.required).toEqual(expect.arrayContaining(['name', 'kind', 'party']));
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
      return body.progress?.eventsProcessed === 50 ? body : undefined;
    });
    expect(drained.pending.chunks).toBe(0);
    const profile = await call(`${api.url}/v1/profiles/lookup?type=cookie_id&value=pc-1`, { key: api.adminKey });
    expect(profile.body.counters.page_view.count).toBe(10);
  });
});
