/**
 * Privacy benchmark: erasure of many data subjects from a large store, each through its own
 * privacy request, and a scan of every collection for what is left of them.
 *
 *   npm run bench:privacy                              # PostgreSQL-backed FerretDB (the default store)
 *   MONGODB_URI=mongodb://host:port/db npm run bench:privacy   # any other store, reported as `external`
 *
 * Steps:
 *   1. a fresh database `dmp_bench_privacy_<timestamp>`; a worker and the API in this process;
 *   2. written straight to the store, not timed: DMP_BENCH_PRIVACY_PROFILES synthetic profile
 *      documents (as bench:segment makes them) with their identities, and their events as a drain
 *      leaves them — DMP_BENCH_PRIVACY_EVENTS per profile, spread over the source log's chunks (many
 *      people per chunk), the routed batches of the profile partitions, and the dedupe window's event
 *      ids; then DMP_BENCH_PRIVACY_SEGMENTS segments and one batch run (their snapshot);
 *   3. store baseline: one cursor over every profile document (docs/s);
 *   4. `seconds`: DMP_BENCH_PRIVACY_SUBJECTS erase requests (POST /v1/privacy/requests, each naming a
 *      random profile by one of its identities) to every one completed;
 *   5. `residue`: every document of every collection read (binary values decoded), counting those
 *      that still hold an identity, a profile id or an event id of an erased subject (must be 0),
 *      and checking that the profiles of everyone else are all still there;
 *   6. drop the database (also when the run fails).
 *
 * The last stdout line is one JSON object:
 * {"bench":"privacy","subjects":…,"seconds":…,"subjects_per_s":…,"residue":0,…}
 *
 * Knobs (environment, all optional): DMP_BENCH_PRIVACY_PROFILES (1000000), DMP_BENCH_PRIVACY_SUBJECTS
 * (1000), DMP_BENCH_PRIVACY_EVENTS (2), DMP_BENCH_PRIVACY_SEGMENTS (10), DMP_BENCH_PRIVACY_CHUNK_EVENTS
 * (1000), DMP_BENCH_SEED (1), DMP_BENCH_DEADLINE_SECONDS (5400).
 */
import { performance } from 'node:perf_hooks';
import { Binary, BSON } from 'mongodb';
import { loadConfig } from '../config';
import type { StoredEvent } from '../domain/event';
import { sha256Hex, type Identity } from '../domain/identity';
import { partitionOf } from '../domain/partition';
import { COLLECTIONS, forEachConcurrently, insertKeyed, type Store } from '../store/db';
import { chunkId, encodeChunk, eventIdKey } from '../store/eventLog';
import { EventIdGenerations } from '../store/eventIds';
import { encodeEvents, inflateSequence, storedBytes } from '../store/deflatedBson';
import { routedBatchId, type RoutedEvent } from '../store/profileEvents';
import { ProfileStore } from '../store/profiles';
import { SourceStore } from '../store/sources';
import { seededRandom } from '../test/support/random';
import { syntheticProfile } from '../test/support/segmentFixtures';
import { defineSegments, profileScanRate, runEverySegment } from './profileFixtures';
import { freshBenchStore, dropStore, envNumber, once, round, runBench, say, startInProcess, table } from './support';

const SETTINGS = {
  profiles: Math.floor(envNumber('DMP_BENCH_PRIVACY_PROFILES', 1_000_000)),
  subjects: Math.floor(envNumber('DMP_BENCH_PRIVACY_SUBJECTS', 1000)),
  eventsPerProfile: Math.floor(envNumber('DMP_BENCH_PRIVACY_EVENTS', 2)),
  segments: Math.floor(envNumber('DMP_BENCH_PRIVACY_SEGMENTS', 10)),
  chunkEvents: Math.floor(envNumber('DMP_BENCH_PRIVACY_CHUNK_EVENTS', 1000)),
  seed: Math.floor(envNumber('DMP_BENCH_SEED', 1, 0)),
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 5400),
};
const SOURCE = 'src_bench_privacy';
/** Raw chunks per routed batch: a drain of 5,000 events routes five 1,000-event chunks at once. */
const CHUNKS_PER_DRAIN = 5;

const cleanupState: { store?: Store; stop?: () => Promise<void> } = {};
const cleanup = once(async () => {
  await cleanupState.stop?.().catch((error) => say(`stopping the worker and API: ${String(error)}`));
  if (cleanupState.store) await dropStore(cleanupState.store);
});

const profileIdOf = (n: number) => `p_bench${n.toString(36).padStart(9, '0')}`;

/** Profile `n`'s identities: a cookie always, an email for 3 in 10, a mobile ad id for 1 in 5. */
function identitiesOf(n: number): Identity[] {
  const identities: Identity[] = [{ type: 'cookie_id', value: `ck-${n}` }];
  if (n % 10 < 3) identities.push({ type: 'email_sha256', value: sha256Hex(`user${n}@example.com`) });
  if (n % 5 === 0) identities.push({ type: 'maid', value: `maid-${n}` });
  return identities;
}

const eventIdOf = (n: number, k: number) => `evt-${n}-${k}`;

/**
 * The profiles, their identity index entries, and their events where a drain leaves them: round `k`
 * holds every profile's k-th event, so one person's events sit in different chunks among others'.
 */
async function writeFixtures(store: Store, partitions: number, random: () => number, now: number): Promise<{ chunks: number }> {
  const started = performance.now();
  const profiles = new ProfileStore(store, 0);
  const identities = store.db.collection<{ _id: string; type: string; profileId: string; createdAt: Date }>(COLLECTIONS.identities);
  const batchSize = 1000;
  await forEachConcurrently(
    Array.from({ length: Math.ceil(SETTINGS.profiles / batchSize) }, (_, b) => b),
    2,
    async (b) => {
      const docs = [];
      for (let n = b * batchSize; n < Math.min(SETTINGS.profiles, (b + 1) * batchSize); n++) {
        const doc = syntheticProfile(n, random, now);
        doc.identities = identitiesOf(n).map((identity) => ({ ...identity, firstSeen: doc.firstSeen, lastSeen: doc.lastSeen, sourceId: SOURCE }));
        doc.sources = [SOURCE];
        docs.push(doc);
      }
      await profiles.saveVersions(docs, 'bench');
      await insertKeyed(identities, docs.flatMap((doc) => doc.identities.map((identity) => ({ _id: `${identity.type}:${identity.value}`, type: identity.type, profileId: doc.profileId, createdAt: new Date(now) }))));
    },
  );
  say(`profiles and identities: ${SETTINGS.profiles.toLocaleString()} in ${round((performance.now() - started) / 1000)} s`);

  const events = store.db.collection<{ _id: string }>(COLLECTIONS.events);
  const routed = store.db.collection<{ _id: string }>(COLLECTIONS.profileEvents);
  const eventIds = store.db.collection<{ _id: string; chunk: number }>(new EventIdGenerations(store.db, 168).collectionName(Math.floor(now / (168 * 3_600_000))));
  const total = SETTINGS.profiles * SETTINGS.eventsPerProfile;
  const chunks = Math.ceil(total / SETTINGS.chunkEvents);
  const at = new Date(now - 3_600_000);
  const eventAt = (index: number): StoredEvent => {
    const n = index % SETTINGS.profiles;
    const k = Math.floor(index / SETTINGS.profiles);
    return { id: eventIdOf(n, k), type: k % 2 === 0 ? 'page_view' : 'purchase', timestamp: at, receivedAt: at, identities: identitiesOf(n), properties: { page: `/p/${n % 500}` } };
  };
  await forEachConcurrently(
    Array.from({ length: Math.ceil(chunks / CHUNKS_PER_DRAIN) }, (_, d) => d),
    2,
    async (d) => {
      const from = d * CHUNKS_PER_DRAIN;
      const to = Math.min(chunks, from + CHUNKS_PER_DRAIN);
      const batches = Array.from({ length: partitions }, (_, partition) => ({ partition, events: [] as RoutedEvent[], profiles: new Set<string>() }));
      for (let seq = from; seq < to; seq++) {
        const chunk: StoredEvent[] = [];
        for (let index = seq * SETTINGS.chunkEvents; index < Math.min(total, (seq + 1) * SETTINGS.chunkEvents); index++) chunk.push(eventAt(index));
        await insertKeyed(events, [encodeChunk({ _id: chunkId(SOURCE, seq), sourceId: SOURCE, seq, createdAt: at, events: chunk }) as never]);
        await insertKeyed(eventIds, chunk.map((event) => ({ _id: eventIdKey(SOURCE, event.id), chunk: seq })));
        for (const event of chunk) {
          const profileId = profileIdOf(Number(event.id.split('-')[1]));
          const batch = batches[partitionOf(profileId, partitions)];
          batch.events.push({ ...event, seq, profileId });
          batch.profiles.add(profileId);
        }
      }
      await insertKeyed(
        routed,
        batches.map((batch) => ({ _id: routedBatchId(batch.partition, SOURCE, from), partition: batch.partition, sourceId: SOURCE, party: 'first', from, to, events: encodeEvents(batch.events), profiles: [...batch.profiles], createdAt: at }) as never),
      );
    },
  );
  // The source, drained to the head of its log.
  const sources = new SourceStore(store);
  await sources.create({ _id: SOURCE, name: 'bench', kind: 'events', party: 'first', labels: [], writeKeyHash: `bench-${now}`, createdAt: new Date(now) });
  await sources.savePosition(SOURCE, { cursor: chunks, eventsProcessed: total, eventsRefused: 0, eventsNonProfiling: {}, duplicatesSkipped: 0, batchesApplied: Math.ceil(chunks / CHUNKS_PER_DRAIN), lastDrainAt: new Date(now).toISOString() });
  say(`events: ${total.toLocaleString()} in ${chunks.toLocaleString()} chunks, routed to ${partitions} partitions, ids in the dedupe window, in ${round((performance.now() - started) / 1000)} s all told`);
  return { chunks };
}

/**
 * Reads every document of every collection and counts those naming an erased subject: any string
 * (or part of one between `:`, `|`, `@` or line breaks, as keys, version ids and packed ids are made) that is one of
 * their identity values, profile ids or event ids; binary values are decoded first.
 */
async function residueOf(store: Store, needles: Set<string>): Promise<{ documents: number; scanned: number; where: Record<string, number> }> {
  const where: Record<string, number> = {};
  let documents = 0;
  let scanned = 0;
  const names = (value: unknown): boolean => {
    if (typeof value === 'string') return needles.has(value) || value.split(/[:|@\n]/).some((part) => needles.has(part));
    if (value instanceof Binary) {
      let decoded: unknown;
      try {
        decoded = BSON.deserialize(storedBytes(value));
      } catch {
        // A sequence of documents (see deflateSequence), or bytes that are no BSON at all.
        try {
          decoded = inflateSequence(value);
        } catch {
          return false;
        }
      }
      return names(decoded);
    }
    if (Array.isArray(value)) return value.some(names);
    if (value && typeof value === 'object' && !(value instanceof Date)) return Object.entries(value).some(([key, item]) => names(key) || names(item));
    return false;
  };
  for (const { name } of await store.db.listCollections({}, { nameOnly: true }).toArray()) {
    for await (const doc of store.db.collection(name).find({}, { batchSize: 1000 })) {
      scanned++;
      if (names(doc)) {
        documents++;
        where[name] = (where[name] ?? 0) + 1;
      }
    }
  }
  return { documents, scanned, where };
}

async function main(): Promise<number> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const { store, backend, serverVersion } = await freshBenchStore('privacy', config);
  cleanupState.store = store;
  const { temporal, taskQueue, api, adminKey, stop } = await startInProcess(config, store, 'privacy');
  cleanupState.stop = stop;

  const random = seededRandom(SETTINGS.seed);
  const now = Date.now();
  await writeFixtures(store, config.DMP_PROFILE_PARTITIONS, random, now);
  await defineSegments(store, random, SETTINGS.segments);
  const { run } = await runEverySegment(store, temporal, taskQueue);
  const storeScan = await profileScanRate(store);

  // Subjects: distinct random profiles, each named by one of its identities (its email when it has one, every other time).
  const chosen = new Set<number>();
  while (chosen.size < Math.min(SETTINGS.subjects, SETTINGS.profiles)) chosen.add(Math.floor(random() * SETTINGS.profiles));
  const subjects = [...chosen].map((n, i) => {
    const identities = identitiesOf(n);
    const email = identities.find((identity) => identity.type === 'email_sha256');
    return { n, identity: email && i % 2 === 0 ? { type: 'email', value: `user${n}@example.com` } : { type: 'cookie_id', value: `ck-${n}` } };
  });

  const headers = { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' };
  const started = performance.now();
  const ids: string[] = [];
  await forEachConcurrently(subjects, 32, async ({ identity }) => {
    const response = await fetch(`${api}/v1/privacy/requests`, { method: 'POST', headers, body: JSON.stringify({ type: 'erase', identity, requestedBy: 'bench' }) });
    if (response.status !== 202) throw new Error(`POST /v1/privacy/requests answered ${response.status}: ${await response.text()}`);
    ids.push(((await response.json()) as { id: string }).id);
  });
  const posted = (performance.now() - started) / 1000;
  say(`${ids.length} erase requests accepted in ${round(posted)} s`);
  type Listed = { requests: Array<{ id: string; state: string; error: string | null }> };
  let lastSay = performance.now();
  for (;;) {
    const listed = (await (await fetch(`${api}/v1/privacy/requests?limit=500&state=running`, { headers })).json()) as Listed;
    const received = (await (await fetch(`${api}/v1/privacy/requests?limit=500&state=received`, { headers })).json()) as Listed;
    const open = listed.requests.length + received.requests.length;
    if (open === 0) break;
    if (performance.now() - lastSay > 15_000) {
      lastSay = performance.now();
      say(`${open}${open === 500 ? '+' : ''} requests still open after ${round((performance.now() - started) / 1000)} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const seconds = (performance.now() - started) / 1000;
  const failed = ((await (await fetch(`${api}/v1/privacy/requests?limit=500&state=failed`, { headers })).json()) as Listed).requests;
  if (failed.length > 0) throw new Error(`${failed.length} erasures failed, e.g. ${failed[0].id}: ${failed[0].error}`);
  say(`${ids.length} erasures completed in ${round(seconds)} s`);

  const needles = new Set<string>();
  for (const { n } of subjects) {
    needles.add(profileIdOf(n));
    for (const identity of identitiesOf(n)) needles.add(identity.value);
    for (let k = 0; k < SETTINGS.eventsPerProfile; k++) needles.add(eventIdOf(n, k));
  }
  const scanStarted = performance.now();
  const residue = await residueOf(store, needles);
  say(`residue scan: ${residue.scanned.toLocaleString()} documents in ${round((performance.now() - scanStarted) / 1000)} s; ${residue.documents} name an erased subject ${JSON.stringify(residue.where)}`);
  const remaining = await store.db.collection(COLLECTIONS.profiles).countDocuments({});
  if (remaining !== SETTINGS.profiles - subjects.length) throw new Error(`${remaining} profile documents remain, expected ${SETTINGS.profiles - subjects.length}`);

  const result = {
    bench: 'privacy',
    subjects: subjects.length,
    seconds: round(seconds),
    subjects_per_s: round(subjects.length / seconds, 2),
    residue: residue.documents,
    backend,
    server: serverVersion,
    profiles: SETTINGS.profiles,
    events: SETTINGS.profiles * SETTINGS.eventsPerProfile,
    segments: run.segments.length,
    store_scan_docs_per_s: Math.round(storeScan),
    erase_vs_store_scan: round(subjects.length / seconds / storeScan, 4),
    documents_scanned: residue.scanned,
  };
  for (const line of table(
    'privacy',
    [
      ['figure', 'value', 'target'],
      ['erasures', String(result.subjects), ''],
      ['all completed (s)', String(result.seconds), '≤ 600'],
      ['subjects/s', String(result.subjects_per_s), ''],
      ['residue (documents)', String(result.residue), '0'],
      ['store scan (docs/s)', result.store_scan_docs_per_s.toLocaleString(), ''],
    ],
    [1, 2],
  ))
    say(line);
  await cleanup();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.residue === 0 ? 0 : 1;
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
