/**
 * A source's recent health, kept by its workflow (so workflow code imports this module: no zod, no
 * node built-ins) and summarized by the API: per-minute counts of the last hour and the times of the
 * last drain that worked and the last that failed.
 */
export interface HealthWindow {
  /** One entry per minute (epoch minute) with activity, oldest first, at most an hour's worth. */
  minutes: Array<{ minute: number; events: number; turns: number; failures: number }>;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
}

export interface HealthSummary {
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  /** Events routed to profiles in the last 60 minutes. */
  eventsLastHour: number;
  /** Drain turns in the last 60 minutes, and the share of them that failed (null without any). */
  turnsLastHour: number;
  errorRate: number | null;
}

const WINDOW_MINUTES = 60;

export function emptyHealth(): HealthWindow {
  return { minutes: [], lastSuccessAt: null, lastFailureAt: null };
}

/** Records one drain turn at `nowMs`: the events it routed, or that it failed. */
export function recordTurn(window: HealthWindow, nowMs: number, turn: { events: number } | { failed: true }): void {
  const minute = Math.floor(nowMs / 60_000);
  window.minutes = window.minutes.filter((entry) => entry.minute > minute - WINDOW_MINUTES);
  let entry = window.minutes[window.minutes.length - 1];
  if (entry?.minute !== minute) {
    entry = { minute, events: 0, turns: 0, failures: 0 };
    window.minutes.push(entry);
  }
  entry.turns++;
  const at = new Date(nowMs).toISOString();
  if ('failed' in turn) {
    entry.failures++;
    window.lastFailureAt = at;
  } else {
    entry.events += turn.events;
    window.lastSuccessAt = at;
  }
}

export function summarizeHealth(window: HealthWindow | undefined, nowMs: number): HealthSummary {
  const since = Math.floor(nowMs / 60_000) - WINDOW_MINUTES;
  const recent = (window?.minutes ?? []).filter((entry) => entry.minute > since);
  const sum = (field: 'events' | 'turns' | 'failures') => recent.reduce((total, entry) => total + entry[field], 0);
  const turns = sum('turns');
  return {
    lastSuccessAt: window?.lastSuccessAt ?? null,
    lastFailureAt: window?.lastFailureAt ?? null,
    eventsLastHour: sum('events'),
    turnsLastHour: turns,
    errorRate: turns === 0 ? null : sum('failures') / turns,
  };
}
