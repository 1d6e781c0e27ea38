/**
 * The export benchmark's webhook partner, in a process of its own so that its CPU is not the
 * bench's: it checks each batch's `X-DMP-Signature` (HMAC-SHA256 of the raw body with
 * DMP_BENCH_PARTNER_SECRET), applies a batch once per `Idempotency-Key` (a key seen before is
 * answered 200 and not applied again), keeps each segment's ids in a set, and answers as fast as it
 * can. `GET /stats?segment=<id>` → `{held, applied, duplicates, refused}`.
 *
 * It prints `port <n>` on stdout once listening on 127.0.0.1, and exits when its stdin closes (so it
 * never outlives the bench, however that ends).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const secret = process.env.DMP_BENCH_PARTNER_SECRET;
if (!secret) throw new Error('DMP_BENCH_PARTNER_SECRET is not set');

const audiences = new Map<string, Set<string>>();
const keys = new Set<string>();
let applied = 0;
let duplicates = 0;
/** Requests answered 4xx: a bad signature or not a batch. */
let refused = 0;

interface Batch {
  batchId: string;
  segment: { id: string };
  adds: string[];
  removes: string[];
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function signed(req: IncomingMessage, raw: Buffer): boolean {
  const given = Buffer.from(String(req.headers['x-dmp-signature'] ?? ''));
  const expected = Buffer.from(`sha256=${createHmac('sha256', secret as string).update(raw).digest('hex')}`);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function receive(req: IncomingMessage, res: ServerResponse, raw: Buffer): void {
  if (!signed(req, raw)) {
    refused++;
    return answer(res, 401, { error: 'bad signature' });
  }
  const key = String(req.headers['idempotency-key'] ?? '');
  if (key && keys.has(key)) {
    duplicates++;
    return answer(res, 200, { duplicate: true });
  }
  let batch: Batch;
  try {
    batch = JSON.parse(raw.toString('utf8')) as Batch;
  } catch {
    batch = {} as Batch;
  }
  if (!batch.batchId || typeof batch.segment?.id !== 'string' || !Array.isArray(batch.adds) || !Array.isArray(batch.removes)) {
    refused++;
    return answer(res, 400, { error: 'not a batch' });
  }
  let held = audiences.get(batch.segment.id);
  if (!held) audiences.set(batch.segment.id, (held = new Set()));
  for (const id of batch.adds) held.add(id);
  for (const id of batch.removes) held.delete(id);
  if (key) keys.add(key);
  applied++;
  answer(res, 200, { ok: true });
}

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url?.startsWith('/stats')) {
    const segment = new URL(req.url, 'http://partner').searchParams.get('segment') ?? '';
    return answer(res, 200, { held: audiences.get(segment)?.size ?? 0, applied, duplicates, refused });
  }
  if (req.method !== 'POST') return answer(res, 405, { error: 'POST a batch' });
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => receive(req, res, Buffer.concat(chunks)));
});
// Longer than the exporter's idle keep-alive: a partner closing a connection the client is about to reuse would cost a retry.
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${(server.address() as AddressInfo).port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
