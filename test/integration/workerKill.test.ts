import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { sourceWorkflowId } from '../../domain/workflowIds';
import { COLLECTIONS, type Store } from '../../store/db';
import { ProfileEventLog } from '../../store/profileEvents';
import { ensureSourceWorkflow } from '../../temporal/client';
import { sourceStatusQuery } from '../../workflows/sourceConnection';
import { appendToLog } from '../support/appendEvents';
import { expectedProfiles, userEvent } from '../support/audience';
import { compactionState, eventsFolded, groupAccounts, profileDifferences, unrecordedGroups } from '../support/profiles';
import { killHard, spawnWorker } from '../support/processes';
import { baseConfig, testStore, testTemporal, uniqueName, waitFor } from '../support/services';

describe('a worker killed mid-drain', () => {
  let store: Store;
  let temporal: Client;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    store = await testStore('kill');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await store.close();
    await temporal.connection.close();
  });

  it('leaves, after a restart, exactly the profiles of a clean run', async () => {
    const taskQueue = uniqueName('kill');
    const sourceId = uniqueName('src');
    const generated = Array.from({ length: 12_000 }, (_, n) => userEvent(n % 1500, Math.floor(n / 1500)));
    await appendToLog(store, sourceId, generated, 500);

    const env = { DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: '1000' };
    const first = spawnWorker(store, env);
    children.push(first);
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: 1000 });
    const handle = temporal.workflow.getHandle(sourceWorkflowId(sourceId));

    // Killed as soon as the partitions have folded anything: mid-route, mid-fold or both.
    const foldedAtKill = await waitFor('the drain to be under way', async () => {
      const folded = await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS);
      return folded > 0 ? folded : undefined;
    }, 120_000, 20);
    await killHard(first);
    expect(foldedAtKill).toBeLessThan(generated.length);

    children.push(spawnWorker(store, env));
    const done = await waitFor('the drain to finish on the new worker', async () => {
      // The new worker takes a few seconds to start: until then the query has nobody to answer it.
      const status = await handle.query(sourceStatusQuery).catch(() => undefined);
      return status && status.eventsProcessed >= generated.length ? status : undefined;
    }, 180_000, 500);
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= generated.length, 180_000, 500);

    expect(done.eventsProcessed).toBe(generated.length);
    expect(done.duplicatesSkipped).toBe(0);
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    await handle.terminate('test finished');
  }, 360_000);

  it('leaves the profiles of a clean run and no unrecorded write group when killed while compacting', async () => {
    const compacting = await testStore('kill_compact'); // its own database: the same people as above
    try {
      const taskQueue = uniqueName('kill-compact');
      const sourceId = uniqueName('src');
      // 200 users seen in each of 30 chunks, one range a turn: every fold supersedes the last one's versions.
      const generated = Array.from({ length: 6000 }, (_, n) => userEvent(n % 200, Math.floor(n / 200), 'kc'));
      await appendToLog(compacting, sourceId, generated, 200);
      const env = { DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: '400', DMP_DRAIN_CONCURRENCY: '1' };
      const first = spawnWorker(compacting, env);
      children.push(first);
      await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: 400 });
      const positions = new ProfileEventLog(compacting);
      const removed = async () => (await positions.loadPositions(baseConfig.DMP_PROFILE_PARTITIONS)).reduce((sum, position) => sum + position.versionsRemoved, 0);

      // Killed as soon as a compaction has removed versions: the partitions compact as they fold, so more are under way.
      await waitFor('compaction to be under way', async () => (await removed()) > 0, 180_000, 20);
      await killHard(first);
      expect(await eventsFolded(compacting, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)).toBeLessThan(generated.length);

      children.push(spawnWorker(compacting, env));
      await waitFor('the partitions to fold every event', async () => (await eventsFolded(compacting, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= generated.length, 180_000, 500);
      try {
        // The versions the killed worker's folds replaced are counted too (by the attempts after them), so every group of them falls due.
        await waitFor('the idle partitions to compact to one version a profile', async () => (await compacting.db.collection(COLLECTIONS.profiles).countDocuments({})) <= 200, 120_000, 500);
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${await compactionState(compacting, baseConfig.DMP_PROFILE_PARTITIONS)}`);
      }
      expect(await profileDifferences(compacting, expectedProfiles(generated))).toEqual([]);
      expect(await unrecordedGroups(compacting, baseConfig.DMP_PROFILE_PARTITIONS)).toEqual([]);
      // Counted exactly: each group left holds what it counts written, none of it superseded.
      const { groups } = await groupAccounts(compacting, baseConfig.DMP_PROFILE_PARTITIONS);
      expect(groups.filter((account) => account.written !== account.stored || account.superseded !== 0)).toEqual([]);
      await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
    } finally {
      await compacting.close();
    }
  }, 360_000);
});
