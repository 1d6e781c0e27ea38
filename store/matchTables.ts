import type { Collection } from 'mongodb';
import { liveEntries, withSighting, type MatchEntry, type MatchLimits } from '../domain/partners';
import { COLLECTIONS, findByIds, isDuplicateKeyError, oneAtATime, type Store } from './db';
import { VersionClaims } from './versionClaims';

/** One key's side of the match table: its newest live entries and a version for conditional replaces. */
interface MatchDoc {
  _id: string;
  v: number;
  entries: MatchEntry[];
}

/** Conflicting writes from other processes before a sighting gives up (each one wrote meanwhile). */
const MAX_ATTEMPTS = 8;
/** How long a change waits, in all, for other processes' writes of the same key. */
const MAX_WAIT_MS = 30_000;

function partnerKey(partnerId: string, puid: string): string {
  return `${partnerId}:${puid}`;
}

function cookieKey(cookieId: string, partnerId: string): string {
  return `${cookieId}:${partnerId}`;
}

/**
 * Cookie-sync match tables: partner id ↔ our cookie id, both ways, each key one document found by
 * exact `_id`, holding its newest `cap` entries with their last sighting. Entries past the TTL are
 * pruned when a key is written and never returned by reads.
 *
 * Cost per sync: a new or stale pair is one `findOne` and one conditional `replaceOne` (an
 * `insertOne` for a new key) per side, both sides at once; a pair seen within the last hour is the
 * two `findOne`s only. Measured on FerretDB 1.24 over PostgreSQL with 1M documents per side (raw
 * `findOne({_id})` 2.3 ms, `replaceOne({_id})` 7.5 ms in the same run): 15.6 ms for a new pair of
 * known keys, 11.4 ms for new keys, 5.4 ms for a pair seen lately; 140, 192 and 228 syncs/s with 16
 * at once — before each replace on FerretDB also inserted and removed its version's claim
 * (store/versionClaims: a sync and an erasure's removal never undo each other), which took new
 * pairs of known keys on a small store from 225–344 to 156–172 syncs/s. Exports read one document
 * per cookie id by `_id`, 32 at a time: 556 cookie ids/s.
 */
export class MatchTableStore {
  readonly byPartnerId: Collection<MatchDoc>;
  readonly byCookie: Collection<MatchDoc>;
  private readonly claims: VersionClaims;

  constructor(
    store: Store,
    private readonly limits: MatchLimits,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.byPartnerId = store.db.collection<MatchDoc>(COLLECTIONS.matchByPartnerId);
    this.byCookie = store.db.collection<MatchDoc>(COLLECTIONS.matchByCookie);
    this.claims = new VersionClaims(store);
  }

  /** Records that the partner's `puid` and our `cookieId` were seen together at `at`, on both sides. */
  async record(partnerId: string, puid: string, cookieId: string, at: Date = this.now()): Promise<void> {
    await Promise.all([this.sight(this.byPartnerId, partnerKey(partnerId, puid), cookieId, at), this.sight(this.byCookie, cookieKey(cookieId, partnerId), puid, at)]);
  }

  /** Our cookie ids the partner's id was matched with, newest first: how partner feeds reach our profiles. */
  async cookieIdsOf(partnerId: string, puid: string): Promise<string[]> {
    const doc = await this.byPartnerId.findOne({ _id: partnerKey(partnerId, puid) });
    return liveEntries(doc?.entries ?? [], this.now(), this.limits).map((entry) => entry.id);
  }

  /** The partner's ids for each of our cookie ids that has any (newest first): what exports to the partner send. */
  async partnerIdsOf(partnerId: string, cookieIds: readonly string[]): Promise<Map<string, string[]>> {
    const now = this.now();
    const found = await findByIds(this.byCookie, [...new Set(cookieIds)].map((cookieId) => cookieKey(cookieId, partnerId)), 32);
    const ids = new Map<string, string[]>();
    for (const cookieId of cookieIds) {
      const live = liveEntries(found.get(cookieKey(cookieId, partnerId))?.entries ?? [], now, this.limits);
      if (live.length > 0) ids.set(cookieId, live.map((entry) => entry.id));
    }
    return ids;
  }

  /**
   * Removes the keys whose every entry has outlived the TTL (a browser or partner id never synced
   * again): reads skip them already, and nothing else would ever remove them. A pass over both sides,
   * reading each key's entries only; each removal is a change by version, so a sighting that lands
   * meanwhile stays. Bounded per side, so neither starves the other: each stops after `limit`
   * removals or `ms`, and the result says whether both were read to the end (`complete`). A pass that
   * stopped is made again from the start, where the keys it removed are gone.
   */
  async sweepExpired(bounds: { limit: number; ms: number }, onProgress: (swept: number) => void = () => undefined): Promise<{ keys: number; complete: boolean }> {
    let keys = 0;
    let complete = true;
    for (const collection of [this.byPartnerId, this.byCookie]) {
      const until = this.now().getTime() + bounds.ms;
      let removed = 0;
      for await (const doc of collection.find({}, { projection: { entries: 1 } })) {
        if (removed >= bounds.limit || this.now().getTime() >= until) {
          complete = false;
          break;
        }
        if (liveEntries(doc.entries, this.now(), this.limits).length > 0) continue;
        if (await this.change(collection, doc._id, (entries) => liveEntries(entries, this.now(), this.limits))) {
          removed++;
          onProgress(++keys);
        }
      }
    }
    return { keys, complete };
  }

  /**
   * Our cookie ids out of both sides of the tables (an erasure): each one's own entries with every
   * partner, and its place among the cookies a partner id was seen with. Returns documents changed.
   */
  async forget(cookieIds: readonly string[], partnerIds: readonly string[]): Promise<{ byCookie: number; byPartnerId: number }> {
    const changed = { byCookie: 0, byPartnerId: 0 };
    const gone = new Set(cookieIds);
    for (const cookieId of cookieIds) {
      for (const partnerId of partnerIds) {
        const doc = await this.byCookie.findOne({ _id: cookieKey(cookieId, partnerId) });
        if (!doc) continue;
        for (const entry of doc.entries) {
          if (await this.change(this.byPartnerId, partnerKey(partnerId, entry.id), (entries) => entries.filter((e) => !gone.has(e.id)))) changed.byPartnerId++;
        }
        if (await this.change(this.byCookie, doc._id, () => [])) changed.byCookie++;
      }
    }
    return changed;
  }

  /**
   * A person's partner user ids (`<partner>:<puid>`, as the identity graph holds them) out of both
   * sides of the tables (an erasure): each one's entries, and its place beside each cookie it was
   * seen with. Returns documents changed.
   */
  async forgetPartnerUsers(partnerUserIds: readonly string[]): Promise<{ byCookie: number; byPartnerId: number }> {
    const changed = { byCookie: 0, byPartnerId: 0 };
    for (const key of partnerUserIds) {
      const colon = key.indexOf(':');
      const [partnerId, puid] = [key.slice(0, colon), key.slice(colon + 1)];
      const doc = await this.byPartnerId.findOne({ _id: partnerKey(partnerId, puid) });
      if (!doc) continue;
      for (const entry of doc.entries) {
        if (await this.change(this.byCookie, cookieKey(entry.id, partnerId), (entries) => entries.filter((e) => e.id !== puid))) changed.byCookie++;
      }
      if (await this.change(this.byPartnerId, doc._id, () => [])) changed.byPartnerId++;
    }
    return changed;
  }

  private sight(collection: Collection<MatchDoc>, key: string, id: string, at: Date): Promise<void> {
    return this.change(collection, key, (entries) => withSighting(entries, id, at, this.limits)).then(() => undefined);
  }

  /**
   * Changes one key's entries by version, one writer at a time in this process (and, on FerretDB,
   * across processes by the version's claim); a change to no entries removes the document. Whether anything was written (`change` returns null for no change).
   */
  private async change(collection: Collection<MatchDoc>, key: string, change: (entries: MatchEntry[]) => MatchEntry[] | null): Promise<boolean> {
    let written = false;
    await oneAtATime(`${collection.dbName}/${collection.collectionName}/${key}`, async () => {
      const deadline = Date.now() + MAX_WAIT_MS;
      for (let lost = 0; lost < MAX_ATTEMPTS && Date.now() < deadline; ) {
        const doc = await collection.findOne({ _id: key });
        const entries = change(doc?.entries ?? []);
        if (!entries || (!doc && entries.length === 0) || (doc && entries.length === doc.entries.length && entries.every((e, i) => e === doc.entries[i]))) return;
        if (!doc) {
          try {
            await collection.insertOne({ _id: key, v: 1, entries });
            written = true;
            return;
          } catch (error) {
            if (!isDuplicateKeyError(error)) throw error;
            lost++;
            continue; // another process created it meanwhile: merge into theirs
          }
        }
        const write = async () => (entries.length === 0 ? (await collection.deleteOne({ _id: key, v: doc.v })).deletedCount : (await collection.replaceOne({ _id: key, v: doc.v }, { v: doc.v + 1, entries })).matchedCount);
        const held = await this.claims.hold(`${collection.collectionName}/${key}@${doc.v}`, write);
        if (held?.value === 1) {
          written = true;
          return;
        }
        if (held) lost++;
      }
      throw new Error(`match table key ${key} changed under ${MAX_ATTEMPTS} attempts in a row`);
    });
    return written;
  }
}
