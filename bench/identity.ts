/**
 * Identity benchmark: how fast identity links are resolved into profiles (connected components of
 * profile documents) through the production path, set against the store's raw insert rate in the
 * same run.
 *
 *   npm run bench:identity                              # PostgreSQL-backed FerretDB (the default store)
 *   DMP_STORE_BACKEND=sqlite npm run bench:identity     # SQLite-backed FerretDB
 *   MONGODB_URI=mongodb://host:port/db npm run bench:identity   # any other store, reported as `external`
 *
 * A link is one identity–identity co-occurrence carried by an event: an event with k identities
 * carries k-1 links (a star on its first identity). Steps:
 *   1. a synthetic population from a fixed seed: people with a crm_id and/or an email_sha256, 1–6
 *      cookie_ids and sometimes a maid, a few percent of them on a device an earlier person used (so
 *      some components hold several people), and their events, each person's spread over a few
 *      batches, until the events carry DMP_BENCH_IDENTITY_LINKS links;
 *   2. a fresh database `dmp_bench_identity_<timestamp>` on the MONGODB_URI server;
 *   3. store baseline: raw `insertMany` (1000 per batch, unordered) of identity-index documents;
 *   4. resolve: the events in batches through the routing path of activities/collection.ts (its
 *      identity resolver: look up the batch's identities, read the caps of documents it joins,
 *      resolve, claim, settle lost claims; then write the links), two sources draining at once
 *      through one resolver, as in one worker process, each its own batches in order; no new batch
 *      starts after two thirds of the deadline, and the figures are then those of the part resolved;
 *   5. components: the connected components of profile documents as the store holds them, from a
 *      scan of identity_links (union-find) and of identities (documents without links are alone);
 *   6. check: the components against a reference union-find over the resolved events' identities
 *      (same identities, same count, each inside one reference component, same sizes);
 *   7. drop the database (also when the run fails).
 *
 * `seconds` is resolve plus components; `ratio_vs_store_insert` is links/s over the baseline's docs/s.
 * A table goes to stderr; the last stdout line is one JSON object with the results.
 *
 * Knobs (environment, all optional): DMP_BENCH_IDENTITY_LINKS (1000000), DMP_BENCH_IDENTITY_BATCH
 * (20000 events per batch, the product's drain size), DMP_BENCH_IDENTITY_DRAINS (2, or 1 to drain
 * alone), DMP_BENCH_STORE_CAP_SECONDS (30, the baseline), DMP_BENCH_SEED (1),
 * DMP_BENCH_DEADLINE_SECONDS (900, the whole run).
 */
import { performance } from 'node:perf_hooks';
import { BSON } from 'mongodb';
import { createIdentityResolver, linkDocs, type IdentityResolver, type ResolveStep } from '../activities/identityResolver';
import { loadConfig } from '../config';
import type { StoredEvent } from '../domain/event';
import { identityKey, sha256Hex, type Identity } from '../domain/identity';
import { identityBlocklist } from '../domain/identityBlocklist';
import { profileIdForEvent } from '../domain/ids';
import { connectStore, type Store } from '../store/db';
import { IdentityCapStore } from '../store/identityCaps';
import { IdentityIndex, type IdentityDoc } from '../store/identities';
import { seededRandom } from '../test/support/random';
import { describeStore, dropStore, envNumber, once, round, runBench, say, table } from './support';

/** Two at most: two racing sources exercise the claim protocol, and more would only queue on the store. */
const DRAINS = Math.floor(envNumber('DMP_BENCH_IDENTITY_DRAINS', 2));
if (DRAINS > 2) throw new Error(`DMP_BENCH_IDENTITY_DRAINS must be 1 or 2, got ${DRAINS}`);

const SETTINGS = {
  links: Math.floor(envNumber('DMP_BENCH_IDENTITY_LINKS', 1_000_000)),
  batchEvents: Math.floor(envNumber('DMP_BENCH_IDENTITY_BATCH', 20_000)),
  storeBatch: 1000,
  storeCapSeconds: envNumber('DMP_BENCH_STORE_CAP_SECONDS', 30),
  seed: Math.floor(envNumber('DMP_BENCH_SEED', 1, 0)),
  /** The whole run gives up (and drops its database) after this long. */
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 900),
  /** Share of the deadline after which no new batch is resolved: the rest is for components, check and clean-up. */
  resolveShareOfDeadline: 2 / 3,
  /** One source per drain, each routing its own batches in order; two race for the same identities. */
  sources: Array.from({ length: DRAINS }, (_, n) => `src_bench_identity_${n}`),
  /** Share of people who use a device (cookie) an earlier person also used: what joins people. */
  sharedDeviceShare: 0.03,
  /** A shared device comes from one of the last this many people (a household, an office). */
  sharedDeviceWindow: 1000,
  /** A person's events arrive among those of the next this many people, so they span a few batches. */
  spreadPeople: 2000,
  /** Documents per round trip when scanning the graph. */
  scanBatch: 10_000,
  progressMs: 10_000,
};

const secondsSince = (start: number) => (performance.now() - start) / 1000;

// ---- population ---------------------------------------------------------------------------------

interface Population {
  /** Every generated identity; an identity's number is its index here. */
  identities: Identity[];
  keyIndex: Map<string, number>;
  /** In arrival order. */
  events: StoredEvent[];
  /** Per event, its identities' numbers (first one = the star's centre). */
  members: number[][];
  people: number;
  sharedDevices: number;
}

function generatePopulation(targetLinks: number, seed: number): Population {
  const random = seededRandom(seed);
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)];
  const hex = (length: number) => {
    let text = '';
    while (text.length < length) text += Math.floor(random() * 2 ** 32).toString(16).padStart(8, '0');
    return text.slice(0, length);
  };
  const uuid = () => {
    const h = hex(32);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
  const identities: Identity[] = [];
  const keyIndex = new Map<string, number>();
  const add = (type: Identity['type'], value: string) => {
    const identity = { type, value };
    const key = identityKey(identity);
    if (keyIndex.has(key)) throw new Error(`generated identity ${key} twice`); // the reference would count it as two
    keyIndex.set(key, identities.length);
    identities.push(identity);
    return identities.length - 1;
  };

  const planned: Array<{ at: number; members: number[] }> = [];
  const recentCookies: number[][] = [];
  let links = 0;
  let people = 0;
  let sharedDevices = 0;
  const plan = (person: number, members: number[]) => {
    const room = targetLinks - links;
    if (room <= 0) return;
    const kept = members.slice(0, room + 1);
    links += kept.length - 1;
    planned.push({ at: person + random() * SETTINGS.spreadPeople, members: kept });
  };
  while (links < targetLinks) {
    const person = people++;
    const crm = random() < 0.5 ? add('crm_id', `CRM-${String(person).padStart(9, '0')}`) : null;
    const email = crm === null || random() < 0.6 ? add('email_sha256', sha256Hex(`person${person}@example.org`)) : null;
    /** What the person signs in with on a browser or an app. */
    const login = (email ?? crm) as number;
    const cookieCount = 1 + Math.floor(random() * 6);
    const shared = recentCookies.length > 0 && random() < SETTINGS.sharedDeviceShare;
    const cookies = Array.from({ length: shared ? cookieCount - 1 : cookieCount }, () => add('cookie_id', uuid()));
    if (shared) {
      cookies.push(pick(pick(recentCookies)));
      sharedDevices++;
    }
    const maid = random() < 0.3 ? add('maid', uuid()) : null;

    if (crm !== null && email !== null) plan(person, [crm, email]);
    for (const cookie of cookies) plan(person, [login, cookie]);
    if (maid !== null) plan(person, [login, maid]);
    // Returning visits: the same identities seen together again, now and then all three at once.
    const visits = Math.floor(random() * 3);
    for (let visit = 0; visit < visits; visit++) {
      const cookie = pick(cookies);
      plan(person, crm !== null && email !== null && random() < 0.5 ? [crm, email, cookie] : [cookie, login]);
    }
    recentCookies.push(cookies);
    if (recentCookies.length > SETTINGS.sharedDeviceWindow) recentCookies.shift();
  }

  planned.sort((a, b) => a.at - b.at);
  const at = new Date(Date.UTC(2026, 0, 1));
  const events = planned.map(({ members }, n) => ({ id: `ev-${n}`, type: 'login', timestamp: at, receivedAt: at, identities: members.map((i) => identities[i]) }));
  return { identities, keyIndex, events, members: planned.map(({ members }) => members), people, sharedDevices };
}

// ---- store baseline -----------------------------------------------------------------------------

interface InsertRate {
  docs: number;
  seconds: number;
  docsPerSecond: number;
  capped: boolean;
  avgBytes: number;
}

/** Raw `insertMany` of identity-index documents, one batch at a time; the documents are built outside the timing. */
async function storeInsertRate(store: Store, identities: Identity[]): Promise<InsertRate> {
  const scratch = store.db.collection<IdentityDoc>('bench_scratch_identities');
  const createdAt = new Date();
  const toDoc = (identity: Identity, n: number): IdentityDoc => ({
    _id: identityKey(identity),
    type: identity.type,
    profileId: profileIdForEvent('src_bench_store', `s-${n}`),
    createdAt,
  });
  let docs = 0;
  let seconds = 0;
  let capped = false;
  for (let start = 0; start < identities.length; start += SETTINGS.storeBatch) {
    if (seconds > SETTINGS.storeCapSeconds) {
      capped = true;
      break;
    }
    const batch = identities.slice(start, start + SETTINGS.storeBatch).map((identity, k) => toDoc(identity, start + k));
    const started = performance.now();
    await scratch.insertMany(batch, { ordered: false });
    seconds += secondsSince(started);
    docs += batch.length;
  }
  const sample = identities.slice(0, 200).map(toDoc);
  await scratch.drop().catch(() => undefined);
  return {
    docs,
    seconds,
    docsPerSecond: docs / seconds,
    capped,
    avgBytes: Math.round(sample.reduce((sum, doc) => sum + BSON.calculateObjectSize(doc), 0) / Math.max(1, sample.length)),
  };
}

// ---- resolve ------------------------------------------------------------------------------------

/** Seconds spent in each step, summed over batches (two drains overlap, so the sum can exceed the wall time). */
type StepSeconds = Record<ResolveStep | 'links', number>;

async function timed<T>(steps: StepSeconds, step: keyof StepSeconds, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await work();
  } finally {
    steps[step] += secondsSince(started);
  }
}

interface ResolveFigures {
  seconds: number;
  completed: boolean;
  /** Indexes of the batches resolved (all of them unless the deadline stopped the run). */
  batches: number[];
  events: number;
  links: number;
  /** Claims another drain had won first, and the batches that had to settle them. */
  lostClaims: number;
  settledBatches: number;
  /** Cache misses left to the claims instead of being read (see activities/identityResolver MissEstimate). */
  unread: number;
  steps: StepSeconds;
}

/** One batch as a source's drain routes it: the drain's identity resolver, then the link writes of `routeBatch`. */
async function resolveBatch(resolver: IdentityResolver, index: IdentityIndex, sourceId: string, events: StoredEvent[], steps: StepSeconds): Promise<{ lost: number; unread: number }> {
  const resolution = await resolver.resolve(sourceId, events);
  await timed(steps, 'links', () => index.addLinks(linkDocs(resolution.links, sourceId, new Date())));
  return { lost: resolution.lostClaims, unread: resolution.unread };
}

async function resolveAll(store: Store, population: Population, stopAt: number): Promise<ResolveFigures> {
  const index = new IdentityIndex(store);
  const steps: StepSeconds = { lookup: 0, caps: 0, resolve: 0, claim: 0, reload: 0, links: 0 };
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  // One resolver for both drains, as one worker process serves every source's drain.
  const resolver = createIdentityResolver({
    identities: index,
    capStore: new IdentityCapStore(store),
    caps: config.DMP_IDENTITY_CAPS,
    blocked: identityBlocklist(config.DMP_IDENTITY_BLOCKLIST, config.DMP_DEFAULT_PHONE_REGION),
    now: () => new Date(),
    step: (step, work) => timed(steps, step, work),
  });
  const batchCount = Math.ceil(population.events.length / SETTINGS.batchEvents);
  const range = (batch: number) => [batch * SETTINGS.batchEvents, Math.min((batch + 1) * SETTINGS.batchEvents, population.events.length)];
  const linksIn = (batch: number) => {
    const [from, to] = range(batch);
    let links = 0;
    for (let n = from; n < to; n++) links += population.members[n].length - 1;
    return links;
  };
  const figures: ResolveFigures = {
    seconds: 0,
    completed: true,
    batches: [],
    events: 0,
    links: 0,
    lostClaims: 0,
    settledBatches: 0,
    unread: 0,
    steps,
  };
  const started = performance.now();
  let nextReport = started + SETTINGS.progressMs;
  const drain = async (source: number) => {
    const sourceId = SETTINGS.sources[source];
    for (let batch = source; batch < batchCount; batch += SETTINGS.sources.length) {
      if (performance.now() > stopAt) {
        figures.completed = false;
        return;
      }
      const [from, to] = range(batch);
      const { lost, unread } = await resolveBatch(resolver, index, sourceId, population.events.slice(from, to), figures.steps);
      figures.batches.push(batch);
      figures.events += to - from;
      figures.links += linksIn(batch);
      figures.lostClaims += lost;
      if (lost > 0) figures.settledBatches++;
      figures.unread += unread;
      if (performance.now() > nextReport) {
        const rate = figures.links / secondsSince(started);
        say(`resolve: ${figures.batches.length}/${batchCount} batches, ${figures.links} links in ${round(secondsSince(started))} s (${round(rate)} links/s)`);
        nextReport = performance.now() + SETTINGS.progressMs;
      }
    }
  };
  await Promise.all(SETTINGS.sources.map((_, source) => drain(source)));
  figures.seconds = secondsSince(started);
  return figures;
}

// ---- components -----------------------------------------------------------------------------------

interface StoreComponents {
  seconds: number;
  linkDocs: number;
  documents: number;
  /** Per component, its identities. */
  sizes: number[];
  /** Every identity key in the store, and the component (an index into `sizes`) it belongs to. */
  keys: string[];
  componentOfKey: Int32Array;
}

/** Union-find over small integers, with path halving. */
function findRoot(parent: Int32Array | number[], x: number): number {
  while (parent[x] !== x) {
    parent[x] = parent[parent[x]];
    x = parent[x];
  }
  return x;
}

/** The profiles as the store holds them: documents joined by links, each document with the identities it owns. */
async function componentsFromStore(store: Store): Promise<StoreComponents> {
  const index = new IdentityIndex(store);
  const started = performance.now();
  const slots = new Map<string, number>();
  const parent: number[] = [];
  const slotOf = (profileId: string) => {
    let slot = slots.get(profileId);
    if (slot === undefined) {
      slot = parent.length;
      slots.set(profileId, slot);
      parent.push(slot);
    }
    return slot;
  };
  let linkDocs = 0;
  for await (const link of index.links.find({}, { projection: { profiles: 1 }, batchSize: SETTINGS.scanBatch })) {
    linkDocs++;
    parent[findRoot(parent, slotOf(link.profiles[0]))] = findRoot(parent, slotOf(link.profiles[1]));
  }
  const keys: string[] = [];
  const ownerSlots: number[] = [];
  for await (const doc of index.identities.find({}, { projection: { profileId: 1 }, batchSize: SETTINGS.scanBatch })) {
    keys.push(doc._id);
    ownerSlots.push(slotOf(doc.profileId));
  }
  // Every document is a component of its own until a link joins it to another.
  const componentOfRoot = new Map<number, number>();
  for (let slot = 0; slot < parent.length; slot++) {
    const root = findRoot(parent, slot);
    if (!componentOfRoot.has(root)) componentOfRoot.set(root, componentOfRoot.size);
  }
  const sizes = new Array<number>(componentOfRoot.size).fill(0);
  const componentOfKey = new Int32Array(keys.length);
  ownerSlots.forEach((slot, k) => {
    const component = componentOfRoot.get(findRoot(parent, slot)) as number;
    componentOfKey[k] = component;
    sizes[component]++;
  });
  return { seconds: secondsSince(started), linkDocs, documents: parent.length, sizes, keys, componentOfKey };
}

/**
 * Compares the store's components with a reference union-find over the identities that the resolved
 * events carried together; returns what differs (nothing when they agree).
 */
function checkComponents(population: Population, batches: number[], found: StoreComponents): string[] {
  const parent = new Int32Array(population.identities.length).map((_, i) => i);
  const seen = new Uint8Array(population.identities.length);
  let seenCount = 0;
  for (const batch of batches) {
    const to = Math.min((batch + 1) * SETTINGS.batchEvents, population.events.length);
    for (let n = batch * SETTINGS.batchEvents; n < to; n++) {
      const [first, ...rest] = population.members[n];
      for (const member of population.members[n]) {
        if (!seen[member]) {
          seen[member] = 1;
          seenCount++;
        }
      }
      for (const member of rest) parent[findRoot(parent, member)] = findRoot(parent, first);
    }
  }
  const referenceSizes = new Map<number, number>();
  for (let i = 0; i < parent.length; i++) {
    if (seen[i]) referenceSizes.set(findRoot(parent, i), (referenceSizes.get(findRoot(parent, i)) ?? 0) + 1);
  }

  const problems: string[] = [];
  if (found.keys.length !== seenCount) problems.push(`the store holds ${found.keys.length} identities, the resolved events carry ${seenCount}`);
  if (found.sizes.length !== referenceSizes.size) problems.push(`the store has ${found.sizes.length} components, the reference ${referenceSizes.size}`);
  // Each store component must lie inside one reference component; with equal counts that makes them the same partition.
  const referenceOf = new Map<number, number>();
  for (let k = 0; k < found.keys.length; k++) {
    const identity = population.keyIndex.get(found.keys[k]);
    if (identity === undefined || !seen[identity]) {
      problems.push(`the store holds identity ${found.keys[k]}, which no resolved event carried`);
      break;
    }
    const root = findRoot(parent, identity);
    const expected = referenceOf.get(found.componentOfKey[k]);
    if (expected === undefined) referenceOf.set(found.componentOfKey[k], root);
    else if (expected !== root) {
      problems.push(`a store component joins identities the reference keeps apart (${found.keys[k]})`);
      break;
    }
  }
  const storeSizes = [...found.sizes].sort((a, b) => a - b);
  const expectedSizes = [...referenceSizes.values()].sort((a, b) => a - b);
  const differsAt = storeSizes.findIndex((size, k) => size !== expectedSizes[k]);
  if (differsAt >= 0 || storeSizes.length !== expectedSizes.length) {
    const k = differsAt >= 0 ? differsAt : Math.min(storeSizes.length, expectedSizes.length);
    problems.push(`component sizes differ: ${k}th smallest is ${storeSizes[k] ?? 'missing'} in the store, ${expectedSizes[k] ?? 'missing'} in the reference`);
  }
  return problems;
}

// ---- the run --------------------------------------------------------------------------------------

let openStore: Store | undefined;
const cleanup = once(async () => {
  if (openStore) await dropStore(openStore);
});

async function main(): Promise<number> {
  const runStarted = performance.now();
  const serverUri = loadConfig({ ...process.env, LOG_LEVEL: 'warn' }).MONGODB_URI;

  say(`generating ${SETTINGS.links} links (seed ${SETTINGS.seed})`);
  const population = generatePopulation(SETTINGS.links, SETTINGS.seed);
  say(
    `population: ${population.people} people, ${population.identities.length} identities, ${population.events.length} events, ` +
      `${population.sharedDevices} shared devices (generated in ${round(secondsSince(runStarted))} s)`,
  );

  const databaseName = `dmp_bench_identity_${Date.now()}`;
  const store = await connectStore(serverUri, databaseName);
  openStore = store;
  const { backend, serverVersion } = await describeStore(store, serverUri);

  say(`store baseline: insertMany of identity documents, ${SETTINGS.storeBatch} per batch, at most ${SETTINGS.storeCapSeconds} s`);
  const baseline = await storeInsertRate(store, population.identities);
  say(`store insertMany: ${round(baseline.docsPerSecond)} docs/s`);

  const stopAt = runStarted + SETTINGS.deadlineSeconds * SETTINGS.resolveShareOfDeadline * 1000;
  say(`resolve: ${population.events.length} events in batches of ${SETTINGS.batchEvents}, ${SETTINGS.sources.length} sources draining at once`);
  const resolved = await resolveAll(store, population, stopAt);
  if (!resolved.completed) say(`resolve: stopped after ${round(resolved.seconds)} s, at two thirds of the deadline; the figures are those of the part resolved`);

  say('components: scanning identity_links and identities');
  const components = await componentsFromStore(store);
  const problems = checkComponents(population, resolved.batches, components);
  for (const problem of problems) say(`CHECK FAILED: ${problem}`);

  const seconds = resolved.seconds + components.seconds;
  const linksPerSecond = resolved.links / seconds;
  const ratio = linksPerSecond / baseline.docsPerSecond;
  const largest = components.sizes.reduce((max, size) => Math.max(max, size), 0);
  const steps = resolved.steps;
  const rows: string[][] = [
    ['measurement', 'count', 'seconds', 'rate/s', 'notes'],
    [
      'store insertMany',
      `${baseline.docs} docs`,
      `${round(baseline.seconds, 2)}`,
      `${round(baseline.docsPerSecond)}`,
      `identity documents, ${SETTINGS.storeBatch}/batch unordered, ~${baseline.avgBytes} B/doc${baseline.capped ? ', capped by time' : ''}`,
    ],
    [
      'resolve',
      `${resolved.links} links`,
      `${round(resolved.seconds, 2)}`,
      `${round(resolved.links / resolved.seconds)}`,
      `${resolved.events} events in ${resolved.batches.length} batches of ${SETTINGS.batchEvents}, ${SETTINGS.sources.length} drains at once` +
        `${resolved.completed ? '' : ', stopped by the time limit'}; ${resolved.lostClaims} lost claims in ${resolved.settledBatches} batches; ${resolved.unread} cache misses left to the claims unread`,
    ],
    ...(
      [
        ['  lookup', steps.lookup, 'IdentityIndex.reload of cache misses (one read by _id per key), when they are read'],
        ['  caps', steps.caps, 'IdentityCapStore.capped of documents joined (the markers kept, read again when their stamp changes)'],
        ['  resolveIdentities', steps.resolve, 'in memory, all passes'],
        ['  claim', steps.claim, 'IdentityIndex.claim (waits for claims of the same keys in flight, then insertMany, unordered)'],
        ['  reload', steps.reload, 'IdentityIndex.reload of lost claims not settled in this process'],
        ['  links', steps.links, 'IdentityIndex.addLinks'],
      ] as Array<[string, number, string]>
    ).map(([name, busy, note]) => [name, '', `${round(busy, 2)}`, '', note]),
    [
      'components',
      `${components.sizes.length} comps`,
      `${round(components.seconds, 2)}`,
      `${round((components.linkDocs + components.keys.length) / components.seconds)}`,
      `documents scanned/s: ${components.linkDocs} links and ${components.keys.length} identities over ${components.documents} profile documents; largest ${largest} identities`,
    ],
    ['resolve + components', `${resolved.links} links`, `${round(seconds, 2)}`, `${round(linksPerSecond)}`, `vs store insertMany: ${round(ratio, 3)}`],
  ];
  process.stderr.write(
    [
      '',
      ...table(`Identity benchmark, backend ${backend} (${serverVersion}), database ${databaseName}`, rows, [1, 3]),
      'steps of resolve: busy seconds summed over batches (drains overlap, so they add up to more than the wall time)',
      `check against the reference union-find: ${problems.length === 0 ? 'components agree' : `FAILED (${problems.length} differences)`}`,
      '',
    ].join('\n'),
  );

  const summary = {
    bench: 'identity',
    links: resolved.links,
    seconds: round(seconds, 2),
    links_per_s: round(linksPerSecond),
    ratio_vs_store_insert: round(ratio, 3),
    completed: resolved.completed,
    verified: problems.length === 0,
    backend,
    target_links: SETTINGS.links,
    events: resolved.events,
    people_generated: population.people,
    identities: components.keys.length,
    profile_documents: components.documents,
    link_documents: components.linkDocs,
    components: components.sizes.length,
    largest_component: largest,
    lost_claims: resolved.lostClaims,
    unread_misses: resolved.unread,
    store_insert_docs_per_s: round(baseline.docsPerSecond),
    store_insert_docs: baseline.docs,
    resolve_seconds: round(resolved.seconds, 2),
    components_seconds: round(components.seconds, 2),
    lookup_busy_seconds: round(steps.lookup, 2),
    caps_busy_seconds: round(steps.caps, 2),
    resolve_identities_busy_seconds: round(steps.resolve, 2),
    claim_busy_seconds: round(steps.claim, 2),
    reload_busy_seconds: round(steps.reload, 2),
    links_busy_seconds: round(steps.links, 2),
    batch_events: SETTINGS.batchEvents,
    concurrent_drains: SETTINGS.sources.length,
  };
  await cleanup();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (problems.length > 0) say('the store\'s components do not match the reference: failing the run');
  return problems.length === 0 ? 0 : 1;
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
