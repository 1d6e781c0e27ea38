import { Context } from '@temporalio/activity';

export function heartbeat(details?: unknown): void {
  // Outside an activity (unit use) there is nobody to heartbeat to; a local activity has no heartbeat.
  try {
    const context = Context.current();
    if (!context.info.isLocal) context.heartbeat(details);
  } catch {
    /* not running as an activity */
  }
}

/** Heartbeats on a timer while `work` runs: long store reads in between give no natural point to. */
export async function withHeartbeats<T>(work: () => Promise<T>, everyMs = 2000): Promise<T> {
  const timer = setInterval(() => heartbeat(), everyMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
