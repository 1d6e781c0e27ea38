import { MongoClient, type Db, MongoServerError } from 'mongodb';

/**
 * The store is any MongoDB-wire server: MongoDB ≥ 6 in production, FerretDB 1.24 embedded. The data
 * layer keeps to their common subset (README: "Store subset"): hot paths look documents up by exact
 * `_id` only, writes are keyed, and nothing relies on transactions, change streams or TTL indexes.
 */
export const COLLECTIONS = {
  sources: 'sources',
  sourceKeys: 'source_keys',
  /** One per source (`_id` = source id): where its drain stands. */
  drainPositions: 'drain_positions',
  /** The per-source event log: chunk documents with predictable `_id`s `<sourceId>:<seq>`. */
  events: 'events',
  /** One per sealed chunk, same `_id`: the chunk's duplicate indexes. */
  eventSeals: 'event_seals',
  /** One document per accepted event id (`<sourceId>:<eventId>`): the duplicate check. */
  eventIds: 'event_ids',
  identities: 'identities',
  identityLinks: 'identity_links',
  profiles: 'profiles',
} as const;

export interface Store {
  client: MongoClient;
  db: Db;
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
  return { client, db, close: () => client.close() };
}

export async function pingStore(store: Store): Promise<void> {
  await store.db.command({ ping: 1 });
}

export function isDuplicateKeyError(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000;
}
