import { MongoClient } from 'mongodb';

/** Older than this, a test database belongs to a finished run, not to one that may be going on beside this. */
const FINISHED_RUN_MS = 6 * 3_600_000;

/** Whether a database is one a test made (`uniqueName`: `dmp_test_<name>_<base-36 ms>_<random>`) in a run finished by `now`. */
export function isFinishedTestDatabase(name: string, now: number): boolean {
  const made = /^dmp_test_.+_([0-9a-z]+)_[0-9a-z]+$/.exec(name);
  return !!made && now - parseInt(made[1], 36) > FINISHED_RUN_MS;
}

/**
 * Drops the databases earlier test runs left. Each test file works in a database of its own, kept
 * after the run for a look at what a failed test left; hundreds of them (thousands of tables on
 * FerretDB's PostgreSQL) slow the store down for every later run on the same machine.
 */
export default async function dropFinishedTestDatabases(): Promise<void> {
  const uri = process.env.MONGODB_URI;
  if (!uri) return; // unit tests alone run without the services
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 5_000 });
  try {
    await client.connect();
    const { databases } = await client.db('admin').admin().listDatabases({ nameOnly: true });
    for (const { name } of databases) if (isFinishedTestDatabase(name, Date.now())) await client.db(name).dropDatabase();
  } catch (error) {
    // Tidying is not what the run is for: the tests themselves say whether the store is there.
    console.warn(`test databases of earlier runs not dropped: ${(error as Error).message}`);
  } finally {
    await client.close();
  }
}
