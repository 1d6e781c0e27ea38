import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { forEachConcurrently, type Store } from '../store/db';
import { EventIdGenerations } from '../store/eventIds';
import { ExpiredProfiles } from '../store/expiredProfiles';
import { CACHE_MAX_AGE_MS } from '../store/identities';
import { ProfileEventLog } from '../store/profileEvents';
import { RetentionStore } from '../store/retention';
import { DestinationStore } from '../store/destinations';
import { FeedStore } from '../store/feeds';
import { UnlinkStore } from '../store/identityUnlinks';
import { LookalikeRunStore } from '../store/lookalikeRuns';
import { MatchTableStore } from '../store/matchTables';
import { PrivacyStore } from '../store/privacy';
import { failRun, SegmentRunStore } from '../store/segmentRuns';
import { SegmentStore, type SegmentDoc } from '../store/segments';
import { runGroups } from '../domain/segments';
import { SourceStore } from '../store/sources';
import { startGateKey, StartGates } from '../store/startGates';
import { UploadStore } from '../store/uploads';
import { VersionClaims } from '../store/versionClaims';
import { crmImportWorkflowId, destinationExportWorkflowId, feedPullWorkflowId, identityUnlinkWorkflowId, lookalikeWorkflowId, privacyRequestWorkflowId, segmentRunWorkflowId, sourceWorkflowId } from '../domain/workflowIds';
import { isExpired } from '../domain/profileExpiry';
import { partitionOf } from '../domain/partition';
import { matchLimits } from '../domain/partners';
import { expiryPartId, ProfileExpiries, type ExpiryPartDoc } from '../store/profileExpiries';
import {
  deleteDestinationSchedule,
  deleteFeedSchedule,
  ensureSegmentSchedule,
  ensureSourceWorkflow,
  latestWorkflowRun,
  listSegmentSchedules,
  releaseSegmentSchedule,
  requestPartitionExpiry,
  requestUnlink,
  settleDestinationSchedule,
  settleFeedSchedule,
  settleLookalikeSchedule,
  startPrivacyRequest,
  startRunOfSegments,
  terminateIfRunning,
  wakeProfilePartition,
  workflowIsRunning,
  type PartitionWorkflowConfig,
  type SourceWorkflowConfig,
} from '../temporal/client';
import { heartbeat, withHeartbeats } from './heartbeat';
import { passPeople, peoplePassStores } from './peoplePass';

export interface RetentionDeps {
  store: Store;
  temporal: Client;
  config: PartitionWorkflowConfig & SourceWorkflowConfig & Pick<Config, 'DMP_DEDUPE_WINDOW_HOURS' | 'DMP_RAW_EVENT_TTL_HOURS' | 'DMP_EVENT_HISTORY_DAYS' | 'DMP_SEGMENT_RUN_DAYS' | 'DMP_EXPORT_HISTORY_DAYS' | 'DMP_SOURCE_HISTORY_DAYS' | 'DMP_INACTIVE_PROFILE_DAYS' | 'DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN' | 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP' | 'DMP_SEGMENTS_PER_RUN'>;
  now?: () => Date;
}

/** How often the match tables are swept of keys past their TTL: a pass over both sides of the tables, so daily. */
const MATCH_SWEEP_EVERY_MS = 24 * 3_600_000;
/** The longest one run's part of a sweep reads and removes: a third of the retention step's timeout. */
const MATCH_SWEEP_BUDGET_MS = 10 * 60_000;

/** Most removals per stream and run: a backlog is worked off over several runs, each bounded. */
const PER_STREAM = 20_000;
/** Links an expiry's finish looks at concurrently. */
const LINKS_AT_ONCE = 16;

/**
 * A run is recorded before its workflow starts (the API, or a scheduled run's own workflow, starts
 * it right after): one younger than this may still be about to start.
 */
const RUN_START_GRACE_MS = 15 * 60_000;
/** How old the snapshot of a segment without a schedule may grow before the retention run evaluates it again. */
const SNAPSHOT_MAX_AGE_MS = 24 * 3_600_000;
/** A scheduled segment's snapshot counts as stale only past this many of those ages: longer than a monthly cron's gap, so no run doubles a scheduled one. */
const SCHEDULED_SNAPSHOT_AGES = 32;

/**
 * A start gate is in question until its workflow's first activity runs: seconds, or as long as the
 * workers are down. Past this a late workflow goes ahead; its record, failed by the API, still stops it.
 */
const START_GATE_TTL_MS = 7 * 86_400_000;

/**
 * Parts of work that ended (an export's batches, an upload's staged chunks) are removed this long
 * after it ended, and a version claim this long after it was taken: a writer given up on, still
 * running, stops at its next write to what it works for, well within this.
 */
const LEFTOVER_AGE_MS = 60 * 60_000;

/** An upload still receiving that wrote no progress for this long was left by its reader (progress is written every few seconds while rows arrive). */
const UPLOAD_STALL_MS = 86_400_000;

/** The activities of the retention run: each removes one kind of old data and says how much. */
export function createRetentionActivities(deps: RetentionDeps) {
  const now = deps.now ?? (() => new Date());
  const retention = new RetentionStore(deps.store);
  const sources = new SourceStore(deps.store);
  const routed = new ProfileEventLog(deps.store);
  const eventIds = new EventIdGenerations(deps.store.db, deps.config.DMP_DEDUPE_WINDOW_HOURS);
  const expiries = new ProfileExpiries(deps.store);

  return {
    /**
     * Plans the expiry of every person last seen before `ttlMs` (else DMP_INACTIVE_PROFILE_DAYS; 0
     * is off) ago: one pass over the profiles (as a segment run's), then per partition the documents
     * of those people, at most PER_STREAM (the rest wait for the next run), and the links between
     * them. Written once under `expiryId`: a retry returns the same plan. Expiries left finished by
     * earlier runs are forgotten first.
     */
    planInactiveExpiry(input: { expiryId: string; ttlMs?: number }): Promise<InactiveExpiryPlan> {
      return withHeartbeats(async () => {
        const ttlMs = input.ttlMs ?? deps.config.DMP_INACTIVE_PROFILE_DAYS * 86_400_000;
        const none = { expiryId: input.expiryId, partitions: [], people: 0, documents: 0 };
        if (!(ttlMs > 0)) return none;
        const existing = await expiries.get(input.expiryId);
        if (existing) {
          const parts = await expiries.parts(existing);
          // Complete: a retry of a planning that got as far as its end. Else it stopped half way, before any partition was asked: planned again.
          if (parts.length === existing.partitions.length) return { expiryId: existing._id, partitions: existing.partitions, people: existing.people, documents: parts.reduce((sum, part) => sum + part.docs.length, 0) };
          await expiries.discard(existing);
        }
        for (const earlier of await expiries.plannedBefore(now())) await expiries.forget(earlier);
        const at = now();
        const cutoff = new Date(at.getTime() - ttlMs);
        const stores = peoplePassStores(deps.store);
        type Planned = { docs: Array<{ id: string; version: number }>; links: string[] };
        // A person of linked (or split, or succeeding) documents: each document at the version the pass read,
        // and the links the pass walked. Not those who opted out: their mark names their documents, and one
        // made afresh for them once their claims went would not carry it.
        const { people } = await passPeople<Planned | null>(stores, { traits: false, identities: false, consent: false, events: new Map() }, {
          document: (stored, fields) => (fields.lastSeen < cutoff ? { docs: [{ id: stored.profileId, version: stored.version }], links: [] } : null),
          person: (person, component) => (person.lastSeen < cutoff ? { docs: component.docs.map((doc) => ({ id: doc.profileId, version: doc.version })), links: component.links.map((link) => link._id) } : null),
        }, { skipOptedOut: true });
        const byPartition = new Map<number, Planned['docs']>();
        const links = new Set<string>();
        let planned = 0;
        for (const person of people.values()) {
          if (!person) continue;
          const { docs } = person;
          const partitions = docs.map(({ id }) => partitionOf(id, deps.config.DMP_PROFILE_PARTITIONS));
          // A person is planned whole or not at all, so no share of them is left behind for lack of room.
          if (partitions.some((partition) => (byPartition.get(partition)?.length ?? 0) + docs.length > PER_STREAM)) continue;
          for (const link of person.links) links.add(link);
          docs.forEach((doc, n) => {
            const list = byPartition.get(partitions[n]) ?? [];
            list.push(doc);
            byPartition.set(partitions[n], list);
          });
          planned++;
          if (planned % 10_000 === 0) heartbeat({ planned });
        }
        if (planned === 0) return none;
        const partitions = [...byPartition.keys()].sort((a, b) => a - b);
        const parts: ExpiryPartDoc[] = partitions.map((partition) => {
          const docs = byPartition.get(partition)!.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
          return {
            _id: expiryPartId(input.expiryId, partition),
            expiryId: input.expiryId,
            partition,
            cutoff,
            docs: docs.map((doc) => doc.id),
            versions: docs.map((doc) => doc.version),
            next: 0,
            expired: 0,
            skipped: 0,
            identities: 0,
            done: false,
          };
        });
        await expiries.plan({ _id: input.expiryId, cutoff, plannedAt: at, people: planned, partitions }, parts, [...links]);
        return { expiryId: input.expiryId, partitions, people: planned, documents: parts.reduce((sum, part) => sum + part.docs.length, 0) };
      });
    },

    /** Asks each partition's writer for its share of an expiry (the writers expire, since only they write their documents). */
    async requestExpiries(input: { expiryId: string; partitions: number[] }): Promise<void> {
      await Promise.all(input.partitions.map((partition) => requestPartitionExpiry(deps.temporal, deps.store.db.databaseName, partition, input.expiryId, deps.config)));
    },

    /** Read-only. The partitions whose share of an expiry is not done. */
    async pendingExpiries(expiryId: string): Promise<number[]> {
      const expiry = await expiries.get(expiryId);
      if (!expiry) return [];
      return (await expiries.parts(expiry, { withoutDocs: true })).filter((part) => !part.done).map((part) => part.partition);
    },

    /**
     * What an expiry removed: documents expired (and those found active again when their writer came
     * to them), claims released, and the links between its documents once both ends expired. The
     * plan then leaves (a share still under way stays, and a later run forgets it once done).
     */
    finishInactiveExpiry(expiryId: string): Promise<InactiveExpiryResult> {
      return withHeartbeats(async () => {
        const result: InactiveExpiryResult = { documentsExpired: 0, documentsSkipped: 0, identitiesReleased: 0, linksRemoved: 0 };
        const expiry = await expiries.get(expiryId);
        if (!expiry) return result;
        for (const part of await expiries.parts(expiry, { withoutDocs: true })) {
          result.documentsExpired += part.expired;
          result.documentsSkipped += part.skipped;
          result.identitiesReleased += part.identities;
        }
        const stores = peoplePassStores(deps.store);
        for await (const links of expiries.links(expiry)) {
          // Many links at once (each is three or four reads by key, ~5 ms: one at a time, a plan of
          // 160,000 links took ~13 minutes); a person's documents end several links, read once.
          const expired = new Map<string, Promise<boolean>>();
          const isEndExpired = (end: string) => {
            let known = expired.get(end);
            if (!known) expired.set(end, (known = stores.profiles.get(end).then(isExpired)));
            return known;
          };
          await forEachConcurrently(links, LINKS_AT_ONCE, async (id) => {
            const link = await stores.identities.links.findOne({ _id: id });
            if (!link) return;
            const ends = await Promise.all(link.profiles.map(isEndExpired));
            if (!ends.every(Boolean)) return;
            await stores.identities.removeLinks([id]);
            result.linksRemoved++;
            heartbeat({ linksRemoved: result.linksRemoved });
          });
        }
        await expiries.forget(expiry);
        return result;
      });
    },

    /**
     * Snapshots of segment runs no segment reads any more, records of runs ended more than `ttlMs`
     * (else DMP_SEGMENT_RUN_DAYS) ago, run states of removed segments, and past days of real-time
     * changes folded into history.
     */
    releaseSegmentSnapshots(input: { ttlMs?: number } = {}): Promise<{ runs: number; records: number; runStates: number }> {
      return withHeartbeats(async () => {
        const at = now();
        const forgetBefore = new Date(at.getTime() - (input.ttlMs ?? deps.config.DMP_SEGMENT_RUN_DAYS * 86_400_000));
        const segments = new SegmentStore(deps.store);
        const { released, forgotten } = await new SegmentRunStore(deps.store).releaseUnread(await segments.list(), at, forgetBefore);
        return { runs: released, records: forgotten, runStates: await segments.forgetOrphanRunStates() };
      });
    },

    /**
     * The shared segment schedules made to match the segments: each schedule a segment has exists,
     * and those no segment has (left by a request cut short, or one per segment from before they
     * were shared) are removed.
     */
    reconcileSegmentSchedules(): Promise<{ created: number; removed: number }> {
      // Many leftover schedules (one per segment, from before they were shared) take longer than a heartbeat's wait.
      return withHeartbeats(async () => {
        const databaseName = deps.store.db.databaseName;
        const segments = new SegmentStore(deps.store);
        const wanted = await segments.schedules();
        const existing = new Set(await listSegmentSchedules(deps.temporal, databaseName));
        const result = { created: 0, removed: 0 };
        for (const [key, schedule] of wanted) {
          if (!existing.has(key) && (await ensureSegmentSchedule(deps.temporal, databaseName, schedule, deps.config))) result.created++;
        }
        for (const key of existing) {
          if (!wanted.has(key) && (await releaseSegmentSchedule(deps.temporal, databaseName, key, () => segments.schedules(), deps.config))) result.removed++;
        }
        return result;
      });
    },

    /**
     * Destination, feed and lookalike re-training schedules a change was saved for but never made
     * (the API stopped between saving it and updating the schedule): made to match the destination,
     * source or run as it is now. A destination or feed source whose create was never answered is
     * removed with its schedule instead, as the API removes one whose create failed: its client,
     * answered with an error, asks again. Only changes older than `graceMs` (else
     * RUN_START_GRACE_MS), so none the API is still making; schedules no change is owed to are left
     * alone, paused from the Temporal UI or not.
     */
    resyncSchedules(input: { graceMs?: number } = {}): Promise<{ schedules: number; createsUndone: number }> {
      return withHeartbeats(async () => {
        const databaseName = deps.store.db.databaseName;
        const before = new Date(now().getTime() - (input.graceMs ?? RUN_START_GRACE_MS));
        const result = { schedules: 0, createsUndone: 0 };
        // An unanswered create's schedule (and workflow) go first, the document last and only while
        // still marked: a retry finds it again, and one a late API answered meanwhile is made again below.
        const destinations = new DestinationStore(deps.store);
        for (const owed of await destinations.scheduleSyncs.owedBefore(before)) {
          if (owed.scheduleSync.create) {
            await deleteDestinationSchedule(deps.temporal, databaseName, owed._id);
            if (await destinations.scheduleSyncs.deleteIfMarked(owed._id, owed.scheduleSync)) {
              await destinations.removeExportState(owed._id);
              result.createsUndone++;
            }
          }
          await settleDestinationSchedule(deps.temporal, databaseName, destinations.scheduleSyncs, owed._id, owed.scheduleSync, deps.config);
          result.schedules++;
          heartbeat({ destinationId: owed._id });
        }
        const sources = new SourceStore(deps.store);
        for (const owed of await sources.scheduleSyncs.owedBefore(before)) {
          if (owed.scheduleSync.create) {
            // Its connection workflow, started before the schedule, would have no source to drain.
            await terminateIfRunning(deps.temporal, sourceWorkflowId(owed._id), 'its source was never created');
            await deleteFeedSchedule(deps.temporal, databaseName, owed._id);
            if (await sources.scheduleSyncs.deleteIfMarked(owed._id, owed.scheduleSync)) {
              await sources.remove(owed);
              result.createsUndone++;
            } else await ensureSourceWorkflow(deps.temporal, owed, deps.config);
          }
          await settleFeedSchedule(deps.temporal, databaseName, sources.scheduleSyncs, owed._id, owed.scheduleSync, deps.config);
          result.schedules++;
          heartbeat({ sourceId: owed._id });
        }
        const lookalikes = new LookalikeRunStore(deps.store).scheduleSyncs;
        for (const owed of await lookalikes.owedBefore(before)) {
          await settleLookalikeSchedule(deps.temporal, databaseName, lookalikes, owed._id, owed.scheduleSync, deps.config);
          result.schedules++;
          heartbeat({ runId: owed._id });
        }
        return result;
      });
    },

    /**
     * Segment runs recorded as running whose workflow ended without saying so (terminated from the
     * Temporal UI, or its history lost): recorded as failed, so their segments show it and keep
     * reading their previous snapshot, and the run's record can age out like any other. Only runs
     * older than `graceMs` (else RUN_START_GRACE_MS).
     */
    failAbandonedSegmentRuns(input: { graceMs?: number } = {}): Promise<{ runs: number }> {
      return withHeartbeats(async () => {
        const at = now();
        const segments = new SegmentStore(deps.store);
        const runs = new SegmentRunStore(deps.store);
        let failed = 0;
        for (const runId of await runs.runningSince(new Date(at.getTime() - (input.graceMs ?? RUN_START_GRACE_MS)))) {
          if (await workflowIsRunning(deps.temporal, segmentRunWorkflowId(deps.store.db.databaseName, runId))) continue;
          await failRun(segments, runs, runId, 'abandoned: its workflow ended before it finished', at);
          failed++;
          heartbeat({ runId });
        }
        return { runs: failed };
      });
    },

    /**
     * Records of exports that ended more than `ttlMs` (else DMP_EXPORT_HISTORY_DAYS) ago, with their
     * batches' receipts: a near-real-time destination adds one every minute or so. Safe to repeat.
     */
    expireExportRecords(input: { ttlMs?: number } = {}): Promise<{ exports: number; receipts: number }> {
      return withHeartbeats(() => new DestinationStore(deps.store).expireExports(new Date(now().getTime() - (input.ttlMs ?? deps.config.DMP_EXPORT_HISTORY_DAYS * 86_400_000)), PER_STREAM));
    },

    /**
     * Exports, imports, feed pulls and lookalike runs the API recorded and then never started (it
     * stopped between the record and the start), and imports, feed pulls and lookalike runs whose
     * workflow ended without recording how (terminated from the Temporal UI): recorded as failed, an
     * import's staged rows removed. (An export that began is closed by the destination's next
     * export.) Work never begun is first given up at its start gate, so a workflow that starts after
     * all does none of it (as after a start the API gave up). Only records older than `graceMs`
     * (else RUN_START_GRACE_MS) whose workflow is not running.
     */
    failAbandonedWork(input: { graceMs?: number } = {}): Promise<{ exports: number; imports: number; feedPulls: number; lookalikes: number }> {
      return withHeartbeats(async () => {
        const databaseName = deps.store.db.databaseName;
        const at = now();
        const before = new Date(at.getTime() - (input.graceMs ?? RUN_START_GRACE_MS));
        const gates = new StartGates(deps.store);
        /**
         * Why the work is no longer under way, or null while its workflow runs it: never begun (now
         * given up for good), or ended without saying so. `gate` is null for work only a schedule starts.
         */
        const gone = async (running: boolean, gate: string | null): Promise<string | null> => {
          if (running) return null;
          return gate !== null && (await gates.abandon(gate)) ? 'abandoned: its workflow never started' : 'abandoned: its workflow ended before it finished';
        };
        const result = { exports: 0, imports: 0, feedPulls: 0, lookalikes: 0 };
        const destinations = new DestinationStore(deps.store);
        for (const exportId of await destinations.apiExportsRunningBefore(before)) {
          if (await workflowIsRunning(deps.temporal, destinationExportWorkflowId(databaseName, exportId))) continue;
          // One that began is the next export's to close: it books what the partner confirmed (activities/exports).
          if (!(await gates.abandon(startGateKey.export(exportId)))) continue;
          await destinations.failUnstarted(exportId, 'abandoned: its workflow never started', at);
          result.exports++;
          heartbeat({ exportId });
        }
        const uploads = new UploadStore(deps.store);
        for (const upload of await uploads.importingBefore(before)) {
          const error = await gone(await workflowIsRunning(deps.temporal, crmImportWorkflowId(databaseName, upload._id)), startGateKey.import(upload._id));
          if (error === null || !(await uploads.finish(upload._id, 'importing', 'failed', error, at))) continue;
          await uploads.dropChunks(upload._id, upload.chunks);
          result.imports++;
          heartbeat({ uploadId: upload._id });
        }
        const feeds = new FeedStore(deps.store);
        for (const pull of await feeds.runningBefore(before)) {
          // A feed's pulls run one at a time under one workflow id; its memo names the pull it is on.
          const run = await latestWorkflowRun(deps.temporal, feedPullWorkflowId(databaseName, pull.sourceId));
          // A fetch attempt a terminated pull left running writes nothing more once it is failed (its writes are conditional on a running pull).
          const error = await gone(run?.memo.pullId === pull._id && run.closedAt === null, pull.trigger === 'schedule' ? null : startGateKey.feedPull(pull._id));
          if (error === null || !(await feeds.failRunning(pull._id, error, at))) continue;
          result.feedPulls++;
          heartbeat({ pullId: pull._id });
        }
        const lookalikes = new LookalikeRunStore(deps.store);
        for (const runId of await lookalikes.apiRunsRunningBefore(before)) {
          const error = await gone(await workflowIsRunning(deps.temporal, lookalikeWorkflowId(databaseName, runId)), startGateKey.lookalike(runId));
          if (error === null) continue;
          await lookalikes.failRunning(runId, error, at);
          result.lookalikes++;
          heartbeat({ runId });
        }
        return result;
      });
    },

    /**
     * Privacy requests and unlinks the API recorded but whose workflow never started or stopped
     * short (the API died between the record and the start, or a run was terminated): started
     * again, or asked for again, as the API does when the same request comes twice. Only those older
     * than `graceMs` (else RUN_START_GRACE_MS) whose workflow is not running; safe to repeat. And
     * what requests kept of their subjects after they ended, or when they were never recorded.
     */
    resumeLostStarts(input: { graceMs?: number } = {}): Promise<{ privacyRequests: number; unlinks: number; privacySubjects: number }> {
      return withHeartbeats(async () => {
        const databaseName = deps.store.db.databaseName;
        const before = new Date(now().getTime() - (input.graceMs ?? RUN_START_GRACE_MS));
        const privacy = new PrivacyStore(deps.store);
        let privacyRequests = 0;
        for (const request of await privacy.openBefore(before)) {
          if (await workflowIsRunning(deps.temporal, privacyRequestWorkflowId(databaseName, request._id))) continue;
          await startPrivacyRequest(deps.temporal, databaseName, request._id, request.type, deps.config);
          privacyRequests++;
          heartbeat({ requestId: request._id });
        }
        let unlinks = 0;
        for (const unlinkId of await new UnlinkStore(deps.store).unfinished(before)) {
          if (await workflowIsRunning(deps.temporal, identityUnlinkWorkflowId(databaseName, unlinkId))) continue;
          // The store's unlink queue takes an id it holds once.
          await requestUnlink(deps.temporal, databaseName, unlinkId, deps.config);
          unlinks++;
          heartbeat({ unlinkId });
        }
        return { privacyRequests, unlinks, privacySubjects: await privacy.forgetOrphanSubjects(before) };
      });
    },

    /**
     * Records of feed pulls and uploads that ended more than `ttlMs` (else DMP_SOURCE_HISTORY_DAYS)
     * ago: a feed pulled every few minutes adds one of each per pull. A feed's last pull
     * (and the upload it read) and each source's newest upload stay. Safe to repeat.
     */
    expireSourceRecords(input: { ttlMs?: number } = {}): Promise<{ feedPulls: number; uploads: number }> {
      return withHeartbeats(async () => {
        const before = new Date(now().getTime() - (input.ttlMs ?? deps.config.DMP_SOURCE_HISTORY_DAYS * 86_400_000));
        const feeds = new FeedStore(deps.store);
        const feedPulls = await feeds.expirePulls(before, PER_STREAM);
        heartbeat({ feedPulls });
        return { feedPulls, uploads: await new UploadStore(deps.store).expire(before, await feeds.shownUploads(), PER_STREAM) };
      });
    },

    /**
     * Segments whose definition as it is now was never evaluated and that no run is under way for —
     * the API stopped between saving a new segment (or a changed rule) and starting its run, or the
     * run never began — get one run of them all. A segment whose last run, of its version as it is,
     * began and failed is left to its next scheduled run or edit, so a failing run is not repeated
     * every hour (once its gate is gone, after a week, it is tried once more). Only segments
     * saved, and runs ended, more than `graceMs` (else RUN_START_GRACE_MS) ago. So is a segment
     * without a schedule whose snapshot began more than `snapshotMaxAgeMs` (else a day) ago, and one
     * with a schedule past SCHEDULED_SNAPSHOT_AGES of those (its schedule paused or broken): real-time
     * changes since the oldest snapshot a segment reads are kept (and read by every segment read), so
     * one not evaluated again would keep them growing.
     */
    startOwedSegmentRuns(input: { graceMs?: number; snapshotMaxAgeMs?: number } = {}): Promise<{ runs: number; segments: number }> {
      return withHeartbeats(async () => {
        const before = new Date(now().getTime() - (input.graceMs ?? RUN_START_GRACE_MS));
        const staleBefore = new Date(now().getTime() - (input.snapshotMaxAgeMs ?? SNAPSHOT_MAX_AGE_MS));
        const scheduledStaleBefore = new Date(now().getTime() - SCHEDULED_SNAPSHOT_AGES * (input.snapshotMaxAgeMs ?? SNAPSHOT_MAX_AGE_MS));
        const segments = new SegmentStore(deps.store);
        const gates = new StartGates(deps.store);
        const owed: SegmentDoc[] = [];
        for (const doc of await segments.list()) {
          const last = doc.lastRun;
          // A scheduled segment only once its schedule has clearly stopped (paused, broken): past a monthly cron's longest gap.
          const stale = doc.current !== null && doc.current.startedAt < (doc.schedule === null ? staleBefore : scheduledStaleBefore);
          if ((doc.current?.version === doc.version && !stale) || doc.updatedAt >= before || last?.state === 'running') continue;
          if (last && (last.finishedAt ?? last.startedAt) >= before) continue;
          // A run's gate is begun by its workflow (and kept a week): a failed run of this version that began it ran.
          if (last?.state === 'failed' && (last.version ?? doc.version) === doc.version && (await gates.outcome(startGateKey.segmentRun(last.runId))) === 'begun') continue;
          owed.push(doc);
        }
        if (owed.length === 0) return { runs: 0, segments: 0 };
        // At most a run's worth (DMP_SEGMENTS_PER_RUN, with what their rules join) each time, the one
        // holding the segment run least recently first (so one whose start keeps failing does not
        // hold back the rest): the rest are still owed at the next.
        const tried = (doc: SegmentDoc) => Math.max(doc.current?.startedAt.getTime() ?? 0, doc.lastRun?.startedAt.getTime() ?? 0);
        const leastRecently = (docs: SegmentDoc[]) => docs.reduce((least, doc) => Math.min(least, tried(doc)), Infinity);
        const group = runGroups(owed, deps.config.DMP_SEGMENTS_PER_RUN)
          .map(({ segments: docs }) => docs)
          .reduce((best, next) => (leastRecently(next) < leastRecently(best) ? next : best));
        const runId = await startRunOfSegments(deps.temporal, deps.store.db.databaseName, { segments, runs: new SegmentRunStore(deps.store), gates }, group.map((doc) => doc._id), deps.config);
        heartbeat({ runId });
        return { runs: 1, segments: group.length };
      });
    },

    /**
     * Cookie-sync match keys whose every entry is past DMP_MATCH_TTL_DAYS (ids never synced again):
     * reads skip them, and this removes them — a pass over every key, so at most once a day
     * (`everyMs`) once a pass completes. Each run removes at most PER_STREAM keys within
     * MATCH_SWEEP_BUDGET_MS (well inside the step's timeout), half of each for either side; a pass
     * that stops is made again by the next run, where the keys removed are gone, so a backlog (the
     * first sweep of a store that synced for a year) goes over many. A side whose live keys alone
     * take longer than its half to read is swept only as far as that.
     */
    expireMatches(input: { everyMs?: number } = {}): Promise<{ keys: number }> {
      return withHeartbeats(async () => {
        const at = now();
        const lastSwept = await retention.lastSwept('matches');
        if (lastSwept !== null && at.getTime() - lastSwept < (input.everyMs ?? MATCH_SWEEP_EVERY_MS)) return { keys: 0 };
        const bounds = { limit: PER_STREAM / 2, ms: MATCH_SWEEP_BUDGET_MS / 2 };
        const swept = await new MatchTableStore(deps.store, matchLimits(deps.config), now).sweepExpired(bounds, (keys) => heartbeat({ matchKeysSwept: keys }));
        // Only a whole pass counts as the day's; a later one never moves the mark back.
        if (swept.complete && (lastSwept === null || at.getTime() > lastSwept)) await retention.swept('matches', at);
        return { keys: swept.keys };
      });
    },

    /** Start gates settled more than a week ago (store/startGates). */
    expireStartGates(): Promise<{ gates: number }> {
      return withHeartbeats(async () => ({ gates: await new StartGates(deps.store).expire(new Date(now().getTime() - START_GATE_TTL_MS)) }));
    },

    /**
     * What writers that stopped half way left behind: uploads still receiving whose reader is gone
     * (failed), staged chunks and planned batches of uploads and exports that ended, and version
     * claims (store/versionClaims) past their use. Safe to repeat: each is found afresh and removed by `_id`.
     */
    dropLeftovers(): Promise<{ uploadsFailed: number; uploadChunks: number; exportBatches: number; versionClaims: number }> {
      return withHeartbeats(async () => {
        const at = now();
        const leftBefore = new Date(at.getTime() - LEFTOVER_AGE_MS);
        const uploads = new UploadStore(deps.store);
        const uploadsFailed = await uploads.failStalled(new Date(at.getTime() - UPLOAD_STALL_MS), at);
        const uploadChunks = await uploads.dropLeftChunks(leftBefore);
        heartbeat({ uploadChunks });
        const exportBatches = await new DestinationStore(deps.store).dropLeftBatches(leftBefore);
        heartbeat({ exportBatches });
        const versionClaims = await new VersionClaims(deps.store).releaseStale(leftBefore);
        return { uploadsFailed, uploadChunks, exportBatches, versionClaims };
      });
    },

    /** Event-id generations past the dedupe window, dropped whole. */
    expireEventIds(): Promise<{ generations: number; ids: number }> {
      return eventIds.dropExpired(now().getTime());
    },

    /** Drained raw log chunks older than `ttlMs` (else DMP_RAW_EVENT_TTL_HOURS), per source. Safe to repeat: removals are by `_id`, positions only advance. */
    expireRawChunks(input: { ttlMs?: number }): Promise<{ chunks: number; events: number }> {
      return withHeartbeats(async () => {
        const before = new Date(now().getTime() - (input.ttlMs ?? deps.config.DMP_RAW_EVENT_TTL_HOURS * 3_600_000));
        const total = { chunks: 0, events: 0 };
        for (const source of await sources.list()) {
          const cursor = (await sources.loadPosition(source._id))?.cursor ?? 0;
          const removed = await retention.expireRawChunks(source._id, cursor, before, PER_STREAM);
          total.chunks += removed.chunks;
          total.events += removed.events;
          heartbeat({ source: source._id });
        }
        return total;
      });
    },

    /**
     * Folded routed batches older than `ttlMs` (else DMP_EVENT_HISTORY_DAYS), per partition and source: the history window
     * (and batches of moved events as long after their move). A
     * partition that has only empty batches of a source waiting (its writer is woken only for
     * events) is woken to step over them, so they can leave on a later run. The records of
     * documents expired before the window leave too, once no stream has a backlog left: their
     * events were routed before they expired, so none is held any more.
     */
    expireRoutedEvents(input: { ttlMs?: number }): Promise<{ batches: number; expiredRecords: number }> {
      return withHeartbeats(async () => {
        const before = new Date(now().getTime() - (input.ttlMs ?? deps.config.DMP_EVENT_HISTORY_DAYS * 86_400_000));
        let batches = 0;
        let backlog = false;
        const positions = await routed.loadPositions(deps.config.DMP_PROFILE_PARTITIONS);
        const woken = new Set<number>();
        const all = await sources.list();
        for (const source of all) {
          const drained = (await sources.loadPosition(source._id))?.cursor ?? 0;
          for (const [partition, position] of positions.entries()) {
            const cursor = position.cursors[source._id] ?? 0;
            const removed = await retention.expireRoutedBatches(partition, source._id, cursor, before, PER_STREAM);
            batches += removed;
            backlog ||= removed === PER_STREAM;
            if (cursor < drained) {
              await wakeProfilePartition(deps.temporal, deps.store.db.databaseName, partition, source._id, deps.config);
              woken.add(partition);
            }
            heartbeat({ partition, sourceId: source._id });
          }
        }
        const moved = await retention.expireMovedBatches(before, PER_STREAM);
        batches += moved;
        backlog ||= moved === PER_STREAM;
        // Every other partition is woken too: a quiet one then looks whether expired documents have come of age to leave.
        if (all.length > 0) {
          for (const partition of positions.keys()) {
            if (!woken.has(partition)) await wakeProfilePartition(deps.temporal, deps.store.db.databaseName, partition, all[0]._id, deps.config);
          }
        }
        // Past the window by a drain cache's age too: an event routed from a stale cache after the expiry is gone by then.
        const expiredRecords = backlog ? 0 : await new ExpiredProfiles(deps.store).forgetBefore(new Date(before.getTime() - CACHE_MAX_AGE_MS));
        return { batches, expiredRecords };
      });
    },
  };
}

export type RetentionActivities = ReturnType<typeof createRetentionActivities>;

export interface InactiveExpiryPlan {
  expiryId: string;
  /** Partitions with documents to expire; none when nobody is inactive or the expiry is off. */
  partitions: number[];
  people: number;
  documents: number;
}

export interface InactiveExpiryResult {
  documentsExpired: number;
  documentsSkipped: number;
  identitiesReleased: number;
  linksRemoved: number;
}
