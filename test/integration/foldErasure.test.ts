import type { Client } from '@temporalio/client';
import { partitionOf } from '../../domain/partition';
import { ensureSourceWorkflow } from '../../temporal/client';
import { profilePartitionWorkflowId, sourceWorkflowId } from '../../domain/workflowIds';
import { sourceLogGrewSignal } from '../../workflows/sourceConnection';
import { COLLECTIONS, type Store } from '../../store/db';
import { ITEM_MODEL_COLLECTIONS } from '../../store/itemModel';
import { PrivacyMarks } from '../../store/privacyMarks';
import { SEGMENT_COLLECTIONS } from '../../store/segmentRuns';
import { SegmentStore } from '../../store/segments';
import { appendToLog } from '../support/appendEvents';
import { erasureRounds, expectedProfiles, userEvent } from '../support/audience';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { eventsFolded, profileDifferences } from '../support/profiles';
import { findResidue } from '../support/residue';
import { segmentDoc } from '../support/segmentFixtures';
import { baseConfig, startApi, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor } from '../support/services';
import { newSource } from '../support/sourceClient';

describe('a fold under way when an erasure begins', () => {
  let store: Store;
  let temporal: Client;
  beforeAll(async () => {
    store = await testStore('fold_erasure');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    await stopPartitionWriters(temporal, store);
    await store.close();
    await temporal.connection.close();
  });

  it('records no segment or item change about the documents erased after it wrote their versions', async () => {
    await new SegmentStore(store).create(segmentDoc('seg_visitors', { identity: 'cookie_id' }));
    // Entered only by the second round's purchases (five a person each round): the erased fold's change record would name its members.
    await new SegmentStore(store).create(segmentDoc('seg_repeat', { event: 'purchase', count: { op: 'gte', value: 6 } }));
    const sourceId = uniqueName('src');
    const taskQueue = uniqueName('fold-erasure');
    // Purchases of items: each fold records the people whose items changed, and the segment's members.
    const events = (round: number) =>
      Array.from({ length: 600 }, (_, n) => ({ ...userEvent(n % 120, round * 10 + Math.floor(n / 120)), type: 'purchase', properties: { item: `sku-${round}-${n % 7}` } }));
    await appendToLog(store, sourceId, events(0), 200);

    let armed = false;
    let armedGroup = '';
    const erased: string[] = [];
    const worker = await startWorker({
      store,
      temporal,
      taskQueue,
      activityOverrides: {
        // Once armed, the next fold's documents are erased between its versions and its records, as an
        // erasure whose scrub ran meanwhile would leave them: members of the segment, which they would exit.
        onFoldStep: async (step, group) => {
          if (step !== 'versions-written' || !armed || erased.length > 0) return;
          armedGroup = group;
          const written = await store.db.collection<{ profileId: string }>(COLLECTIONS.profiles).find({ group }).toArray();
          erased.push(...written.map((version) => version.profileId));
          await new PrivacyMarks(store, 'fold-erasure-salt').add('pr_fold_erasure', erased, ['tombstone-of-the-subject']);
        },
      },
    });
    try {
      await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue });
      await waitFor('the first events folded', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= 600, 120_000);
      // A fold records its changes just after saving its position (which the count above reads): waited for.
      const recorded = async () => findResidue(store.db, (await store.db.collection<{ profileId: string }>(COLLECTIONS.profiles).find({}).toArray()).map((doc) => doc.profileId));
      const namedIn = (found: Awaited<ReturnType<typeof recorded>>, collection: string) => found.some((residue) => residue.collection === collection);
      const recordedBefore = await waitFor('the first folds to record their changes', async () => {
        const found = await recorded();
        return namedIn(found, SEGMENT_COLLECTIONS.changes) && namedIn(found, ITEM_MODEL_COLLECTIONS.changes) ? found : null;
      }, 30_000, 200).catch(() => recorded());
      // Both kinds of record name the people they concern: what an erased one must not be named in.
      expect(namedIn(recordedBefore, SEGMENT_COLLECTIONS.changes)).toBe(true);
      expect(namedIn(recordedBefore, ITEM_MODEL_COLLECTIONS.changes)).toBe(true);

      armed = true;
      await appendToLog(store, sourceId, events(1), 200);
      await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).signal(sourceLogGrewSignal);
      await waitFor('the next events folded', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= 1200, 120_000);
      expect(erased.length).toBeGreaterThan(0);
      // That fold records its changes after saving the position the count above reads: its partition's
      // writer is waited for until no activity of it is under way, so what it records is there to find.
      const partition = Number(/^p(\d+)-/.exec(armedGroup)?.[1]);
      expect(Number.isInteger(partition)).toBe(true);
      const writer = temporal.workflow.getHandle(profilePartitionWorkflowId(store.db.databaseName, partition));
      await waitFor('the erased fold to finish', async () => ((await writer.describe()).raw.pendingActivities ?? []).length === 0, 30_000, 100);
      const residue = await findResidue(store.db, erased);
      const recordedAfter = residue.filter((found) => (found.collection === SEGMENT_COLLECTIONS.changes || found.collection === ITEM_MODEL_COLLECTIONS.changes) && !recordedBefore.some((before) => before.id === found.id));
      expect(recordedAfter).toEqual([]);
      await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
    } finally {
      await worker.stop();
    }
  });

  it('removes the version it writes of a subject whose whole erasure ran while it stalled before writing', async () => {
    // A store of its own: every profile in it is this test's.
    const own = await testStore('fold_stall');
    const taskQueue = uniqueName('fold-stall');
    const subject = uniqueName('c-subject');
    const { others, subjectEvents, firstRound } = erasureRounds(taskQueue, subject);
    // Once armed, the subject's partition's next fold — which holds the subject's new events — stalls
    // before writing its versions until an erasure of the subject has run to the end.
    let stall: (() => Promise<void>) | null = null;
    let stalledIn = '';
    const worker = await startWorker({
      store: own,
      temporal,
      taskQueue,
      activityOverrides: {
        onFoldStep: async (step, group) => {
          if (step !== 'versions-writing' || !stall || !group.startsWith(stalledIn)) return;
          const run = stall;
          stall = null;
          await run();
        },
      },
    });
    const api = await startApi({ store: own, temporal, taskQueue });
    try {
      const admin = (path: string, options: { body?: unknown } = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
      const source = await newSource(api);
      const documents = await firstRound(source);
      expect(await findResidue(own.db, [subject, ...documents])).not.toEqual([]);

      let erasure: { state: string } | undefined;
      stalledIn = `p${partitionOf(documents[0], baseConfig.DMP_PROFILE_PARTITIONS)}-`;
      stall = async () => {
        const started = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'cookie_id', value: subject } } });
        erasure = await settledRequest(admin, started.body.id, 170_000);
      };
      expect((await source.send([...others(1), ...subjectEvents(1)])).body.accepted).toBe(205);
      // The erasure runs while the fold waits; then everyone else's new events are folded (the subject's left the routed batches with it).
      expect((await waitFor('the erasure, run while the fold stalls', async () => erasure, 180_000)).state).toBe('completed');
      await source.folded(405);
      expect(stall).toBeNull();
      expect(await findResidue(own.db, [subject, ...documents])).toEqual([]);
      expect((await source.lookup('cookie_id', subject)).status).toBe(404);
      // The fold's retry folded everyone else's events, each once.
      expect(await profileDifferences(own, expectedProfiles([...others(0), ...others(1)]))).toEqual([]);
    } finally {
      await api.close();
      await stopPartitionWriters(temporal, own);
      await worker.stop();
      await own.close();
    }
  }, 300_000);
});
