import type { Client } from '@temporalio/client';
import { createCollectionActivities, type DrainStep } from '../../activities/collection';
import type { FoldStep, ProfileWriterDeps } from '../../activities/profileWriter';
import { sourceWorkflowId } from '../../domain/workflowIds';
import { prepareEvents } from '../../domain/collect';
import { INITIAL_DRAIN_POSITION } from '../../domain/drainPosition';
import type { DrainPosition } from '../../domain/schemas';
import { COLLECTIONS, type Store } from '../../store/db';
import { EventIdGenerations } from '../../store/eventIds';
import { chunkId, DEFAULT_DEDUPE_WINDOW_HOURS, encodeChunk, eventIdKey, type StoredChunk } from '../../store/eventLog';
import { identityKey } from '../../domain/identity';
import { partitionOf } from '../../domain/partition';
import { IdentityIndex } from '../../store/identities';
import { ProfileEventLog, routedBatchId } from '../../store/profileEvents';
import { ProfileStore } from '../../store/profiles';
import { ensureSourceWorkflow, wakeProfilePartition } from '../../temporal/client';
import { pauseSourceSignal, resumeSourceSignal, sourceLogGrewSignal, sourceStatusQuery } from '../../workflows/sourceConnection';
import { SourceStore } from '../../store/sources';
import { RetentionStore } from '../../store/retention';
import { subjectHash } from '../../domain/privacy';
import { PrivacyStore } from '../../store/privacy';
import { PrivacyMarks } from '../../store/privacyMarks';
import { appendToLog } from '../support/appendEvents';
import { expectedProfiles, userEvent } from '../support/audience';
import { eventsFolded, groupAccounts, profileDifferences, unrecordedGroups } from '../support/profiles';
import { baseConfig, startWorker, stopPartitionWriters, testStore, testTemporal, uniqueName, waitFor, type RunningWorker } from '../support/services';

describe('draining a source into profiles', () => {
  let store: Store;
  let temporal: Client;
  let worker: RunningWorker | undefined;

  beforeAll(async () => {
    store = await testStore('drain');
    temporal = await testTemporal();
  });
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
    await stopPartitionWriters(temporal, store);
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  afterAll(async () => {
    await store.close();
    await temporal.connection.close();
  });
  /** Drains the source by a worker whose drain steps pass `onDrainStep` (which may fail them), in batches of `batchEvents`. */
  async function drainThrough(store: Store, sourceId: string, batchEvents: number, onDrainStep: (step: DrainStep) => void): Promise<void> {
    const taskQueue = uniqueName('drain-through');
    worker = await startWorker({ store, temporal, taskQueue, activityOverrides: { onDrainStep } });
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: batchEvents });
  }
  /** A database of the test's own, its partition writers stopped and closed after it. */
  async function ownStore(name: string): Promise<Store> {
    const own = await testStore(name);
    cleanups.push(async () => {
      await stopPartitionWriters(temporal, own);
      await own.close();
    });
    return own;
  }

  it('converges to the clean result when an activity fails after writing half a batch and is retried', async () => {
    const taskQueue = uniqueName('drain-retry');
    const sourceId = uniqueName('src');
    const generated = Array.from({ length: 1500 }, (_, n) => userEvent(n % 300, Math.floor(n / 300)));
    // Every id is sent twice, in different chunks: the repeats must count once.
    await appendToLog(store, sourceId, [...generated, ...generated.slice(0, 200)], 250);

    const injected: Array<{ reserved: boolean }> = [];
    const positions = new ProfileEventLog(store);
    worker = await startWorker({
      store,
      temporal,
      taskQueue,
      // One range per drain turn, 250 events each: several folds per partition.
      config: { DMP_DRAIN_CONCURRENCY: 1 },
      activityOverrides: {
        profileWriteBatch: 10,
        // A partition's first fold records its group before writing; later ones write under the group
        // the last save reserved. One failure of each kind.
        onFoldStep: async (step, group) => {
          if (step !== 'profiles-partly-written') return;
          const reserved = (await positions.loadPositions(baseConfig.DMP_PROFILE_PARTITIONS)).some((position) => position.nextGroup === group);
          if (!injected.some((failure) => failure.reserved === reserved)) {
            injected.push({ reserved });
            throw new Error('injected failure after a partial profile write');
          }
        },
      },
    });
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: 250 });
    const handle = temporal.workflow.getHandle(sourceWorkflowId(sourceId));
    const progress = await waitFor('the drain to finish', async () => {
      const status = await handle.query(sourceStatusQuery);
      return status.eventsProcessed + status.duplicatesSkipped >= 1700 ? status : undefined;
    });
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= 1500);

    expect(injected).toEqual(expect.arrayContaining([{ reserved: false }, { reserved: true }]));
    expect(progress.eventsProcessed).toBe(1500);
    expect(progress.duplicatesSkipped).toBe(200);
    expect(progress.lastError).toBeNull();
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    // The retries wrote under groups of their own; the interrupted attempts' groups are known too.
    expect(await unrecordedGroups(store, baseConfig.DMP_PROFILE_PARTITIONS)).toEqual([]);
    await handle.terminate('test finished');
  });

  it('converges when routing fails after claiming identities, again after writing routed batches, and after saving its position', async () => {
    const sourceId = uniqueName('src');
    const store = await ownStore('route_retry');
    const generated = Array.from({ length: 1200 }, (_, n) => userEvent(n % 240, Math.floor(n / 240), 'rr'));
    await appendToLog(store, sourceId, generated, 200);
    const injected: DrainStep[] = [];
    await drainThrough(store, sourceId, 400, (step) => {
      if (!injected.includes(step)) {
        injected.push(step);
        throw new Error(`injected failure at ${step}`);
      }
    });
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= generated.length);
    const status = await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).query(sourceStatusQuery);

    expect(injected.sort()).toEqual(['events-read', 'events-routed', 'identities-claimed', 'position-saved']);
    expect(status.eventsProcessed).toBe(generated.length);
    expect(await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)).toBe(generated.length);
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  });

  it('counts the late events of an erased subject once when the turn that read them is retried', async () => {
    const sourceId = uniqueName('src');
    const store = await ownStore('late_retry');
    // User 0 was erased before their events reached the drain: 5 of them, dropped and counted.
    const tombstone = subjectHash(await new PrivacyStore(store).salt(), identityKey({ type: 'cookie_id', value: 'c-0' }));
    await new PrivacyMarks(store).add('pr_late_retry', [], [tombstone]);
    const generated = Array.from({ length: 500 }, (_, n) => userEvent(n % 100, Math.floor(n / 100), 'lr'));
    await appendToLog(store, sourceId, generated, 100);
    let failed = false;
    await drainThrough(store, sourceId, 1000, (step) => {
      if (step === 'events-read' && !failed) {
        failed = true;
        throw new Error('injected failure after reading the events');
      }
    });
    await waitFor('the partitions to fold every other event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= generated.length - 5);
    expect(failed).toBe(true);
    expect(await new PrivacyMarks(store).lateEventsOf('pr_late_retry')).toBe(5);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  });

  it("keeps the source position of the worker that took the source over when a stalled worker's turn saves an older one", async () => {
    const sourceId = uniqueName('src');
    await appendToLog(store, sourceId, Array.from({ length: 300 }, (_, n) => userEvent(n % 60, Math.floor(n / 60), 'stall')), 100);
    const config = { ...baseConfig, DMP_TASK_QUEUE: uniqueName('stalled-turn'), DMP_DRAIN_CONCURRENCY: 1 };
    const turn = (activities: ReturnType<typeof createCollectionActivities>, position: DrainPosition) =>
      activities.routeSourceBatch({ sourceId, party: 'first', position, maxEvents: 100 });
    const stalled = createCollectionActivities({ store, temporal, config });
    const taking = createCollectionActivities({ store, temporal, config });
    // Both turns start from the same position: the stalled worker's turn ran on (its worker paused)
    // while the other worker, having taken the source over, routed the same chunk and the next one.
    const first = await turn(taking, INITIAL_DRAIN_POSITION);
    const second = await turn(taking, first.position);
    expect(second.position).toMatchObject({ cursor: 2, eventsProcessed: 200 });
    const late = await turn(stalled, INITIAL_DRAIN_POSITION);
    expect(late.position).toMatchObject({ cursor: 1, eventsProcessed: 100 });
    // What a fresh start of the source's workflow would route from.
    expect((await taking.loadDrainPosition(sourceId)).position).toEqual(second.position);
    // The same turn run again (a retry) still saves its position: the same one, drained later.
    await turn(taking, second.position);
    const retried = await turn(taking, second.position);
    expect(retried.position).toMatchObject({ cursor: 3, eventsProcessed: 300 });
    expect((await taking.loadDrainPosition(sourceId)).position).toEqual(retried.position);
  });

  it('goes on from the saved position when its own is behind it and retention has removed the chunks between', async () => {
    const sourceId = uniqueName('src');
    await appendToLog(store, sourceId, Array.from({ length: 300 }, (_, n) => userEvent(n % 60, Math.floor(n / 60), 'behind')), 100);
    const config = { ...baseConfig, DMP_TASK_QUEUE: uniqueName('behind'), DMP_DRAIN_CONCURRENCY: 1 };
    const activities = createCollectionActivities({ store, temporal, config });
    const turn = (position: DrainPosition) => activities.routeSourceBatch({ sourceId, party: 'first', position, maxEvents: 1000 });
    // A turn saved cursor 3 and its answer was lost: the workflow still holds the start. Retention then removed the drained chunks.
    const saved = (await turn(INITIAL_DRAIN_POSITION)).position;
    expect(saved).toMatchObject({ cursor: 3, eventsProcessed: 300 });
    expect(await new RetentionStore(store).expireRawChunks(sourceId, 3, new Date(Date.now() + 60_000), 100)).toMatchObject({ chunks: 3 });
    const caughtUp = await turn(INITIAL_DRAIN_POSITION);
    expect(caughtUp).toMatchObject({ chunks: 0, more: true, position: saved });
    // And drains what comes next from there.
    await appendToLog(store, sourceId, [userEvent(0, 99, 'behind2')], 1);
    expect(await turn(caughtUp.position)).toMatchObject({ chunks: 1, routed: 1, position: { cursor: 4, eventsProcessed: 301 } });
  });

  it('wakes the partitions a turn saved its position for and died before waking, at the next turn, whether it finds nothing new to route or more', async () => {
    const taskQueue = uniqueName('owed-wakes');
    const sourceId = uniqueName('src');
    const store = await ownStore('owed_wakes'); // its own database: the same people as other tests
    const generated = Array.from({ length: 300 }, (_, n) => userEvent(n % 60, Math.floor(n / 60), 'owed'));
    await appendToLog(store, sourceId, generated, 100);
    worker = await startWorker({ store, temporal, taskQueue });
    const config = { ...baseConfig, DMP_TASK_QUEUE: taskQueue };
    const dying = createCollectionActivities({
      store,
      temporal,
      config,
      onDrainStep: (step) => {
        if (step === 'position-saved') throw new Error('the worker died after saving its position');
      },
    });
    await expect(dying.routeSourceBatch({ sourceId, party: 'first', position: INITIAL_DRAIN_POSITION, maxEvents: 1000 })).rejects.toThrow('died after saving');
    // A fresh run of the source's workflow starts from the saved position: nothing is left to route.
    const restarted = createCollectionActivities({ store, temporal, config });
    const { position } = await restarted.loadDrainPosition(sourceId);
    expect(position).toMatchObject({ cursor: 3, eventsProcessed: 300 });
    expect(await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)).toBe(0);
    const turn = await restarted.routeSourceBatch({ sourceId, party: 'first', position, maxEvents: 1000 });
    expect(turn).toMatchObject({ chunks: 0, routed: 0 });
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) === generated.length);
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    expect(await new SourceStore(store).owedWakes(sourceId)).toBeNull();

    // Dying again, with the log grown meanwhile by one person's event: the next turn routes it to one
    // partition and wakes the others it owes too.
    const more = Array.from({ length: 300 }, (_, n) => userEvent(n % 60, Math.floor(n / 60), 'owed2'));
    await appendToLog(store, sourceId, more, 100);
    await expect(dying.routeSourceBatch({ sourceId, party: 'first', position: turn.position, maxEvents: 1000 })).rejects.toThrow('died after saving');
    const last = [userEvent(0, 99, 'owed3')];
    await appendToLog(store, sourceId, last, 1);
    const after = await restarted.routeSourceBatch({ sourceId, party: 'first', position: (await restarted.loadDrainPosition(sourceId)).position, maxEvents: 1000 });
    expect(after).toMatchObject({ chunks: 1, routed: 1 });
    const all = [...generated, ...more, ...last];
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) === all.length);
    expect(await profileDifferences(store, expectedProfiles(all))).toEqual([]);
    expect(await new SourceStore(store).owedWakes(sourceId)).toBeNull();
  });

  /**
   * Drains 200 users, each seen in every one of 30 chunks (every fold replaces every version of its
   * partition), into a database of its own, one range a drain turn (each wakes the partitions: many
   * small folds, many write groups), with the hook `stepsIn` makes for that database told each
   * step of a fold; returns once all are folded.
   */
  async function drainEveryoneEveryChunk(name: string, stepsIn: (store: Store) => NonNullable<ProfileWriterDeps['onFoldStep']>) {
    const taskQueue = uniqueName(name);
    const sourceId = uniqueName('src');
    const store = await ownStore(name); // its own database: the same people as other tests
    const generated = Array.from({ length: 6000 }, (_, n) => userEvent(n % 200, Math.floor(n / 200), name));
    await appendToLog(store, sourceId, generated, 200);
    worker = await startWorker({ store, temporal, taskQueue, config: { DMP_DRAIN_CONCURRENCY: 1 }, activityOverrides: { onFoldStep: stepsIn(store) } });
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: 400 });
    await waitFor('the partitions to fold every event', async () => (await eventsFolded(store, sourceId, baseConfig.DMP_PROFILE_PARTITIONS)) >= generated.length, 120_000);
    const versions = () => store.db.collection(COLLECTIONS.profiles).countDocuments({});
    const finish = async () => {
      expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
      expect(await unrecordedGroups(store, baseConfig.DMP_PROFILE_PARTITIONS)).toEqual([]);
      await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
    };
    return { store, generated, versions, finish };
  }

  it('compacts superseded profile versions a group at a time, in folds and once idle, losing nothing when it dies mid-compaction', async () => {
    const injected: FoldStep[] = [];
    const { store, generated, versions, finish } = await drainEveryoneEveryChunk('compact', () => (step) => {
      if (step === 'group-carried' && injected.length < 3) {
        injected.push(step);
        throw new Error('injected failure after carrying a group forward, before deleting it');
      }
    });

    expect(injected.length).toBeGreaterThan(0);
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    const left = await versions();
    // Each group is compacted once half of it is superseded, so at most about two versions per profile remain.
    expect(left).toBeLessThanOrEqual(2 * 200 + 200);
    const removed = (await new ProfileEventLog(store).loadPositions(baseConfig.DMP_PROFILE_PARTITIONS)).reduce(
      (sum, position) => sum + position.versionsRemoved,
      0,
    );
    // The folds compacted as they went: more versions are gone than are left (how many folds a partition
    // made, so how many versions it wrote, depends on how far behind the drain it ran).
    expect(removed).toBeGreaterThan(left);
    // Once nothing is left to fold, each writer compacts what is still due on its own.
    await waitFor('the idle partitions to compact', async () => (await versions()) < 1.5 * 200, 60_000);
    await finish();
  });

  it('counts the versions an interrupted fold or compaction replaced, so the idle partitions still compact to one version a profile', async () => {
    const injected: string[] = [];
    // Failures after every version is written and before the counts are saved — under a group
    // recorded first and under a reserved one — and after a compaction deleted a group's versions.
    const { store, versions, finish } = await drainEveryoneEveryChunk('replaced', (store) => async (step, group) => {
      if (step !== 'versions-written' && step !== 'group-dropped') return;
      const reserved = (await new ProfileEventLog(store).loadPositions(baseConfig.DMP_PROFILE_PARTITIONS)).some((position) => position.nextGroup === group);
      const kind = step === 'versions-written' ? `${step}:${reserved ? 'reserved' : 'recorded'}` : step;
      if (injected.filter((failure) => failure === kind).length < 2) {
        injected.push(kind);
        throw new Error(`injected failure at ${step}`);
      }
    });

    expect(new Set(injected)).toEqual(new Set(['versions-written:recorded', 'versions-written:reserved', 'group-dropped']));
    // Every version but the newest of each profile is counted superseded in its group, so every such group falls due.
    await waitFor('the idle partitions to compact to one version a profile', async () => (await versions()) <= 200, 60_000);
    // And counted exactly: each group left holds what it counts written, none of it superseded (no
    // count stands for versions gone, none was counted twice).
    const { groups } = await groupAccounts(store, baseConfig.DMP_PROFILE_PARTITIONS);
    expect(groups.filter((account) => account.written !== account.stored || account.superseded !== 0)).toEqual([]);
    await finish();
  });

  it('folds into a document a batch claims to have made, when another batch reached it first', async () => {
    const taskQueue = uniqueName('drain-made');
    const first = uniqueName('src');
    const second = uniqueName('src');
    // A person of their own: the file's other tests share this database.
    const person = userEvent(900_001, 0, 'made');
    await appendToLog(store, first, [person], 1);
    worker = await startWorker({ store, temporal, taskQueue });
    const config = { ...baseConfig, DMP_TASK_QUEUE: taskQueue };
    await ensureSourceWorkflow(temporal, { _id: first, kind: 'events', party: 'first' }, config);
    await waitFor('the first source folded', async () => (await eventsFolded(store, first, config.DMP_PROFILE_PARTITIONS)) === 1, 60_000);
    const cookieKey = identityKey({ type: 'cookie_id', value: person.identities.cookie_id });
    const profileId = (await new IdentityIndex(store).reload([cookieKey])).get(cookieKey) as string;
    await temporal.workflow.getHandle(sourceWorkflowId(first)).terminate('test finished');

    // A second source's batch that names the same document as made by it, as a drain racing the
    // first source's for a new identity would: the fold's first attempt does not look for its
    // versions, its insert collides with the stored one, and the retry reads it.
    const partition = partitionOf(profileId, config.DMP_PROFILE_PARTITIONS);
    const at = new Date();
    const event = { id: 'made-late', type: 'purchase', timestamp: at, receivedAt: at, identities: [{ type: 'cookie_id' as const, value: person.identities.cookie_id }], seq: 0, profileId };
    await new ProfileEventLog(store).write([{ _id: routedBatchId(partition, second, 0), partition, sourceId: second, party: 'first', from: 0, to: 1, events: [event], profiles: [profileId], created: [profileId], createdAt: at }]);
    await wakeProfilePartition(temporal, store.db.databaseName, partition, second, config);
    await waitFor('the second batch folded', async () => (await eventsFolded(store, second, config.DMP_PROFILE_PARTITIONS)) === 1, 60_000);

    const doc = await new ProfileStore(store).get(profileId);
    // The first source's event and the second's purchase, each once.
    const counts = Object.fromEntries(Object.entries(doc?.counters ?? {}).map(([type, counter]) => [type, counter.count]));
    expect(counts).toEqual(person.type === 'purchase' ? { purchase: 2 } : { [person.type]: 1, purchase: 1 });
    expect(doc?.version).toBe(1); // the second version (a document's first is 0), built on the stored one
  });

  it('folds events no signal announced at the next slow safety poll, and not before it', async () => {
    const taskQueue = uniqueName('drain-idle-poll');
    const [polled, unpolled] = [uniqueName('src'), uniqueName('src')];
    worker = await startWorker({ store, temporal, taskQueue });
    const events = (prefix: string) => Array.from({ length: 20 }, (_, n) => userEvent(n % 5, Math.floor(n / 5), prefix));
    const partitions = baseConfig.DMP_PROFILE_PARTITIONS;
    for (const [sourceId, pollSeconds] of [[polled, 2], [unpolled, 600]] as const) {
      await appendToLog(store, sourceId, events(`${sourceId}-a`), 20);
      await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_SOURCE_IDLE_POLL_SECONDS: pollSeconds });
      cleanups.push(async () => void (await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished')));
    }
    // Both fold what was there when they started, then go idle.
    await waitFor('the first events folded', async () => (await eventsFolded(store, polled, partitions)) >= 20 && (await eventsFolded(store, unpolled, partitions)) >= 20, 30_000);
    // Appended straight to the log, as by an API process that died before sending its wake-up signal.
    for (const sourceId of [polled, unpolled]) await appendToLog(store, sourceId, events(`${sourceId}-b`), 20);
    await waitFor('the polled source to fold them', async () => (await eventsFolded(store, polled, partitions)) >= 40, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 4_000)); // two more polls of the first: none of the second
    expect(await eventsFolded(store, polled, partitions)).toBe(40);
    expect(await eventsFolded(store, unpolled, partitions)).toBe(20);
  });

  it("tries a turn whose activity's retries all failed again after a pause, without waiting for a wake-up or the idle look", async () => {
    const taskQueue = uniqueName('drain-failed');
    const sourceId = uniqueName('src');
    const generated = Array.from({ length: 100 }, (_, n) => userEvent(n % 20, Math.floor(n / 20), 'fail'));
    await appendToLog(store, sourceId, generated, 100);
    let failures = 0;
    worker = await startWorker({
      store,
      temporal,
      taskQueue,
      activityOverrides: {
        // Every attempt of the first turn fails (the store down for a while, say); the next succeeds.
        onDrainStep: (step) => {
          if (step === 'events-read' && failures < 5) throw new Error(`store unavailable (${++failures})`);
        },
      },
    });
    const config = { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_SOURCE_IDLE_POLL_SECONDS: 600 };
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, config);
    await waitFor('the events folded', async () => (await eventsFolded(store, sourceId, config.DMP_PROFILE_PARTITIONS)) >= generated.length, 120_000);

    expect(failures).toBe(5);
    const status = await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).query(sourceStatusQuery);
    expect(status).toMatchObject({ eventsProcessed: generated.length, lastError: null });
    expect(status.health?.minutes.reduce((sum, minute) => sum + minute.failures, 0)).toBe(1);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  });

  /**
   * A source with 20 events folded, its workflow looking at its log every 2 s, and a way to add 20
   * more; `folded` counts the events its partitions applied.
   */
  async function foldedSource(name: string) {
    const taskQueue = uniqueName(`drain-${name}`);
    const sourceId = uniqueName('src');
    const sources = new SourceStore(store);
    await sources.create({ _id: sourceId, name, kind: 'events', party: 'first', labels: [], writeKeyHash: `${name}-${sourceId}`, createdAt: new Date() });
    const append = (round: string) => appendToLog(store, sourceId, Array.from({ length: 20 }, (_, n) => userEvent(n % 5, Math.floor(n / 5), `${name}-${round}`)), 20);
    await append('a');
    worker = await startWorker({ store, temporal, taskQueue });
    const config = { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_SOURCE_IDLE_POLL_SECONDS: 2 };
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, config);
    const folded = () => eventsFolded(store, sourceId, config.DMP_PROFILE_PARTITIONS);
    await waitFor('the first events folded', async () => (await folded()) === 20, 30_000);
    return { sourceId, sources, folded, append: () => append('b'), handle: temporal.workflow.getHandle(sourceWorkflowId(sourceId)) };
  }

  it('resumes a paused source at its idle look once its saved state is active, though the resume signal never came', async () => {
    const { sourceId, sources, folded, append, handle } = await foldedSource('resume');
    // Paused as the API pauses: saved, then signalled.
    await sources.setState(sourceId, 'paused');
    await handle.signal(pauseSourceSignal);
    await waitFor('the pause', async () => (await handle.query(sourceStatusQuery)).state === 'paused');
    await append();
    await new Promise((resolve) => setTimeout(resolve, 5_000)); // two idle looks: the saved state is still paused
    expect(await folded()).toBe(20);
    // Resumed as an API that stopped after saving it: no signal.
    await sources.setState(sourceId, 'active');
    await waitFor('the events appended while paused folded', async () => (await folded()) === 40, 30_000);
    expect((await handle.query(sourceStatusQuery)).state).toBe('active');
    await handle.terminate('test finished');
  });

  it('pauses an active source within an idle poll once its saved state is paused, though the pause signal never came', async () => {
    const { sourceId, sources, folded, append, handle } = await foldedSource('pause');
    // Paused as an API that stopped after saving it: no signal.
    await sources.setState(sourceId, 'paused');
    await waitFor('the pause found', async () => (await handle.query(sourceStatusQuery)).state === 'paused', 30_000);
    await append();
    await handle.signal(sourceLogGrewSignal);
    await new Promise((resolve) => setTimeout(resolve, 5_000)); // a wake-up and two idle polls: still paused
    expect(await folded()).toBe(20);
    expect((await handle.query(sourceStatusQuery)).state).toBe('paused');
    // Resumed as the API resumes: saved, then signalled.
    await sources.setState(sourceId, 'active');
    await handle.signal(resumeSourceSignal);
    await waitFor('the events appended while paused folded', async () => (await folded()) === 40, 30_000);
    await handle.terminate('test finished');
  });

  it('pauses a busy source, woken again and again, once its saved state is paused, though the pause signal never came', async () => {
    const { sourceId, sources, handle } = await foldedSource('busy');
    // Events keep coming, each chunk announced: the source never waits for its idle look.
    let busy = true;
    let round = 0;
    const feeding = (async () => {
      while (busy) {
        await appendToLog(store, sourceId, Array.from({ length: 5 }, (_, n) => userEvent(n, round, 'busy-more')), 5);
        await handle.signal(sourceLogGrewSignal);
        round++;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    try {
      await waitFor('the source busy', async () => (await handle.query(sourceStatusQuery)).eventsProcessed >= 40, 30_000);
      await sources.setState(sourceId, 'paused');
      await waitFor('the pause found', async () => (await handle.query(sourceStatusQuery)).state === 'paused', 30_000);
      const routed = (await handle.query(sourceStatusQuery)).eventsProcessed;
      await new Promise((resolve) => setTimeout(resolve, 3_000)); // more announced chunks: none routed
      expect((await handle.query(sourceStatusQuery)).eventsProcessed).toBe(routed);
    } finally {
      busy = false;
      await feeding;
    }
    await handle.terminate('test finished');
  });

  it('routes a chunk left pending right after a full batch once its grace runs out, without waiting for the idle look', async () => {
    const taskQueue = uniqueName('drain-pending');
    const sourceId = uniqueName('src');
    const generated = Array.from({ length: 150 }, (_, n) => userEvent(n % 30, Math.floor(n / 30), 'pend'));
    await appendToLog(store, sourceId, generated.slice(0, 100), 100);
    // A writer that died after claiming its events' ids, before the seal: its chunk stays pending.
    const { accepted } = prepareEvents(generated.slice(100), { now: new Date(), defaultPhoneRegion: 'US' });
    const events = accepted.map((a) => a.event);
    const at = Date.now();
    await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk({ _id: chunkId(sourceId, 1), sourceId, seq: 1, createdAt: new Date(at), events }));
    await new EventIdGenerations(store.db, DEFAULT_DEDUPE_WINDOW_HOURS).claim(events.map((event) => ({ _id: eventIdKey(sourceId, event.id), chunk: 1 })), at);

    worker = await startWorker({ store, temporal, taskQueue, activityOverrides: { pendingGraceMs: 3_000 } });
    // The first turn fills its batch exactly at the pending chunk; the idle look is minutes away.
    const config = { ...baseConfig, DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: 100, DMP_SOURCE_IDLE_POLL_SECONDS: 600 };
    await ensureSourceWorkflow(temporal, { _id: sourceId, kind: 'events', party: 'first' }, config);
    await waitFor('the abandoned chunk folded', async () => (await eventsFolded(store, sourceId, config.DMP_PROFILE_PARTITIONS)) >= generated.length, 30_000);

    expect(await eventsFolded(store, sourceId, config.DMP_PROFILE_PARTITIONS)).toBe(generated.length);
    await temporal.workflow.getHandle(sourceWorkflowId(sourceId)).terminate('test finished');
  });
});
