import { performance } from 'node:perf_hooks';
import type { Client } from '@temporalio/client';
import { identityKey } from '../domain/identity';
import { partitionOf } from '../domain/partition';
import type { ProfileDoc } from '../domain/profile';
import { segmentRunWorkflowId } from '../domain/workflowIds';
import { forEachConcurrently, type Store } from '../store/db';
import { IdentityIndex } from '../store/identities';
import { ProfileEventLog } from '../store/profileEvents';
import { ProfileStore } from '../store/profiles';
import { SegmentRunStore, type RunDoc } from '../store/segmentRuns';
import { SegmentStore, type SegmentDoc } from '../store/segments';
import { startSegmentRun } from '../temporal/client';
import { mixedSegments, syntheticProfile } from '../test/support/segmentFixtures';
import { round, say } from './support';

/** The write group of partition `partition`'s generated documents. */
const benchGroup = (partition: number) => `bench-p${partition}`;

/**
 * Inserts `count` synthetic profile documents (test/support/segmentFixtures) and joins one pair in
 * `linkEvery` by an identity link. Not timed. The documents are stored as the partition writers
 * would have written them: each in a write group of its partition, which the partition's position
 * records, so its writer counts them as live versions (compaction is due relative to them) and
 * removes them once superseded. With `claims`, each identity is claimed for its document, as the
 * drains would have.
 */
export async function generateProfiles(
  store: Store,
  count: number,
  random: () => number,
  now: number,
  options: { partitions: number; insertBatch?: number; linkEvery?: number; claims?: boolean },
): Promise<void> {
  const { partitions, insertBatch = 1000, linkEvery = 2000 } = options;
  const profiles = new ProfileStore(store, 0);
  const identities = new IdentityIndex(store, 0).identities;
  const started = performance.now();
  const batches = Math.ceil(count / insertBatch);
  const written = new Array<number>(partitions).fill(0);
  // Each partition's documents wait until they fill an insert of their own.
  const waiting = Array.from({ length: partitions }, (): ProfileDoc[] => []);
  const flush = async (partition: number) => {
    const docs = waiting[partition];
    waiting[partition] = [];
    written[partition] += docs.length;
    if (docs.length > 0) await profiles.saveVersions(docs, benchGroup(partition));
    const claims = options.claims ? docs.flatMap((doc) => doc.identities.map((entry) => ({ _id: identityKey(entry), type: entry.type, profileId: doc.profileId, createdAt: new Date(now) }))) : [];
    if (claims.length > 0) await identities.insertMany(claims, { ordered: false });
  };
  let lastSay = performance.now();
  await forEachConcurrently(
    Array.from({ length: batches }, (_, b) => b),
    2,
    async (b) => {
      // Generated whole before any write: the seeded draws keep one order however the writes interleave.
      for (let n = b * insertBatch; n < Math.min(count, (b + 1) * insertBatch); n++) {
        const doc = syntheticProfile(n, random, now);
        waiting[partitionOf(doc.profileId, partitions)].push(doc);
      }
      for (let partition = 0; partition < partitions; partition++) {
        if (waiting[partition].length >= insertBatch) await flush(partition);
      }
      if (performance.now() - lastSay > 15_000) {
        lastSay = performance.now();
        say(`generated ${((b + 1) * insertBatch).toLocaleString()} profiles`);
      }
    },
  );
  for (let partition = 0; partition < partitions; partition++) await flush(partition);
  const routed = new ProfileEventLog(store);
  for (let partition = 0; partition < partitions; partition++) {
    const position = await routed.loadPosition(partition);
    position.groups[benchGroup(partition)] = { written: written[partition], superseded: 0 };
    if ((await routed.savePosition(partition, position)) === null) throw new Error(`partition ${partition}: its position changed while the bench wrote it`);
  }
  const links = new IdentityIndex(store, 0);
  const pairs = Math.floor(count / linkEvery);
  await links.addLinks(
    Array.from({ length: pairs }, (_, k) => {
      const a = `p_bench${(k * linkEvery).toString(36).padStart(9, '0')}`;
      const b = `p_bench${(k * linkEvery + 1).toString(36).padStart(9, '0')}`;
      return { _id: `${a}|${b}|cookie_id:shared-${k}`, profiles: [a, b] as [string, string], via: `cookie_id:shared-${k}`, sourceId: 'src_bench', eventId: `e${k}`, createdAt: new Date(now) };
    }),
  );
  say(`generated ${count.toLocaleString()} profiles (${pairs} linked pairs) in ${round((performance.now() - started) / 1000)} s`);
}

/** The store's own scan rate: one cursor over every profile document, as batch work reads them (docs/s). */
export async function profileScanRate(store: Store): Promise<number> {
  const profiles = new ProfileStore(store, 0);
  const started = performance.now();
  let scanned = 0;
  for await (const doc of profiles.profiles.find({}, { batchSize: 1000 })) if (doc) scanned++;
  const seconds = (performance.now() - started) / 1000;
  say(`store scan: ${scanned.toLocaleString()} documents in ${round(seconds)} s = ${round(scanned / seconds)} docs/s`);
  return scanned / seconds;
}

/** Writes `count` mixed segment definitions (every rule kind; some refer to others) as `seg_bench<nn>`; returns their ids. */
export async function defineSegments(store: Store, random: () => number, count: number): Promise<string[]> {
  const segments = new SegmentStore(store);
  const ids: string[] = [];
  const created = new Date();
  for (const [index, rule] of mixedSegments(random, count).entries()) {
    const id = `seg_bench${String(index).padStart(2, '0')}`;
    const doc: SegmentDoc = {
      _id: id,
      name: `bench ${index}`,
      description: null,
      taxonomyPath: 'Bench',
      ruleJson: JSON.stringify(typeof rule === 'function' ? rule(ids) : rule),
      schedule: null,
      version: 1,
      createdAt: created,
      updatedAt: created,
      current: null,
      lastRun: null,
    };
    await segments.create(doc);
    ids.push(id);
  }
  return ids;
}

/** One batch run of every segment through the segmentRun workflow, to completion; returns the run and its seconds. */
export async function runEverySegment(store: Store, temporal: Client, taskQueue: string): Promise<{ run: RunDoc; seconds: number }> {
  const runs = new SegmentRunStore(store);
  const prepared = await runs.prepare(await new SegmentStore(store).list(), new Date(), new Date());
  const started = performance.now();
  await startSegmentRun(temporal, store.db.databaseName, prepared._id, { DMP_TASK_QUEUE: taskQueue });
  await temporal.workflow.getHandle(segmentRunWorkflowId(store.db.databaseName, prepared._id)).result();
  const seconds = (performance.now() - started) / 1000;
  const run = await runs.getRun(prepared._id);
  if (run?.state !== 'completed') throw new Error(`the run ended ${run?.state}: ${run?.error}`);
  const sizes = Object.values(run.members);
  say(`batch run: ${run.evaluated.toLocaleString()} profiles (${run.documentsScanned.toLocaleString()} documents) × ${run.segments.length} segments in ${round(seconds)} s; segment sizes ${Math.min(...sizes)}–${Math.max(...sizes)}`);
  return { run, seconds };
}
