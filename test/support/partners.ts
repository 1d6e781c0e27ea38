import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LocalServer } from './localServer';

/**
 * Local HTTP servers that behave like the partners exports talk to: each checks its format and auth,
 * applies adds and removes to the audiences it holds, deduplicates by `Idempotency-Key`, enforces a
 * rate limit with 429 + Retry-After, and misbehaves on cue (5xx, a stall past the client's timeout,
 * or applying a batch and then dropping the connection before answering).
 */
export type Fault = 'http500' | 'http400' | 'http429' | 'stall' | 'applyThenDrop';

export interface PartnerOptions {
  kind: 'webhook' | 'dsp' | 'people' | 'files';
  /** webhook: the shared secret signatures are checked with. */
  secret?: string;
  /** dsp, people, files: the bearer token required. */
  token?: string;
  /** Requests per second before 429s (with `Retry-After: 1`). */
  ratePerSecond?: number;
  /** Faults served in turn by the next requests (one each). */
  faults?: Fault[];
  /** How long a stalled request hangs. */
  stallMs?: number;
  /** How long every request takes to handle (a slow partner). */
  delayMs?: number;
  /** The `Retry-After` (seconds) of an `http429` fault; 2 unless given. */
  retryAfterSeconds?: number;
  /** files: the query a request's URL must carry (a signed URL's); one without it is refused 403, quoting the query it got, as a storage service does. */
  signedQuery?: string;
}

export class PartnerServer extends LocalServer {
  /** Per audience (segment or list), the ids held. */
  readonly audiences = new Map<string, Set<string>>();
  /** Per DSP audience and id, when its membership lapses: a DSP keeps an id in a segment only for the TTL its last add gave. */
  private readonly expiries = new Map<string, number>();
  /** Idempotency keys applied, in order: a key twice would be a batch applied twice. */
  readonly applied: string[] = [];
  /** Requests whose key was applied before (answered 200, not applied again). */
  duplicates = 0;
  requests = 0;
  rejectedAuth = 0;
  rateLimited = 0;
  /** For each request answered by an `http429` fault, the milliseconds until its batch (idempotency key) came again. */
  readonly retryGaps: number[] = [];
  private readonly retryAsked = new Map<string, number>();
  /** dsp: ids whose lines it refuses inside a 200 (`FailedLines`), applying the rest of the request. */
  readonly refusing = new Set<string>();
  /** Files received (files kind): name → content. */
  readonly files = new Map<string, string>();
  private readonly faults: Fault[];
  private windowStart = 0;
  private windowCount = 0;

  constructor(readonly options: PartnerOptions) {
    super();
    this.faults = [...(options.faults ?? [])];
  }

  /** Requests wait for this before they are handled, while a test holds the partner (see `hold`). */
  private held: Promise<void> | null = null;

  /** Holds every request (counted as it arrives) until the returned function lets them all go on. */
  hold(): () => void {
    let release = () => {};
    this.held = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.held = null;
      release();
    };
  }

  /** Faults served in turn by the next requests, after those still queued. */
  failNext(...faults: Fault[]): void {
    this.faults.push(...faults);
  }

  audience(name: string): string[] {
    const now = Date.now();
    return [...(this.audiences.get(name) ?? [])].filter((id) => (this.expiries.get(`${name}\n${id}`) ?? Infinity) > now).sort();
  }

  /** When a DSP membership lapses unless added again (its TTL from the last add), in ms since the epoch. */
  expiresAt(name: string, id: string): number | undefined {
    return this.expiries.get(`${name}\n${id}`);
  }

  private set(name: string): Set<string> {
    let found = this.audiences.get(name);
    if (!found) this.audiences.set(name, (found = new Set()));
    return found;
  }

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    this.requests++;
    if (this.held) await this.held;
    const key = String(req.headers['idempotency-key'] ?? '');
    const asked = this.retryAsked.get(key);
    if (asked !== undefined) {
      this.retryGaps.push(Date.now() - asked);
      this.retryAsked.delete(key);
    }
    const answer = (status: number, body: unknown = {}, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (!this.authorized(req, raw)) {
      this.rejectedAuth++;
      return answer(401, { error: 'bad credentials' });
    }
    const query = (req.url ?? '').split('?')[1] ?? '';
    if (this.options.signedQuery !== undefined && query !== this.options.signedQuery) {
      this.rejectedAuth++;
      return answer(403, { error: 'SignatureDoesNotMatch', provided: query });
    }
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowCount = 0;
    }
    if (this.options.ratePerSecond && ++this.windowCount > this.options.ratePerSecond) {
      this.rateLimited++;
      return answer(429, { error: 'rate limited' }, { 'retry-after': '1' });
    }
    const fault = this.faults.shift();
    if (fault === 'http500') return answer(500, { error: 'partner down' });
    if (fault === 'http400') return answer(400, { error: 'refused' });
    if (fault === 'http429') {
      this.rateLimited++;
      this.retryAsked.set(key, Date.now());
      return answer(429, { error: 'slow down' }, { 'retry-after': String(this.options.retryAfterSeconds ?? 2) });
    }
    if (fault === 'stall') {
      await new Promise((resolve) => setTimeout(resolve, this.options.stallMs ?? 5000));
      return void req.socket.destroy();
    }
    if (this.options.delayMs) await new Promise((resolve) => setTimeout(resolve, this.options.delayMs));
    // The people kind takes adds and removes of one batch in two requests under the same key.
    const scopedKey = this.options.kind === 'people' ? `${key}|${req.url}` : key;
    if (scopedKey && this.applied.includes(scopedKey)) {
      this.duplicates++;
      return answer(200, { duplicate: true });
    }
    const result = this.apply(req, raw);
    if ('error' in result) return answer(400, result);
    if (scopedKey) this.applied.push(scopedKey);
    if (fault === 'applyThenDrop') return void req.socket.destroy();
    answer(200, result);
  }

  private authorized(req: IncomingMessage, raw: string): boolean {
    if (this.options.kind === 'webhook') {
      const given = String(req.headers['x-dmp-signature'] ?? '');
      const expected = `sha256=${createHmac('sha256', this.options.secret ?? '').update(raw, 'utf8').digest('hex')}`;
      return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
    }
    if (!this.options.token) return true;
    return req.headers.authorization === `Bearer ${this.options.token}`;
  }

  private apply(req: IncomingMessage, raw: string): Record<string, unknown> {
    try {
      switch (this.options.kind) {
        case 'webhook': {
          const body = JSON.parse(raw);
          if (!body.batchId || !body.segment?.id || !Array.isArray(body.adds) || !Array.isArray(body.removes)) return { error: 'not a batch' };
          for (const id of body.adds) this.set(body.segment.id).add(id);
          for (const id of body.removes) this.set(body.segment.id).delete(id);
          return { ok: true };
        }
        case 'dsp': {
          const body = JSON.parse(raw);
          if (!body.AdvertiserId || !Array.isArray(body.Items)) return { error: 'not a data request' };
          const failed: unknown[] = [];
          body.Items.forEach((item: Record<string, unknown>, index: number) => {
            const id = (item.TDID ?? item.DAID) as string | undefined;
            const data = item.Data as Array<{ Name: string; TTLInMinutes: number }>;
            // Failed lines as The Trade Desk reports them: the id as the item gave it, when it gave one.
            if (!id || !Array.isArray(data)) return void failed.push({ ItemNumber: String(index + 1), ErrorCode: 'MissingData' });
            if (this.refusing.has(id)) return void failed.push({ [item.TDID ? 'TDID' : 'DAID']: id, ItemNumber: String(index + 1), ErrorCode: 'InvalidId', Message: 'not taken' });
            for (const entry of data) {
              if (entry.TTLInMinutes > 0) {
                this.set(entry.Name).add(id);
                this.expiries.set(`${entry.Name}\n${id}`, Date.now() + entry.TTLInMinutes * 60_000);
              } else this.set(entry.Name).delete(id);
            }
          });
          return { FailedLines: failed };
        }
        case 'people': {
          const match = /\/audiences\/([^/]+)\/members:(add|remove)$/.exec(req.url ?? '');
          const body = JSON.parse(raw);
          if (!match || !Array.isArray(body.data) || !['EMAIL_SHA256', 'PHONE_SHA256'].includes(body.schema)) return { error: 'not a members request' };
          let invalid = 0;
          for (const hash of body.data) {
            if (!/^[0-9a-f]{64}$/.test(hash)) invalid++;
            else if (match[2] === 'add') this.set(match[1]).add(hash);
            else this.set(match[1]).delete(hash);
          }
          return { received: body.data.length, invalid };
        }
        case 'files': {
          const name = decodeURIComponent((req.url ?? '').split('?')[0].split('/').pop() ?? '');
          this.files.set(name, raw);
          applyFile(raw, name.endsWith('.csv') ? 'csv' : 'ndjson', (segment) => this.set(segment));
          return { ok: true };
        }
      }
    } catch (error) {
      return { error: (error as Error).message };
    }
  }
}

/** Applies a segment file (NDJSON or CSV lines of id, segment, action) to audiences. */
export function applyFile(content: string, format: 'csv' | 'ndjson', audience: (segment: string) => Set<string>): void {
  const lines = content.split('\n').filter(Boolean);
  const rows = format === 'ndjson' ? lines.map((line) => JSON.parse(line) as { id: string; segment: string; action: string }) : lines.slice(1).map((line) => {
    const [id, , segment, action] = line.split(',');
    return { id, segment, action };
  });
  for (const row of rows) {
    if (row.action === 'add') audience(row.segment).add(row.id);
    else audience(row.segment).delete(row.id);
  }
}
