/**
 * Segmentation benchmark: one batch run of many segments over a large profile store, set against the
 * store's own scan rate in the same run, and real-time qualification latency under ingest load.
 *
 *   npm run bench:segment                              # PostgreSQL-backed FerretDB (the default store)
 *   MONGODB_URI=mongodb://host:port/db npm run bench:segment   # any other store, reported as `external`
 *
 * Steps:
 *   1. a fresh database `dmp_bench_segment_<timestamp>`; a worker and the API in this process, on a
 *      task queue of their own;
 *   2. DMP_BENCH_SEGMENT_PROFILES synthetic profile documents from a fixed seed (identities, traits,
 *      90 days of behaviour with recent events and their properties, TCF consent on most), a few
 *      hundred of them joined in pairs by identity links — inserted, not timed;
 *   3. store baseline: one cursor over every profile document, as the run reads them (docs/s);
 *   4. 50 mixed segments (every rule kind; some refer to others), written as definitions, then ONE
 *      batch run through the segmentRun workflow: `batch_seconds` from its start to its completion;
 *   5. real time, with the worker and the API each in a process of their own as `npm run dev` runs
 *      them (the in-process pair is stopped first): a probe segment (`{event: "bench_probe"}`), then
 *      DMP_BENCH_SEGMENT_LOAD_EPS events/s through POST /v1/collect from DMP_BENCH_SEGMENT_VISITORS
 *      returning visitors, with a probe event (a new profile qualifying for the probe segment) every
 *      250 ms: DMP_BENCH_SEGMENT_WARMUP_SECONDS of warm-up (the visitors' first visits, the fresh
 *      processes' caches; its probes reported apart as `realtime_cold_p95_ms`), then
 *      DMP_BENCH_SEGMENT_LOAD_SECONDS measured; `realtime_p95_ms` is from each probe's
 *      acknowledgement to its membership change recorded by the partition writer (which is when the
 *      members API shows it);
 *   6. drop the database (also when the run fails).
 *
 * The last stdout line is one JSON object:
 * {"bench":"segment","profiles":…,"segments":50,"batch_seconds":…,"evaluations_per_s":…,
 *  "store_scan_docs_per_s":…,"ratio_vs_store_scan":…,"realtime_p95_ms":…}
 * where `ratio_vs_store_scan` is the run's profiles/s over the baseline's docs/s.
 *
 * Knobs (environment, all optional): DMP_BENCH_SEGMENT_PROFILES (1000000), DMP_BENCH_SEGMENT_LOAD_EPS
 * (500), DMP_BENCH_SEGMENT_WARMUP_SECONDS (10), DMP_BENCH_SEGMENT_LOAD_SECONDS (60), DMP_BENCH_SEGMENT_VISITORS (2000: the load's distinct
 * visitors, returning as on a site), DMP_BENCH_SEGMENTS (50), DMP_BENCH_SEED (1),
 * DMP_BENCH_DEADLINE_SECONDS (2400).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../config';
import { profileIdForEvent } from '../domain/ids';
import { profilePartitionWorkflowId, sourceWorkflowId } from '../domain/workflowIds';
import { sourceStatusQuery } from '../workflows/sourceConnection';
import type { Store } from '../store/db';
import { SegmentRunStore } from '../store/segmentRuns';
import { SegmentStore } from '../store/segments';
import { CATEGORIES, EVENT_TYPES } from '../test/support/segmentFixtures';
import { seededRandom } from '../test/support/random';
import { connectTemporal } from '../temporal/client';
import { freePort, logTail, services, startService, stopService } from './processes';
import { defineSegments, generateProfiles, profileScanRate, runEverySegment } from './profileFixtures';
import { freshBenchStore, dropStore, envNumber, once, percentile, round, runBench, say, startInProcess, table, terminateTaskQueue, within } from './support';

const SETTINGS = {
  profiles: Math.floor(envNumber('DMP_BENCH_SEGMENT_PROFILES', 1_000_000)),
  segments: Math.floor(envNumber('DMP_BENCH_SEGMENTS', 50)),
  loadEps: envNumber('DMP_BENCH_SEGMENT_LOAD_EPS', 500, 0),
  loadSeconds: envNumber('DMP_BENCH_SEGMENT_LOAD_SECONDS', 60),
  /** Load before the measured window: the visitors' first visits, a fresh worker's caches. Probes then are reported apart. */
  warmupSeconds: envNumber('DMP_BENCH_SEGMENT_WARMUP_SECONDS', 10, 0),
  /** Distinct visitors the load's events come from: returning visitors, as on a site (each new one is a new profile). */
  visitors: Math.floor(envNumber('DMP_BENCH_SEGMENT_VISITORS', 2000)),
  probeEveryMs: 250,
  seed: Math.floor(envNumber('DMP_BENCH_SEED', 1, 0)),
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 2400),
  insertBatch: 1000,
  /** One pair of linked documents per this many profiles. */
  linkEvery: 2000,
};

const cleanupState: { store?: Store; stop?: () => Promise<void> } = {};
const cleanup = once(async () => {
  await cleanupState.stop?.().catch((error) => say(`stopping the worker and API: ${String(error)}`));
  if (cleanupState.store) await dropStore(cleanupState.store);
});

/**
 * The worker and the API in processes of their own, on the in-process pair's task queue and
 * database. Returns the API's URL once it answers, and how to stop both.
 */
async function startDeployed(env: NodeJS.ProcessEnv, taskQueue: string): Promise<{ api: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const logDir = mkdtempSync(path.join(tmpdir(), 'dmp-bench-segment-'));
  const serviceEnv = { ...env, PORT: String(port), DMP_TASK_QUEUE: taskQueue, LOG_LEVEL: 'warn' };
  startService('worker', 'workers/main.ts', serviceEnv, logDir);
  startService('api', 'api/main.ts', serviceEnv, logDir);
  const api = `http://127.0.0.1:${port}`;
  const stop = async () => {
    await Promise.all(services.map(stopService));
    const temporal = await connectTemporal(loadConfig({ ...process.env, LOG_LEVEL: 'warn' }));
    await terminateTaskQueue(temporal, taskQueue);
    await temporal.connection.close();
  };
  const deadline = performance.now() + 120_000;
  while (!(await fetch(`${api}/healthz`).then((reply) => reply.ok, () => false))) {
    if (performance.now() > deadline) {
      for (const service of services) say(`last lines of ${service.name} (${service.logFile}):\n${logTail(service)}`);
      await stop();
      throw new Error('the API did not answer /healthz within 120 s');
    }
    await sleep(500);
  }
  say(`worker and API started in processes of their own (logs in ${logDir})`);
  return { api, stop };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
async function main(): Promise<void> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const { store, uri, databaseName, backend, serverVersion } = await freshBenchStore('segment', config);
  cleanupState.store = store;

  // 1. A worker and the API, here.
  const { temporal, taskQueue, api: inProcessApi, adminKey, stop } = await startInProcess(config, store, 'segment');
  cleanupState.stop = stop;

  // 2. The profiles (not timed).
  const random = seededRandom(SETTINGS.seed);
  await generateProfiles(store, SETTINGS.profiles, random, Date.now(), { partitions: config.DMP_PROFILE_PARTITIONS, insertBatch: SETTINGS.insertBatch, linkEvery: SETTINGS.linkEvery });

  // 3. Store baseline: one cursor over every profile document.
  const storeScan = await profileScanRate(store);

  // 4. Fifty segments, one batch run.
  const segments = new SegmentStore(store);
  const runs = new SegmentRunStore(store);
  const ids = await defineSegments(store, random, SETTINGS.segments);
  const { run: done, seconds: batchSeconds } = await runEverySegment(store, temporal, taskQueue);

  // An estimate from the run's sample, through the API (first call reads the sample; then it is cached).
  const estimateTimes: number[] = [];
  type Estimate = { estimate: number; low: number; high: number; sampled: number };
  let estimate = { estimate: 0, low: 0, high: 0, sampled: 0 } as Estimate;
  for (let k = 0; k < 5; k++) {
    const started = performance.now();
    const response = await fetch(`${inProcessApi}/v1/segments/estimate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rule: JSON.parse((await segments.get(ids[0]))!.ruleJson) }),
    });
    estimate = (await response.json()) as Estimate;
    estimateTimes.push(performance.now() - started);
  }
  say(`estimate of ${ids[0]}: ${estimate.estimate} (${estimate.low}–${estimate.high}, ${estimate.sampled} sampled; the run counted ${done.members[ids[0]]}) in ${Math.round(estimateTimes[0])} ms first, ${Math.round(percentile(estimateTimes.slice(1), 50))} ms after`);

  // 5. Real time under ingest load, the worker and the API deployed as processes of their own: in one
  // process with the load, the partitions' folds held up the drain's and the API's round trips.
  await stop();
  cleanupState.stop = undefined;
  const deployed = await startDeployed({ ...process.env, MONGODB_URI: uri, DMP_ADMIN_KEY: adminKey }, taskQueue);
  cleanupState.stop = deployed.stop;
  const api = deployed.api;
  await segments.create({ ...(await segments.get(ids[0]))!, _id: 'seg_bench_probe', name: 'probe', ruleJson: JSON.stringify({ event: 'bench_probe' }), current: null, lastRun: null });
  const source = (await (await fetch(`${api}/v1/sources`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bench', kind: 'events', party: 'first' }) })).json()) as { id: string; writeKey: string };
  // The worker is ready once the source's workflow answers a query (it bundles its workflows first).
  const client = await connectTemporal(config);
  const deadline = performance.now() + 120_000;
  while (!(await within(client.workflow.getHandle(sourceWorkflowId(source.id)).query(sourceStatusQuery), 5_000, 'status query').then(() => true, () => false))) {
    if (performance.now() > deadline) throw new Error('the worker did not answer a query within 120 s');
    await sleep(500);
  }
  const acked = new Map<string, number>();
  /** Probes acknowledged during the warm-up. */
  const cold = new Set<string>();
  const recorded = new Map<string, number>();
  const send = async (events: unknown[]) => {
    const response = await fetch(`${api}/v1/collect`, { method: 'POST', headers: { authorization: `Bearer ${source.writeKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ events }) });
    if (response.status !== 202) throw new Error(`collect answered ${response.status}: ${await response.text()}`);
    return Date.now();
  };
  // The writer stamps each change record with when it evaluated: read them after the load, not during it (a poll would be load too).
  const collectRecorded = async () => {
    for (const change of await runs.changesSince(new Date(0))) {
      for (const person of change.changes.seg_bench_probe?.entered ?? []) if (!recorded.has(person)) recorded.set(person, change.at.getTime());
    }
    return [...acked.keys()].every((person) => recorded.has(person));
  };
  const loadStart = performance.now();
  let sent = 0;
  let probes = 0;
  let nextProbe = loadStart;
  const tick = 100;
  // Requests go out on a fixed clock and are not awaited in turn: the load does not slow down with the API.
  const inFlight = new Set<Promise<void>>();
  const measuredFrom = loadStart + SETTINGS.warmupSeconds * 1000;
  while (performance.now() - loadStart < (SETTINGS.warmupSeconds + SETTINGS.loadSeconds) * 1000) {
    const tickStart = performance.now();
    const events: unknown[] = Array.from({ length: Math.round((SETTINGS.loadEps * tick) / 1000) }, () => ({
      id: `load-${sent}`,
      type: EVENT_TYPES[sent % EVENT_TYPES.length],
      identities: { cookie_id: `visitor-${sent++ % SETTINGS.visitors}` },
      properties: { category: CATEGORIES[sent % CATEGORIES.length], total: sent % 300 },
    }));
    const probe = performance.now() >= nextProbe ? `probe-${probes++}` : null;
    const warm = performance.now() >= measuredFrom;
    if (probe) {
      nextProbe += SETTINGS.probeEveryMs;
      events.push({ id: probe, type: 'bench_probe', identities: { cookie_id: probe } });
    }
    if (events.length > 0) {
      const request = send(events).then((at) => {
        if (!probe) return;
        acked.set(profileIdForEvent(source.id, probe), at);
        if (!warm) cold.add(profileIdForEvent(source.id, probe));
      });
      inFlight.add(request);
      void request.finally(() => inFlight.delete(request));
    }
    await sleep(Math.max(0, tick - (performance.now() - tickStart)));
  }
  await Promise.all(inFlight);
  const loadEnd = performance.now();
  while (!(await collectRecorded()) && performance.now() - loadEnd < 120_000) await sleep(1000);
  if (process.env.DMP_BENCH_DEBUG) {
    for (const workflowId of [profilePartitionWorkflowId(databaseName, 0), sourceWorkflowId(source.id)]) {
      const history = await client.workflow.getHandle(workflowId).fetchHistory();
      const at = (event: { eventTime?: { seconds?: unknown; nanos?: number | null } | null }) => Number(event.eventTime?.seconds) * 1000 + (event.eventTime?.nanos ?? 0) / 1e6;
      const scheduled = new Map<string, number>();
      const started = new Map<string, number>();
      const waits: number[] = [];
      const runs: Array<[string, number]> = [];
      for (const event of history.events ?? []) {
        const id = String(event.eventId);
        if (event.activityTaskScheduledEventAttributes) scheduled.set(id, at(event));
        if (event.activityTaskStartedEventAttributes) {
          const s = String(event.activityTaskStartedEventAttributes.scheduledEventId);
          started.set(s, at(event));
          waits.push(at(event) - (scheduled.get(s) ?? 0));
        }
        if (event.activityTaskCompletedEventAttributes) {
          const s = String(event.activityTaskCompletedEventAttributes.scheduledEventId);
          runs.push([s, at(event) - (started.get(s) ?? 0)]);
        }
      }
      const durations = runs.map(([, ms]) => ms);
      say(`debug ${workflowId}: ${runs.length} activities, queue wait p50 ${percentile(waits, 50)} ms, run p50 ${percentile(durations, 50)} ms p95 ${percentile(durations, 95)} ms`);
    }
  }
  await client.connection.close();
  // Where the time went: a probe's routed batch is stamped when the drain wrote it.
  const routedEvents = store.db.collection<{ profiles: string[]; createdAt: Date }>('profile_events');
  const routing: number[] = [];
  const measured = [...acked].filter(([person]) => !cold.has(person));
  for (const [person, at] of measured.slice(0, 100)) {
    const batch = await routedEvents.findOne({ profiles: person }, { projection: { createdAt: 1 } });
    if (batch) routing.push(batch.createdAt.getTime() - at);
  }
  const latencyOf = (probes: Array<[string, number]>) => probes.flatMap(([person, at]) => (recorded.has(person) ? [Math.max(0, (recorded.get(person) as number) - at)] : []));
  const latencies = latencyOf(measured);
  const coldLatencies = latencyOf([...acked].filter(([person]) => cold.has(person)));
  if (latencies.length + coldLatencies.length < acked.size) say(`${acked.size - latencies.length - coldLatencies.length} of ${acked.size} probes were not recorded within two minutes after the load`);
  const p95 = latencies.length === measured.length ? percentile(latencies, 95) : Infinity;
  say(`real time during the ${SETTINGS.warmupSeconds} s warm-up (not in realtime_p95_ms): ${cold.size} probes, p50 ${percentile(coldLatencies, 50)} ms, p95 ${percentile(coldLatencies, 95)} ms`);
  say(`real time, acknowledged → routed to a partition: p50 ${percentile(routing, 50)} ms, p95 ${percentile(routing, 95)} ms (the rest is the partition's fold)`);
  say(`real time: ${sent.toLocaleString()} events in ${round((loadEnd - loadStart) / 1000)} s, ${measured.length} probes after the warm-up, p50 ${percentile(latencies, 50)} ms, p95 ${p95} ms, max ${Math.max(...latencies)} ms`);

  const result = {
    bench: 'segment',
    backend,
    server: serverVersion,
    profiles: done.evaluated,
    documents: done.documentsScanned,
    segments: ids.length,
    batch_seconds: round(batchSeconds),
    evaluations_per_s: Math.round((done.evaluated * ids.length) / batchSeconds),
    store_scan_docs_per_s: Math.round(storeScan),
    ratio_vs_store_scan: round(done.evaluated / batchSeconds / storeScan, 2),
    realtime_p95_ms: p95,
    realtime_p50_ms: percentile(latencies, 50),
    realtime_probes: measured.length,
    realtime_routed_p95_ms: percentile(routing, 95),
    realtime_warmup_seconds: SETTINGS.warmupSeconds,
    realtime_cold_p95_ms: coldLatencies.length > 0 ? percentile(coldLatencies, 95) : null,
    load_events_per_s: Math.round(sent / ((loadEnd - loadStart) / 1000)),
    load_visitors: SETTINGS.visitors,
    estimate_ms: Math.round(estimateTimes[0]),
  };
  for (const line of table(
    'segmentation',
    [
      ['figure', 'value', 'target'],
      ['batch run (s)', String(result.batch_seconds), '≤ 300'],
      ['evaluations/s', result.evaluations_per_s.toLocaleString(), ''],
      ['store scan (docs/s)', result.store_scan_docs_per_s.toLocaleString(), ''],
      ['run vs store scan', String(result.ratio_vs_store_scan), '≥ 0.5'],
      ['real-time p95 (ms)', String(result.realtime_p95_ms), '≤ 1000'],
    ],
    [1, 2],
  ))
    say(line);
  await cleanup();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
