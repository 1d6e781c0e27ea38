/** The platform's own processes (API, workers) started by a benchmark: each in its own process group, logging to a file. */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { killGroup } from './loadgenProcess';
import { say } from './support';

const ROOT = path.resolve(__dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface Service {
  name: string;
  child: ChildProcess;
  logFile: string;
  exited: Promise<void>;
}

/** Every service started, for checks and cleanup. */
export const services: Service[] = [];

export function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Where CPU profiles go: a folder per profiled service and run. */
const PROFILE_DIR = path.join(ROOT, '.data', 'profiles');

/**
 * DMP_BENCH_CPU_PROFILE names services to profile (`api`, `worker-1`, comma-separated): finding where
 * the time goes is the first step of making any of these figures better.
 */
function profileFlags(name: string): string[] {
  const profiled = (process.env.DMP_BENCH_CPU_PROFILE ?? '').split(',').map((entry) => entry.trim());
  if (!profiled.includes(name)) return [];
  const dir = path.join(PROFILE_DIR, `${name}-${new Date().toISOString().replace(/[:.]/g, '')}`);
  say(`${name}: CPU profiles (one per thread) into ${dir} when it stops`);
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

/** Starts `tsx <script>` in its own process group, its output into a log file. */
export function startService(name: string, script: string, env: NodeJS.ProcessEnv, logDir: string): Service {
  const logFile = path.join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawn(TSX, [...profileFlags(name), script], { cwd: ROOT, env, stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const service = { name, child, logFile, exited };
  services.push(service);
  return service;
}

export function logTail(service: Service, lines = 30): string {
  try {
    return readFileSync(service.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** SIGTERM to the process (tsx passes it on), SIGKILL to its whole group if it lingers. */
export async function stopService(service: Service): Promise<void> {
  if (!running(service.child) || service.child.pid === undefined) return;
  service.child.kill('SIGTERM');
  // The worker finishes its in-flight activities first; waiting for new log events lasts up to 10 s.
  const stopped = await Promise.race([service.exited.then(() => true), sleep(20_000).then(() => false)]);
  if (stopped) return;
  say(`${service.name} did not stop within 20 s; killing its process group ${service.child.pid}`);
  killGroup(service.child);
  await Promise.race([service.exited, sleep(5_000)]);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
