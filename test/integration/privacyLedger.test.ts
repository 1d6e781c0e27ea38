import type { Store } from '../../store/db';
import { PrivacyStore, type PrivacyRequestDoc, type RemovalDoc } from '../../store/privacy';
import { testStore } from '../support/services';

describe('a privacy request’s ledger of removals at the partners', () => {
  let store: Store;
  let requests: PrivacyStore;
  beforeAll(async () => {
    store = await testStore('privledger');
    requests = new PrivacyStore(store);
  });
  afterAll(() => store.close());

  const at = new Date('2026-11-20T10:00:00Z');
  const request = (id: string): PrivacyRequestDoc => ({
    _id: id,
    type: 'erase',
    subject: 'email:hash',
    state: 'running',
    requestedBy: null,
    receivedAt: at,
    deadline: at,
    target: at,
    steps: [],
    completedAt: null,
    error: null,
    result: null,
  });
  const line = (destinationId: string, state: RemovalDoc['state'], round = 0): RemovalDoc => ({ destinationId, name: destinationId, state, round, exportId: null, lastError: null, updatedAt: at });

  it('never takes an ended request back to running: an attempt replaced meanwhile records its step on an old copy', async () => {
    const stale = { ...request('prq_stale_attempt'), state: 'received' as const, steps: [{ name: 'resolve' as const, state: 'pending' as const, at: null, touched: {} }, { name: 'mark' as const, state: 'pending' as const, at: null, touched: {} }] };
    await requests.create(stale, 'email:stale');
    await requests.finish('prq_stale_attempt', { state: 'completed', completedAt: at, error: null, result: null });
    await requests.stepDone(structuredClone(stale), 'mark', { privacy_marks: 1 }, at, 'worker');
    expect(await requests.get('prq_stale_attempt')).toMatchObject({ state: 'completed', completedAt: at });
  });

  it('keeps every destination’s line when the removals write them at once', async () => {
    await requests.create(request('prq_at_once'), 'email:x');
    const destinations = Array.from({ length: 8 }, (_, n) => `dst_${n}`);
    await Promise.all(destinations.map((id) => requests.setRemoval('prq_at_once', line(id, 'pending'))));
    await Promise.all(destinations.map((id, n) => requests.setRemoval('prq_at_once', line(id, n % 2 ? 'acknowledged' : 'sent', 1))));
    const stored = await requests.get('prq_at_once');
    expect(stored?.destinations?.map(({ destinationId, state, round }) => ({ destinationId, state, round }))).toEqual(
      destinations.map((destinationId, n) => ({ destinationId, state: n % 2 ? 'acknowledged' : 'sent', round: 1 })),
    );
    expect((await requests.list(undefined, 10)).find((doc) => doc._id === 'prq_at_once')?.destinations).toHaveLength(8);
  });

  it('shows a ledger a request stored in itself before, with lines written since over it', async () => {
    await requests.create({ ...request('prq_before'), destinations: [line('dst_a', 'sent', 1), line('dst_b', 'pending')] }, 'email:y');
    expect((await requests.get('prq_before'))?.destinations?.map((entry) => entry.state)).toEqual(['sent', 'pending']);
    await requests.setRemoval('prq_before', line('dst_b', 'acknowledged', 1));
    expect((await requests.get('prq_before'))?.destinations?.map((entry) => [entry.destinationId, entry.state])).toEqual([
      ['dst_a', 'sent'],
      ['dst_b', 'acknowledged'],
    ]);
  });
});
