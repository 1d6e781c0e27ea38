import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { LoadResult, LoadSpec } from './loadgen';

const ROOT = path.resolve(__dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
const running = new Set<ChildProcess>();

/** SIGKILL to the process group a detached child leads. */
export function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** Runs bench/loadgen.ts in a process of its own, so the load does not share an event loop with what it measures. */
export async function runLoadgen(spec: LoadSpec): Promise<LoadResult> {
  // Its own process group, so that tsx and the node process under it can be stopped together.
  const child = spawn(TSX, [path.join(ROOT, 'bench', 'loadgen.ts'), JSON.stringify(spec)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  running.add(child);
  let out = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    out += chunk;
  });
  const guard = setTimeout(() => killGroup(child), (spec.durationSeconds + 90) * 1000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  clearTimeout(guard);
  running.delete(child);
  const last = out.trim().split('\n').pop() ?? '';
  if (code !== 0 || !last) throw new Error(`load generator failed (exit ${code})`);
  return JSON.parse(last) as LoadResult;
}

/** Kills load generators still running (a bench's cleanup). */
export function stopLoadgens(): void {
  for (const child of running) killGroup(child);
  running.clear();
}
