import { spawn, type ChildProcess } from 'node:child_process';
import type { Store } from '../../store/db';
import { baseConfig } from './services';

/** The real worker entry point on `store`'s database, as its own process group so it can be killed outright. */
export function spawnWorker(store: Store, env: Record<string, string>): ChildProcess {
  const uri = new URL(baseConfig.MONGODB_URI);
  uri.pathname = `/${store.db.databaseName}`;
  return spawn('npx', ['tsx', 'workers/main.ts'], {
    cwd: `${__dirname}/../..`,
    env: { ...process.env, MONGODB_URI: uri.toString(), TEMPORAL_ADDRESS: baseConfig.TEMPORAL_ADDRESS, ...env, LOG_LEVEL: 'warn' },
    detached: true,
    stdio: 'ignore',
  });
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
