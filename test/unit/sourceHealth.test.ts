import { emptyHealth, recordTurn, summarizeHealth } from '../../domain/sourceHealth';

const MINUTE = 60_000;
const t0 = Date.parse('2026-11-30T10:00:00Z');

describe('source health', () => {
  it('reports nothing for a source that never drained', () => {
    expect(summarizeHealth(undefined, t0)).toEqual({ lastSuccessAt: null, lastFailureAt: null, eventsLastHour: 0, turnsLastHour: 0, errorRate: null });
  });

  it('sums the last hour of turns and takes the share that failed as the error rate', () => {
    const window = emptyHealth();
    recordTurn(window, t0, { events: 100 });
    recordTurn(window, t0 + 10_000, { events: 50 });
    recordTurn(window, t0 + 5 * MINUTE, { failed: true });
    recordTurn(window, t0 + 6 * MINUTE, { events: 25 });
    expect(summarizeHealth(window, t0 + 7 * MINUTE)).toEqual({
      lastSuccessAt: new Date(t0 + 6 * MINUTE).toISOString(),
      lastFailureAt: new Date(t0 + 5 * MINUTE).toISOString(),
      eventsLastHour: 175,
      turnsLastHour: 4,
      errorRate: 0.25,
    });
  });

  it('forgets minutes older than an hour, in the summary and in the kept window', () => {
    const window = emptyHealth();
    recordTurn(window, t0, { events: 100 });
    recordTurn(window, t0 + 30 * MINUTE, { failed: true });
    expect(summarizeHealth(window, t0 + 61 * MINUTE)).toMatchObject({ eventsLastHour: 0, turnsLastHour: 1, errorRate: 1 });
    recordTurn(window, t0 + 95 * MINUTE, { events: 7 });
    expect(window.minutes.map((entry) => entry.minute)).toEqual([Math.floor((t0 + 95 * MINUTE) / MINUTE)]);
    expect(summarizeHealth(window, t0 + 95 * MINUTE)).toMatchObject({ eventsLastHour: 7, turnsLastHour: 1, errorRate: 0 });
  });

  it('keeps one entry per minute however many turns it had', () => {
    const window = emptyHealth();
    for (let i = 0; i < 100; i++) recordTurn(window, t0 + i * 1000, { events: 1 });
    expect(window.minutes.length).toBe(2);
    expect(summarizeHealth(window, t0 + 100_000).eventsLastHour).toBe(100);
  });
});
