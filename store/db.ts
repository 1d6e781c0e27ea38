import { MongoClient, type Collection, type Db, MongoServerError } from 'mongodb';
import type { VersionClaims } from './versionClaims';

/**
 * The store is any MongoDB-wire server: MongoDB ≥ 6 in production, FerretDB 1.24 embedded. The data
 * layer keeps to their common subset (README: "Store subset"): hot paths look documents up by exact
 * `_id` only, writes are keyed, and nothing relies on transactions, change streams or TTL indexes.
 */
export const COLLECTIONS = {
  /** Segment definitions, one document per segment. */
  segments: 'segments',
  /**
   * A run's state on one of its segments (`<segmentId>:<runId>`), written by that run alone: what the
   * segment shows as its last run and the snapshot it reads derive from these.
   */
  segmentRunStates: 'segment_run_states',
  /** One document, replaced after every change of a segment definition: a reader that keeps the definitions compares it. */
  segmentDefinitionsStamp: 'segment_definitions_stamp',
  /** Segments a DELETE is removing (`_id`: the segment's), marked before it checks no segment refers to them. */
  segmentDeletions: 'segment_deletions',
  /** Cookie-sync partners (`_id` = the partner's slug). */
  partners: 'partners',
  /** `<partner>:<puid>` → our cookie ids seen with that partner id. */
  matchByPartnerId: 'match_partner_ids',
  /** `<cookieId>:<partner>` → that partner's ids seen with our cookie id. */
  matchByCookie: 'match_cookie_ids',
  /** One per CRM upload (`_id` = upload id): its state, counts, first rejections and import checkpoint. */
  uploads: 'uploads',
  /** An upload's rows as prepared at the edge (hashed, validated), `<uploadId>:<n>`; removed once imported. */
  uploadRows: 'upload_rows',
  /** One per feed source (`_id` = source id): its cursor, ETag / Last-Modified and imported files, advanced by completed pulls. */
  feedStates: 'feed_states',
  /** One per pull of a feed (`_id` = pull id): its trigger, window, HTTP answer, counts and attempts. */
  feedPulls: 'feed_pulls',
  /** Per source, hour and API process: rejections of channels that answer the browser whatever happens. */
  channelRejections: 'channel_rejections',
  sources: 'sources',
  sourceKeys: 'source_keys',
  /** One per source (`_id` = source id): where its drain stands. */
  drainPositions: 'drain_positions',
  /** The per-source event log: chunk documents with predictable `_id`s `<sourceId>:<seq>`. */
  events: 'events',
  /** One per sealed chunk, same `_id`: the chunk's duplicate indexes. */
  eventSeals: 'event_seals',
  identities: 'identities',
  /** Edges of the identity graph between profile documents (`_id` = the sorted pair and the joining identity). */
  identityLinks: 'identity_links',
  /** Insert-only profile document versions, `<profileId>@<version>`. */
  profiles: 'profiles',
  /** Which versions each write group of `profiles` holds, one document per write: compaction reads these, not the versions. */
  profileGroupSlices: 'profile_group_slices',
  /** One per profile document that has had a version (`_id` = the document id), kept when versions go: see ProfileStore.recordBirths. */
  profileBirths: 'profile_births',
  /** A source batch's routing (`<sourceId>:<from>` → the chunk it ends before), fixed by its first writer. */
  eventRoutes: 'event_routes',
  /** Events routed to a profile partition, one document per partition and source batch; kept for the profile's event history. */
  profileEvents: 'profile_events',
  /** Each batch of events moved to another document (store/profileEvents `writeMoved`), by `_id`, and when: how retention finds them. */
  movedEventBatches: 'moved_event_batches',
  /** One per partition: how far its writer has folded each source's routed events. */
  partitionPositions: 'partition_positions',
  /** Where each retention stream's removals stand (see store/retention). Event ids live in generations: store/eventIds. */
  retentionPositions: 'retention_positions',
  /** Unlink requests (`POST /v1/identity/unlink`), their plans and results. */
  identityUnlinks: 'identity_unlinks',
  /** One per profile document holding its cap of some identity type (`_id` = the document id). */
  identityCaps: 'identity_caps',
  /** One document, replaced after every cap marker written: drains that keep the markers compare it. */
  identityCapsStamp: 'identity_caps_stamp',
  /** Joins the caps refused: `<profileId>|<identity>`. */
  identityRefusals: 'identity_refusals',
  /** Co-occurrences unlinks severed: identity pairs in given events that no longer join them. */
  identitySeverances: 'identity_severances',
} as const;

/**
 * Equality lookups the data layer makes besides `_id`, declared the MongoDB way. On FerretDB's
 * PostgreSQL backend the service scripts give each such index a twin that can answer FerretDB's
 * pushed-down filters (scripts/sql/ferretdb-postgresql-indexes.sql).
 */
const INDEXES: Array<[string, string]> = [
  [COLLECTIONS.uploads, 'sourceId'],
  [COLLECTIONS.feedPulls, 'sourceId'],
  // Pulls still running (the retention run's look for those left so): few among all a feed made.
  [COLLECTIONS.feedPulls, 'state'],
  [COLLECTIONS.channelRejections, 'sourceId'],
  [COLLECTIONS.profiles, 'profileId'],
  [COLLECTIONS.profiles, 'group'],
  [COLLECTIONS.profileGroupSlices, 'group'],
  [COLLECTIONS.identityLinks, 'profiles'],
  [COLLECTIONS.profileEvents, 'profiles'],
  [COLLECTIONS.identitySeverances, 'keys'],
  [COLLECTIONS.identityRefusals, 'profileId'],
  // An erasure finds the joins refused to its subject's identities under other people's profiles.
  [COLLECTIONS.identityRefusals, 'key'],
  [COLLECTIONS.segments, 'refersTo'],
  [COLLECTIONS.segmentRunStates, 'segment'],
  // Live segment runs (store/segmentRuns): each edit and run start looks for them, among a month of ended runs.
  ['segment_runs', 'state'],
  // Real-time changes since a snapshot began: the collection holds every change no segment's snapshot yet took in.
  ['segment_changes', 'at'],
  // Privacy collections (store/privacy, store/privacyMarks): few documents per request, read per request.
  ['privacy_requests', 'state'],
  ['privacy_marks', 'requestIds'],
  ['privacy_removals', 'requestId'],
  ['privacy_late_events', 'requestId'],
  // A destination's export turns and its exports' records (store/destinations), listed per destination.
  ['destination_turns', 'destinationId'],
  ['destination_exports', 'destinationId'],
  // Expired documents by the identities they held (store/expiredProfiles): read per privacy request.
  ['expired_profiles', 'keys'],
];

export interface Store {
  client: MongoClient;
  db: Db;
  /**
   * Whether a conditional single-document write is atomic against another (MongoDB). FerretDB's
   * reads the document, changes it and writes it back: two writers can both pass one condition.
   */
  atomicConditionalWrites: boolean;
  close(): Promise<void>;
}

/**
 * Driver-level write retries are off: a retried insert that had in fact landed would come back as a
 * duplicate key, and the duplicate check would then misreport an accepted event as a repeat.
 */
export async function connectStore(uri: string, databaseName?: string): Promise<Store> {
  const client = new MongoClient(uri, { maxPoolSize: 32, serverSelectionTimeoutMS: 5000, retryWrites: false });
  await client.connect();
  const db = client.db(databaseName);
  for (const [collection, field] of INDEXES) await db.collection(collection).createIndex({ [field]: 1 });
  const build = await client.db('admin').command({ buildInfo: 1 });
  return { client, db, atomicConditionalWrites: build.ferretdbVersion === undefined, close: () => client.close() };
}

export async function pingStore(store: Store): Promise<void> {
  await store.db.command({ ping: 1 });
}

export function isDuplicateKeyError(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000;
}

/**
 * Runs an upsert by `_id` again when it lost a race to insert the same document: MongoDB retries
 * such an upsert itself, FerretDB answers a duplicate key error. The second finds the document.
 */
export async function upsertRacing<T>(upsert: () => Promise<T>): Promise<T> {
  try {
    return await upsert();
  } catch (error) {
    if (!isDuplicateKeyError(error)) throw error;
    return upsert();
  }
}

/**
 * Runs `work` over `items` with at most `concurrency` in flight. Once one fails, no more are taken,
 * those under way end, and then the first failure is thrown: nothing goes on working after the
 * call has failed (an activity's retry would otherwise run beside it).
 */
export async function forEachConcurrently<T>(items: T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async () => {
    while (next < items.length && !failure) {
      try {
        await work(items[next++]);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  if (failure) throw (failure as { error: unknown }).error;
}

/** Reads keys concurrently, each by exact `_id` (a `$in` would scan the whole table on FerretDB). */
export async function findByIds<T extends { _id: string }>(collection: Collection<T>, ids: string[], concurrency = 32): Promise<Map<string, T>> {
  const found = new Map<string, T>();
  await forEachConcurrently(ids, concurrency, async (id) => {
    const doc = (await collection.findOne({ _id: id } as never)) as T | null;
    if (doc) found.set(id, doc);
  });
  return found;
}

/**
 * Every `_id` of `collection`, grouped by the owner `ownerOf` reads from it: one scan (on FerretDB it
 * reads whole documents), for collections of parts that their owners remove when done with them.
 */
export async function idsByOwner<T extends { _id: string }>(collection: Collection<T>, ownerOf: (id: string) => string): Promise<Map<string, string[]>> {
  const byOwner = new Map<string, string[]>();
  for await (const { _id } of collection.find({}, { projection: { _id: 1 }, batchSize: 100 }) as AsyncIterable<{ _id: string }>) {
    const owner = ownerOf(_id);
    const ids = byOwner.get(owner);
    if (ids) ids.push(_id);
    else byOwner.set(owner, [_id]);
  }
  return byOwner;
}

/** Deletes documents by exact `_id`, a few at a time (see findByIds); how many there were. */
export async function deleteByIds<T extends { _id: string }>(collection: Collection<T>, ids: string[], concurrency = 8): Promise<number> {
  let deleted = 0;
  await forEachConcurrently(ids, concurrency, async (id) => {
    const { deletedCount } = await collection.deleteOne({ _id: id } as never);
    deleted += deletedCount;
  });
  return deleted;
}

/**
 * The documents of `collection` whose indexed `field` names each of `parents`, by parent: one read
 * per parent while they are few (`perParentAtMost`), else one read of the whole collection (a
 * `$in` would scan it anyway on FerretDB). For small collections of a few documents per parent.
 */
export async function findByParents<T extends object>(collection: Collection<T>, field: keyof T & string, parents: string[], perParentAtMost = 16): Promise<Map<string, T[]>> {
  const docs =
    parents.length > perParentAtMost
      ? ((await collection.find({}).toArray()) as T[])
      : ((await Promise.all(parents.map((parent) => collection.find({ [field]: parent } as never).toArray()))).flat() as T[]);
  const byParent = new Map<string, T[]>();
  for (const doc of docs) {
    const parent = doc[field] as unknown as string;
    byParent.set(parent, [...(byParent.get(parent) ?? []), doc]);
  }
  return byParent;
}

/**
 * Inserts keyed documents and returns the indexes of those whose `_id` already existed: for a
 * retried write, documents an earlier attempt wrote; for a claim, keys someone else holds.
 */
export async function insertKeyed<T extends { _id: string }>(collection: Collection<T>, docs: T[]): Promise<Set<number>> {
  const existing = new Set<number>();
  if (docs.length === 0) return existing;
  try {
    await collection.insertMany(docs as never[], { ordered: false });
  } catch (error) {
    const writeErrors = (error as { writeErrors?: Array<{ code: number; index: number }> }).writeErrors;
    if (!isDuplicateKeyError(error) || !writeErrors || writeErrors.some((e) => e.code !== 11000)) throw error;
    for (const writeError of writeErrors) existing.add(writeError.index);
  }
  return existing;
}

/**
 * Writes `doc` where the stored one is no newer (`at`): when a newer one is there, the filter matches
 * nothing and the upsert's insert is a duplicate, which leaves it be. For results of passes that
 * may overlap (a scheduled one and one asked for). On FerretDB the check and the write are a read
 * and a write back, so the older could land over the newer: there writers go in turn (`claims`).
 */
export async function replaceUnlessNewer<T extends { _id: string; at: Date }>(collection: Collection<T>, doc: T, claims: VersionClaims): Promise<void> {
  try {
    await claims.exclusive(`${collection.collectionName}/${doc._id}`, () => collection.replaceOne({ _id: doc._id, at: { $lte: doc.at } } as never, doc, { upsert: true }));
  } catch (error) {
    if (!isDuplicateKeyError(error)) throw error;
  }
}

const writing = new Map<string, Promise<void>>();

/**
 * Runs `write` after every earlier write of this process under the same key. For writers of one
 * document that write only if it is unchanged since they read it: FerretDB's conditional replace is
 * not atomic across connections (it reads, then writes back by `_id`; measured with 8 writers racing
 * on one document, 87 of 200 acknowledged changes survived). So a process never races itself;
 * between processes the check is atomic on MongoDB and narrows the window on FerretDB.
 */
export async function oneAtATime(key: string, write: () => Promise<void>): Promise<void> {
  const mine = (writing.get(key) ?? Promise.resolve()).then(write);
  const tail = mine.catch(() => undefined);
  writing.set(key, tail);
  try {
    await mine;
  } finally {
    if (writing.get(key) === tail) writing.delete(key);
  }
}
