import { COLLECTIONS, type Store } from '../../store/db';
import { UnlinkStore, type UnlinkDoc } from '../../store/identityUnlinks';
import { MatchTableStore } from '../../store/matchTables';
import { SubjectErasure } from '../../store/subjectErasure';
import { testStore } from '../support/services';

describe('an erasure of the identity graph', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('subjecterasure');
  });
  afterAll(() => store.close());

  it('removes the ended unlink requests that name the subject, by identity or by document, and leaves the rest', async () => {
    const unlinks = new UnlinkStore(store);
    const at = new Date();
    const unlink = (id: string, keys: string[], state: UnlinkDoc['state'], docs: string[] = []): UnlinkDoc => ({
      _id: id,
      keys,
      state,
      requestedAt: at,
      ...(docs.length > 0 && { plan: { sides: 2, sideOf: keys.map((key, side) => ({ key, side })), docs: docs.map((profileId) => ({ profileId, partition: 0 })), links: [] } }),
    });
    await unlinks.create(unlink('unl_by_key', ['cookie_id:c-subject', 'crm_id:other'], 'completed'));
    await unlinks.create(unlink('unl_by_doc', ['cookie_id:c-x', 'crm_id:c-y'], 'failed', ['prf_subject', 'prf_other']));
    await unlinks.create(unlink('unl_running', ['cookie_id:c-subject', 'crm_id:c-z'], 'splitting'));
    await unlinks.create(unlink('unl_others', ['cookie_id:c-a', 'crm_id:c-b'], 'completed', ['prf_other']));
    const touched: Record<string, number> = {};
    await new SubjectErasure(store, new MatchTableStore(store, { cap: 10, ttlMs: 86_400_000 })).identityGraph({ keys: new Set(['cookie_id:c-subject']), documents: new Set(['prf_subject']) }, touched);
    expect(touched[COLLECTIONS.identityUnlinks]).toBe(2);
    expect(await unlinks.get('unl_by_key')).toBeNull();
    expect(await unlinks.get('unl_by_doc')).toBeNull();
    expect(await unlinks.get('unl_running')).not.toBeNull();
    expect(await unlinks.get('unl_others')).not.toBeNull();
  });
});
