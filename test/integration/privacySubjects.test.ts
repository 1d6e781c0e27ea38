import type { Client } from '@temporalio/client';
import { privacyRequestWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { IdentityIndex } from '../../store/identities';
import { call } from '../support/http';
import { startApi, testStore, testTemporal, uniqueName, type RunningApi } from '../support/services';

/**
 * What a privacy request writes down about its subject, read before any worker takes it up (no worker
 * polls this task queue): the stored form's key, and a key as sent by an older version only where the
 * store holds one.
 */
describe('privacy request subjects', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  const started: string[] = [];

  beforeAll(async () => {
    store = await testStore('privacy_subjects');
    temporal = await testTemporal();
    api = await startApi({ store, temporal, taskQueue: uniqueName('privacy-subjects') });
  });
  afterAll(async () => {
    for (const workflowId of started) await temporal.workflow.getHandle(workflowId).terminate('test over').catch(() => undefined);
    await api.close();
    await store.close();
  });

  async function subjectOf(value: string): Promise<Record<string, unknown>> {
    const made = await call(`${api.url}/v1/privacy/requests`, { key: api.adminKey, body: { type: 'erase', identity: { type: 'crm_id', value } } });
    expect(made.status).toBe(202);
    started.push(privacyRequestWorkflowId(store.db.databaseName, made.body.id));
    const subject = await store.db.collection('privacy_subjects').findOne({ _id: made.body.id });
    expect(subject).not.toBeNull();
    return subject as Record<string, unknown>;
  }

  it('never writes down an address sent as a customer id that nothing holds as sent', async () => {
    const subject = await subjectOf('Never.Seen@example.com');
    // A customer id that is an address is stored as the hashed email.
    expect(subject.key).toMatch(/^email_sha256:[0-9a-f]{64}$/);
    expect(subject).not.toHaveProperty('alsoKeys');
    expect(JSON.stringify(subject)).not.toMatch(/never\.seen/i);
  });

  it('keeps the key as sent where an older version stored the identity so, for the request to find it', async () => {
    await new IdentityIndex(store, 0).claim([{ key: 'crm_id:Old.Timer@example.com', type: 'crm_id', profileId: 'p_legacy' }], new Date());
    const subject = await subjectOf('Old.Timer@example.com');
    expect(subject.alsoKeys).toEqual(['crm_id:Old.Timer@example.com']);
  });

  it('names an id with no stored form today (an address inside it) only while the store holds it as sent', async () => {
    const before = await store.db.collection('privacy_subjects').countDocuments({});
    const unknown = await call(`${api.url}/v1/privacy/requests`, { key: api.adminKey, body: { type: 'erase', identity: { type: 'crm_id', value: 'Ada <ada@example.com>' } } });
    expect({ status: unknown.status, errors: unknown.body.errors }).toEqual({ status: 404, errors: [{ path: 'identity.value', message: 'no profile holds it, and it would not be kept as sent today' }] });
    expect(await store.db.collection('privacy_subjects').countDocuments({})).toBe(before);
    await new IdentityIndex(store, 0).claim([{ key: 'crm_id:Bea <bea@example.com>', type: 'crm_id', profileId: 'p_bea' }], new Date());
    const subject = await subjectOf('Bea <bea@example.com>');
    expect(subject.key).toBe('crm_id:Bea <bea@example.com>');
    // A repeat while that request is open finds it, though the store no longer holds the id (its erasure removed it).
    await store.db.collection('identities').deleteOne({ _id: 'crm_id:Bea <bea@example.com>' as never });
    const repeat = await call(`${api.url}/v1/privacy/requests`, { key: api.adminKey, body: { type: 'erase', identity: { type: 'crm_id', value: 'Bea <bea@example.com>' } } });
    expect({ status: repeat.status, id: repeat.body.id }).toEqual({ status: 202, id: subject._id });
  });
});
