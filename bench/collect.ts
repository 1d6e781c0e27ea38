/**
 * Collection benchmark: pixel hits, the Segment-compatible tracking API, our own collect API and a
 * 1M-row CRM CSV import, each set against the store's raw insert rate measured in the same run.
 *
 *   npm run bench:collect                              # PostgreSQL-backed FerretDB (the default store)
 *   MONGODB_URI=mongodb://host:port/db npm run bench:collect   # any other store, reported as `external`
 *
 * Steps, all against loopback:
 *   1. a fresh database `dmp_bench_collect_<timestamp>`; the store's raw insert rate (`insertMany`
 *      of stored-event documents, 500 per batch);
 *   2. a worker and the API in this process; an `events` source whose drain is paused (collection is
 *      what is measured, not profiling) and a `crm` source with a column mapping; the API as it is
 *      deployed — api/main.ts, DMP_API_PROCESSES=DMP_BENCH_API_PROCESSES — in a process of its own,
 *      for the load;
 *   3. load from a separate process (bench/loadgen.ts, autocannon) at that API, every event id new:
 *      pixel hits over 32 connections; `POST /v1/batch` with 100 Segment `track` messages over 16
 *      connections; `POST /v1/collect` with 100 events over 16 connections;
 *   4. a CSV of DMP_BENCH_CSV_ROWS rows (customer id, email, two traits) streamed to
 *      `POST /v1/sources/:id/uploads`, timed until its import workflow completes;
 *   5. the run's workflows ended and its database dropped (also when the run fails).
 *
 * The last stdout line is one JSON object:
 * {"bench":"collect","pixel_hits_per_s":…,"segment_api_events_per_s":…,"csv_rows_per_s":…,
 *  "store_insert_docs_per_s":…,"ratio_csv_vs_store":…,"ratio_segment_api_vs_store":…, …}
 * Targets: both ratios ≥ 0.5 and segment_api_events_per_s ≥ 40,000 (100-event batches).
 *
 * Knobs (environment, all optional): DMP_BENCH_CSV_ROWS (1000000), DMP_BENCH_LOAD_SECONDS (15 per
 * load phase), DMP_BENCH_INSERT_DOCS (20000), DMP_BENCH_DEADLINE_SECONDS (3600),
 * DMP_BENCH_API_PROCESSES (1).
 */
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { once as onceEvent } from 'node:events';
import { loadConfig } from '../config';
import type { Store } from '../store/db';
import type { LoadResult, LoadSpec } from './loadgen';
import { runLoadgen, stopLoadgens } from './loadgenProcess';
import { freePort, logTail, services, startService, stopService } from './processes';
import { rawInsertRate } from './storeBaseline';
import { freshBenchStore, dropStore, envNumber, once, round, runBench, say, startInProcess, table } from './support';

const SETTINGS = {
  csvRows: Math.floor(envNumber('DMP_BENCH_CSV_ROWS', 1_000_000)),
  loadSeconds: envNumber('DMP_BENCH_LOAD_SECONDS', 15),
  insertDocs: Math.floor(envNumber('DMP_BENCH_INSERT_DOCS', 20_000)),
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 3600),
  /**
   * One by default: on 2 cores a second process found no idle core (the store and the load
   * generator take the rest), and two processes appending to one source take turns at its log slots.
   */
  apiProcesses: envNumber('DMP_BENCH_API_PROCESSES', 1),
  users: 20_000,
  storeBatch: 500,
  storeCapSeconds: 35,
  pollMs: 500,
};

const cleanupState: { store?: Store; stop?: () => Promise<void>; dir?: string } = {};
const cleanup = once(async () => {
  stopLoadgens();
  await Promise.all(services.map(stopService));
  await cleanupState.stop?.().catch((error) => say(`stopping the worker and API: ${String(error)}`));
  if (cleanupState.store) await dropStore(cleanupState.store);
  if (cleanupState.dir) rmSync(cleanupState.dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes a CRM export of `rows` customers: id, email, tier, country. */
async function writeCsv(file: string, rows: number): Promise<number> {
  const out = createWriteStream(file);
  out.write('customer_id,email,tier,country\n');
  const countries = ['DE', 'FR', 'US', 'GB', 'ES'];
  for (let i = 0; i < rows; i++) {
    const line = `cust-${i},Customer.${i}@Example.com,${['gold', 'silver', 'bronze'][i % 3]},${countries[i % 5]}\n`;
    if (!out.write(line)) await onceEvent(out, 'drain');
  }
  out.end();
  await onceEvent(out, 'finish');
  return statSync(file).size;
}

/** Streams a file as the body of a POST and resolves to the parsed JSON answer. */
function postFile(url: string, key: string, file: string, contentType: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': contentType } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
        } catch {
          resolve({ status: res.statusCode ?? 0, body: text });
        }
      });
    });
    req.on('error', reject);
    createReadStream(file).on('error', reject).pipe(req);
  });
}

async function main(): Promise<void> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const { store, uri, backend, serverVersion } = await freshBenchStore('collect', config);
  cleanupState.store = store;

  // 1. The store's raw insert rate.
  const insert = await rawInsertRate(store, SETTINGS.insertDocs, SETTINGS.users, { batch: SETTINGS.storeBatch, capSeconds: SETTINGS.storeCapSeconds });
  say(`store: ${Math.round(insert.eps).toLocaleString()} docs/s raw insert (~${insert.avgBytes} B/doc)`);

  // 2. A worker and the API; the sources.
  const { api, adminKey, taskQueue, stop } = await startInProcess(config, store, 'collect');
  cleanupState.stop = stop;
  const port = await freePort();
  const collector = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'dmp-bench-collect-'));
  cleanupState.dir = dir;
  const apiProcess = startService('api', 'api/main.ts', { ...process.env, PORT: String(port), DMP_API_PROCESSES: String(SETTINGS.apiProcesses), DMP_ADMIN_KEY: adminKey, DMP_TASK_QUEUE: taskQueue, MONGODB_URI: uri, LOG_LEVEL: 'warn' }, dir);
  for (const deadline = performance.now() + 120_000; ; await sleep(500)) {
    if ((await fetch(`${collector}/healthz`).then((response) => response.status).catch(() => 0)) === 200) break;
    if (performance.now() > deadline || apiProcess.child.exitCode !== null) throw new Error(`the API did not start:\n${logTail(apiProcess)}`);
  }
  say(`collecting API: ${SETTINGS.apiProcesses} process(es) on port ${port}`);
  const admin = async (path: string, body?: unknown): Promise<any> => {
    const response = await fetch(`${api}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const parsed = await response.json();
    if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(parsed)}`);
    return parsed;
  };
  const web = await admin('/v1/sources', { name: 'bench web', kind: 'events', party: 'first' });
  await admin(`/v1/sources/${web.id}/pause`, {});
  const crm = await admin('/v1/sources', {
    name: 'bench crm',
    kind: 'crm',
    party: 'first',
    mapping: { identities: { crm_id: 'customer_id', email: 'email' }, traits: { tier: 'loyalty_tier', country: 'country' } },
  });
  // The import (into the log) is what is timed, not folding 1M new profiles in this same process.
  await admin(`/v1/sources/${crm.id}/pause`, {});

  // 3. Load phases, each from its own process.
  const load = (kind: NonNullable<LoadSpec['kind']>, connections: number, eventsPerRequest: number): Promise<LoadResult> => {
    say(`${kind}: ${SETTINGS.loadSeconds} s, ${eventsPerRequest} event(s) per request, ${connections} connections`);
    return runLoadgen({ kind, url: collector, writeKey: web.writeKey, connections, durationSeconds: SETTINGS.loadSeconds, eventsPerRequest, users: SETTINGS.users, idPrefix: `${kind}-${Date.now()}` });
  };
  const pixel = await load('pixel', 32, 1);
  const segment = await load('segment', 16, 100);
  const collect = await load('collect', 16, 100);
  for (const [name, result] of [['pixel', pixel], ['segment', segment], ['collect', collect]] as const) {
    if (result.non2xx > 0 || result.errors > 0) say(`${name}: ${result.non2xx} non-2xx answers (${JSON.stringify(result.statusCodes)}), ${result.errors} errors`);
  }

  // 4. The CSV import.
  const file = join(dir, 'customers.csv');
  const bytes = await writeCsv(file, SETTINGS.csvRows);
  say(`csv: ${SETTINGS.csvRows.toLocaleString()} rows (${Math.round(bytes / 1e6)} MB) → POST /v1/sources/${crm.id}/uploads`);
  const started = performance.now();
  const posted = await postFile(`${api}/v1/sources/${crm.id}/uploads`, adminKey, file, 'text/csv');
  if (posted.status !== 202) throw new Error(`upload refused: ${posted.status} ${JSON.stringify(posted.body)}`);
  const uploadedSeconds = (performance.now() - started) / 1000;
  let upload: any;
  for (;;) {
    upload = await admin(`/v1/sources/${crm.id}/uploads/${posted.body.uploadId}`);
    if (upload.state === 'completed' || upload.state === 'failed') break;
    await sleep(SETTINGS.pollMs);
  }
  const csvSeconds = (performance.now() - started) / 1000;
  if (upload.state !== 'completed' || upload.rowsImported !== SETTINGS.csvRows) {
    throw new Error(`the import ended ${upload.state} with ${upload.rowsImported} of ${SETTINGS.csvRows} rows imported (${upload.rowsRejected} rejected)`);
  }

  const pixelRate = pixel.accepted / pixel.durationSeconds;
  const segmentRate = segment.accepted / segment.durationSeconds;
  const collectRate = collect.accepted / collect.durationSeconds;
  const csvRate = SETTINGS.csvRows / csvSeconds;
  const result = {
    bench: 'collect',
    pixel_hits_per_s: Math.round(pixelRate),
    segment_api_events_per_s: Math.round(segmentRate),
    csv_rows_per_s: Math.round(csvRate),
    store_insert_docs_per_s: Math.round(insert.eps),
    ratio_csv_vs_store: round(csvRate / insert.eps, 2),
    ratio_segment_api_vs_store: round(segmentRate / insert.eps, 2),
    accepted_eps: Math.round(collectRate),
    ratio_collect_vs_store: round(collectRate / insert.eps, 2),
    segment_api_p99_ms: segment.latencyMs.p99,
    segment_api_batches_per_s: round(segment.responses2xx / segment.durationSeconds),
    api_processes: SETTINGS.apiProcesses,
    pixel_p99_ms: pixel.latencyMs.p99,
    collect_p99_ms: collect.latencyMs.p99,
    csv_rows: SETTINGS.csvRows,
    csv_seconds: round(csvSeconds, 1),
    csv_upload_seconds: round(uploadedSeconds, 1),
    backend,
    server: serverVersion,
  };
  for (const line of table(
    'collect',
    [
      ['figure', 'value', 'vs store', 'target'],
      ['store raw insert (docs/s)', result.store_insert_docs_per_s.toLocaleString(), '1', ''],
      ['pixel hits/s', result.pixel_hits_per_s.toLocaleString(), String(round(pixelRate / insert.eps, 2)), ''],
      ['Segment API events/s (100/batch)', result.segment_api_events_per_s.toLocaleString(), String(result.ratio_segment_api_vs_store), '≥ 40,000 and ≥ 0.5'],
      ['Segment API p99 (ms)', String(result.segment_api_p99_ms), '', ''],
      ['collect API events/s (100/batch)', result.accepted_eps.toLocaleString(), String(result.ratio_collect_vs_store), ''],
      [`CSV rows/s (${SETTINGS.csvRows.toLocaleString()} rows)`, result.csv_rows_per_s.toLocaleString(), String(result.ratio_csv_vs_store), '≥ 0.5'],
    ],
    [1, 3],
  ))
    say(line);
  await cleanup();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
