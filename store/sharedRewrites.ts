import type { Collection } from 'mongodb';
import type { Store } from './db';
import { VersionClaims } from './versionClaims';

/** A document several writers rewrite: `erasures` counts the rewrites, so one can tell whether another wrote since it read. */
type Rewritable = { _id: string; erasures?: number };
/** One writer's change to a document: the document as changed, and what to report; null when it has nothing to change. */
type Change<T extends Rewritable, R> = (doc: T) => { doc: Omit<T, '_id' | 'erasures'>; result: R } | null;

/** Rewrites of one document lost to other writers before giving up (each loss means another made progress). */
const MAX_LOST_WRITES = 100;
/** How long a rewrite waits, in all, for other processes' writes of the same document. */
const MAX_WAIT_MS = 120_000;

/**
 * Rewrites of documents that other processes may be rewriting at the same moment (an event chunk,
 * a routed batch or a snapshot chunk holds many people, each erased by a request of their own).
 *
 * In this process, changes wanting the same document meanwhile share one rewrite: one read, every
 * change applied in turn, one write — so a document shared by many subjects is rewritten a few
 * times, not once per subject. Across processes, version n+1 is written only if the document's
 * `erasures` count is still n, and on FerretDB only by the writer holding the claim of version n
 * (store/versionClaims).
 */
export class SharedRewrites {
  private readonly claims: VersionClaims;
  private readonly waiting = new Map<string, Array<{ change: Change<Rewritable, unknown>; read?: Rewritable; resolve: (result: unknown) => void; reject: (error: unknown) => void }>>();

  constructor(store: Store) {
    this.claims = new VersionClaims(store);
  }

  /**
   * Applies `change` to the document and writes it back, unless another writer wrote since the
   * read (then it is read and done again). Returns what `change` reported, or null when the
   * document is gone or `change` had nothing to do. `read`: the document as the caller just read it.
   */
  rewrite<T extends Rewritable, R>(collection: Collection<T>, id: string, change: Change<T, R>, read?: T): Promise<R | null> {
    const key = `${collection.collectionName}/${id}`;
    return new Promise((resolve, reject) => {
      const waiting = this.waiting.get(key);
      const entry = { change: change as Change<Rewritable, unknown>, read, resolve: resolve as (result: unknown) => void, reject };
      if (waiting) return void waiting.push(entry);
      this.waiting.set(key, [entry]);
      void this.rewriteWaiting(collection as unknown as Collection<Rewritable>, id, key);
    });
  }

  /** Rewrites a document for every change waiting on it, round after round until none waits. */
  private async rewriteWaiting(collection: Collection<Rewritable>, id: string, key: string): Promise<void> {
    for (;;) {
      const entries = this.waiting.get(key)!.splice(0);
      if (entries.length === 0) {
        this.waiting.delete(key);
        return;
      }
      try {
        // A document the caller has just read is not read again, unless others wait on it too.
        const results = await this.rewriteOnce(collection, id, key, entries.map((entry) => entry.change), entries.length === 1 ? entries[0].read : undefined);
        entries.forEach((entry, n) => entry.resolve(results[n]));
      } catch (error) {
        for (const entry of entries) entry.reject(error);
      }
    }
  }

  private async rewriteOnce(collection: Collection<Rewritable>, id: string, key: string, changes: Array<Change<Rewritable, unknown>>, read?: Rewritable): Promise<unknown[]> {
    const deadline = Date.now() + MAX_WAIT_MS;
    for (let lost = 0, first = true; lost < MAX_LOST_WRITES && Date.now() < deadline; first = false) {
      const doc = first && read ? read : await collection.findOne({ _id: id });
      if (!doc) return changes.map(() => null);
      let current = doc;
      const results = changes.map((change) => {
        const changed = change(current);
        if (!changed) return null;
        current = { ...changed.doc, _id: id, erasures: doc.erasures } as Rewritable;
        return changed.result;
      });
      if (current === doc) return results;
      const { _id: _, erasures: __, ...next } = current;
      const version = doc.erasures ?? 0;
      // No upsert: a document removed meanwhile (retention) stays removed; an event log stays gap-free.
      const written = await this.claims.hold(`${key}@${version}`, () => collection.replaceOne({ _id: id, erasures: doc.erasures ?? { $exists: false } } as never, { ...next, erasures: version + 1 }));
      if (written?.value.matchedCount === 1) return results;
      if (written) lost++;
    }
    throw new Error(`${collection.collectionName} ${id} kept changing under the rewrite`);
  }
}
