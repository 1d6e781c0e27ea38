import type { Client } from '@temporalio/client';
import { COLLECTIONS, type Store } from '../../store/db';
import { erasureRounds, expectedProfiles } from '../support/audience';
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
    // The second round brings an email the erasure cannot know: it is only in the events the turn holds.
    const { others, subjectEvents, firstRound } = erasureRounds(taskQueue, subject, { emailFrom: 1 });
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
      documents = await firstRound(source);

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

  it('takes back what a range routed of a subject erased meanwhile when another range of its turn failed', async () => {
    // A store of its own, as above: every profile in it is this test's.
    const own = await testStore('routing_failed_range');
    const taskQueue = uniqueName('routing-failed-range');
    const subject = uniqueName('c-subject');
    const { others, subjectEvents, firstRound } = erasureRounds(taskQueue, subject);
    // Ranges of 100 events: the second round's two chunks (everyone else's, then the subject's) are
    // two ranges of one turn. Once armed, that turn stalls after reading the second range until an
    // erasure of the subject has run to the end, and the first range fails once after writing.
    const config = { DMP_DRAIN_BATCH_EVENTS: 100, DMP_DRAIN_CONCURRENCY: 4 };
    let armed = false;
    let reads = 0;
    let failedOnce = false;
    let erase: (() => Promise<void>) | null = null;
    const worker = await startWorker({
      store: own,
      temporal,
      taskQueue,
      config,
      activityOverrides: {
        onDrainStep: async (step) => {
          if (!armed) return;
          if (step === 'events-read' && ++reads === 2 && erase) await erase();
          else if (step === 'events-routed' && !failedOnce) {
            failedOnce = true;
            throw new Error('the store went away after the first range was written');
          }
        },
      },
    });
    const api = await startApi({ store: own, temporal, taskQueue, config });
    try {
      const admin = (path: string, options: { body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
      const source = await newSource(api);
      const documents = await firstRound(source);

      expect((await admin(`/v1/sources/${source.sourceId}/pause`, { body: {} })).status).toBe(202);
      expect((await source.send(others(1))).body.accepted).toBe(200);
      expect((await source.send(subjectEvents(1))).body.accepted).toBe(5);
      let erasure: { state: string } | undefined;
      erase = async () => {
        const started = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'cookie_id', value: subject } } });
        erasure = await settledRequest(admin, started.body.id, 170_000);
      };
      armed = true;
      expect((await admin(`/v1/sources/${source.sourceId}/resume`, { body: {} })).status).toBe(202);
      expect((await waitFor('the erasure, run while the turn stalls', async () => erasure, 180_000)).state).toBe('completed');
      await source.folded(405);
      // The turn read two ranges, failed, and its retry read them again.
      expect(failedOnce).toBe(true);
      expect(reads).toBeGreaterThanOrEqual(4);
      expect(await findResidue(own.db, [subject, ...documents])).toEqual([]);
      expect((await source.lookup('cookie_id', subject)).status).toBe(404);
      expect(await profileDifferences(own, expectedProfiles([...others(0), ...others(1)]))).toEqual([]);
    } finally {
      await api.close();
      await worker.stop();
      await stopPartitionWriters(temporal, own);
      await own.close();
    }
  }, 300_000);
});
