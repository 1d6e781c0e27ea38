/**
 * Wakes source workflows after their logs grow, without a signal per request: at most one wake-up
 * is in flight per source, and seals that happen meanwhile are folded into one more after it. A
 * failed wake-up only delays the drain until the source's idle poll; it never fails a request.
 */
export class SourceWaker {
  private readonly sources = new Map<string, { again: boolean }>();

  constructor(
    private readonly wake: (sourceId: string) => Promise<void>,
    private readonly onError: (sourceId: string, error: unknown) => void,
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
        try {
          await this.wake(sourceId);
        } catch (error) {
          this.onError(sourceId, error);
        }
      } while (state.again);
      this.sources.delete(sourceId);
    })();
  }

  /** Resolves when no wake-up is in flight (for an orderly shutdown). */
  async idle(): Promise<void> {
    while (this.sources.size > 0) await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
