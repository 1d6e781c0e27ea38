/**
 * Retention benchmark: how fast a retention run removes the people inactive past
 * DMP_INACTIVE_PROFILE_DAYS from a large profile store, set against the store's raw insert rate and
 * its scan rate in the same run.
 *
 *   npm run bench:retention                              # PostgreSQL-backed FerretDB (the default store)
 *   MONGODB_URI=mongodb://host:port/db npm run bench:retention   # any other store, reported as `external`
 *
 * Steps:
 *   1. a fresh database `dmp_bench_retention_<timestamp>`; a worker and the API in this process, on a
 *      task queue of their own;
 *   2. DMP_BENCH_RETENTION_PROFILES synthetic profile documents from a fixed seed, last seen
 *      uniformly over the past 120 days, their identities claimed for them, a few hundred joined in
 *      pairs by identity links — inserted, not timed;
 *   3. store baselines: raw `insertMany` of stored events (docs/s), and one cursor over every profile
 *      document (docs/s);
 *   4. ONE retention run (the storeRetention workflow) with an inactivity TTL that leaves
 *      DMP_BENCH_RETENTION_INACTIVE_SHARE of the people inactive: `seconds` from its start to its
 *      end, `plan_seconds` the pass that finds them (from the workflow's history);
 *   5. check: every document last seen before the cutoff is expired (newest version retired, its
 *      identities no longer claimed), every other one is not (one last seen while the run ran may
 *      have gone either way: the run takes its cutoff when it plans), and the report says so;
 *   6. drop the database (also when the run fails).
 *
 * The last stdout line is one JSON object:
 * {"bench":"retention","profiles":…,"inactive":…,"expired":…,"seconds":…,"plan_seconds":…,
 *  "expired_per_s":…,"store_insert_docs_per_s":…,"ratio_vs_store_insert":…,"store_scan_docs_per_s":…,
 *  "plan_ratio_vs_store_scan":…}
 * where `ratio_vs_store_insert` is documents expired per second (after the plan) over the raw insert
 * rate, and `plan_ratio_vs_store_scan` the plan's profiles/s over the scan's docs/s.
 *
 * Knobs (environment, all optional): DMP_BENCH_RETENTION_PROFILES (1000000),
 * DMP_BENCH_RETENTION_INACTIVE_SHARE (0.1; at most 20,000 documents a partition leave per run),
 * DMP_BENCH_STORE_CAP_SECONDS (20, the insert baseline), DMP_BENCH_SEED (1), DMP_BENCH_DEADLINE_SECONDS (2400).
 */
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../config';
import { identityKey } from '../domain/identity';
import { isExpired } from '../domain/profileExpiry';
import type { Store } from '../store/db';
import { IdentityIndex } from '../store/identities';
import { decodeProfile, ProfileStore } from '../store/profiles';
import { seededRandom } from '../test/support/random';
import { syntheticProfile } from '../test/support/segmentFixtures';
import { storeRetention } from '../workflows/storeRetention';
import { generateProfiles, profileScanRate } from './profileFixtures';
import { rawInsertRate } from './storeBaseline';
import { freshBenchStore, dropStore, envNumber, once, round, runBench, say, startInProcess, table } from './support';

const DAY = 86_400_000;
/** The fixtures' people are last seen uniformly over this many days (test/support/segmentFixtures). */
const SEEN_OVER_DAYS = 120;

const SETTINGS = {
  profiles: Math.floor(envNumber('DMP_BENCH_RETENTION_PROFILES', 1_000_000)),
  inactiveShare: envNumber('DMP_BENCH_RETENTION_INACTIVE_SHARE', 0.1, 0.001),
  storeCapSeconds: envNumber('DMP_BENCH_STORE_CAP_SECONDS', 20),
  seed: Math.floor(envNumber('DMP_BENCH_SEED', 1, 0)),
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 2400),
};

const cleanupState: { store?: Store; stop?: () => Promise<void> } = {};
const cleanup = once(async () => {
  await cleanupState.stop?.().catch((error) => say(`stopping the worker and API: ${String(error)}`));
  if (cleanupState.store) await dropStore(cleanupState.store);
});

async function main(): Promise<number> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const { store, databaseName, backend, serverVersion } = await freshBenchStore('retention', config);
  cleanupState.store = store;

  // 1–2. A worker and the API here, and the profiles (not timed).
  const { temporal, taskQueue, stop } = await startInProcess(config, store, 'retention');
  cleanupState.stop = stop;
  const now = Date.now();
  await generateProfiles(store, SETTINGS.profiles, seededRandom(SETTINGS.seed), now, { partitions: config.DMP_PROFILE_PARTITIONS, claims: true });

  // 3. Baselines.
  const insert = await rawInsertRate(store, 200_000, 10_000, { batch: 1000, capSeconds: SETTINGS.storeCapSeconds });
  const scan = await profileScanRate(store);

  // 4. One retention run.
  const ttlMs = (1 - SETTINGS.inactiveShare) * SEEN_OVER_DAYS * DAY;
  const started = performance.now();
  const handle = await temporal.workflow.start(storeRetention, { workflowId: `${databaseName}-retention`, taskQueue, args: [{ inactiveProfileTtlMs: ttlMs }] });
  const report = await handle.result();
  const seconds = (performance.now() - started) / 1000;
  // The run takes its cutoff when it plans, some time between its start and its end: a document last
  // seen between the two bounds may have gone either way.
  const ranFrom = new Date(Date.now() - seconds * 1000 - ttlMs).toISOString();
  const ranTo = new Date(Date.now() - ttlMs).toISOString();
  let planSeconds = 0;
  const scheduled = new Map<string, string>();
  const startedAt = new Map<string, number>();
  for (const event of (await handle.fetchHistory()).events ?? []) {
    const at = Number(event.eventTime?.seconds ?? 0) + (event.eventTime?.nanos ?? 0) / 1e9;
    if (event.activityTaskScheduledEventAttributes?.activityType?.name) scheduled.set(String(event.eventId), event.activityTaskScheduledEventAttributes.activityType.name);
    if (event.activityTaskStartedEventAttributes) startedAt.set(String(event.activityTaskStartedEventAttributes.scheduledEventId), at);
    const completed = event.activityTaskCompletedEventAttributes;
    if (completed && scheduled.get(String(completed.scheduledEventId)) === 'planInactiveExpiry') planSeconds = at - (startedAt.get(String(completed.scheduledEventId)) ?? at);
  }

  // 5. Check every document against the cutoff.
  const profiles = new ProfileStore(store, 0);
  const newest = new Map<string, { version: number; expired: boolean }>();
  await profiles.scan((batch) => {
    for (const stored of batch) if ((newest.get(stored.profileId)?.version ?? -1) < stored.version) newest.set(stored.profileId, { version: stored.version, expired: isExpired(decodeProfile(stored)) });
  });
  const claims = new IdentityIndex(store, 0).identities;
  const claimed = new Map<string, string>();
  for await (const claim of claims.find({}, { projection: { profileId: 1 } })) claimed.set(claim._id, claim.profileId);
  const originals = new Map<string, string[]>();
  generateOriginals(originals, now);
  let inactive = 0;
  let expired = 0;
  const wrong: string[] = [];
  for (const [profileId, doc] of newest) {
    const original = originals.get(profileId);
    if (!original) continue;
    const wasInactive = original[0] < ranFrom || (original[0] < ranTo && doc.expired);
    if (wasInactive) inactive++;
    if (doc.expired) expired++;
    if (wasInactive !== doc.expired) wrong.push(`${profileId}: inactive ${wasInactive}, expired ${doc.expired}`);
    for (const key of original.slice(1)) if ((claimed.get(key) === profileId) === wasInactive) wrong.push(`${profileId}: ${key} ${wasInactive ? 'still' : 'no longer'} claimed`);
  }
  if (report.inactiveDocumentsExpired !== expired) wrong.push(`the report says ${report.inactiveDocumentsExpired} expired, the store ${expired}`);

  const expiredPerSecond = expired / Math.max(0.001, seconds - planSeconds);
  const result = {
    bench: 'retention',
    backend,
    serverVersion,
    profiles: SETTINGS.profiles,
    inactive,
    expired,
    identities_released: report.inactiveIdentitiesReleased,
    seconds: round(seconds),
    plan_seconds: round(planSeconds),
    expired_per_s: round(expiredPerSecond),
    store_insert_docs_per_s: round(insert.eps),
    ratio_vs_store_insert: round(expiredPerSecond / insert.eps, 2),
    store_scan_docs_per_s: round(scan),
    plan_ratio_vs_store_scan: round(SETTINGS.profiles / Math.max(0.001, planSeconds) / scan, 2),
  };
  for (const line of table(
    'retention of inactive people',
    [
      ['figure', 'value'],
      ['profiles', result.profiles.toLocaleString()],
      ['inactive / expired', `${inactive.toLocaleString()} / ${expired.toLocaleString()}`],
      ['run (plan)', `${result.seconds} s (${result.plan_seconds} s)`],
      ['expired per s', `${result.expired_per_s} (${result.ratio_vs_store_insert} of raw insert, ${result.store_insert_docs_per_s} docs/s)`],
      ['plan vs scan', `${result.plan_ratio_vs_store_scan} of ${result.store_scan_docs_per_s} docs/s`],
    ],
    [1, 1],
  ))
    say(line);
  for (const line of wrong.slice(0, 10)) say(`WRONG ${line}`);
  await cleanup();
  console.log(JSON.stringify(result));
  return wrong.length > 0 ? 1 : 0;
}

/** Each generated document's last-seen time and identity keys, from the same seed as the store's. */
function generateOriginals(into: Map<string, string[]>, now: number): void {
  const random = seededRandom(SETTINGS.seed);
  for (let n = 0; n < SETTINGS.profiles; n++) {
    const doc = syntheticProfile(n, random, now);
    into.set(doc.profileId, [doc.lastSeen.toISOString(), ...doc.identities.map(identityKey)]);
  }
  // A linked pair (generateProfiles joins documents 2000k and 2000k+1) is one person, last seen when either was.
  const id = (n: number) => `p_bench${n.toString(36).padStart(9, '0')}`;
  for (let k = 0; k < Math.floor(SETTINGS.profiles / 2000); k++) {
    const [a, b] = [into.get(id(k * 2000)), into.get(id(k * 2000 + 1))];
    if (!a || !b) throw new Error(`the fixtures no longer name documents ${id(k * 2000)} and ${id(k * 2000 + 1)}`);
    a[0] = b[0] = a[0] > b[0] ? a[0] : b[0];
  }
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
