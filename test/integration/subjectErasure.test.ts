import { COLLECTIONS, type Store } from '../../store/db';
import { UnlinkStore, type UnlinkDoc } from '../../store/identityUnlinks';
import { MatchTableStore } from '../../store/matchTables';
import { SubjectErasure } from '../../store/subjectErasure';
import { NOTHING_IMPORTED, UploadStore, type UploadDoc } from '../../store/uploads';
import type { StoredEvent } from '../../domain/event';
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

  it("makes the subject's rows staged by an upload importing erased placeholders, and leaves other people's rows, and those of uploads still receiving (their chunks may be staged again) or ended", async () => {
    const uploads = new UploadStore(store);
    const at = new Date();
    const upload = (id: string, state: UploadDoc['state']): UploadDoc => ({ _id: id, sourceId: 'src_crm', state, rowsReceived: 4, rowsRejected: 0, rowsNonProfiling: 0, rejections: [], chunks: 2, imported: NOTHING_IMPORTED, startedAt: at, receivedAt: at, finishedAt: state === 'completed' ? at : null, error: null });
    const row = (id: string, crm: string): StoredEvent => ({ id, type: 'identify', timestamp: at, receivedAt: at, identities: [{ type: 'crm_id', value: crm }], traits: { tier: 'gold' } });
    for (const [id, state] of [['upl_importing', 'importing'], ['upl_receiving', 'receiving'], ['upl_ended', 'completed']] as const) {
      await uploads.create(upload(id, state));
      await uploads.stageChunk(id, 0, [row(`${id}-1`, 'other'), row(`${id}-2`, 'c-subject')]);
      await uploads.stageChunk(id, 1, [row(`${id}-3`, 'c-subject'), row(`${id}-4`, 'another')]);
    }
    const touched: Record<string, number> = {};
    const erasure = new SubjectErasure(store, new MatchTableStore(store, { cap: 10, ttlMs: 86_400_000 }));
    const subject = { keys: new Set(['crm_id:c-subject']), documents: new Set<string>() };
    expect(await erasure.stagedRows(subject, touched)).toBe(2);
    expect(touched[COLLECTIONS.uploadRows]).toBe(2);
    for (const id of ['upl_importing']) {
      const [first, second] = [await uploads.readChunk(id, 0), await uploads.readChunk(id, 1)];
      expect(first?.map((event) => event.erased === true)).toEqual([false, true]);
      expect(second?.map((event) => event.erased === true)).toEqual([true, false]);
      expect(JSON.stringify([first, second])).not.toContain('c-subject');
      expect(first?.[0]).toEqual(row(`${id}-1`, 'other'));
    }
    // A receiving upload's rows are the import's to drop; an ended upload's chunks the retention's (no import reads them again).
    expect(JSON.stringify(await uploads.readChunk('upl_receiving', 1))).toContain('c-subject');
    expect(JSON.stringify(await uploads.readChunk('upl_ended', 1))).toContain('c-subject');
    // Repeated, it finds nothing more.
    expect(await erasure.stagedRows(subject, {})).toBe(0);
  });
});
