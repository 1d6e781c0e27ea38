import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Client } from '@temporalio/client';
import { Runtime, DefaultLogger, type Worker } from '@temporalio/worker';
import { createApp } from '../../api/app';
import type { ActivityDeps } from '../../activities';
import { loadConfig, type Config } from '../../config';
import { connectStore, type Store } from '../../store/db';
import { connectTemporal } from '../../temporal/client';
import { createWorker } from '../../workers/worker';
import { profilePartitionWorkflowId } from '../../domain/workflowIds';

/** Integration and end-to-end tests run against the real servers that `npm test` starts. */
export const baseConfig: Config = loadConfig({ ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' });

let runtimeInstalled = false;
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger('WARN') });
}

/** A fresh database per test file keeps tests independent without deleting anything. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 7)}`;
}

export function testStore(name: string): Promise<Store> {
  return connectStore(baseConfig.MONGODB_URI, uniqueName(`dmp_test_${name}`));
}

export function testTemporal(): Promise<Client> {
  return connectTemporal(baseConfig);
}

export interface RunningWorker {
  worker: Worker;
  stop(): Promise<void>;
}

export async function startWorker(options: {
  store: Store;
  temporal: Client;
  taskQueue: string;
  activityOverrides?: Partial<ActivityDeps>;
  config?: Partial<Config>;
}): Promise<RunningWorker> {
  quietRuntime();
  const { worker, connection } = await createWorker({
    config: { ...baseConfig, ...options.config, DMP_TASK_QUEUE: options.taskQueue },
    store: options.store,
    temporal: options.temporal,
    activityOverrides: options.activityOverrides,
  });
  const running = worker.run();
  return {
    worker,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
      await connection.close();
    },
  };
}

export interface RunningApi {
  url: string;
  adminKey: string;
  close(): Promise<void>;
}

export async function startApi(options: { store: Store; temporal: Client; taskQueue: string; config?: Partial<Config> }): Promise<RunningApi> {
  const adminKey = 'adm_test_0123456789abcdef';
  const app = createApp({
    config: { ...baseConfig, ...options.config, DMP_TASK_QUEUE: options.taskQueue, DMP_ADMIN_KEY: adminKey },
    store: options.store,
    temporal: options.temporal,
  });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    adminKey,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export interface RunningPlatform {
  taskQueue: string;
  store: Store;
  temporal: Client;
  worker: RunningWorker;
  api: RunningApi;
  stop(): Promise<void>;
}

/** A fresh database, a worker and an API on their own task queue: the platform as end-to-end tests use it. */
export async function startPlatform(name: string, config: Partial<Config> = {}, activityOverrides?: Partial<ActivityDeps>): Promise<RunningPlatform> {
  const taskQueue = uniqueName(name);
  const store = await testStore(name);
  const temporal = await testTemporal();
  const worker = await startWorker({ store, temporal, taskQueue, config, activityOverrides });
  const api = await startApi({ store, temporal, taskQueue, config });
  return {
    taskQueue,
    store,
    temporal,
    worker,
    api,
    async stop() {
      await api.close();
      await deleteSchedules(temporal, store.db.databaseName);
      await worker.stop();
      await temporal.connection.close();
      await store.close();
    },
  };
}

/** Deletes the schedules made for a database (their ids hold it after the kind), so none fires once its test is over. */
export async function deleteSchedules(temporal: Client, databaseName: string): Promise<void> {
  for await (const schedule of temporal.schedule.list()) {
    if (schedule.scheduleId.split(':')[1] !== databaseName) continue;
    await temporal.schedule
      .getHandle(schedule.scheduleId)
      .delete()
      .catch(() => undefined);
  }
}

/**
 * Ends a database's partition writers. They are per database, bound to the task queue that first
 * started them: tests that give the same database a new task queue end them in between.
 */
export async function stopPartitionWriters(temporal: Client, store: Store): Promise<void> {
  await Promise.all(
    Array.from({ length: baseConfig.DMP_PROFILE_PARTITIONS }, (_, p) =>
      temporal.workflow
        .getHandle(profilePartitionWorkflowId(store.db.databaseName, p))
        .terminate('test finished')
        .catch(() => undefined),
    ),
  );
}
