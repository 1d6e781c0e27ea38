import type { Client } from '@temporalio/client';
import { COLLECTIONS, type Store } from '../../store/db';
import { expectedProfiles, userEvent } from '../support/audience';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { profileDifferences } from '../support/profiles';
import { findResidue } from '../support/residue';
import { startApi, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor } from '../support/services';
import { newSource } from '../support/sourceClient';

describe('a routing turn under way when an erasure begins', () => {
  let store: Store;
  let temporal: Client;
  beforeAll(async () => {
    // A store of its own: every profile in it is this test's.
    store = await testStore('routing_stall');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    await stopPartitionWriters(temporal, store);
    await store.close();
    await temporal.connection.close();
  });

  it('takes back what it routed of a subject whose whole erasure ran while it stalled after reading their events', async () => {
    const taskQueue = uniqueName('routing-stall');
    const subject = uniqueName('c-subject');
    const others = (round: number) => Array.from({ length: 200 }, (_, n) => userEvent(n % 40, round * 10 + Math.floor(n / 40), `ev-${taskQueue}`));
    // The second round brings an email the erasure cannot know: it is only in the events the turn holds.
    const subjectEvents = (round: number) =>
      Array.from({ length: 5 }, (_, n) => ({
        id: `subject-${round}-${n}`,
        type: 'page_view',
        timestamp: new Date(Date.UTC(2026, 10, 1, round, n)).toISOString(),
        identities: { cookie_id: subject, ...(round > 0 && { email: `${subject}@example.com` }) },
      }));
    // Once armed, the source's next routing turn — which reads the subject's new events — stalls
    // after reading them until an erasure of the subject has run to the end.
    let stall: (() => Promise<void>) | null = null;
    let stalled = false;
    let routedWhileStalled: string[] = [];
    let documents: string[] = [];
    const worker = await startWorker({
      store,
      temporal,
      taskQueue,
      activityOverrides: {
        onDrainStep: async (step) => {
          if (step === 'events-read' && stall) {
            const run = stall;
            stall = null;
            await run();
            stalled = true;
          } else if (step === 'events-routed' && stalled && routedWhileStalled.length === 0) {
            // What the stalled turn wrote, before it looks at the marks: the subject's events, routed to their document.
            routedWhileStalled = (await findResidue(store.db, [subject, ...documents])).filter((found) => found.collection === COLLECTIONS.profileEvents).map((found) => found.id);
          }
        },
      },
    });
    const api = await startApi({ store, temporal, taskQueue });
    try {
      const admin = (path: string, options: { body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
      const source = await newSource(api);
      expect((await source.send([...others(0), ...subjectEvents(0)])).body.accepted).toBe(205);
      await source.folded(205);
      documents = (await source.lookup('cookie_id', subject)).body.profileIds;
      expect(documents).toHaveLength(1);

      let erasure: { state: string } | undefined;
      stall = async () => {
        const started = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'cookie_id', value: subject } } });
        erasure = await settledRequest(admin, started.body.id, 170_000);
      };
      expect((await source.send([...others(1), ...subjectEvents(1)])).body.accepted).toBe(205);
      expect((await waitFor('the erasure, run while the turn stalls', async () => erasure, 180_000)).state).toBe('completed');
      await source.folded(405);
      expect(stall).toBeNull();
      // The stalled turn did route the subject's events after the erasure ended; its check took them back.
      expect(routedWhileStalled).not.toEqual([]);
      expect(await findResidue(store.db, [subject, ...documents])).toEqual([]);
      expect((await source.lookup('cookie_id', subject)).status).toBe(404);
      expect((await source.lookup('email', `${subject}@example.com`)).status).toBe(404);
      // Everyone else's events were routed and folded, each once.
      expect(await profileDifferences(store, expectedProfiles([...others(0), ...others(1)]))).toEqual([]);
    } finally {
      await api.close();
      await worker.stop();
    }
  }, 300_000);
});
