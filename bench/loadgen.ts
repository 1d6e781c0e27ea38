/**
 * Load generator for POST /v1/collect, run by bench/ingest.ts as its own process so that the load
 * does not share an event loop with the measuring side.
 *
 *   tsx bench/loadgen.ts '<json LoadSpec>'
 *
 * Every request carries events with ids never sent before (a per-run prefix plus a counter), so the
 * acknowledged counts are not distorted by duplicates. Prints one JSON line (a LoadResult) on stdout.
 */
import { userEvent, type GeneratedEvent } from '../test/support/audience';

export interface LoadSpec {
  /**
   * What is sent: our own `POST /v1/collect` (default), the Segment-compatible `POST /v1/batch`
   * (write key as the HTTP Basic user), or pixel hits (`GET /v1/pixel.gif`, one event each).
   */
  kind?: 'collect' | 'segment' | 'pixel';
  /** Base URL of the API, e.g. http://127.0.0.1:8080 */
  url: string;
  writeKey: string;
  connections: number;
  durationSeconds: number;
  eventsPerRequest: number;
  /** Size of the synthetic audience: events are spread over this many users (profiles). */
  users: number;
  /** Makes the event ids of this run unique. */
  idPrefix: string;
  timeoutSeconds?: number;
}

export interface LoadResult {
  durationSeconds: number;
  requests: number;
  responses2xx: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  eventsSent: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  latencyMs: { p50: number; p90: number; p99: number; mean: number; max: number };
}

/** A collect event of the synthetic audience, with a few properties: ~300 bytes of BSON. */
export function benchEvent(seq: number, idPrefix: string, users: number): GeneratedEvent & { properties: Record<string, unknown> } {
  const user = seq % users;
  const n = Math.floor(seq / users);
  return {
    ...userEvent(user, n, idPrefix),
    properties: { page: `/products/${seq % 997}`, campaign: 'spring_sale', value: seq % 100 },
  };
}

/** The same event as a Segment `track` message. */
function segmentMessage(event: ReturnType<typeof benchEvent>): Record<string, unknown> {
  const { email, cookie_id: anonymousId } = event.identities;
  return {
    type: 'track',
    event: event.type,
    messageId: event.id,
    anonymousId,
    timestamp: event.timestamp,
    properties: event.properties,
    context: { traits: { ...event.traits, ...(email && { email }) } },
  };
}

/** The same event as a pixel hit: its type, the user as a CRM id, its properties as `p.<name>`. */
function pixelPath(event: ReturnType<typeof benchEvent>, writeKey: string): string {
  const query = new URLSearchParams({ writeKey, e: event.type, uid: event.identities.cookie_id });
  for (const [name, value] of Object.entries(event.properties)) query.set(`p.${name}`, String(value));
  return `/v1/pixel.gif?${query}`;
}

interface AutocannonRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  setupRequest?: (request: AutocannonRequest, context: unknown) => AutocannonRequest;
  onResponse?: (status: number, body: string) => void;
}

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  statusCodeStats: Record<string, { count: number }>;
  latency: { p50: number; p90: number; p99: number; average: number; max: number };
  requests: { total: number; sent: number };
}

type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>;

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  // autocannon ships no type declarations: the little of its API used here is typed above.
  const autocannon = require('autocannon') as Autocannon;
  const target = new URL(spec.url);
  let seq = 0;
  let eventsSent = 0;
  let accepted = 0;
  let duplicates = 0;
  let rejected = 0;

  const kind = spec.kind ?? 'collect';
  const nextEvents = () => Array.from({ length: spec.eventsPerRequest }, () => benchEvent(seq++, spec.idPrefix, spec.users));
  // Called for every request: each is built on the spot with fresh event ids.
  const setups: Record<NonNullable<LoadSpec['kind']>, AutocannonRequest['setupRequest']> = {
    collect: (base) => {
      const events = nextEvents();
      eventsSent += events.length;
      return { ...base, body: JSON.stringify({ events }) };
    },
    segment: (base) => {
      const batch = nextEvents().map(segmentMessage);
      eventsSent += batch.length;
      return { ...base, body: JSON.stringify({ batch, sentAt: new Date().toISOString() }) };
    },
    pixel: (base) => {
      eventsSent++;
      return { ...base, path: pixelPath(benchEvent(seq++, spec.idPrefix, spec.users), spec.writeKey) };
    },
  };
  const request: AutocannonRequest = {
    method: kind === 'pixel' ? 'GET' : 'POST',
    path: kind === 'segment' ? '/v1/batch' : kind === 'pixel' ? '/v1/pixel.gif' : '/v1/collect',
    headers:
      kind === 'pixel'
        ? {}
        : { 'content-type': 'application/json', authorization: kind === 'segment' ? `Basic ${Buffer.from(`${spec.writeKey}:`).toString('base64')}` : `Bearer ${spec.writeKey}` },
    setupRequest: setups[kind],
    onResponse: (status, body) => {
      if (status < 200 || status >= 300) return;
      if (kind === 'pixel') {
        accepted++; // a pixel answers the GIF whatever happened; rejections are counted on the source
        return;
      }
      try {
        const parsed = JSON.parse(body) as { accepted?: number; duplicates?: number; rejected?: unknown[] };
        accepted += parsed.accepted ?? 0;
        duplicates += parsed.duplicates ?? 0;
        rejected += parsed.rejected?.length ?? 0;
      } catch {
        /* a 2xx without a JSON body acknowledges nothing countable */
      }
    },
  };

  const result = await autocannon({
    url: `${target.protocol}//${target.host}`,
    connections: spec.connections,
    duration: spec.durationSeconds,
    pipelining: 1,
    timeout: spec.timeoutSeconds ?? 30,
    requests: [request],
  });

  const statusCodes: Record<string, number> = {};
  for (const [code, stats] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = stats.count;
  return {
    durationSeconds: result.duration,
    requests: result.requests.total,
    responses2xx: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    eventsSent,
    accepted,
    duplicates,
    rejected,
    latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, mean: result.latency.average, max: result.latency.max },
  };
}

if (require.main === module) {
  const raw = process.argv[2];
  if (!raw) {
    process.stderr.write("usage: tsx bench/loadgen.ts '<json spec>'\n");
    process.exit(2);
  }
  runLoad(JSON.parse(raw) as LoadSpec).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    },
    (error: unknown) => {
      process.stderr.write(`loadgen failed: ${error instanceof Error ? error.stack : String(error)}\n`);
      process.exit(1);
    },
  );
}
