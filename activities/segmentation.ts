import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { workflowIsRunning } from '../temporal/client';
import type { Config } from '../config';
import { segmentRunWorkflowId } from '../domain/workflowIds';
import { dayKey, type SegmentSubject } from '../domain/profile';
import { withOptOut } from '../domain/privacy';
import { EvaluationTime, SegmentEvaluator, subjectNeeds } from '../domain/segmentRules';
import { Bitmap, sampleRank } from '../domain/segments';
import { forEachConcurrently, type Store } from '../store/db';
import { decodeForExport, decodeProfile } from '../store/profiles';
import { exportFacts, flattenFacts, packFacts, type FlatFacts } from '../domain/destinations';
import { DestinationStore } from '../store/destinations';
import { SegmentMembership, statedSince } from '../store/segmentMembership';
import { failRun, prepareNextRun, rulesOfRun, SegmentRunStore, type PreparedRun, type SnapshotChunk } from '../store/segmentRuns';
import { StartGates, startGateKey } from '../store/startGates';
import { SegmentStore, type SegmentDoc } from '../store/segments';
import { policiesOf } from '../store/sourcePolicies';
import { heartbeat, withHeartbeats } from './heartbeat';
import { beginGated } from './startGate';
import { passPeople, peoplePassStores } from './peoplePass';

/** Profiles per stored membership chunk: ~20 bytes an id, so a chunk stays a few hundred kilobytes. */
export const CHUNK_PROFILES = 10_000;
/** Profiles the estimate evaluates rules on: a 95% interval of at most ±2.2 points. */
export const SAMPLE_SIZE = 2_000;

export interface SegmentationDeps {
  store: Store;
  temporal: Client;
  config: Pick<Config, 'DMP_PROFILE_PARTITIONS' | 'DMP_SEGMENTS_PER_RUN'>;
  now?: () => Date;
}

/** Keeps the SAMPLE_SIZE profiles of lowest `sampleRank`: a uniform sample that does not depend on scan order. */
class BottomSample {
  private readonly kept = new Map<string, { rank: number; subject: SegmentSubject }>();
  private threshold = Infinity;

  /** Whether `id` may make the sample (its full content is then worth decoding). */
  wants(id: string): boolean {
    return sampleRank(id) <= this.threshold;
  }

  offer(id: string, subject: SegmentSubject): void {
    const rank = sampleRank(id);
    if (rank > this.threshold) return;
    this.kept.set(id, { rank, subject });
    if (this.kept.size < 2 * SAMPLE_SIZE) return;
    const ordered = [...this.kept].sort((a, b) => a[1].rank - b[1].rank || (a[0] < b[0] ? -1 : 1));
    for (const [dropped] of ordered.slice(SAMPLE_SIZE)) this.kept.delete(dropped);
    this.threshold = ordered[SAMPLE_SIZE - 1][1].rank;
  }

  remove(id: string): void {
    this.kept.delete(id);
  }

  /** The sample, and the highest rank in it: a profile whose every document ranks above it is not in it. */
  subjects(): { subjects: SegmentSubject[]; maxRank: number } {
    const kept = [...this.kept].sort((a, b) => a[1].rank - b[1].rank || (a[0] < b[0] ? -1 : 1)).slice(0, SAMPLE_SIZE);
    return {
      subjects: kept.map(([, { subject }]) => ({ identities: subject.identities, traits: subject.traits, counters: subject.counters, consent: subject.consent, lastSeen: subject.lastSeen, sources: subject.sources })),
      maxRank: kept.length > 0 ? kept[kept.length - 1][1].rank : -1,
    };
  }
}

/** The activities of a segmentation run: one pass over every profile evaluates every segment. */
export function createSegmentationActivities(deps: SegmentationDeps) {
  const now = deps.now ?? (() => new Date());
  const segments = new SegmentStore(deps.store);
  const runs = new SegmentRunStore(deps.store);
  const gates = new StartGates(deps.store);
  const stores = peoplePassStores(deps.store);
  const destinations = new DestinationStore(deps.store);
  const marks = stores.marks;

  /** Whether a run's workflow is alive: only a run that will finish may stand in for another. */
  const isRunning = (runId: string) => workflowIsRunning(deps.temporal, segmentRunWorkflowId(deps.store.db.databaseName, runId));

  /**
   * Evaluates every segment of the run on every person, in one pass over the profiles (passPeople).
   * Results stay in memory (an id and a few bytes of bits per person) until the pass ends, then are
   * written as chunks of consecutive ids. Safe to retry: a retry passes again and writes the
   * same chunk ids; the rules and the evaluation time are fixed in the run record.
   */
  async function evaluate(runId: string): Promise<{ evaluated: number; documentsScanned: number }> {
    const run = await runs.getRun(runId);
    if (!run || run.state !== 'running') return { evaluated: run?.evaluated ?? 0, documentsScanned: run?.documentsScanned ?? 0 };
    await beginGated(gates, startGateKey.segmentRun(runId), () => failRun(segments, runs, runId, 'could not start: its workflow could not be started', now()));
    const newer = await runs.supersededBy(run);
    if (newer && (await isRunning(newer))) {
      // Segments created or changed one after the other each start a run; the latest pass serves them all.
      await runs.saveRun({ ...run, state: 'superseded', finishedAt: now() });
      return { evaluated: 0, documentsScanned: 0 };
    }
    run.passStartedAt ??= now();
    // An attempt given up on (its heartbeats lost) may still be going: each checks it still makes the
    // pass before it writes, so it never writes over the chunks or the record of the attempt after it.
    // (Retryable: should a stale attempt take the pass back, the live one passes again.)
    const token = randomUUID();
    const stillMine = async () => {
      if (!(await runs.holdsPass(run._id, token))) throw ApplicationFailure.retryable(`a later attempt makes the pass of run ${run._id}`, 'PassTakenOver');
    };
    await runs.markPassStarted(run._id, run.passStartedAt, token);
    const rules = rulesOfRun(run);
    const evaluator = new SegmentEvaluator(rules, policiesOf(await stores.sources.list()));
    const needs = subjectNeeds(rules.map((definition) => definition.rule));
    const order = run.segments.map((segment) => segment.id);
    const at = new EvaluationTime(run.now);
    const bitsOf = (subject: SegmentSubject): Uint8Array => {
      const bits = new Bitmap(order.length);
      const members = new Set(evaluator.evaluate(subject, at));
      order.forEach((id, index) => members.has(id) && bits.set(index));
      return bits.bytes;
    };
    // Members of segments some destination exports keep what an export reads of them (ids, consent,
    // sources) beside their bits, so an export reads the snapshot and never the profiles again.
    const exported = await destinations.exportedSegments();
    run.factsFor = order.filter((id) => exported.has(id));
    const exportedBits = new Bitmap(order.length);
    order.forEach((id, index) => exported.has(id) && exportedBits.set(index));
    const isExported = (bits: Uint8Array) => bits.some((byte, i) => (byte & exportedBits.bytes[i]) !== 0);
    const facts = new Map<string, FlatFacts>();

    const sample = new BottomSample();
    // People who opted out are in no segment, and no estimate counts them: not in its sample, nor in the population it scales to.
    const optedOutPeople = new Set<string>();
    const noteOptOut = (id: string, optedOut: boolean) => (optedOut ? optedOutPeople.add(id) : optedOutPeople.delete(id));
    await marks.refresh(true);
    const { people, documentsScanned } = await passPeople(stores, needs, {
      document(stored, fields) {
        const optedOut = marks.optedOut({ profileId: stored.profileId, ancestors: fields.ancestors });
        const bits = bitsOf(withOptOut(fields, optedOut));
        if (isExported(bits)) facts.set(stored.profileId, flattenFacts(exportFacts(decodeForExport(stored))));
        else facts.delete(stored.profileId);
        noteOptOut(stored.profileId, optedOut);
        if (optedOut) sample.remove(stored.profileId);
        else if (sample.wants(stored.profileId)) sample.offer(stored.profileId, decodeProfile(stored));
        return bits;
      },
      dropped(profileId) {
        facts.delete(profileId);
        sample.remove(profileId);
        optedOutPeople.delete(profileId);
      },
      person(person, component) {
        // Parts an unlink split from an opted-out document, and successors of one, are opted out with it.
        const optedOut = marks.optedOut({ profileIds: person.profileIds, ancestors: component.docs.flatMap((doc) => doc.ancestors ?? []) });
        const bits = bitsOf(withOptOut(person, optedOut));
        if (isExported(bits)) facts.set(person.id, flattenFacts(exportFacts(person)));
        noteOptOut(person.id, optedOut);
        if (!optedOut) sample.offer(person.id, person);
        return bits;
      },
    });

    const ids = [...people.keys()].sort();
    const membership = new SegmentMembership(runs);
    const segmentDocs = await Promise.all(order.map((id) => segments.get(id)));
    const changes = await runs.changesSince(new Date(0));
    const states = await membership.realTime(segmentDocs.flatMap((doc) => (doc ? [doc] : [])), changes);
    // Before a segment's first run completes, its members are those real-time changes put in (as `wasMember` reads them).
    const enteredOnly = (doc: SegmentDoc) => [...(states.get(doc._id)?.values() ?? [])].filter(Boolean).length;
    const previousSize = await Promise.all(segmentDocs.map(async (doc) => (doc ? ((await membership.size(doc, states)) ?? enteredOnly(doc)) : 0)));
    const wasMember = await membership.ascending(segmentDocs, states);
    // People a real-time change since the run began states stay as it states, and are that change's
    // to count (an entry or exit is in its history; a stated membership is counted by neither): the
    // run counts none of them (`unmoved` holds those the comparison below would count).
    const stated = statedSince(changes, run.segments, run.startedAt);
    const anyStated = new Set(stated.flatMap((ids) => [...ids]));
    const counts = order.map(() => ({ members: 0, kept: 0, unmoved: { in: 0, out: 0 } }));
    run.chunks = [];
    for (let start = 0, n = 0; start < ids.length; start += CHUNK_PROFILES, n++) {
      const slice = ids.slice(start, start + CHUNK_PROFILES);
      await wasMember.reach(slice[slice.length - 1]);
      const chunk: SnapshotChunk = { ids: slice, bits: order.map(() => new Uint8Array(Math.ceil(slice.length / 8))) };
      if (run.factsFor.length > 0) chunk.facts = packFacts(slice.map((id) => facts.get(id) ?? null));
      const chunkCounts = order.map(() => 0);
      for (let i = 0; i < slice.length; i++) {
        const bits = new Bitmap(people.get(slice[i]) as Uint8Array);
        for (let k = 0; k < order.length; k++) {
          if (!bits.has(k)) continue;
          new Bitmap(chunk.bits[k]).set(i);
          chunkCounts[k]++;
          counts[k].members++;
          if (wasMember.has(k, slice[i])) counts[k].kept++;
        }
        if (anyStated.has(slice[i])) {
          for (let k = 0; k < order.length; k++) {
            if (!stated[k].has(slice[i]) || bits.has(k) === wasMember.has(k, slice[i])) continue;
            if (bits.has(k)) counts[k].unmoved.in++;
            else counts[k].unmoved.out++;
          }
        }
      }
      await stillMine();
      await runs.writeChunk(run._id, n, chunk);
      run.chunks.push({ first: slice[0], last: slice[slice.length - 1], counts: chunkCounts });
      heartbeat({ phase: 'write', chunk: n });
    }
    run.evaluated = ids.length;
    run.documentsScanned = documentsScanned;
    // Stated people the pass found no document of were members before, by their change, or not.
    for (const [k, ids] of stated.entries()) {
      const segment = segmentDocs[k];
      for (const id of ids) {
        if (people.has(id) || !segment) continue;
        if (states.get(segment._id)?.get(id) ?? (await membership.inSnapshot(segment, id))) counts[k].unmoved.out++;
      }
    }
    order.forEach((id, k) => {
      run.members[id] = counts[k].members;
      run.entered[id] = counts[k].members - counts[k].kept - counts[k].unmoved.in;
      run.exited[id] = previousSize[k] - counts[k].kept - counts[k].unmoved.out;
    });
    const { subjects, maxRank } = sample.subjects();
    await stillMine();
    await runs.writeSample(run._id, run.passStartedAt ?? run.now, ids.filter((id) => !optedOutPeople.has(id)).length, subjects, maxRank);
    if (!(await runs.savePass(run, token))) throw ApplicationFailure.retryable(`a later attempt makes the pass of run ${run._id}, or it ended`, 'PassTakenOver');
    return { evaluated: ids.length, documentsScanned };
  }

  /**
   * Makes a run's snapshot the membership of its segments — each, unless a run of a newer version
   * or one started later completed it first (store/segments `runStateOf`) — and records the run's
   * entered/exited counts where it did. What
   * no segment reads any more is let go by the retention run (`releaseUnread`), not here: that reads
   * every segment and run, which a run of one segment should not pay for. Safe to repeat.
   */
  async function complete(runId: string): Promise<void> {
    const run = await runs.getRun(runId);
    if (!run) return;
    const finishedAt = run.finishedAt ?? now();
    if (run.state === 'superseded') {
      await segments.setLastRuns(run.segments, { runId, state: 'superseded', startedAt: run.startedAt, finishedAt });
      return;
    }
    if (run.state === 'running') {
      await forEachConcurrently(run.segments, 8, async (segment) => {
        const current = { runId, version: segment.version, size: run.members[segment.id] ?? 0, now: run.now, startedAt: run.startedAt, finishedAt };
        const entered = run.entered[segment.id] ?? 0;
        const exited = run.exited[segment.id] ?? 0;
        const flipped = await segments.completeRun(segment.id, current, { runId, state: 'completed', startedAt: run.startedAt, finishedAt });
        // A run that changed nothing adds nothing to the history: a run of thousands of segments
        // re-run for one edit would otherwise write thousands of empty entries.
        if (flipped && (entered > 0 || exited > 0)) {
          await runs.writeHistory([{ _id: `${segment.id}:${runId}`, segment: segment.id, day: dayKey(run.now), entered, exited }]);
        }
      });
      await runs.saveRun({ ...run, state: 'completed', finishedAt });
    }
  }

  return {
    /**
     * Records the next run of every segment as they are now (of at most DMP_SEGMENTS_PER_RUN, after
     * the group `after` keys), evaluated at `evaluatedAt` (ms); its id and key, or null once none is left.
     */
    async prepareSegmentRun(input: { evaluatedAt: number; after?: string | null }): Promise<PreparedRun | null> {
      const prepared = await prepareNextRun(segments, runs, new Date(input.evaluatedAt), now(), deps.config.DMP_SEGMENTS_PER_RUN, input.after ?? null);
      return prepared && { runId: prepared.run._id, key: prepared.key };
    },

    /**
     * Whether a segment schedule's firing (`by`, its workflow) runs the pass of its nominal time:
     * not when another firing took that time, nor while the last pass that went still runs — a
     * daily schedule's long pass and an hourly one's next would otherwise read every profile at once.
     */
    claimScheduledPass(input: { nominalTime: number; by: string }): Promise<boolean> {
      return runs.claimScheduledPass(new Date(input.nominalTime), input.by, (firing) => workflowIsRunning(deps.temporal, firing));
    },

    /** Waits for a segmentation run another workflow executes (or until that workflow is gone). */
    async awaitSegmentRun(input: { runId: string }): Promise<void> {
      for (;;) {
        const run = await runs.getRun(input.runId);
        if (!run || run.state !== 'running' || !(await workflowIsRunning(deps.temporal, segmentRunWorkflowId(deps.store.db.databaseName, input.runId)))) return;
        heartbeat();
        await sleep(2000);
      }
    },

    /** See evaluate. */
    evaluateSegmentRun(input: { runId: string }) {
      return withHeartbeats(() => evaluate(input.runId));
    },

    completeSegmentRun(input: { runId: string }): Promise<void> {
      return withHeartbeats(() => complete(input.runId));
    },

    /** Records a run that could not finish; its segments keep reading their previous snapshot. */
    failSegmentRun(input: { runId: string; error: string }): Promise<void> {
      return failRun(segments, runs, input.runId, input.error, now());
    },
  };
}

export type SegmentationActivities = ReturnType<typeof createSegmentationActivities>;
