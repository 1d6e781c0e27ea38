/**
 * Export benchmark: a large segment's first full export and a 10% delta to a local webhook partner,
 * set against that partner's own request-handling rate measured in the same run.
 *
 *   npm run bench:export                              # PostgreSQL-backed FerretDB (the default store)
 *   MONGODB_URI=mongodb://host:port/db npm run bench:export   # any other store, reported as `external`
 *
 * Steps:
 *   1. a fresh database `dmp_bench_export_<timestamp>`; a worker and the API in this process, on a
 *      task queue of their own, with 127.0.0.1 allowlisted for destinations; the webhook partner
 *      (bench/exportPartner.ts) in a child process: it checks signatures, applies each batch once
 *      per idempotency key and keeps each segment's ids in a set;
 *   2. through the API, while the store is still empty (so its creation run costs nothing): a
 *      segment of every profile with a cookie id, and a webhook destination exporting it as cookie
 *      ids (batches of 10,000, 4 in flight, no consent purposes required so no one is withheld);
 *   3. DMP_BENCH_EXPORT_PROFILES synthetic profile documents from a fixed seed, each with a cookie id
 *      and one of ten countries — inserted, not timed;
 *   4. one batch run of the segment (`segment_run_seconds`): it records the export facts the
 *      export reads from the snapshot;
 *   5. partner ceiling: pre-built, pre-signed batches of the destination's size (as many ids as the
 *      export's, and at least 1M), sent with its concurrency through the exporter's own HTTP client
 *      to another segment of the partner (`partner_ceiling_ids_per_s`);
 *   6. full export: from POST /v1/destinations/:id/exports to its completion (`full_seconds`); it
 *      must add every member, and the partner must hold them all;
 *   7. delta: the rule changes to leave out US profiles (~10%), its batch run completes
 *      (`delta_run_seconds`), then a second export (`delta_seconds`) must remove exactly them;
 *   8. drop the database and stop the partner (also when the run fails).
 *
 * The last stdout line is one JSON object:
 * {"bench":"export","ids":…,"full_seconds":…,"ids_per_s":…,"delta_seconds":…,
 *  "partner_ceiling_ids_per_s":…,"ratio_vs_partner":…, …}
 * where `ids_per_s` = ids / full_seconds and `ratio_vs_partner` = ids_per_s / partner_ceiling_ids_per_s.
 * A check that fails (an export not completed, ids missing at the partner) exits non-zero.
 *
 * Knobs (environment, all optional): DMP_BENCH_EXPORT_PROFILES (1000000), DMP_BENCH_SEED (1),
 * DMP_BENCH_DEADLINE_SECONDS (3600).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { loadConfig } from '../config';
import { Outbound } from '../connectors/outbound';
import { signature } from '../connectors/webhook';
import type { ExportView } from '../domain/destinations';
import type { ProfileDoc } from '../domain/profile';
import type { SegmentView } from '../domain/segments';
import { forEachConcurrently, type Store } from '../store/db';
import { DestinationStore } from '../store/destinations';
import { ProfileStore } from '../store/profiles';
import { syntheticProfile } from '../test/support/segmentFixtures';
import { seededRandom } from '../test/support/random';
import { freshBenchStore, dropStore, envNumber, once, round, runBench, say, startInProcess, table } from './support';

const SETTINGS = {
  profiles: Math.floor(envNumber('DMP_BENCH_EXPORT_PROFILES', 1_000_000)),
  seed: Math.floor(envNumber('DMP_BENCH_SEED', 1, 0)),
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 3600),
  /** The webhook connector's defaults, given explicitly so the ceiling is measured with the same. */
  batchSize: 10_000,
  concurrency: 4,
  /** The connector's highest rate: pacing is not what is measured. */
  requestsPerSecond: 1000,
  /** At least this many batches (1M ids) for the ceiling, however small the run: 30 took a third of a second and varied ±30% between runs. */
  ceilingMinBatches: 100,
  insertBatch: 1000,
  pollMs: 200,
};

const cleanupState: { store?: Store; stop?: () => Promise<void>; partner?: ChildProcess } = {};
const cleanup = once(async () => {
  await cleanupState.stop?.().catch((error) => say(`stopping the worker and API: ${String(error)}`));
  if (cleanupState.partner && cleanupState.partner.exitCode === null) cleanupState.partner.kill();
  if (cleanupState.store) await dropStore(cleanupState.store);
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a value (not null), or fails after `ms`. */
async function waitFor<T>(what: string, check: () => Promise<T | null>, ms: number): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== null) return value;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(SETTINGS.pollMs);
  }
}

/** Starts the partner process and resolves to its URL once it listens. */
function startPartner(secret: string): Promise<string> {
  // `--import tsx`: one process, so the partner is the only thing measured on its side (no tsx launcher between).
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'exportPartner.ts')], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, DMP_BENCH_PARTNER_SECRET: secret },
  });
  cleanupState.partner = child;
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the partner exited (${code}) before listening`)));
    child.once('error', reject);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (line) => {
      const port = /^port (\d+)$/.exec(line)?.[1];
      if (port) resolve(`http://127.0.0.1:${port}`);
      else reject(new Error(`the partner said '${line}'`));
    });
  });
}

async function main(): Promise<void> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn', DMP_DESTINATION_ALLOWLIST: '127.0.0.1' });
  const { store, backend, serverVersion } = await freshBenchStore('export', config);
  cleanupState.store = store;

  // 1. A worker and the API, here; the partner in its own process.
  const { api, adminKey, stop } = await startInProcess(config, store, 'export');
  cleanupState.stop = stop;
  const secret = randomBytes(24).toString('hex');
  const partner = await startPartner(secret);
  say(`partner listening at ${partner}`);

  const admin = async <T>(path: string, expected: number, options: { method?: string; body?: unknown } = {}): Promise<T> => {
    const method = options.method ?? (options.body === undefined ? 'GET' : 'POST');
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const text = await response.text();
    if (response.status !== expected) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
    return (text ? JSON.parse(text) : null) as T;
  };
  const partnerStats = async (segment: string) => (await (await fetch(`${partner}/stats?segment=${encodeURIComponent(segment)}`)).json()) as { held: number; applied: number; duplicates: number; refused: number };
  /** Waits until the segment's snapshot is that of a completed run matching `done`; fails on a failed run. */
  const segmentRunDone = (id: string, done: (view: SegmentView) => boolean) =>
    waitFor(
      `segment ${id}'s batch run`,
      async () => {
        const view = await admin<SegmentView>(`/v1/segments/${id}`, 200);
        if (view.lastRun?.state === 'failed') throw new Error(`segment ${id}'s run ${view.lastRun.runId} failed`);
        return view.lastRun?.state === 'completed' && view.currentRun && view.lastRun.runId === view.currentRun.runId && done(view) ? view : null;
      },
      SETTINGS.deadlineSeconds * 1000,
    );
  /** Starts an export and waits for it to end: its view and seconds from the request to the end seen. */
  const exportNow = async (destinationId: string) => {
    const started = performance.now();
    const { exportId } = await admin<{ exportId: string }>(`/v1/destinations/${destinationId}/exports`, 202, { body: {} });
    const view = await waitFor(
      `export ${exportId}`,
      async () => {
        const seen = await admin<ExportView>(`/v1/destinations/${destinationId}/exports/${exportId}`, 200);
        return seen.state === 'running' ? null : seen;
      },
      SETTINGS.deadlineSeconds * 1000,
    );
    const seconds = (performance.now() - started) / 1000;
    if (view.state !== 'completed') throw new Error(`export ${exportId} ended ${view.state}: ${view.error}`);
    // Planning (reading the snapshot, the delta, storing batches) against delivering and finishing.
    const stored = await new DestinationStore(store).getExport(exportId);
    const planSeconds = stored?.plan ? stored.plan.tookMs / 1000 : NaN;
    return { view, seconds, planSeconds };
  };

  // 2. The segment and the destination, before any profile exists.
  const segment = await admin<SegmentView>('/v1/segments', 201, { body: { name: 'bench: every cookie', rule: { identity: 'cookie_id' } } });
  await segmentRunDone(segment.id, () => true);
  const destination = await admin<{ id: string }>('/v1/destinations', 201, {
    body: {
      name: 'bench webhook',
      connector: 'webhook',
      config: { url: `${partner}/dmp`, secret, batchSize: SETTINGS.batchSize, requestsPerSecond: SETTINGS.requestsPerSecond, concurrency: SETTINGS.concurrency },
      segments: [segment.id],
      idType: 'cookie_id',
      consent: { tcfPurposes: [] },
    },
  });
  say(`segment ${segment.id} exported by destination ${destination.id}`);

  // 3. The profiles (not timed).
  const random = seededRandom(SETTINGS.seed);
  const now = Date.now();
  const profiles = new ProfileStore(store, 0);
  const generateStart = performance.now();
  let us = 0;
  let lastSay = performance.now();
  await forEachConcurrently(
    Array.from({ length: Math.ceil(SETTINGS.profiles / SETTINGS.insertBatch) }, (_, b) => b),
    2,
    async (b) => {
      const docs: ProfileDoc[] = [];
      for (let n = b * SETTINGS.insertBatch; n < Math.min(SETTINGS.profiles, (b + 1) * SETTINGS.insertBatch); n++) {
        const doc = syntheticProfile(n, random, now);
        if (doc.traits.country === 'US') us++;
        docs.push(doc);
      }
      await profiles.saveVersions(docs, 'bench');
      if (performance.now() - lastSay > 15_000) {
        lastSay = performance.now();
        say(`generated ${((b + 1) * SETTINGS.insertBatch).toLocaleString()} profiles`);
      }
    },
  );
  say(`generated ${SETTINGS.profiles.toLocaleString()} profiles (${us.toLocaleString()} in the US) in ${round((performance.now() - generateStart) / 1000)} s`);

  // 4. The batch run the export reads (the destination exists, so it keeps export facts).
  const runStart = performance.now();
  const { runId } = await admin<{ runId: string }>(`/v1/segments/${segment.id}/runs`, 202, { body: {} });
  const evaluated = await segmentRunDone(segment.id, (view) => view.currentRun?.runId === runId);
  const segmentRunSeconds = (performance.now() - runStart) / 1000;
  if (evaluated.currentRun?.size !== SETTINGS.profiles) throw new Error(`the run counted ${evaluated.currentRun?.size} members of ${SETTINGS.profiles} profiles`);
  say(`batch run: ${SETTINGS.profiles.toLocaleString()} members in ${round(segmentRunSeconds)} s`);

  // 5. Partner ceiling: the destination's batch size and concurrency, nothing else in the way.
  const ceilingBatches = Math.max(SETTINGS.ceilingMinBatches, Math.ceil(SETTINGS.profiles / SETTINGS.batchSize));
  const requests = Array.from({ length: ceilingBatches }, (_, n) => {
    const batchId = `ceiling:${n}`;
    const body = JSON.stringify({
      destinationId: 'dst_ceiling',
      exportId: 'ceiling',
      batchId,
      segment: { id: 'seg_ceiling', name: 'ceiling' },
      idType: 'cookie_id',
      adds: Array.from({ length: SETTINGS.batchSize }, (_, i) => `ck-${n * SETTINGS.batchSize + i}`),
      removes: [],
    });
    return { headers: { 'content-type': 'application/json', 'idempotency-key': batchId, 'x-dmp-signature': signature(secret, body) }, body };
  });
  // The exporter's own HTTP client, so the ratio is the export pipeline's cost and not a client's.
  const client = new Outbound(new Set(config.DMP_DESTINATION_ALLOWLIST), config.DMP_DESTINATION_TIMEOUT_SECONDS * 1000);
  const ceilingStart = performance.now();
  await forEachConcurrently(requests, SETTINGS.concurrency, async (request) => {
    await client.send(`${partner}/dmp`, { method: 'POST', ...request });
  });
  const ceilingSeconds = (performance.now() - ceilingStart) / 1000;
  await client.close();
  const ceilingHeld = (await partnerStats('seg_ceiling')).held;
  if (ceilingHeld !== ceilingBatches * SETTINGS.batchSize) throw new Error(`the partner holds ${ceilingHeld} ceiling ids, not ${ceilingBatches * SETTINGS.batchSize}`);
  const ceiling = (ceilingBatches * SETTINGS.batchSize) / ceilingSeconds;
  say(`partner ceiling: ${ceilingBatches} batches of ${SETTINGS.batchSize.toLocaleString()} ids, ${SETTINGS.concurrency} in flight, in ${round(ceilingSeconds, 2)} s = ${Math.round(ceiling).toLocaleString()} ids/s`);

  // 6. The first export: every member.
  const before = await partnerStats(segment.id);
  const full = await exportNow(destination.id);
  const afterFull = await partnerStats(segment.id);
  const expectedBatches = Math.ceil(SETTINGS.profiles / SETTINGS.batchSize);
  if (full.view.adds !== SETTINGS.profiles || full.view.removes !== 0 || full.view.batchesConfirmed !== expectedBatches) {
    throw new Error(`the full export added ${full.view.adds} and removed ${full.view.removes} in ${full.view.batchesConfirmed} confirmed batches; expected ${SETTINGS.profiles}, 0, ${expectedBatches}`);
  }
  if (afterFull.held !== SETTINGS.profiles) throw new Error(`after the full export the partner holds ${afterFull.held} ids, not ${SETTINGS.profiles}`);
  say(`full export: ${full.view.adds.toLocaleString()} ids in ${full.view.batches} batches in ${round(full.seconds, 2)} s (planned in ${round(full.planSeconds, 2)} s) = ${Math.round(full.view.adds / full.seconds).toLocaleString()} ids/s; partner applied ${afterFull.applied - before.applied}, duplicates ${afterFull.duplicates - before.duplicates}`);

  // 7. The 10% delta: US profiles leave the segment.
  const deltaRunStart = performance.now();
  const changed = await admin<SegmentView>(`/v1/segments/${segment.id}`, 200, {
    method: 'PATCH',
    body: { rule: { all: [{ identity: 'cookie_id' }, { not: { trait: 'country', op: 'eq', value: 'US' } }] } },
  });
  const reevaluated = await segmentRunDone(segment.id, (view) => view.currentRun?.version === changed.version);
  const deltaRunSeconds = (performance.now() - deltaRunStart) / 1000;
  const remaining = SETTINGS.profiles - us;
  if (reevaluated.currentRun?.size !== remaining) throw new Error(`the changed rule's run counted ${reevaluated.currentRun?.size} members, not ${remaining}`);
  say(`rule changed: its batch run took ${round(deltaRunSeconds)} s; ${remaining.toLocaleString()} members remain`);
  const delta = await exportNow(destination.id);
  const afterDelta = await partnerStats(segment.id);
  if (delta.view.adds !== 0 || delta.view.removes !== us) throw new Error(`the delta export added ${delta.view.adds} and removed ${delta.view.removes}; expected 0 and ${us}`);
  if (afterDelta.held !== remaining) throw new Error(`after the delta the partner holds ${afterDelta.held} ids, not ${remaining}`);
  if (afterDelta.refused > 0) throw new Error(`the partner refused ${afterDelta.refused} requests (bad signature or body)`);
  say(`delta export: ${delta.view.removes.toLocaleString()} removes in ${delta.view.batches} batches in ${round(delta.seconds, 2)} s (planned in ${round(delta.planSeconds, 2)} s)`);

  const idsPerSecond = full.view.adds / full.seconds;
  const result = {
    bench: 'export',
    ids: full.view.adds,
    full_seconds: round(full.seconds, 2),
    ids_per_s: Math.round(idsPerSecond),
    delta_seconds: round(delta.seconds, 2),
    partner_ceiling_ids_per_s: Math.round(ceiling),
    ratio_vs_partner: round(idsPerSecond / ceiling, 2),
    backend,
    server: serverVersion,
    batch_size: SETTINGS.batchSize,
    concurrency: SETTINGS.concurrency,
    full_batches: full.view.batches,
    full_plan_seconds: round(full.planSeconds, 2),
    delta_ids: delta.view.removes,
    delta_plan_seconds: round(delta.planSeconds, 2),
    segment_run_seconds: round(segmentRunSeconds, 2),
    delta_run_seconds: round(deltaRunSeconds, 2),
    partner_ceiling_batches: ceilingBatches,
    partner_duplicates: afterDelta.duplicates,
  };
  for (const line of table(
    'export',
    [
      ['figure', 'value', 'target'],
      ['full export (s)', String(result.full_seconds), '≤ 120 at 1M ids'],
      ['ids/s', result.ids_per_s.toLocaleString(), ''],
      ['partner ceiling (ids/s)', result.partner_ceiling_ids_per_s.toLocaleString(), ''],
      ['export vs partner', String(result.ratio_vs_partner), '≥ 0.5'],
      ['10% delta (s)', String(result.delta_seconds), ''],
    ],
    [1, 2],
  ))
    say(line);
  await cleanup();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
