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

/**
 * Aborted once Temporal has given up this activity attempt — its heartbeats found it timed out or
 * gone (its workflow ended), or it was cancelled — or the worker shuts down: an attempt that goes on
 * past it would work beside the attempt that replaced it. Never aborted outside an activity.
 */
export function attemptSignal(): AbortSignal {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return new AbortController().signal;
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
