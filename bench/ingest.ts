/**
 * Ingestion benchmark: how fast the collect API acknowledges events and how fast a source drains
 * them into profiles, each set against what the same store does with raw writes in the same run.
 *
 *   npm run bench:ingest                              # PostgreSQL-backed FerretDB (the default store)
 *   DMP_STORE_BACKEND=sqlite npm run bench:ingest     # SQLite-backed FerretDB
 *   MONGODB_URI=mongodb://host:port/db npm run bench:ingest   # any other store, reported as `external`
 *
 * Steps, all against loopback, all bounded in time:
 *   1. a fresh database `dmp_bench_<timestamp>` on the MONGODB_URI server;
 *   2. store baseline: raw `insertMany` of stored-event documents and raw bulk upserts
 *      (`replaceOne` + `upsert`) of profile-sized documents, 500 per batch;
 *   3. the worker and the API as separate processes on that database, one new source, paused;
 *   4. idle cost: the platform's busy CPU (API, workers, Temporal, FerretDB, PostgreSQL) with 1,000 idle
 *      sources, against the same window before them (the whole machine's beside it, for reference);
 *      the sources stay for the rest of the run;
 *   5. load from a separate process (bench/loadgen.ts, autocannon): batches of 100 events over
 *      16 connections, then single events over 32 connections; every event id is new;
 *   6. resume the source and time the drain until the partition writers have folded every event the
 *      log accepted, or report the rate of the part drained when that takes longer than allowed;
 *   7. storage: profile documents per profile and stored bytes per event;
 *   8. stop the processes, terminate the run's workflows and drop the database.
 *
 * A table goes to stderr; the last stdout line is one JSON object with the results.
 *
 * Knobs (environment, all optional): DMP_BENCH_INSERT_DOCS (20000), DMP_BENCH_UPSERT_DOCS (2000,
 * also the size of the upserted collection), DMP_BENCH_STORE_CAP_SECONDS (35, per store baseline),
 * DMP_BENCH_WARMUP_SECONDS (3), DMP_BENCH_BATCH_SECONDS (15), DMP_BENCH_SINGLE_SECONDS (10),
 * DMP_BENCH_USERS (2000), DMP_BENCH_DRAIN_TIMEOUT_SECONDS (150), DMP_BENCH_DRAIN_BATCH_EVENTS
 * (20000, the product's default), DMP_BENCH_IDLE_SOURCES (1000), DMP_BENCH_IDLE_SECONDS (60, per CPU window),
 * DMP_BENCH_DEADLINE_SECONDS (900, the whole run), DMP_BENCH_WORKERS (worker processes; the number
 * of cores, at most 4).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { loadConfig } from '../config';
import { sha256Hex } from '../domain/identity';
import { dayKey, newProfile, type ProfileDoc } from '../domain/profile';
import { retentionScheduleId, sourceWorkflowId } from '../domain/workflowIds';
import { ProfileEventLog } from '../store/profileEvents';
import { COLLECTIONS, connectStore, type Store } from '../store/db';
import { connectTemporal } from '../temporal/client';
import { sourceStatusQuery } from '../workflows/sourceConnection';
import type { LoadResult, LoadSpec } from './loadgen';
import { runLoadgen, stopLoadgens } from './loadgenProcess';
import { freePort, logTail, running, services, startService, stopService } from './processes';
import { averageBytes, rawInsertRate, timedBatches, type Rate } from './storeBaseline';
import { describeStore, dropStore, envNumber, once, redact, round, runBench, say, table, within } from './support';


const SETTINGS = {
  storeBatch: 500,
  /**
   * A batch of upserts goes out as several `update` commands of this many statements: FerretDB 1.24
   * keeps each statement's query (and its pooled backend connection) open until the whole command
   * ends, so one command with as many statements as its pool has connections (50 on PostgreSQL)
   * never finishes and leaves the server unable to answer anyone.
   */
  updateStatementsPerCommand: 20,
  insertDocs: envNumber('DMP_BENCH_INSERT_DOCS', 20_000),
  upsertDocs: envNumber('DMP_BENCH_UPSERT_DOCS', 2_000),
  storeCapSeconds: envNumber('DMP_BENCH_STORE_CAP_SECONDS', 35),
  warmupSeconds: envNumber('DMP_BENCH_WARMUP_SECONDS', 3, 0),
  batchSeconds: envNumber('DMP_BENCH_BATCH_SECONDS', 15),
  batchConnections: 16,
  batchEvents: 100,
  singleSeconds: envNumber('DMP_BENCH_SINGLE_SECONDS', 10),
  singleConnections: 32,
  users: envNumber('DMP_BENCH_USERS', 2_000),
  drainTimeoutSeconds: envNumber('DMP_BENCH_DRAIN_TIMEOUT_SECONDS', 150),
  /** Events per drain activity (and per partition fold) for the source under test: the product's default. */
  drainBatchEvents: envNumber('DMP_BENCH_DRAIN_BATCH_EVENTS', 20_000),
  /** Sources created for the idle-cost measurement, and the length of each CPU window. */
  idleSources: envNumber('DMP_BENCH_IDLE_SOURCES', 1000),
  idleSeconds: envNumber('DMP_BENCH_IDLE_SECONDS', 60),
  /** The whole run gives up (and cleans up) after this long, whatever it is waiting for. */
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 900),
  workers: envNumber('DMP_BENCH_WORKERS', Math.max(1, Math.min(4, availableParallelism()))),
  startTimeoutSeconds: 120,
  pollMs: 500,
};

// ---- small helpers ----------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The same server URI with another database in its path (options after `?` are kept). */
export function withDatabase(uri: string, databaseName: string): string {
  const match = /^(mongodb(?:\+srv)?:\/\/[^/?]+)(\/[^?]*)?(\?.*)?$/.exec(uri);
  if (!match) throw new Error(`cannot read MONGODB_URI ${redact(uri)}`);
  return `${match[1]}/${databaseName}${match[3] ?? ''}`;
}

interface HttpReply {
  status: number;
  body: any;
}

async function http(method: string, url: string, key: string, body?: unknown, timeoutMs = 30_000): Promise<HttpReply> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) };
  } catch {
    return { status: response.status, body: text };
  }
}

// ---- store baseline ---------------------------------------------------------------------------

/** A profile-sized document (~1 KB): two identities, eight traits with their times, three counters. */
function profileDoc(i: number, revision: number, now: Date): ProfileDoc {
  const doc = newProfile(`bench-p-${i}`, now, new Date(now.getTime() - 86_400_000));
  doc._id = `bench-p-${i}`;
  doc.version = revision;
  doc.identities = [
    { type: 'cookie_id', value: `c-${i}`, firstSeen: doc.firstSeen, lastSeen: now, sourceId: 'src_bench_web' },
    { type: 'email_sha256', value: sha256Hex(`user${i}@example.com`), firstSeen: doc.firstSeen, lastSeen: now, sourceId: 'src_bench_crm' },
  ];
  doc.traits = {
    'plan%2Etier': ['free', 'pro'][i % 2],
    visits: i % 97 + revision,
    country: ['DE', 'FR', 'US', 'GB'][i % 4],
    language: ['de-DE', 'fr-FR', 'en-US', 'en-GB'][i % 4],
    lifetime_value: (i % 500) * 1.5,
    newsletter: i % 3 === 0,
    last_campaign: 'spring_sale',
    favourite_category: ['shoes', 'books', 'garden', 'toys'][i % 4],
  };
  doc.traitOrigins = Object.fromEntries(Object.keys(doc.traits).map((name) => [name, { at: now, sourceId: 'src_bench_web', party: 'first' as const }]));
  doc.counters = Object.fromEntries(
    ['page_view', 'add_to_cart', 'purchase'].map((type, k) => [type, { count: (i + k) % 50 + revision, firstSeen: doc.firstSeen, lastSeen: now, days: { [dayKey(now)]: 1 } }]),
  );
  doc.sources = ['src_bench_web', 'src_bench_crm'];
  doc.applied = { src_bench_web: 1000 + revision, src_bench_crm: 40 + revision };
  doc.updatedAt = now;
  return doc;
}

async function storeBaseline(store: Store): Promise<{ insert: Rate; upsert: Rate }> {
  const batchSettings = { batch: SETTINGS.storeBatch, capSeconds: SETTINGS.storeCapSeconds };
  const insert = await rawInsertRate(store, SETTINGS.insertDocs, SETTINGS.users, batchSettings);

  const now = new Date();
  const profiles = Array.from({ length: SETTINGS.upsertDocs }, (_, i) => profileDoc(i, 0, now));
  const profileScratch = store.db.collection<ProfileDoc>('bench_scratch_profiles');
  say(`store baseline: seeding ${profiles.length} profile-sized documents (not timed)`);
  for (let start = 0; start < profiles.length; start += SETTINGS.storeBatch) {
    await profileScratch.insertMany(profiles.slice(start, start + SETTINGS.storeBatch));
  }
  const revised = Array.from({ length: SETTINGS.upsertDocs }, (_, i) => profileDoc(i, 1, new Date()));
  say(
    `store baseline: replaceOne+upsert of ${revised.length} documents over that collection, ${SETTINGS.storeBatch} per batch ` +
      `(bulkWrite commands of ${SETTINGS.updateStatementsPerCommand})`,
  );
  const upserted = await timedBatches(revised, SETTINGS.updateStatementsPerCommand, batchSettings, (slice) =>
    profileScratch.bulkWrite(slice.map((doc) => ({ replaceOne: { filter: { _id: doc._id }, replacement: doc, upsert: true } }))),
  );
  const upsert = { ...upserted, avgBytes: averageBytes(revised) };

  await profileScratch.drop().catch(() => undefined);
  return { insert, upsert };
}

// ---- drain, storage and idle figures ------------------------------------------------------------

/** Rates over the first and the last third of the events, read off the drain's curve. */
function drainThirds(curve: Array<[number, number]>, total: number): { first: number | null; last: number | null } {
  if (total < 3 || curve.length < 3) return { first: null, last: null };
  const timeAt = (events: number) => {
    for (let i = 1; i < curve.length; i++) {
      const [t1, e1] = curve[i];
      if (e1 >= events) {
        const [t0, e0] = curve[i - 1];
        return t0 + ((events - e0) / (e1 - e0)) * (t1 - t0);
      }
    }
    return curve[curve.length - 1][0];
  };
  const third = total / 3;
  const [oneThird, twoThirds, end] = [timeAt(third), timeAt(2 * third), timeAt(total)];
  return { first: oneThird > 0 ? third / oneThird : null, last: end > twoThirds ? third / (end - twoThirds) : null };
}

/** Profile documents against distinct profiles, and the database's stored bytes per accepted event. */
async function storageFigures(store: Store, events: number): Promise<{ profileDocs: number; liveProfiles: number; bytesPerEvent: number | null }> {
  const ids = new Set<string>();
  let profileDocs = 0;
  for await (const doc of store.db.collection(COLLECTIONS.profiles).find({}, { projection: { profileId: 1 } })) {
    profileDocs++;
    ids.add(String(doc.profileId));
  }
  const stats = await store.db.command({ dbStats: 1 }).catch(() => null);
  // totalSize: data and indexes as stored, with what PostgreSQL keeps out of line (TOAST), where a
  // chunk of hundreds of events lives; FerretDB's storageSize leaves that out.
  const bytes = Number(stats?.totalSize ?? (stats ? Number(stats.storageSize) + Number(stats.indexSize ?? 0) : NaN));
  return { profileDocs, liveProfiles: ids.size, bytesPerEvent: Number.isFinite(bytes) && events > 0 ? Math.round(bytes / events) : null };
}

/** Busy CPU time of the whole machine, in seconds (all cores, from /proc/stat). */
function busyCpuSeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idleTicks = fields[3] + (fields[4] ?? 0);
  const total = fields.reduce((sum, value) => sum + value, 0);
  return (total - idleTicks) / 100; // USER_HZ
}

/** Services of the store and Temporal on this machine, found by their command lines. */
const SERVICE_COMMANDS = [/\btemporal\b.*\bserver\b/, /\bferretdb\b/, /(^|\/)postgres\b/];

/**
 * CPU time, in seconds, of the platform's own processes: the API and workers this run started (by
 * their process groups) and the local Temporal, FerretDB and PostgreSQL. The rest of the machine —
 * whose load here swings by several percent of a core on its own — is left out.
 */
function platformCpuSeconds(): number {
  const groups = new Set(services.map((service) => service.child.pid));
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ours = groups.has(Number(fields[2])) || SERVICE_COMMANDS.some((pattern) => pattern.test(readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ')));
      if (ours) ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / 100; // USER_HZ
}

async function cpuPercentOver(seconds: number): Promise<number> {
  const before = busyCpuSeconds();
  await sleep(seconds * 1000);
  return round(((busyCpuSeconds() - before) / seconds) * 100, 2);
}

/** The whole machine's and the platform's busy CPU over a window, in percent of one core. */
async function cpuWindow(seconds: number): Promise<{ boxPct: number; platformPct: number }> {
  const [box, platform] = [busyCpuSeconds(), platformCpuSeconds()];
  await sleep(seconds * 1000);
  return { boxPct: round(((busyCpuSeconds() - box) / seconds) * 100, 2), platformPct: round(((platformCpuSeconds() - platform) / seconds) * 100, 2) };
}

interface IdleCost {
  sources: number;
  /** The platform's processes (see platformCpuSeconds): what the figure is taken from. */
  baselinePct: number;
  withSourcesPct: number;
  extraPct: number;
  /** The whole machine over the same windows, for reference. */
  boxBaselinePct: number;
  boxWithSourcesPct: number;
}

/**
 * What `SETTINGS.idleSources` sources cost while nothing arrives: the busy CPU of the platform's
 * processes over a window with them, minus the same window before they existed (services, workers
 * and API idle). Their idle polls are phased over the poll period, so a window sees its share of them.
 */
async function idleSourcesCpu(url: string, adminKey: string): Promise<IdleCost> {
  // The store and Temporal finish what starting left them first: wait for a quiet box.
  for (let waited = 0; waited < 120; waited += 10) {
    const settling = await cpuPercentOver(10);
    say(`idle: waiting for a quiet box, ${settling}% of one core`);
    if (settling < 10) break;
  }
  say(`idle: measuring the idle box for ${SETTINGS.idleSeconds} s`);
  const baseline = await cpuWindow(SETTINGS.idleSeconds);
  say(`idle: creating ${SETTINGS.idleSources} sources`);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < SETTINGS.idleSources) {
        const n = next++;
        const created = await http('POST', `${url}/v1/sources`, adminKey, { name: `idle ${n}`, kind: 'events', party: 'first' }, 60_000);
        if (created.status !== 201) throw new Error(`creating idle source ${n} failed: ${created.status}`);
      }
    }),
  );
  // Every new workflow makes its first look at its log, then sleeps: wait until that has passed
  // (10 s windows back near the idle box's level), at most two minutes.
  for (let waited = 0; waited < 120; waited += 10) {
    const settling = await cpuPercentOver(10);
    say(`idle: settling after the creations, ${settling}% of one core`);
    if (settling < baseline.boxPct + 10) break;
  }
  say(`idle: measuring ${SETTINGS.idleSources} idle sources for ${SETTINGS.idleSeconds} s`);
  const withSources = await cpuWindow(SETTINGS.idleSeconds);
  return {
    sources: SETTINGS.idleSources,
    baselinePct: baseline.platformPct,
    withSourcesPct: withSources.platformPct,
    extraPct: round(Math.max(0, withSources.platformPct - baseline.platformPct), 2),
    boxBaselinePct: baseline.boxPct,
    boxWithSourcesPct: withSources.boxPct,
  };
}

// ---- processes --------------------------------------------------------------------------------

async function waitUntil<T>(what: string, timeoutSeconds: number, everyMs: number, probe: () => Promise<T | null | undefined | false>): Promise<T> {
  const deadline = performance.now() + timeoutSeconds * 1000;
  let lastError: unknown;
  for (;;) {
    for (const service of services) {
      if (!running(service.child)) throw new Error(`${service.name} exited while waiting for ${what}:\n${logTail(service)}`);
    }
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${timeoutSeconds} s waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await sleep(everyMs);
  }
}

// ---- the run ----------------------------------------------------------------------------------

interface Phase {
  name: string;
  load: LoadResult;
  acceptedEps: number;
}

function phaseOf(name: string, load: LoadResult): Phase {
  return { name, load, acceptedEps: load.accepted / load.durationSeconds };
}

/** Sum of `accepted` over all chunk seals, once no new seal has appeared for a second. */
async function settledLogTotal(store: Store): Promise<{ chunks: number; accepted: number }> {
  const seals = store.db.collection<{ _id: string; accepted: number }>(COLLECTIONS.eventSeals);
  let previous = -1;
  const deadline = performance.now() + 30_000;
  for (;;) {
    const count = await seals.countDocuments({});
    if (count === previous || performance.now() > deadline) break;
    previous = count;
    await sleep(1000);
  }
  let chunks = 0;
  let accepted = 0;
  for await (const seal of seals.find({}, { projection: { accepted: 1 } })) {
    chunks++;
    accepted += seal.accepted;
  }
  return { chunks, accepted };
}

interface Cleanup {
  store?: Store;
  temporal?: Client;
  taskQueue?: string;
}

const cleanupState: Cleanup = {};

const cleanup = once(async () => {
  // From here on a late failure of something being torn down is reported, not fatal.
  process.on('uncaughtException', (error) => say(`while cleaning up: ${String(error)}`));
  process.on('unhandledRejection', (error) => say(`while cleaning up: ${String(error)}`));
  stopLoadgens();
  await Promise.all(services.map(stopService));
  const { store, temporal, taskQueue } = cleanupState;
  if (temporal && taskQueue) {
    // Every workflow of the run's task queue: the source under test, the idle sources, the partition writers.
    const ids: string[] = [];
    const listing = (async () => {
      for await (const execution of temporal.workflow.list({ query: `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'` })) ids.push(execution.workflowId);
    })();
    await within(listing, 30_000, 'listing the run\'s workflows').catch(() => undefined);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < ids.length) {
          const id = ids[next++];
          // Already closed is fine.
          await within(temporal.workflow.getHandle(id).terminate('ingest benchmark finished'), 10_000, `terminating ${id}`).catch(() => undefined);
        }
      }),
    );
    if (store) {
      // The workers made the store's retention schedule; it goes with the store.
      await within(temporal.schedule.getHandle(retentionScheduleId(store.db.databaseName)).delete(), 10_000, 'deleting the retention schedule').catch(() => undefined);
    }
    // The Temporal connection is left to process exit: closing it under a call still retrying
    // (Temporal gone away) makes that call throw outside any handler.
  }
  if (store) await dropStore(store);
});

async function main(): Promise<void> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const serverUri = config.MONGODB_URI;
  const databaseName = `dmp_bench_${Date.now()}`;
  const benchUri = withDatabase(serverUri, databaseName);

  const store = await connectStore(benchUri, databaseName);
  cleanupState.store = store;
  const { backend, serverVersion } = await describeStore(store, serverUri);

  // 2. Store baseline, before anything else uses the server.
  const baseline = await storeBaseline(store);
  say(`store insertMany: ${round(baseline.insert.eps)} docs/s; bulk upsert: ${round(baseline.upsert.eps)} docs/s`);

  // 3. Worker and API.
  const port = await freePort();
  const adminKey = `adm_bench_${randomBytes(12).toString('hex')}`;
  const taskQueue = `dmp-bench-${databaseName}`;
  cleanupState.taskQueue = taskQueue;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    DMP_ADMIN_KEY: adminKey,
    DMP_TASK_QUEUE: taskQueue,
    MONGODB_URI: benchUri,
    TEMPORAL_ADDRESS: config.TEMPORAL_ADDRESS,
    DMP_DRAIN_BATCH_EVENTS: String(SETTINGS.drainBatchEvents),
    LOG_LEVEL: 'warn',
  };
  const logDir = mkdtempSync(path.join(tmpdir(), 'dmp-bench-'));
  const startedAt = performance.now();
  // As many workers as cores: the partitions' folds and the sources' routing spread over them.
  for (let n = 0; n < SETTINGS.workers; n++) startService(`worker-${n + 1}`, 'workers/main.ts', env, logDir);
  startService('api', 'api/main.ts', env, logDir);
  say(`started ${SETTINGS.workers} worker(s) and the API (port ${port}, task queue ${taskQueue}); logs in ${logDir}`);
  const temporal = await connectTemporal(config);
  cleanupState.temporal = temporal;

  const url = `http://127.0.0.1:${port}`;
  await waitUntil('GET /healthz = 200', SETTINGS.startTimeoutSeconds, 500, async () => (await http('GET', `${url}/healthz`, adminKey, undefined, 5000)).status === 200);

  const created = await http('POST', `${url}/v1/sources`, adminKey, { name: 'ingest benchmark', kind: 'events', party: 'first' });
  if (created.status !== 201) throw new Error(`creating the source failed: ${created.status} ${JSON.stringify(created.body)}`);
  const sourceId = String(created.body.id);
  const writeKey = String(created.body.writeKey);

  // Pausing needs the worker to answer the status query, so this also waits for the worker.
  await waitUntil('the source to be paused', SETTINGS.startTimeoutSeconds, 1000, async () => {
    const reply = await http('POST', `${url}/v1/sources/${sourceId}/pause`, adminKey, undefined, 15_000);
    return reply.status === 202 && reply.body?.progress?.state === 'paused';
  });
  say(`source ${sourceId} created and paused; services ready after ${round((performance.now() - startedAt) / 1000)} s`);

  // 4. Idle sources: the cost of many sources with nothing to do, against the same platform idle. Measured
  // first, while nothing else runs: after a drain the store vacuums and the partitions compact in idle
  // time, which swings a window by more than the sources cost. They stay for the rest of the run, as
  // a platform's idle sources do beside its busy ones.
  const idle = await idleSourcesCpu(url, adminKey);

  // 5. Load, from a separate process, with the drain paused.
  const spec = (name: string, seconds: number, connections: number, eventsPerRequest: number): LoadSpec => ({
    url,
    writeKey,
    connections,
    durationSeconds: seconds,
    eventsPerRequest,
    users: SETTINGS.users,
    idPrefix: `${name}-${Date.now().toString(36)}`,
  });
  if (SETTINGS.warmupSeconds > 0) {
    say(`warm-up: ${SETTINGS.warmupSeconds} s, ${SETTINGS.batchEvents} events per request, 8 connections (not reported)`);
    await runLoadgen(spec('warm', SETTINGS.warmupSeconds, 8, SETTINGS.batchEvents));
  }
  say(`batches: ${SETTINGS.batchSeconds} s, ${SETTINGS.batchEvents} events per request, ${SETTINGS.batchConnections} connections`);
  const batches = phaseOf('batches', await runLoadgen(spec('batch', SETTINGS.batchSeconds, SETTINGS.batchConnections, SETTINGS.batchEvents)));
  say(`single events: ${SETTINGS.singleSeconds} s, 1 event per request, ${SETTINGS.singleConnections} connections`);
  const singles = phaseOf('single', await runLoadgen(spec('single', SETTINGS.singleSeconds, SETTINGS.singleConnections, 1)));

  // 6. Drain: everything the log accepted (acknowledged or not), from resume until processed.
  const log = await settledLogTotal(store);
  say(`log holds ${log.accepted} accepted events in ${log.chunks} chunks; resuming the source`);
  const drainStarted = performance.now();
  // The API signals the workflow, then describes the source (status query plus a look at the log);
  // on a busy store the description can be slow, so a slow answer is not taken as a failed resume:
  // the polls below re-send it while the source still reports itself paused.
  const resume = async () => {
    const reply = await http('POST', `${url}/v1/sources/${sourceId}/resume`, adminKey, undefined, 60_000).catch((error: unknown) => {
      say(`resume: no answer yet (${String(error)}); checking the source's state instead`);
      return null;
    });
    if (reply && reply.status !== 202) throw new Error(`resuming the source failed: ${reply.status} ${JSON.stringify(reply.body)}`);
  };
  await resume();
  let processed = 0;
  /** Seconds from resume to the poll that first saw the current `processed`: the rate is over that. */
  let drainSeconds = 0;
  let waitedSeconds = 0;
  let drainComplete = false;
  let lastError: string | null = null;
  /** Status reads that failed: Temporal or the worker did not answer. */
  let failedPolls = 0;
  const drainDeadline = drainStarted + SETTINGS.drainTimeoutSeconds * 1000;
  let nextReport = drainStarted + 10_000;
  // Progress is read with the workflow's own status query, the figure GET /v1/sources/:id reports
  // as `progress`: that endpoint also scans up to 100 chunk seals for `pending`, and doing that
  // twice a second would take store time away from the drain being measured.
  const workflow = temporal.workflow.getHandle(sourceWorkflowId(sourceId));
  const routedEvents = new ProfileEventLog(store);
  const folded = () => routedEvents.eventsApplied(sourceId, config.DMP_PROFILE_PARTITIONS);
  /** (seconds since resume, events folded) at every poll that saw progress: the drain's curve. */
  const curve: Array<[number, number]> = [[0, 0]];
  for (;;) {
    const progress = await within(workflow.query(sourceStatusQuery), 15_000, 'status query').catch(() => null);
    const foldedNow = await within(folded(), 15_000, 'partition positions').catch(() => null);
    const now = performance.now();
    waitedSeconds = (now - drainStarted) / 1000;
    if (!progress || foldedNow === null) failedPolls++;
    else {
      if (foldedNow > processed) {
        processed = foldedNow;
        drainSeconds = waitedSeconds;
        curve.push([waitedSeconds, processed]);
      }
      lastError = progress.lastError ?? lastError;
      if (progress.state === 'paused') await resume();
    }
    if (processed >= log.accepted) {
      drainComplete = true;
      break;
    }
    if (now > drainDeadline) break;
    if (now > nextReport) {
      say(`drain: ${processed}/${log.accepted} events after ${round(waitedSeconds)} s`);
      nextReport = now + 10_000;
    }
    await sleep(SETTINGS.pollMs);
  }
  if (!drainComplete) {
    say(`drain: stopped waiting after ${round(waitedSeconds)} s at ${processed}/${log.accepted} events; the rate is over the part done`);
  }
  if (lastError) say(`drain reported an error on the way: ${lastError}`);
  if (failedPolls > 0) say(`drain: ${failedPolls} status queries failed (Temporal or the worker unavailable for a while)`);
  const drainedEps = drainSeconds > 0 ? processed / drainSeconds : 0;
  const described = await http('GET', `${url}/v1/sources/${sourceId}`, adminKey, undefined, 60_000).catch(() => null);
  const apiProcessed: number | null = described?.status === 200 ? (described.body?.progress?.eventsProcessed ?? null) : null;
  say(`GET /v1/sources/${sourceId}: progress.eventsProcessed ${apiProcessed ?? 'unavailable'}, pending ${JSON.stringify(described?.body?.pending ?? null)}`);

  const thirds = drainThirds(curve, processed);
  const storage = await storageFigures(store, log.accepted);
  say(`storage: ${storage.profileDocs} profile documents for ${storage.liveProfiles} profiles; ${storage.bytesPerEvent ?? 'unknown'} bytes stored per event`);

  // 8. Report.
  const acceptedEps = batches.acceptedEps;
  const ratioAccept = acceptedEps / baseline.insert.eps;
  const ratioDrain = drainedEps / baseline.upsert.eps;
  const rows: string[][] = [
    ['measurement', 'count', 'seconds', 'rate/s', 'p50 ms', 'p99 ms', 'non-2xx', 'notes'],
    [
      'store insertMany',
      `${baseline.insert.docs} docs`,
      `${round(baseline.insert.seconds, 2)}`,
      `${round(baseline.insert.eps)}`,
      '',
      '',
      '',
      `${SETTINGS.storeBatch}/batch, ~${baseline.insert.avgBytes} B/doc${baseline.insert.capped ? ', capped by time' : ''}`,
    ],
    [
      'store bulk upsert',
      `${baseline.upsert.docs} docs`,
      `${round(baseline.upsert.seconds, 2)}`,
      `${round(baseline.upsert.eps)}`,
      '',
      '',
      '',
      `replaceOne+upsert by _id, ${SETTINGS.storeBatch}/batch in commands of ${SETTINGS.updateStatementsPerCommand}, ~${baseline.upsert.avgBytes} B/doc, collection ${SETTINGS.upsertDocs} docs${baseline.upsert.capped ? ', capped by time' : ''}`,
    ],
    ...[batches, singles].map((phase) => [
      phase.name === 'batches' ? `collect ${SETTINGS.batchEvents} ev/req` : 'collect 1 ev/req',
      `${phase.load.accepted} events`,
      `${round(phase.load.durationSeconds, 2)}`,
      `${round(phase.acceptedEps)}`,
      `${phase.load.latencyMs.p50}`,
      `${phase.load.latencyMs.p99}`,
      `${phase.load.non2xx}`,
      `${phase.name === 'batches' ? SETTINGS.batchConnections : SETTINGS.singleConnections} conns, ${phase.load.requests} req (${round(phase.load.requests / phase.load.durationSeconds)}/s), dup ${phase.load.duplicates}, rejected ${phase.load.rejected}, errors ${phase.load.errors}, timeouts ${phase.load.timeouts}`,
    ]),
    [
      'drain to profiles',
      `${processed} events`,
      `${round(drainSeconds, 2)}`,
      `${round(drainedEps)}`,
      '',
      '',
      '',
      `${drainComplete ? 'complete' : `partial (waited ${round(waitedSeconds)} s)`}: log ${log.accepted} events in ${log.chunks} chunks, ${SETTINGS.users} users, ${SETTINGS.drainBatchEvents} events/activity${failedPolls ? `, ${failedPolls} failed status queries` : ''}`,
    ],
  ];
  process.stderr.write(
    [
      '',
      ...table(`Ingest benchmark, backend ${backend} (${serverVersion}), database ${databaseName}`, rows, [1, 6]),
      `accepted (batches) vs store insertMany: ${round(ratioAccept, 3)}   drained vs accepted: ${round(drainedEps / acceptedEps, 3)}   drained vs store bulk upsert: ${round(ratioDrain, 3)}`,
      `drain, last third vs first third: ${thirds.first && thirds.last ? round(thirds.last / thirds.first, 3) : 'n/a'}   profile documents per profile: ${storage.liveProfiles ? round(storage.profileDocs / storage.liveProfiles, 2) : 'n/a'}   bytes stored per event: ${storage.bytesPerEvent ?? 'n/a'}`,
      `${idle.sources} idle sources: ${idle.extraPct}% of one core above the idle platform (${idle.withSourcesPct}% against ${idle.baselinePct}%, ${SETTINGS.idleSeconds} s each; the whole box ${idle.boxWithSourcesPct}% against ${idle.boxBaselinePct}%)`,
      '',
    ].join('\n'),
  );

  const summary = {
    bench: 'ingest',
    backend,
    accepted_eps: round(acceptedEps),
    accepted_single_eps: round(singles.acceptedEps),
    p50_ms: batches.load.latencyMs.p50,
    p99_ms: batches.load.latencyMs.p99,
    single_p50_ms: singles.load.latencyMs.p50,
    single_p99_ms: singles.load.latencyMs.p99,
    non2xx: batches.load.non2xx,
    single_non2xx: singles.load.non2xx,
    drained_eps: round(drainedEps),
    drain_complete: drainComplete,
    drained_events: processed,
    drain_seconds: round(drainSeconds, 2),
    drain_batch_events: SETTINGS.drainBatchEvents,
    api_events_processed: apiProcessed,
    users: SETTINGS.users,
    log_accepted_events: log.accepted,
    store_insert_eps: round(baseline.insert.eps),
    store_upsert_eps: round(baseline.upsert.eps),
    store_upsert_collection_docs: SETTINGS.upsertDocs,
    ratio_accept_vs_store: round(ratioAccept, 3),
    ratio_drain_vs_store: round(ratioDrain, 3),
    ratio_drain_vs_accept: round(drainedEps / acceptedEps, 3),
    drain_first_third_eps: thirds.first === null ? null : round(thirds.first),
    drain_last_third_eps: thirds.last === null ? null : round(thirds.last),
    drain_last_third_vs_first_third: thirds.first && thirds.last ? round(thirds.last / thirds.first, 3) : null,
    profile_partitions: loadConfig({ ...process.env, LOG_LEVEL: 'warn' }).DMP_PROFILE_PARTITIONS,
    workers: SETTINGS.workers,
    profile_docs: storage.profileDocs,
    live_profiles: storage.liveProfiles,
    profile_docs_per_live_profile: storage.liveProfiles ? round(storage.profileDocs / storage.liveProfiles, 2) : null,
    store_bytes_per_event: storage.bytesPerEvent,
    idle_sources: idle.sources,
    idle_cpu_pct_baseline: idle.baselinePct,
    idle_cpu_pct_with_sources: idle.withSourcesPct,
    idle_cpu_pct_1000_sources: idle.extraPct,
    idle_box_cpu_pct_baseline: idle.boxBaselinePct,
    idle_box_cpu_pct_with_sources: idle.boxWithSourcesPct,
  };
  await cleanup();
  rmSync(logDir, { recursive: true, force: true }); // kept only when the run fails
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

runBench({
  main,
  cleanup,
  deadlineSeconds: SETTINGS.deadlineSeconds,
  onFailure: () => {
    for (const service of services) say(`last lines of ${service.name} (${service.logFile}):\n${logTail(service)}`);
  },
});
