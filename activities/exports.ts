import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { workflowIsRunning } from '../temporal/client';
import type { Config } from '../config';
import { CONNECTORS } from '../connectors/registry';
import { linesNotApplied, type Connector, type ExportBatch } from '../connectors/connector';
import { DeliveryError, Outbound } from '../connectors/outbound';
import { querySecrets, withoutSecrets } from '../domain/secrets';
import { cookieIdsAmong, decide, delta, exportFacts, exportIdFor, failedExportRetryAt, exportPolicyOf, isHeldOut, nextState, PackedDecisions, partnerIdsOf, partnerOfIdType, toBatches, type BatchOutcome, type Decision, type ExportFacts, type ExportPolicy, type SegmentExport } from '../domain/destinations';
import { matchLimits } from '../domain/partners';
import { combineDocuments } from '../domain/profile';
import { forEachConcurrently, type Store } from '../store/db';
import { batchId, DestinationStore, type DestinationDoc, type ExportDoc, type PlannedSegment } from '../store/destinations';
import { MatchTableStore } from '../store/matchTables';
import { StartGates, startGateKey } from '../store/startGates';
import { PrivacyMarks } from '../store/privacyMarks';
import { ProfileGraph } from '../store/profileGraph';
import { SegmentMembership } from '../store/segmentMembership';
import { prepareNextRun, SegmentRunStore, SnapshotReader, type PreparedRun } from '../store/segmentRuns';
import { SegmentStore, type SegmentDoc } from '../store/segments';
import { SourceStore } from '../store/sources';
import { beginGated } from './startGate';
import { attemptSignal, heartbeat, withHeartbeats } from './heartbeat';

export interface ExportDeps {
  store: Store;
  temporal: Client;
  config: Pick<Config, 'DMP_DESTINATION_ALLOWLIST' | 'DMP_DESTINATION_TIMEOUT_SECONDS' | 'DMP_EXPORT_DIR' | 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP' | 'DMP_SEGMENTS_PER_RUN'>;
  now?: () => Date;
}

/** Attempts of one batch within a delivery before the export gives up on the partner for now. */
const MAX_ATTEMPTS = 8;
/** How much older than a plan a change record may be and still not have been seen by it. */
const CHANGE_MARGIN_MS = 10_000;
/** Snapshot chunks read ahead while one is decoded. */
const READ_AHEAD = 6;
/** What a worker keeps in memory of the batches it planned, for delivering and finishing its own plans: 1.3M ids of 40 characters. */
const KEEP_BATCH_BYTES = 160 * 1024 * 1024;
/**
 * The longest wait between attempts. A partner whose Retry-After asks for longer stops the export
 * instead, and scheduled exports of the destination wait until the time it named.
 */
const MAX_WAIT_MS = 5 * 60_000;

/** Resolves after `ms`, or at once when `until` aborts. */
const sleep = (ms: number, until?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (until?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      until?.removeEventListener('abort', done);
      resolve();
    }
    until?.addEventListener('abort', done);
  });

/** Paces requests to a partner's rate, and holds every request back while the partner asked us to wait. */
class Pacer {
  private next = 0;
  private pausedUntil = 0;

  constructor(private readonly perSecond: number) {}

  async wait(): Promise<void> {
    for (;;) {
      const now = Date.now();
      const at = Math.max(this.next, this.pausedUntil);
      if (at <= now) {
        this.next = Math.max(now, this.next) + 1000 / this.perSecond;
        return;
      }
      await sleep(Math.min(at - now, 1000));
      heartbeat();
    }
  }

  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + ms);
  }
}

export function connectorOf(destination: Pick<DestinationDoc, 'connector'>): Connector {
  const connector = CONNECTORS[destination.connector];
  if (!connector) throw ApplicationFailure.nonRetryable(`unknown connector "${destination.connector}"`, 'UnknownConnector');
  return connector;
}

/** An error text without the connector's secrets, nor its URLs' query values (see withoutSecrets). */
function redact(message: string, connector: Connector, config: Record<string, unknown>): string {
  const secrets = connector.secrets.map((field) => config[field]).filter((secret): secret is string => typeof secret === 'string');
  return withoutSecrets(message, [...secrets, ...connector.urls(config).flatMap(querySecrets)]);
}

/** Exponential backoff with jitter: 1 s, 2 s, 4 s… up to a minute. */
function backoffMs(attempt: number): number {
  return Math.min(60_000, 1000 * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
}

/**
 * The activities of a destination export: open (one record per destination and window), plan (the
 * delta of every segment against what the partner confirmed holding, cut into batches), deliver
 * (paced, retried, receipted per batch) and finish (the partner state advanced by the confirmed
 * batches only). Each is safe to retry: plans are written under fixed ids once, receipts say what
 * was delivered, and finishing computes from the state the plan recorded.
 */
export function createExportActivities(deps: ExportDeps) {
  const now = deps.now ?? (() => new Date());
  const destinations = new DestinationStore(deps.store, { keepBatchBytes: KEEP_BATCH_BYTES });
  const gates = new StartGates(deps.store);
  const segments = new SegmentStore(deps.store);
  const runs = new SegmentRunStore(deps.store);
  const sources = new SourceStore(deps.store);
  const graph = ProfileGraph.open(deps.store);
  // Match-table limits as the API applies them (their documented defaults when the config leaves them out).
  const matches = new MatchTableStore(deps.store, matchLimits(deps.config), now);
  const marks = new PrivacyMarks(deps.store);
  const outbound = new Outbound(new Set(deps.config.DMP_DESTINATION_ALLOWLIST), deps.config.DMP_DESTINATION_TIMEOUT_SECONDS * 1000);
  const context = { http: outbound, exportDir: deps.config.DMP_EXPORT_DIR };

  async function requireDestination(id: string): Promise<DestinationDoc> {
    const destination = await destinations.get(id);
    if (!destination) throw ApplicationFailure.nonRetryable(`destination ${id} does not exist`, 'DestinationGone');
    return destination;
  }

  async function requireExport(id: string): Promise<ExportDoc> {
    const found = await destinations.getExport(id);
    if (!found) throw ApplicationFailure.nonRetryable(`export ${id} does not exist`, 'ExportGone');
    return found;
  }

  const isRunning = (workflowId: string) => workflowIsRunning(deps.temporal, workflowId);

  /**
   * Whether anything an export would send changed since the destination's last export was planned,
   * or its failed last export is due to be tried again (see failedExportRetryAt).
   */
  async function changedSince(destination: DestinationDoc): Promise<boolean> {
    const last = destination.lastExport && (await destinations.getExport(destination.lastExport.exportId));
    if (!last?.plan) return true;
    if (last.state === 'failed' && destination.lastExport && now() >= failedExportRetryAt(destination.lastExport)) return true;
    if (destination.updatedAt >= last.plan.plannedAt) return true;
    // A partner whose memberships lapse (a DSP's TTL) is due its renewal even when nothing changed.
    const connector = connectorOf(destination);
    const renewAfter = connector.renewAfterMs?.(connector.config.parse(destination.config));
    if (renewAfter !== undefined && Object.values(destination.held).some((held) => held.sentAllAt === undefined || now().getTime() - held.sentAllAt.getTime() >= renewAfter)) return true;
    const planned = new Map(last.plan.segments.map((segment) => [segment.id, segment.runId]));
    for (const id of destination.segments) {
      const segment = await segments.get(id);
      if (!planned.has(id) || (segment?.current?.runId ?? null) !== planned.get(id)) return true;
    }
    // A fold stamps its record before writing it: records a little older than the plan may have landed after it read them.
    const since = new Date(last.plan.plannedAt.getTime() - CHANGE_MARGIN_MS);
    const changes = await runs.changesSince(since);
    if (changes.some((change) => destination.segments.some((id) => Object.hasOwn(change.changes, id)))) return true;
    // Profiles whose ids, consent or sources changed matter only as members: any fold touches some, and
    // an export reads its segments whole. Members as the snapshots stand with the real-time changes since
    // (read since the oldest snapshot began): the chunks the touched ids fall in, one at a time.
    const touched = [...new Set(changes.flatMap((change) => change.touched ?? []))].sort();
    if (touched.length === 0) return false;
    const membership = new SegmentMembership(runs);
    const docs = (await Promise.all(destination.segments.map((id) => segments.get(id)))).filter((segment): segment is SegmentDoc => segment !== null);
    const states = await membership.realTime(docs);
    for (const segment of docs) if (await membership.anyMember(segment, states, touched)) return true;
    return false;
  }

  /**
   * Records an export of the destination for the window starting at `at` (a scheduled run's time, or
   * the second it was asked for). A near-real-time check with nothing changed records nothing.
   */
  async function openExport(input: { destinationId: string; at: number; full?: boolean; trigger: ExportDoc['trigger']; openedBy?: string }): Promise<string | null> {
    const destination = await requireDestination(input.destinationId);
    // The same window asked for another way (the API, or another privacy request's removal, in the
    // same second) is another export: the next second's. Two workflows never run one export.
    const mine = (open: ExportDoc) => open.trigger === input.trigger && (open.openedBy === undefined || input.openedBy === undefined || open.openedBy === input.openedBy);
    const first = Math.floor(input.at / 1000) * 1000;
    // A retry of an attempt that opened its record finds it, whatever changed since (a pause, a partner's wait).
    for (let at = first; ; at += 1000) {
      const known = await destinations.getExport(exportIdFor(destination._id, new Date(at)));
      if (!known) break;
      if (mine(known)) return known._id;
    }
    // A removal a privacy request owes is sent even to a paused destination.
    if (destination.state === 'paused' && input.trigger !== 'api' && input.trigger !== 'privacy') return null;
    if (input.trigger === 'near_real_time' && !(await changedSince(destination))) return null;
    // The partner asked (Retry-After) to be left alone until then: a schedule's turn passes.
    if ((input.trigger === 'schedule' || input.trigger === 'near_real_time') && destination.partnerWaitUntil && destination.partnerWaitUntil > now()) return null;
    for (let at = first; ; at += 1000) {
      const exportId = exportIdFor(destination._id, new Date(at));
      if (mine(await destinations.openExport({ ...newExport(exportId, destination._id, input.full ?? false, input.trigger, now()), ...(input.openedBy && { openedBy: input.openedBy }) }))) return exportId;
    }
  }

  /** Takes the destination's turn for this export; waits (by retrying) while another live export holds it. */
  async function claim(exp: ExportDoc): Promise<void> {
    const holder = await destinations.claim(exp.destinationId, exp._id);
    if (holder === exp._id) return;
    const other = await destinations.getExport(holder);
    if (other && other.state === 'running' && other.workflowId && (await isRunning(other.workflowId))) {
      throw ApplicationFailure.retryable(`export ${holder} of this destination is still running`, 'DestinationBusy');
    }
    if (other?.state === 'running') await finish(other._id, 'abandoned: its workflow ended before it finished');
    await destinations.release(exp.destinationId, holder);
    if ((await destinations.claim(exp.destinationId, exp._id)) !== exp._id) throw ApplicationFailure.retryable('the destination was taken by another export', 'DestinationBusy');
  }

  /** A member's facts now, read from its profile: for members that changed since the snapshot. */
  async function currentFacts(profileId: string): Promise<ExportFacts | null> {
    const component = await graph.component(profileId);
    return component.docs.length > 0 ? exportFacts(combineDocuments(component.docs)) : null;
  }

  /**
   * The ids the partner should hold for one segment, with the counts of who was matched, unmatched
   * or withheld and why: the snapshot's members (with the facts kept beside them) as changed in real
   * time since (changed members are read afresh). Partner ids are the match table's for the members'
   * cookie ids, read by exact `_id` once per snapshot chunk (and once for the members read afresh).
   */
  async function targetOf(segment: SegmentDoc, policy: ExportPolicy, holdout: { destinationId: string; share: number }): Promise<{ ids: string[]; stats: Pick<SegmentExport, 'members' | 'matched' | 'unmatched' | 'withheld'> }> {
    const stats = { members: 0, matched: 0, unmatched: 0, withheld: { consent: 0, labels: {} as Record<string, number>, holdout: 0, optOut: 0 } };
    // Held-out members, and members who opted out since their segments were evaluated, count as
    // members, then go no further: consent and ids are not even read.
    const heldOut = (profileId: string) => {
      if (marks.optedOut({ profileId })) {
        stats.members++;
        stats.withheld.optOut++;
        return true;
      }
      if (!isHeldOut(holdout.destinationId, profileId, holdout.share)) return false;
      stats.members++;
      stats.withheld.holdout++;
      return true;
    };
    // Collected, then sorted and made unique once: a set of 1M ids costs twice as much.
    const ids: string[] = [];
    const count = (decision: Decision) => {
      stats.members++;
      if (decision.withheld === 'consent') stats.withheld.consent++;
      else if (decision.withheld === 'label') stats.withheld.labels[decision.label] = (stats.withheld.labels[decision.label] ?? 0) + 1;
      else if (decision.ids.length === 0) stats.unmatched++;
      else {
        stats.matched++;
        for (const id of decision.ids) ids.push(id);
      }
    };
    const partner = partnerOfIdType(policy.idType);
    // Members leaving with partner ids: their cookie ids wait for one batch of match-table reads.
    let awaiting: string[][] = [];
    const countOrAwait = (decision: Decision) => {
      if (partner !== null && decision.withheld === null) awaiting.push(decision.ids);
      else count(decision);
    };
    const countAwaiting = async () => {
      if (partner === null || awaiting.length === 0) return;
      const members = awaiting;
      awaiting = [];
      const found = await matches.partnerIdsOf(partner, cookieIdsAmong(members.flat()));
      for (const ids of members) count({ withheld: null, ids: partnerIdsOf(ids, found) });
    };
    const changes = await runs.changesSince(segment.current?.startedAt ?? new Date(0));
    const states = (await new SegmentMembership(runs).realTime([segment], changes)).get(segment._id) ?? new Map<string, boolean>();
    // Members whose ids, consent or sources changed since the snapshot are read afresh, like those who entered.
    const touched = new Set<string>();
    for (const change of changes) for (const id of change.touched ?? []) touched.add(id);
    const fresh = [...states].filter(([, member]) => member).map(([id]) => id);
    const run = segment.current && (await runs.getRun(segment.current.runId));
    if (run) {
      const index = new SnapshotReader(runs, run).segmentIndex(segment._id);
      const wanted = run.chunks.flatMap((chunk, n) => (chunk.counts[index] > 0 ? [n] : []));
      // The store's reads are most of the time: a few chunks are read ahead while one is decoded.
      const reads = new Map<number, ReturnType<typeof runs.readChunk>>();
      const readAhead = (from: number) => {
        for (let k = from; k < Math.min(wanted.length, from + READ_AHEAD); k++) if (!reads.has(k)) reads.set(k, runs.readChunk(run._id, wanted[k]));
      };
      for (let k = 0; k < wanted.length; k++) {
        const n = wanted[k];
        readAhead(k);
        const chunk = await reads.get(k);
        reads.delete(k);
        readAhead(k + 1);
        if (!chunk?.facts) throw new Error(`snapshot chunk ${n} of run ${run._id} is missing or has no export facts`);
        const bits = chunk.bits[index];
        const decisions = new PackedDecisions(chunk.facts, policy);
        for (let i = 0; i < chunk.ids.length; i++) {
          if ((bits[i >> 3] & (1 << (i & 7))) === 0 || states.has(chunk.ids[i]) || heldOut(chunk.ids[i])) continue;
          if (touched.has(chunk.ids[i])) {
            fresh.push(chunk.ids[i]);
            continue;
          }
          const decision = decisions.decide(i);
          if (decision) countOrAwait(decision);
        }
        await countAwaiting();
        heartbeat({ phase: 'plan', segment: segment._id, chunk: n });
      }
    }
    await forEachConcurrently(fresh, 16, async (id) => {
      if (heldOut(id)) return;
      const facts = await currentFacts(id);
      if (facts) countOrAwait(decide(facts, policy));
    });
    await countAwaiting();
    ids.sort();
    const unique = ids.filter((id, i) => i === 0 || ids[i - 1] !== id);
    return { ids: unique, stats };
  }

  /**
   * Plans the export: per segment the target, the delta against the partner's confirmed state, and
   * the batches. Returns `ready: false` when a segment's snapshot has no export facts yet (a batch
   * run must record them first). A plan once written is kept: a retry delivers the same batches.
   */
  async function planExport(input: { exportId: string }): Promise<{ ready: boolean; batches: number }> {
    return withHeartbeats(() => plan(input.exportId));
  }

  async function plan(exportId: string): Promise<{ ready: boolean; batches: number }> {
    const startedAt = now();
    const exp = await requireExport(exportId);
    if (exp.plan) return { ready: true, batches: exp.plan.batches };
    if (exp.state !== 'running') return { ready: true, batches: 0 };
    await requireDestination(exp.destinationId);
    await claim(exp);
    // Read once the turn is taken: taking it over finishes an abandoned export, which moves the partner's state.
    const destination = await requireDestination(exp.destinationId);
    await marks.refresh(true);
    const connector = connectorOf(destination);
    const config = connector.config.parse(destination.config);
    const limits = connector.limits(config);
    const ids = [...new Set([...destination.segments, ...Object.keys(destination.held)])];
    const docs = await Promise.all(ids.map((id) => segments.get(id)));
    for (const doc of docs) {
      if (!doc || !destination.segments.includes(doc._id)) continue;
      if (!doc.current) return { ready: false, batches: 0 };
      const run = await runs.getRun(doc.current.runId);
      if (!run?.factsFor?.includes(doc._id)) return { ready: false, batches: 0 };
    }
    const labels = new Map<string, string[]>();
    for (const source of await sources.list()) labels.set(source._id, source.labels);
    const policy = exportPolicyOf(destination, labels);

    // A segment no longer exported (or deleted) is emptied at the partner: its target is nothing.
    const targetAt = (k: number) => {
      const doc = docs[k];
      return doc !== null && destination.segments.includes(ids[k]) ? targetOf(doc, policy, { destinationId: destination._id, share: destination.holdoutShare ?? 0 }) : Promise.resolve(null);
    };
    // Segments filling one partner audience (a list, a shared code) are read first: each keeps the ids the others send.
    const audienceOf = (segmentId: string) => connector.audienceOf?.(config, segmentId) ?? segmentId;
    const sharing = (k: number) => ids.flatMap((other, j) => (j !== k && audienceOf(other) === audienceOf(ids[k]) ? [j] : []));
    const sharedTargets = new Map<number, Awaited<ReturnType<typeof targetAt>>>();
    for (let k = 0; k < ids.length; k++) if (sharing(k).length > 0) sharedTargets.set(k, await targetAt(k));

    const planned: PlannedSegment[] = [];
    const planId = `${exp._id}:${randomBytes(4).toString('hex')}`;
    let n = 0;
    for (let k = 0; k < ids.length; k++) {
      const doc = docs[k];
      const exported = doc !== null && destination.segments.includes(ids[k]);
      const found = sharedTargets.has(k) ? sharedTargets.get(k) : await targetAt(k);
      const target = found?.ids ?? [];
      const stats = found?.stats ?? { members: 0, matched: 0, unmatched: 0, withheld: { consent: 0, labels: {}, holdout: 0, optOut: 0 } };
      const minimum = connector.minAudience?.(config) ?? 0;
      const refused = exported && target.length < minimum ? `${target.length} matched ids, under the partner's minimum audience of ${minimum}: nothing added` : null;
      const before = destination.held[ids[k]] ?? null;
      const state = await destinations.readState(destination._id, ids[k], before);
      // After the partner's address changed, what it holds is unknown: everything is sent again. So it is when the
      // partner's memberships would lapse before the next renewal (a DSP's TTL).
      const renewAfter = connector.renewAfterMs?.(config);
      const renewing = renewAfter !== undefined && before !== null && (before.sentAllAt === undefined || startedAt.getTime() - before.sentAllAt.getTime() >= renewAfter);
      const sendAll = exp.full || destination.resend === true || renewing || before === null || before.resendOwed === true;
      const change = delta(refused ? [] : target, state, sendAll);
      // Under the minimum nothing is added, but whatever the partner holds that should not be is still removed.
      if (refused) change.removes = change.removes.filter((id) => !target.includes(id));
      const keptByOthers = new Set(sharing(k).flatMap((j) => sharedTargets.get(j)?.ids ?? []));
      if (keptByOthers.size > 0) change.removes = change.removes.filter((id) => !keptByOthers.has(id));
      const batches = toBatches(change.adds, change.removes, limits.batchSize);
      const from = n;
      await forEachConcurrently(
        batches.map((batch, i) => ({ batch, number: from + i })),
        4,
        ({ batch, number }) => destinations.writeBatch(planId, number, { segmentId: ids[k], ...batch }),
      );
      n += batches.length;
      heartbeat({ phase: 'plan', segment: ids[k], batches: n });
      const matchRate = stats.matched + stats.unmatched > 0 ? stats.matched / (stats.matched + stats.unmatched) : null;
      planned.push({ id: ids[k], name: doc?.name ?? ids[k], ...stats, matchRate, adds: change.adds.length, removes: change.removes.length, ids: 0, before, batches: [from, n], refused, runId: doc?.current?.runId ?? null, sentAll: sendAll && !refused });
    }
    // A plan once saved stands: an attempt that lost a race with another saves nothing.
    const saved = await destinations.savePlan(exp._id, { id: planId, segments: planned, batches: n, plannedAt: startedAt, resent: destination.resend === true, tookMs: now().getTime() - startedAt.getTime() });
    if (!saved) {
      await destinations.dropBatches(planId, n);
      throw ApplicationFailure.retryable(`export ${exp._id} was planned meanwhile`, 'PlannedMeanwhile');
    }
    return { ready: true, batches: n };
  }

  /** Prepares the next batch run of every segment (they record export facts for the exported ones), after the group `after` keys; null once none is left. */
  async function prepareExportRun(input: { after?: string | null } = {}): Promise<PreparedRun | null> {
    const at = now();
    const prepared = await prepareNextRun(segments, runs, at, at, deps.config.DMP_SEGMENTS_PER_RUN, input.after ?? null);
    return prepared && { runId: prepared.run._id, key: prepared.key };
  }

  /**
   * Delivers every planned batch without a receipt: paced to the partner's rate, each retried with
   * backoff (the partner's Retry-After first) under the same batch id, and receipted on the
   * partner's confirmation. Returns the error that stopped delivery (a refusal, or a partner still
   * failing after MAX_ATTEMPTS), or null when every batch is confirmed.
   */
  async function deliverExport(input: { exportId: string }): Promise<{ confirmed: number; error: string | null }> {
    const exp = await requireExport(input.exportId);
    if (!exp.plan || exp.state !== 'running') return { confirmed: exp.batchesConfirmed, error: exp.error };
    const plan = exp.plan;
    const destination = await requireDestination(exp.destinationId);
    const connector = connectorOf(destination);
    const config = connector.config.parse(destination.config);
    const limits = connector.limits(config);
    const receipts = await destinations.receiptsOf(exp._id, plan.batches);
    const pending = Array.from({ length: plan.batches }, (_, n) => n).filter((n) => receipts.get(n)?.state !== 'applied');
    let confirmed = plan.batches - pending.length;
    const pacer = new Pacer(limits.requestsPerSecond);
    let stopped: string | null = null;
    // By batch number: batches sent side by side end in any order, and the error reads the same whichever came back first.
    const refusals = new Map<number, string>();
    // An attempt Temporal gave up (unheard for the heartbeat timeout: its retry delivers the same batches) sends and records nothing more.
    const givenUp = attemptSignal();
    const attemptContext = { ...context, http: outbound.until(givenUp) };
    const segmentOf = (n: number) => plan.segments.find((segment) => n >= segment.batches[0] && n < segment.batches[1]) as PlannedSegment;

    /** One batch delivered, or given up on. */
    const deliverBatch = async (n: number) => {
      const stored = await destinations.readBatch(plan.id, n);
      const segment = segmentOf(n);
      if (!stored || stored.segmentId !== segment.id) throw new Error(`planned batch ${n} of export ${exp._id} is missing or not the plan's`);
      // An export that lost the destination (taken over as abandoned) sends nothing more.
      if ((await destinations.holder(destination._id)) !== exp._id) {
        stopped = 'the export no longer holds the destination';
        return;
      }
      const batch: ExportBatch = { destinationId: destination._id, exportId: exp._id, batchId: batchId(exp._id, n), segment: { id: segment.id, name: segment.name }, idType: destination.idType, adds: stored.adds, removes: stored.removes };
      let attempts = receipts.get(n)?.attempts ?? 0;
      for (let attempt = 1; !stopped && !givenUp.aborted; attempt++) {
        await pacer.wait();
        // Stopped while this batch waited its turn (a partner asking to be left alone): it is not sent.
        if (stopped || givenUp.aborted) return;
        attempts++;
        try {
          const delivered = await connector.deliver(batch, config, attemptContext);
          // Given up while the partner answered: the attempt that replaced it sends the batch again under its key, and keeps its receipt.
          if (givenUp.aborted) return;
          const refusedLines = linesNotApplied(batch, delivered);
          await destinations.writeReceipt({ _id: batch.batchId, exportId: exp._id, destinationId: destination._id, state: 'applied', attempts, rejected: delivered.rejected, ...(refusedLines.length > 0 && { refusedLines }), status: null, error: null, at: now() });
          confirmed++;
          heartbeat({ phase: 'deliver', confirmed });
          return;
        } catch (error) {
          if (!(error instanceof DeliveryError)) throw error;
          // Abandoned with its attempt: the attempt that replaced it owns the batch's receipt.
          if (givenUp.aborted) return;
          const last = !error.retryable || attempt >= MAX_ATTEMPTS;
          // Redacted on its own: the partner's answer may end in a secret cut short.
          const message = redact(error.message, connector, config);
          await destinations.writeReceipt({ _id: batch.batchId, exportId: exp._id, destinationId: destination._id, state: 'failed', attempts, rejected: 0, status: error.status, error: message, at: now() });
          // Asked to wait longer than a delivery does (on its last attempt too): recorded, and the export stops. A
          // refusal's Retry-After is not such a request: the batch is refused, and the others go.
          if (error.retryable && error.retryAfterMs !== null && error.retryAfterMs > MAX_WAIT_MS) {
            const until = new Date(now().getTime() + error.retryAfterMs);
            await destinations.update(destination._id, { partnerWaitUntil: until });
            stopped = `batch ${n}: ${message}; the partner asked to wait until ${until.toISOString()}`;
            return;
          }
          if (last) {
            // A refused batch leaves the others to go (removals above all); a partner still failing stops the export.
            refusals.set(n, `batch ${n}: ${message}`);
            if (error.retryable) stopped = `batch ${n}: ${message} (after ${attempt} attempts)`;
            return;
          }
          const wait = error.retryAfterMs ?? backoffMs(attempt);
          if (error.retryAfterMs !== null) pacer.pause(wait);
          await sleep(wait, givenUp);
        }
      }
    };
    await withHeartbeats(() =>
      forEachConcurrently(pending, limits.concurrency, async (n) => {
        if (stopped || givenUp.aborted) return;
        try {
          await deliverBatch(n);
        } catch (error) {
          // The attempt fails (a store error, a folder that cannot be written): the other batches under way send nothing more.
          stopped ??= `batch ${n}: ${error instanceof Error ? error.message : String(error)}`;
          throw error;
        }
      }),
    );
    // Given up: nobody hears what it returns (or it is the shutdown's, and the attempt is tried again).
    if (givenUp.aborted) throw givenUp.reason;
    return { confirmed, error: stopped ?? (refusals.size > 0 ? [...refusals].sort(([a], [b]) => a - b).map(([, refusal]) => refusal).join('; ').slice(0, 2000) : null) };
  }

  /**
   * Ends an export: each segment's partner state advances by the confirmed batches only (ids of
   * unconfirmed ones become uncertain), the destination points at the new state, and the plan's
   * batches are let go (receipts stay). Completed when every batch was confirmed and no error is
   * given; failed otherwise. Safe to repeat.
   */
  async function finish(exportId: string, error: string | null): Promise<ExportDoc> {
    const exp = await requireExport(exportId);
    const destination = await destinations.get(exp.destinationId);
    const plan = exp.plan;
    if (exp.state === 'running') {
      if (plan && destination) {
        const receipts = await destinations.receiptsOf(exp._id, plan.batches);
        const held = { ...destination.held };
        for (const segment of plan.segments) {
          if (held[segment.id]?.exportId === exp._id) {
            // Advanced by an interrupted attempt of this finish.
            segment.ids = held[segment.id].ids;
            continue;
          }
          if (segment.batches[0] === segment.batches[1]) {
            // Nothing sent: the partner's state stands as it was (and is not rewritten); a segment the
            // destination no longer exports, once the partner holds none of it, is forgotten.
            segment.ids = segment.before?.ids ?? 0;
            if (!destination.segments.includes(segment.id) && segment.ids === 0 && (segment.before?.uncertain ?? 0) === 0) delete held[segment.id];
            // A resend refused under the minimum audience is owed until the segment is sent whole.
            else if (segment.refused && plan.resent && held[segment.id]) held[segment.id] = { ...held[segment.id], resendOwed: true };
            // Sending all of it took nothing (the partner holds none, and should): a renewal is as good as made.
            else if (segment.sentAll && held[segment.id]) held[segment.id] = { ...held[segment.id], sentAllAt: plan.plannedAt };
            continue;
          }
          const numbers = Array.from({ length: segment.batches[1] - segment.batches[0] }, (_, k) => segment.batches[0] + k);
          const outcomes: BatchOutcome[] = [];
          await forEachConcurrently(numbers, 4, async (n) => {
            const batch = await destinations.readBatch(plan.id, n);
            if (!batch) throw new Error(`planned batch ${n} of export ${exp._id} is missing`);
            const receipt = receipts.get(n);
            const lines = [...batch.adds, ...batch.removes];
            const refused = receipt?.refusedLines?.length ? new Set(receipt.refusedLines.map((line) => lines[line])) : undefined;
            outcomes.push({ adds: batch.adds, removes: batch.removes, confirmed: receipt?.state === 'applied', ...(refused && { refused }) });
          });
          heartbeat({ phase: 'finish', segment: segment.id });
          const state = nextState(await destinations.readState(destination._id, segment.id, segment.before), outcomes);
          segment.ids = state.held.length;
          const written = await destinations.writeState(destination._id, segment.id, exp._id, state);
          // Sent whole: ids the partner did not confirm are uncertain now, and every export after sends them
          // until it does. Sending all of it again for a batch that failed would resend every id, each time.
          const sentAll = segment.sentAll;
          const sentAllAt = sentAll ? plan.plannedAt : segment.before?.sentAllAt;
          const resendOwed = segment.refused ? plan.resent || segment.before?.resendOwed === true : segment.before?.resendOwed === true && !sentAll;
          if (written.ids === 0 && written.uncertain === 0 && !destination.segments.includes(segment.id)) delete held[segment.id];
          else held[segment.id] = { ...written, ...(sentAllAt && { sentAllAt }), ...(resendOwed && { resendOwed }) };
        }
        exp.batchesConfirmed = [...receipts.values()].filter((receipt) => receipt.state === 'applied').length;
        exp.rejected = [...receipts.values()].reduce((sum, receipt) => sum + (receipt.state === 'applied' ? receipt.rejected : 0), 0);
        if (!error && exp.batchesConfirmed < plan.batches) error = `${plan.batches - exp.batchesConfirmed} of ${plan.batches} batches unconfirmed`;
        // Everything was sent again to the partner's address as it was when planning began (what it did not confirm is uncertain, as above).
        const resentFor = plan.resent && (destination.resentFor === null || destination.resentFor < plan.plannedAt) ? plan.plannedAt : destination.resentFor;
        await destinations.saveHoldings(destination._id, held, resentFor);
      }
      exp.state = error ? 'failed' : 'completed';
      exp.error = error;
      exp.finishedAt = now();
      // The partner took every batch: whatever wait it asked for is over (cleared before the outcome shows, so nobody reads the two apart).
      if (destination?.partnerWaitUntil && exp.state === 'completed' && exp.batchesConfirmed > 0) await destinations.update(destination._id, { partnerWaitUntil: null });
      await destinations.saveExport(exp);
      if (destination) {
        const before = destination.lastExport;
        const failingSince = exp.state === 'failed' ? (before?.state === 'failed' ? (before.failingSince ?? before.finishedAt ?? before.startedAt) : exp.finishedAt) : undefined;
        await destinations.saveLastExport(destination._id, { exportId: exp._id, state: exp.state, startedAt: exp.startedAt, finishedAt: exp.finishedAt, ...(failingSince && { failingSince }) });
      }
    }
    // Also on a repeat: an attempt interrupted after recording the outcome left these to do. States
    // this export replaced go only now — until the outcome is recorded, a repeat computes from them.
    const current = await destinations.get(exp.destinationId);
    if (current && plan) {
      for (const segment of plan.segments) {
        if (segment.before && segment.before.exportId !== exp._id && current.held[segment.id]?.exportId !== segment.before.exportId) await destinations.dropState(current._id, segment.id, segment.before);
      }
    }
    if (current && !current.dropping) await destinations.release(current._id, exp._id);
    // Deleted while it ran, or being deleted (a removal marks it before it reads what to drop): what it wrote of the partner's state goes too.
    else await destinations.remove(exp.destinationId);
    if (plan) await destinations.dropBatches(plan.id, plan.batches);
    return exp;
  }

  async function finishExport(input: { exportId: string; error?: string | null }): Promise<{ state: ExportDoc['state']; adds: number; removes: number; batches: number }> {
    const exp = await withHeartbeats(() => finish(input.exportId, input.error ?? null));
    const sum = (pick: (segment: PlannedSegment) => number) => (exp.plan?.segments ?? []).reduce((total, segment) => total + pick(segment), 0);
    return { state: exp.state, adds: sum((segment) => segment.adds), removes: sum((segment) => segment.removes), batches: exp.plan?.batches ?? 0 };
  }

  /**
   * Records the workflow running an export (a later export of the destination checks it is alive),
   * once the start stands: only the API, which records an export before starting it, can give one up.
   */
  async function attachExport(input: { exportId: string; workflowId: string }): Promise<void> {
    const exp = await requireExport(input.exportId);
    if (exp.trigger === 'api') await beginGated(gates, startGateKey.export(exp._id), () => destinations.failUnstarted(exp._id, 'its workflow could not be started', now()));
    await destinations.exports.updateOne({ _id: input.exportId }, { $set: { workflowId: input.workflowId } });
  }

  return { openExport, attachExport, planExport, prepareExportRun, deliverExport, finishExport };
}

export function newExport(exportId: string, destinationId: string, full: boolean, trigger: ExportDoc['trigger'], at: Date): ExportDoc {
  return { _id: exportId, destinationId, state: 'running', full, trigger, plan: null, batchesConfirmed: 0, rejected: 0, startedAt: at, finishedAt: null, error: null };
}

export type ExportActivities = ReturnType<typeof createExportActivities>;
