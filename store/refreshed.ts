/** A value read from the store at most once per `periodMs`, concurrent callers sharing the read. */
export class Refreshed<T> {
  private value: { at: number; value: T } | null = null;
  private reading: Promise<T> | null = null;

  constructor(
    private readonly periodMs: number,
    private readonly read: (previous: T | null) => Promise<T>,
  ) {}

  get(): Promise<T> {
    if (this.value && Date.now() - this.value.at < this.periodMs) return Promise.resolve(this.value.value);
    this.reading ??= this.read(this.value?.value ?? null)
      .then((value) => {
        this.value = { at: Date.now(), value };
        return value;
      })
      .finally(() => {
        this.reading = null;
      });
    return this.reading;
  }
}
