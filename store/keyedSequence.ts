/**
 * Sequences stored as documents with predictable `_id`s (`<prefix><n>`, n = 0, 1, 2, …, written in
 * order and never with gaps) are searched by exact-`_id` reads alone: the first free slot at or after
 * `from` is found by galloping forward and bisecting, in O(log n) reads.
 */
export async function firstAbsent(exists: (n: number) => Promise<boolean>, from: number): Promise<number> {
  if (!(await exists(from))) return from;
  let present = from;
  let step = 1;
  while (await exists(present + step)) {
    present += step;
    step *= 2;
  }
  let absent = present + step;
  while (absent - present > 1) {
    const middle = Math.floor((present + absent) / 2);
    if (await exists(middle)) present = middle;
    else absent = middle;
  }
  return absent;
}

/** A bounded map that forgets its oldest entries first; for caching immutable or verified facts. */
export class BoundedCache<K, V> {
  private readonly entries = new Map<K, V>();
  /**
   * Walks the keys oldest first, kept between evictions: a fresh `keys()` each time would step over
   * every deleted slot at the front of the Map again, and evictions would grow ever slower.
   */
  private oldest: Iterator<K> = this.entries.keys();

  constructor(private readonly capacity: number) {}

  get(key: K): V | undefined {
    return this.entries.get(key);
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size <= this.capacity) return;
    let next = this.oldest.next();
    if (next.done) {
      this.oldest = this.entries.keys();
      next = this.oldest.next();
    }
    this.entries.delete(next.value as K);
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
    this.oldest = this.entries.keys();
  }
}
