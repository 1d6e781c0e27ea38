import { spawn, type ChildProcess } from 'node:child_process';
import type { Client } from '@temporalio/client';
import type { Store } from '../../store/db';
import { baseConfig, startApi, testStore, testTemporal, uniqueName, type RunningApi } from './services';

/** The real worker entry point on `store`'s database, as its own process group so it can be killed outright. */
/** A worker process on the test's store; `output`, when given, collects what it logs (warnings and worse). */
export function spawnWorker(store: Store, env: Record<string, string>, output?: string[]): ChildProcess {
  const uri = new URL(baseConfig.MONGODB_URI);
  uri.pathname = `/${store.db.databaseName}`;
  const child = spawn('npx', ['tsx', 'workers/main.ts'], {
    cwd: `${__dirname}/../..`,
    env: { ...process.env, MONGODB_URI: uri.toString(), TEMPORAL_ADDRESS: baseConfig.TEMPORAL_ADDRESS, ...env, LOG_LEVEL: 'warn' },
    detached: true,
    stdio: output ? ['ignore', 'pipe', 'pipe'] : 'ignore',
  });
  for (const stream of [child.stdout, child.stderr]) stream?.on('data', (data: Buffer) => output?.push(data.toString()));
  return child;
}

export function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    process.kill(-(child.pid as number), 'SIGKILL');
  });
}

/** Stops a process group as a host that hangs would (no CPU, no network), until `thaw`. */
export function freeze(child: ChildProcess): void {
  process.kill(-(child.pid as number), 'SIGSTOP');
}

export function thaw(child: ChildProcess): void {
  process.kill(-(child.pid as number), 'SIGCONT');
}

/**
 * A kill test's setting, for one describe block: its own database, the API in this process, and
 * worker processes on their own task queue, every one killed when the block ends.
 */
export function killTestSetting(name: string) {
  const setting = { store: undefined as unknown as Store, temporal: undefined as unknown as Client, api: undefined as unknown as RunningApi, env: {} as Record<string, string> };
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    setting.store = await testStore(name);
    setting.temporal = await testTemporal();
  });
  afterAll(async () => {
    for (const child of children) await killHard(child);
    await setting.api?.close();
    await setting.store.close();
    await setting.temporal.connection.close();
  });
  /** Another worker process like the first. */
  const spawnAnother = (): ChildProcess => {
    const child = spawnWorker(setting.store, setting.env);
    children.push(child);
    return child;
  };
  return {
    setting,
    /** Starts the API and the first worker process, both draining `drainBatchEvents` events a batch. */
    async startWorkers(drainBatchEvents: number): Promise<ChildProcess> {
      const taskQueue = uniqueName(name);
      setting.env = { DMP_TASK_QUEUE: taskQueue, DMP_DRAIN_BATCH_EVENTS: String(drainBatchEvents) };
      setting.api = await startApi({ store: setting.store, temporal: setting.temporal, taskQueue, config: { DMP_DRAIN_BATCH_EVENTS: drainBatchEvents } });
      return spawnAnother();
    },
    spawnAnother,
  };
}
