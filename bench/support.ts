/** What the benchmarks share: their knobs, progress lines, time limits, the store's name, and how a run starts and ends. */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Client } from '@temporalio/client';
import { Runtime } from '@temporalio/worker';
import type { Document } from 'mongodb';
import { createApp } from '../api/app';
import type { Config } from '../config';
import { connectStore, type Store } from '../store/db';
import { connectTemporal } from '../temporal/client';
import { createWorker } from '../workers/worker';

/** A numeric knob from the environment, or `fallback` when it is unset. */
export function envNumber(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number ≥ ${min}, got '${raw}'`);
  return value;
}

export const say = (line: string) => process.stderr.write(`[bench] ${line}\n`);
/** The nearest-rank percentile `p` (0–100) of `values`. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export const round = (value: number, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

/** A text table: its title, the header row, a rule, the rows; columns `figures[0]` to `figures[1]` (the numbers) aligned right. */
export function table(title: string, rows: string[][], figures: [number, number]): string[] {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const right = (column: number) => column >= figures[0] && column <= figures[1];
  const lines = rows.map((row) => row.map((cell, column) => (right(column) ? cell.padStart(widths[column]) : cell.padEnd(widths[column]))).join('  ').trimEnd());
  return [title, lines[0], lines[0].replace(/./g, '-'), ...lines.slice(1)];
}

/** Settles like `promise`, or rejects once `ms` have passed: keeps a stuck store from stalling the run. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function redact(uri: string): string {
  return uri.replace(/\/\/[^@/]*@/, '//***@');
}

/**
 * The store's name for the report: the FerretDB handler when the URI is the one scripts/services.sh
 * hands out (`mongodb://127.0.0.1:<port>/dmp`), read from the server's own command line when it runs
 * here; `external` for any other URI.
 */
function backendName(uri: string, serverPid: number | undefined): string {
  const local = /^mongodb:\/\/127\.0\.0\.1:(\d+)\/dmp$/.exec(uri);
  if (!local) return 'external';
  if (serverPid) {
    try {
      const cmdline = readFileSync(`/proc/${serverPid}/cmdline`, 'utf8').split('\0').join(' ');
      const handler = /--handler=(\w+)/.exec(cmdline)?.[1];
      if (handler) return handler;
    } catch {
      /* not readable here: fall back to the configuration */
    }
  }
  const configured = process.env.DMP_STORE_BACKEND ?? 'postgresql';
  return ['postgres', 'pg'].includes(configured) ? 'postgresql' : configured;
}

/** Checks that the store answers and names it (backend and server version), with a line saying so. */
/** A fresh database `dmp_bench_<kind>_<timestamp>` on the MONGODB_URI server, and what the report says of the server. */
export async function freshBenchStore(kind: string, config: Pick<Config, 'MONGODB_URI'>): Promise<{ store: Store; uri: string; databaseName: string; backend: string; serverVersion: string }> {
  const databaseName = `dmp_bench_${kind}_${Date.now()}`;
  const url = new URL(config.MONGODB_URI);
  url.pathname = `/${databaseName}`;
  const store = await connectStore(url.toString(), databaseName);
  return { store, uri: url.toString(), databaseName, ...(await describeStore(store, config.MONGODB_URI)) };
}

export async function describeStore(store: Store, serverUri: string): Promise<{ backend: string; serverVersion: string }> {
  await within(store.db.command({ ping: 1 }), 10_000, `the store at ${redact(serverUri)}`);
  const status = await store.db.admin().command({ serverStatus: 1 }).catch(() => ({}) as Document);
  const backend = backendName(serverUri, typeof status.pid === 'number' ? status.pid : undefined);
  const serverVersion = status.ferretdbVersion ? `FerretDB ${status.ferretdbVersion}` : `MongoDB ${status.version ?? '?'}`;
  say(`backend ${backend} (${serverVersion}) at ${redact(serverUri)}; database ${store.db.databaseName}`);
  return { backend, serverVersion };
}

/** Drops the run's database and closes the connection; a failure is reported, not thrown. */
export async function dropStore(store: Store): Promise<void> {
  try {
    await within(store.db.dropDatabase(), 60_000, 'dropDatabase');
    say(`dropped database ${store.db.databaseName}`);
  } catch (error) {
    say(`could not drop database ${store.db.databaseName}: ${String(error)}`);
  }
  await within(store.close(), 5000, 'closing the store connection').catch(() => undefined);
}

/** `work` run once: later calls get the first call's promise. */
export function once(work: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= work());
}

export interface BenchRun {
  /** The run; resolves to the exit code (0 when nothing is returned). */
  main: () => Promise<number | void>;
  /** Undoes what the run made, however the run ends; see `once`. */
  cleanup: () => Promise<void>;
  deadlineSeconds: number;
  /** Says what may explain a failure (e.g. the last lines of a service's log). */
  onFailure?: () => void;
}

/** Runs a benchmark to its exit code, cleaning up on success, failure, a signal, or the deadline. */
export function runBench(run: BenchRun): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      say(`${signal}: stopping`);
      void run.cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }

  const watchdog = setTimeout(() => {
    say(`the run took longer than ${run.deadlineSeconds} s; giving up`);
    run.onFailure?.();
    void run.cleanup().finally(() => process.exit(1));
  }, run.deadlineSeconds * 1000);
  watchdog.unref();

  run.main().then(
    (code) => process.exit(code ?? 0),
    async (error: unknown) => {
      say(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      run.onFailure?.();
      await run.cleanup();
      process.exit(1);
    },
  );
}

/**
 * A worker and the API in the bench's own process, on a task queue of their own (Temporal's logs
 * reduced to its errors). `stop` closes the API, ends every workflow still running on the queue and
 * shuts the worker down.
 */
/** Ends every workflow still running on a benchmark's task queue (sources and partition writers wait for ever). */
export async function terminateTaskQueue(temporal: Client, taskQueue: string): Promise<void> {
  for await (const execution of temporal.workflow.list({ query: `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'` })) {
    await temporal.workflow.getHandle(execution.workflowId).terminate('benchmark finished').catch(() => undefined);
  }
}

export async function startInProcess(config: Config, store: Store, name: string): Promise<{ temporal: Client; taskQueue: string; api: string; adminKey: string; stop: () => Promise<void> }> {
  Runtime.install({ logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: (message: string) => say(`temporal: ${message}`) } as never });
  const taskQueue = `dmp-bench-${store.db.databaseName}`;
  const adminKey = `adm_bench_${Date.now()}_${name}`;
  const temporal = await connectTemporal(config);
  const { worker, connection } = await createWorker({ config: { ...config, DMP_TASK_QUEUE: taskQueue }, store, temporal });
  const running = worker.run();
  const app = createApp({ config: { ...config, DMP_TASK_QUEUE: taskQueue, DMP_ADMIN_KEY: adminKey }, store, temporal });
  const server: Server = await new Promise((resolve) => {
    const listening = app.listen(0, '127.0.0.1', () => resolve(listening));
  });
  const api = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const stop = async () => {
    await new Promise((resolve) => server.close(resolve));
    await terminateTaskQueue(temporal, taskQueue);
    worker.shutdown();
    await running;
    await connection.close();
    await temporal.connection.close();
  };
  return { temporal, taskQueue, api, adminKey, stop };
}
