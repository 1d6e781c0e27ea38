import type { ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import { EvaluationTime, SegmentEvaluator } from '../../domain/segmentRules';
import { segmentRunWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { ProfileStore } from '../../store/profiles';
import { SegmentMembership } from '../../store/segmentMembership';
import { SegmentRunStore } from '../../store/segmentRuns';
import { definitionsOf, SegmentStore } from '../../store/segments';
import { startSegmentRun } from '../../temporal/client';
import { killHard, spawnWorker } from '../support/processes';
import { seededRandom } from '../support/random';
import { mixedSegments, syntheticProfile } from '../support/segmentFixtures';
import { testStore, testTemporal, uniqueName, waitFor } from '../support/services';
import { ConsentPolicies } from '../../domain/consentGate';

/** No source has a policy of its own: each reads as the default. */
const NO_POLICIES = new ConsentPolicies([]);

describe('a worker killed mid segmentation run', () => {
  let store: Store;
  let temporal: Client;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    store = await testStore('segkill');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await store.close();
    await temporal.connection.close();
  });

  it('leaves, after a retry on another worker, exactly the membership the rules give', async () => {
    const random = seededRandom(7);
    const now = Date.now();
    const docs = Array.from({ length: 30_000 }, (_, n) => syntheticProfile(n, random, now));
    const profiles = new ProfileStore(store, 0);
    for (let start = 0; start < docs.length; start += 1000) await profiles.saveVersions(docs.slice(start, start + 1000), 'fixture');
    const segments = new SegmentStore(store);
    for (const [k, rule] of mixedSegments(random, 20).entries()) {
      const at = new Date(now);
      await segments.create({ _id: `seg_k${String(k).padStart(2, '0')}`, name: `k${k}`, description: null, taxonomyPath: null, ruleJson: JSON.stringify(rule), schedule: null, version: 1, createdAt: at, updatedAt: at, current: null, lastRun: null });
    }
    const runs = new SegmentRunStore(store);
    const run = await runs.prepare(await segments.list(), new Date(now), new Date(now));

    const taskQueue = uniqueName('segkill');
    const first = spawnWorker(store, { DMP_TASK_QUEUE: taskQueue });
    children.push(first);
    await startSegmentRun(temporal, store.db.databaseName, run._id, { DMP_TASK_QUEUE: taskQueue });
    const handle = temporal.workflow.getHandle(segmentRunWorkflowId(store.db.databaseName, run._id));
    // Killed once the pass over the profiles has been under way a while.
    await waitFor('the pass to be under way', async () => {
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      return pending.some((activity) => activity.activityType?.name === 'evaluateSegmentRun' && activity.lastStartedTime);
    }, 60_000, 50);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await killHard(first);
    expect((await runs.getRun(run._id))?.state).toBe('running');

    children.push(spawnWorker(store, { DMP_TASK_QUEUE: taskQueue }));
    await handle.result();
    const done = await runs.getRun(run._id);
    expect(done).toMatchObject({ state: 'completed', evaluated: docs.length });

    // The reference: every profile evaluated on its own (none is linked) at the run's time.
    const evaluator = new SegmentEvaluator(definitionsOf(await segments.list()), NO_POLICIES);
    const at = new EvaluationTime(done!.now);
    const expected = new Map<string, string[]>(evaluator.ids.map((id) => [id, []]));
    for (const doc of docs) for (const id of evaluator.evaluate(doc, at)) expected.get(id)!.push(doc.profileId);
    const membership = new SegmentMembership(runs);
    for (const segment of await segments.list()) {
      expect(segment.current?.runId).toBe(run._id);
      const states = await membership.realTime([segment]);
      const listed = await membership.members(segment, states, '', 100_000);
      expect({ segment: segment._id, members: listed.members }).toEqual({ segment: segment._id, members: expected.get(segment._id)!.sort() });
    }
  }, 300_000);
});
