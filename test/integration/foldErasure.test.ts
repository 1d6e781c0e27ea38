import type { Client } from '@temporalio/client';
import { ensureSourceWorkflow } from '../../temporal/client';
import { sourceWorkflowId } from '../../domain/workflowIds';
import { sourceLogGrewSignal } from '../../workflows/sourceConnection';
import { COLLECTIONS, type Store } from '../../store/db';
import { ITEM_MODEL_COLLECTIONS } from '../../store/itemModel';
import { PrivacyMarks } from '../../store/privacyMarks';
import { SEGMENT_COLLECTIONS } from '../../store/segmentRuns';
import { SegmentStore } from '../../store/segments';
import { appendToLog } from '../support/appendEvents';
import { userEvent } from '../support/audience';
import { eventsFolded } from '../support/profiles';
import { findResidue } from '../support/residue';
import { segmentDoc } from '../support/segmentFixtures';
import { baseConfig, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor } from '../support/services';

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
    const sourceId = uniqueName('src');
    const taskQueue = uniqueName('fold-erasure');
    // Purchases of items: each fold records the people whose items changed, and the segment's members.
    const events = (round: number) =>
      Array.from({ length: 600 }, (_, n) => ({ ...userEvent(n % 120, round * 10 + Math.floor(n / 120)), type: 'purchase', properties: { item: `sku-${round}-${n % 7}` } }));
    await appendToLog(store, sourceId, events(0), 200);

    let armed = false;
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
          const written = await store.db.collection<{ profileId: string }>(COLLECTIONS.profiles).find({ group }).toArray();
          erased.push(...written.map((version) => version.profileId));
          await new PrivacyMarks(store, 'fold-erasure-salt').add('pr_fold_erasure', erased, ['tombstone-of-the-subject']);
        },
      },
    });
    try {
      await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue });
      await waitFor('the first events folded', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= 600, 120_000);
      const recordedBefore = await findResidue(store.db, (await store.db.collection<{ profileId: string }>(COLLECTIONS.profiles).find({}).toArray()).map((doc) => doc.profileId));
      // Both kinds of record name the people they concern: what an erased one must not be named in.
      expect(recordedBefore.some((found) => found.collection === SEGMENT_COLLECTIONS.changes)).toBe(true);
      expect(recordedBefore.some((found) => found.collection === ITEM_MODEL_COLLECTIONS.changes)).toBe(true);

      armed = true;
      await appendToLog(store, sourceId, events(1), 200);
      await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).signal(sourceLogGrewSignal);
      await waitFor('the next events folded', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= 1200, 120_000);
      expect(erased.length).toBeGreaterThan(0);
      const residue = await findResidue(store.db, erased);
      const recordedAfter = residue.filter((found) => (found.collection === SEGMENT_COLLECTIONS.changes || found.collection === ITEM_MODEL_COLLECTIONS.changes) && !recordedBefore.some((before) => before.id === found.id));
      expect(recordedAfter).toEqual([]);
      await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
    } finally {
      await worker.stop();
    }
  });
});
