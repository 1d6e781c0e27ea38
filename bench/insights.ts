/**
 * Insights benchmark: audience reports, overlaps and affinities over a large profile store, set
 * against the store's own scan rate in the same run.
 *
 *   npm run bench:insights                              # PostgreSQL-backed FerretDB (the default store)
 *   MONGODB_URI=mongodb://host:port/db npm run bench:insights   # any other store, reported as `external`
 *
 * Steps:
 *   1. a fresh database `dmp_bench_insights_<timestamp>`; a worker and the API in this process;
 *   2. DMP_BENCH_INSIGHTS_PROFILES synthetic profile documents (as bench:segment makes them: traits,
 *      90 days of behaviour, identities, TCF consent), a few hundred joined in pairs — not timed;
 *   3. store baseline: one cursor over every profile document (docs/s);
 *   4. DMP_BENCH_INSIGHTS_SEGMENTS mixed segments and one batch run — not timed (bench:segment times it);
 *   5. `insights_seconds`: what GET /v1/segments/:id/insights of a segment no report has counted
 *      waits for — the audience report (one pass over every person for every segment), timed
 *      through its workflow — plus that GET, then answered from the report;
 *   6. `overlap_seconds`: POST /v1/insights/overlap of 10 segments (memberships now, no report);
 *   7. `affinity_seconds`: GET …/affinity against all profiles and against another segment (from the
 *      reports step 5 wrote);
 *   8. `lookalike_seconds`: POST /v1/segments/:id/lookalike of the segment nearest a tenth of the
 *      profiles, to the run's completion (one pass, training, holdout AUC `lookalike_auc`, scoring);
 *   9. `recs_p95_ms`: the item model built (one pass; `item_model_seconds`), then DMP_BENCH_RECS_REQUESTS
 *      GET /v1/profiles/:id/recommendations of random profiles one after another (the first ten,
 *      which read the model into the API's memory, not counted);
 *  10. drop the database (also when the run fails).
 *
 * The last stdout line is one JSON object:
 * {"bench":"insights","profiles":…,"insights_seconds":…,"overlap_seconds":…,"affinity_seconds":…,
 *  "lookalike_seconds":…,"lookalike_auc":…,"recs_p95_ms":…,"store_scan_docs_per_s":…,…}
 *
 * Knobs (environment, all optional): DMP_BENCH_INSIGHTS_PROFILES (1000000), DMP_BENCH_INSIGHTS_SEGMENTS
 * (20), DMP_BENCH_RECS_REQUESTS (1000), DMP_BENCH_SEED (1), DMP_BENCH_DEADLINE_SECONDS (3600).
 */
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../config';
import type { Store } from '../store/db';
import { requestAudienceReports, requestItemModel } from '../temporal/client';
import { seededRandom } from '../test/support/random';
import { defineSegments, generateProfiles, profileScanRate, runEverySegment } from './profileFixtures';
import { freshBenchStore, dropStore, envNumber, once, percentile, round, runBench, say, startInProcess, table } from './support';

const SETTINGS = {
  profiles: Math.floor(envNumber('DMP_BENCH_INSIGHTS_PROFILES', 1_000_000)),
  segments: Math.max(10, Math.floor(envNumber('DMP_BENCH_INSIGHTS_SEGMENTS', 20))),
  seed: Math.floor(envNumber('DMP_BENCH_SEED', 1, 0)),
  recsRequests: Math.floor(envNumber('DMP_BENCH_RECS_REQUESTS', 1000)),
  deadlineSeconds: envNumber('DMP_BENCH_DEADLINE_SECONDS', 3600),
};

const cleanupState: { store?: Store; stop?: () => Promise<void> } = {};
const cleanup = once(async () => {
  await cleanupState.stop?.().catch((error) => say(`stopping the worker and API: ${String(error)}`));
  if (cleanupState.store) await dropStore(cleanupState.store);
});

async function main(): Promise<void> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' });
  const { store, databaseName, backend, serverVersion } = await freshBenchStore('insights', config);
  cleanupState.store = store;
  const { temporal, taskQueue, api, adminKey, stop } = await startInProcess(config, store, 'insights');
  cleanupState.stop = stop;

  const random = seededRandom(SETTINGS.seed);
  await generateProfiles(store, SETTINGS.profiles, random, Date.now(), { partitions: config.DMP_PROFILE_PARTITIONS });
  const storeScan = await profileScanRate(store);
  const ids = await defineSegments(store, random, SETTINGS.segments);
  const { run } = await runEverySegment(store, temporal, taskQueue);

  const timed = async <T>(what: string, request: () => Promise<Response>, expected = 200): Promise<{ body: T; seconds: number }> => {
    const started = performance.now();
    const response = await request();
    const seconds = (performance.now() - started) / 1000;
    if (response.status !== expected) throw new Error(`${what} answered ${response.status}: ${await response.text()}`);
    return { body: (await response.json()) as T, seconds };
  };
  const get = <T>(path: string) => timed<T>(`GET ${path}`, () => fetch(`${api}${path}`, { headers: { authorization: `Bearer ${adminKey}` } }));
  const post = <T>(path: string, body: unknown, expected = 200) =>
    timed<T>(`POST ${path}`, () => fetch(`${api}${path}`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) }), expected);

  // The largest segment: the most members to count.
  const largest = ids.reduce((best, id) => ((run.members[id] ?? 0) > (run.members[best] ?? 0) ? id : best), ids[0]);
  // What an insight asked of a segment no report has counted waits for: the report of every segment.
  const reportStart = performance.now();
  const report = await (await requestAudienceReports(temporal, databaseName, { DMP_TASK_QUEUE: taskQueue })).result();
  const reportSeconds = (performance.now() - reportStart) / 1000;
  type Insights = { size: number; stale: boolean; traits: Record<string, unknown> };
  const insights = await get<Insights>(`/v1/segments/${largest}/insights`);
  if (insights.body.stale) throw new Error('the insights were not counted by the report');
  const insightsSeconds = reportSeconds + insights.seconds;
  say(`audience report: ${report.profiles.toLocaleString()} people (${report.documentsScanned.toLocaleString()} documents), ${report.segments} segments in ${round(reportSeconds)} s; insights of ${largest} (${insights.body.size.toLocaleString()} members, ${Object.keys(insights.body.traits).length} traits) then in ${Math.round(insights.seconds * 1000)} ms`);

  type Overlap = { pairs: unknown[] };
  const overlap = await post<Overlap>('/v1/insights/overlap', { segments: ids.slice(0, 10) });
  say(`overlap of 10 segments: ${overlap.body.pairs.length} pairs in ${round(overlap.seconds, 2)} s`);

  type Affinity = { items: unknown[] };
  const againstAll = await get<Affinity>(`/v1/segments/${largest}/affinity`);
  const other = ids.find((id) => id !== largest) as string;
  const againstSegment = await get<Affinity>(`/v1/segments/${largest}/affinity?base=${other}&minSupport=1`);
  const affinitySeconds = againstAll.seconds + againstSegment.seconds;
  say(`affinity: ${againstAll.body.items.length} items against all profiles, ${againstSegment.body.items.length} against ${other}, in ${round(affinitySeconds, 3)} s`);

  // Lookalike: a seed of about a tenth of the profiles, extended by as many; timed to the run's completion
  // (training and scoring; the extension's own batch run is a segment run like any other).
  const seed = ids.reduce((best, id) => (Math.abs((run.members[id] ?? 0) - run.evaluated / 10) < Math.abs((run.members[best] ?? 0) - run.evaluated / 10) ? id : best), ids[0]);
  const lookalikeStart = performance.now();
  const started = await post<{ runId: string }>(`/v1/segments/${seed}/lookalike`, {}, 202);
  type Lookalike = { state: string; auc: number | null; reach: number | null; trainingSize: number; holdoutSize: number; segmentId: string | null; error: string | null };
  let lookalike: Lookalike;
  for (;;) {
    lookalike = (await get<Lookalike>(`/v1/segments/${seed}/lookalike/${started.body.runId}`)).body;
    if (lookalike.state !== 'running') break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  const lookalikeSeconds = (performance.now() - lookalikeStart) / 1000;
  if (lookalike.state !== 'completed') throw new Error(`the lookalike run ended ${lookalike.state}: ${lookalike.error}`);
  // The extension's batch run is left to finish before anything else is timed.
  for (;;) {
    const extension = (await get<{ lastRun: { state: string } | null }>(`/v1/segments/${lookalike.segmentId}`)).body;
    if (extension.lastRun?.state !== 'running') break;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  say(`lookalike of ${seed} (${(run.members[seed] ?? 0).toLocaleString()} members): AUC ${lookalike.auc}, ${lookalike.trainingSize.toLocaleString()} trained on, ${lookalike.holdoutSize.toLocaleString()} held out, reach ${lookalike.reach?.toLocaleString()}, in ${round(lookalikeSeconds)} s`);

  // Recommendations: the item model built (one pass), then profiles asked one after another, as pages would.
  const buildStart = performance.now();
  const model = await (await requestItemModel(temporal, databaseName, true, { DMP_TASK_QUEUE: taskQueue })).result();
  const buildSeconds = (performance.now() - buildStart) / 1000;
  say(`item model: ${model.items.toLocaleString()} items from ${model.people.toLocaleString()} people in ${round(buildSeconds)} s`);
  const recsTimes: number[] = [];
  let recommended = 0;
  for (let k = 0; k < SETTINGS.recsRequests; k++) {
    const profile = `p_bench${Math.floor(random() * SETTINGS.profiles).toString(36).padStart(9, '0')}`;
    const answer = await get<{ items: unknown[] }>(`/v1/profiles/${profile}/recommendations`);
    // The first answers read the model into the API's memory: it is served from there.
    if (k >= 10) recsTimes.push(answer.seconds * 1000);
    if (answer.body.items.length > 0) recommended++;
  }
  const recsP95 = percentile(recsTimes, 95);
  say(`recommendations: ${recsTimes.length} requests, p50 ${round(percentile(recsTimes, 50))} ms, p95 ${round(recsP95)} ms; ${recommended} with items`);

  const result = {
    bench: 'insights',
    backend,
    server: serverVersion,
    profiles: run.evaluated,
    segments: ids.length,
    insights_seconds: round(insightsSeconds),
    insights_from_report_ms: Math.round(insights.seconds * 1000),
    overlap_seconds: round(overlap.seconds, 2),
    affinity_seconds: round(affinitySeconds, 3),
    lookalike_seconds: round(lookalikeSeconds),
    lookalike_auc: lookalike.auc === null ? null : round(lookalike.auc, 3),
    recs_p95_ms: round(recsP95),
    item_model_seconds: round(buildSeconds),
    store_scan_docs_per_s: Math.round(storeScan),
    report_vs_store_scan: round(report.documentsScanned / reportSeconds / storeScan, 2),
  };
  for (const line of table(
    'insights',
    [
      ['figure', 'value', 'target'],
      ['insights: the report (s)', String(result.insights_seconds), '≤ 300'],
      ['overlap of 10 (s)', String(result.overlap_seconds), '≤ 300'],
      ['affinity (s)', String(result.affinity_seconds), '≤ 300'],
      ['store scan (docs/s)', result.store_scan_docs_per_s.toLocaleString(), ''],
      ['report vs store scan', String(result.report_vs_store_scan), ''],
      ['lookalike (s)', String(result.lookalike_seconds), '≤ 600'],
      ['recommendations p95 (ms)', String(result.recs_p95_ms), '≤ 20'],
      ['item model build (s)', String(result.item_model_seconds), ''],
    ],
    [1, 2],
  ))
    say(line);
  await cleanup();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

runBench({ main, cleanup, deadlineSeconds: SETTINGS.deadlineSeconds });
