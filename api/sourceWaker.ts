/**
 * Wakes source workflows after their logs grow, without a signal per request: at most one wake-up
 * is in flight per source, and seals that happen meanwhile are folded into one more after it, sent
 * no sooner than `minIntervalMs` after the one before — a drain that is awake reads everything
 * sealed before its next look, and under load a signal per seal kept Temporal busier than the
 * drain. A failed wake-up only delays the drain until the source's idle poll; it never fails a request.
 */
export class SourceWaker {
  private readonly sources = new Map<string, { again: boolean }>();

  constructor(
    private readonly wake: (sourceId: string) => Promise<void>,
    private readonly onError: (sourceId: string, error: unknown) => void,
    private readonly minIntervalMs = 250,
  ) {}

  notify(sourceId: string): void {
    const running = this.sources.get(sourceId);
    if (running) {
      running.again = true;
      return;
    }
    const state = { again: false };
    this.sources.set(sourceId, state);
    void (async () => {
      do {
        state.again = false;
        const started = Date.now();
        try {
          await this.wake(sourceId);
        } catch (error) {
          this.onError(sourceId, error);
        }
        const wait = started + this.minIntervalMs - Date.now();
        if (state.again && wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      } while (state.again);
      this.sources.delete(sourceId);
    })();
  }

  /** Resolves when no wake-up is in flight (for an orderly shutdown). */
  async idle(): Promise<void> {
    while (this.sources.size > 0) await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
