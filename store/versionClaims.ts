import { setTimeout as sleep } from 'node:timers/promises';
import type { Collection } from 'mongodb';
import { insertKeyed, type Store } from './db';

export const VERSION_CLAIMS = 'version_claims';

interface ClaimDoc {
  _id: string;
  at: Date;
}

/** A claim older than this belongs to a writer that died mid-write (a write takes well under a second). */
const CLAIM_LEASE_MS = 60_000;
/** How often a writer looks whether another's claim of the same version is gone. */
const CLAIM_WAIT_MS = 25;

/**
 * "Write version n+1 of this document if it is still at n", made safe on a store whose conditional
 * writes are not atomic (FerretDB reads the document, changes it and writes it back, so two writers
 * that read version n can both pass the condition, the later undoing the earlier's change). There
 * the write is made only by the writer whose keyed insert of the claim `<version>` went through;
 * the claim is removed once written, and one left by a writer that died is taken over once older
 * than a lease, by inserting the next claim of the same version (`#1`, …). Inserts of one key are
 * atomic on every store. On MongoDB the condition alone suffices and no claim is written.
 */
export class VersionClaims {
  private readonly claims: Collection<ClaimDoc>;
  private readonly needed: boolean;

  constructor(store: Store) {
    this.claims = store.db.collection<ClaimDoc>(VERSION_CLAIMS);
    this.needed = !store.atomicConditionalWrites;
  }

  /**
   * Runs `write` as the only writer of `version` (e.g. `<collection>/<id>@<n>`); null, without
   * running it, once another live writer that held it is done — the caller reads the document again.
   */
  async hold<T>(version: string, write: () => Promise<T>): Promise<{ value: T } | null> {
    if (!this.needed) return { value: await write() };
    const held = await this.claim(version);
    if (!held) return null;
    try {
      return { value: await write() };
    } finally {
      // Written (or not): a writer that read this version finds the document changed, or claims it afresh.
      await Promise.all(held.map((id) => this.claims.deleteOne({ _id: id })));
    }
  }

  /**
   * Runs `write` as the only writer of `key` (a document: `<collection>/<id>`) among those writing
   * through claims, waiting for any other to finish first: for updates of a document that several
   * writers make, each changing its own fields, which FerretDB would otherwise write back over
   * each other.
   */
  async exclusive<T>(key: string, write: () => Promise<T>): Promise<T> {
    for (;;) {
      const held = await this.hold(key, write);
      if (held) return held.value;
    }
  }

  /**
   * Removes the claims writers left behind (one that died after writing, before removing its claim,
   * leaves it to nobody once the document moved on), those taken before `before`. Each version's are
   * taken over as a writer would (`claim`, then nothing written), so a claim in use — or the head of a
   * chain whose later claim is in use — is never removed under its writer; how many were removed.
   */
  async releaseStale(before: Date): Promise<number> {
    if (!this.needed) return (await this.claims.deleteMany({ at: { $lt: before } })).deletedCount;
    const stale = await this.claims.find({ at: { $lt: before } }).toArray();
    const byVersion = new Map<string, string[]>();
    for (const { _id } of stale) {
      const version = _id.replace(/#\d+$/, '');
      byVersion.set(version, [...(byVersion.get(version) ?? []), _id]);
    }
    let removed = 0;
    for (const [version, ids] of byVersion) {
      const held = await this.claim(version);
      if (!held) continue;
      // Holding the version's first claim, no writer can begin on it: what else was stale of it is dead.
      for (const id of new Set([...held, ...ids])) removed += (await this.claims.deleteOne({ _id: id })).deletedCount;
      removed--; // the claim just taken is not one left behind
    }
    return removed;
  }

  /** The claims taken (this writer's, and the stale ones it took over, to remove with it), or null while a live writer holds the version. */
  private async claim(version: string): Promise<string[] | null> {
    const ids = [version];
    for (;;) {
      const id = ids[ids.length - 1];
      if ((await insertKeyed(this.claims, [{ _id: id, at: new Date() }])).size === 0) return ids;
      const held = await this.claims.findOne({ _id: id });
      if (held && Date.now() - held.at.getTime() >= CLAIM_LEASE_MS) {
        ids.push(`${version}#${ids.length}`);
        continue;
      }
      // A live writer holds it: wait for its claim (a small document) to go, not re-reading the
      // document it writes, which may be large; then the caller reads what it wrote.
      while (held && (await this.claims.findOne({ _id: id })) && Date.now() - held.at.getTime() < CLAIM_LEASE_MS) await sleep(CLAIM_WAIT_MS);
      return null;
    }
  }
}
