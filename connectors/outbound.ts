import { lookup } from 'node:dns/promises';
import { lookup as lookupCallback, type LookupAddress } from 'node:dns';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import ipaddr from 'ipaddr.js';
import { Agent, fetch, type Response } from 'undici';

/**
 * A delivery that did not land. `retryable`: the same batch may be sent again (a 429, a 5xx, a
 * timeout, a dropped connection); otherwise the partner refused it as it is. `retryAfterMs` is the
 * partner's own `Retry-After`, when it gave one.
 */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status: number | null = null,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
  }
}

/** Whether an address is one the public internet routes: not private, loopback, link-local, multicast… */
function isPublic(address: string): boolean {
  const parsed = ipaddr.process(address);
  return parsed.range() === 'unicast';
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
}

/**
 * Why an outbound URL may not be used, or null when it may: only http(s), and never a host that
 * resolves to a private, loopback or link-local address unless the host is allowlisted (partners
 * are on the internet; anything else would let a destination reach into our own network).
 * `kind` tells a malformed URL from one whose host does not resolve and one that may not be reached.
 */
export async function urlRefusal(raw: string, allowlist: Set<string>): Promise<{ kind: 'malformed' | 'unresolved' | 'forbidden'; message: string } | null> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { kind: 'malformed', message: 'not a URL' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return { kind: 'malformed', message: 'only http and https URLs' };
  if (url.username || url.password) return { kind: 'malformed', message: 'credentials belong in the config, not the URL' };
  const host = hostOf(url);
  if (allowlist.has(host)) return null;
  let addresses: LookupAddress[];
  try {
    addresses = ipaddr.isValid(host) ? [{ address: host, family: host.includes(':') ? 6 : 4 }] : await lookup(host, { all: true });
  } catch {
    return { kind: 'unresolved', message: `host ${host} does not resolve` };
  }
  const blocked = addresses.find((entry) => !isPublic(entry.address));
  if (blocked) return { kind: 'forbidden', message: `${host} resolves to ${blocked.address}, a private, loopback or link-local address (allow it with DMP_DESTINATION_ALLOWLIST)` };
  return url.protocol === 'http:' ? { kind: 'forbidden', message: 'https only (plain http is for allowlisted hosts): tokens and audiences must not travel unencrypted' } : null;
}

/** A partner's file as it starts to arrive (see `Outbound.download`). */
export interface Download {
  status: number;
  headers: { get(name: string): string | null };
  /** Null for a 304. Errors if the transfer breaks off: the connection closes early, short of its Content-Length, or idles too long. */
  body: Readable | null;
}

/**
 * The HTTP client of deliveries and feed pulls. The address check runs again at connect time on
 * the address actually dialled, so a name that resolves differently later (DNS rebinding) cannot
 * reach inside.
 */
export class Outbound {
  private readonly agent: Agent;
  /** For downloads: a partner that answers nothing, or lets a body stall (while we read), for `timeoutMs` is given up on. */
  private readonly downloads: Agent;

  constructor(
    readonly allowlist: Set<string>,
    readonly timeoutMs: number,
  ) {
    this.agent = this.guardedAgent({});
    this.downloads = this.guardedAgent({ headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  }

  private guardedAgent(timeouts: { headersTimeout?: number; bodyTimeout?: number }): Agent {
    return new Agent({
      connections: 16,
      keepAliveTimeout: 10_000,
      ...timeouts,
      connect: {
        lookup: (hostname, options, callback) => {
          lookupCallback(hostname, { ...options, all: true }, (error, addresses) => {
            if (error) return callback(error, '', 0);
            const list = addresses as unknown as LookupAddress[];
            if (!this.allowlist.has(hostname.toLowerCase())) {
              const blocked = list.find((entry) => !isPublic(entry.address));
              if (blocked) return callback(new Error(`${hostname} resolves to ${blocked.address}, which destinations may not reach`), '', 0);
            }
            if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
            callback(null, list[0].address, list[0].family);
          });
        },
      },
    });
  }

  /**
   * Sends one request and returns a 2xx response; anything else is a DeliveryError: 408, 425, 429
   * and 5xx are retryable (with the partner's Retry-After), other statuses are refusals. A partner
   * slower than `timeoutMs` is abandoned (retryable: it may have applied the batch, so the retry
   * carries the same idempotency key).
   */
  async send(url: string, init: { method: string; headers?: Record<string, string>; body?: string | Buffer }, until?: AbortSignal): Promise<Accepted> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const response = await this.request(this.agent, url, { ...init, signal: until ? AbortSignal.any([timeout, until]) : timeout });
    if (response.status < 200 || response.status >= 300) throw await refusal(response);
    // Read always (an unread body holds its connection until the timeout), and only so far: an answer
    // larger than any partner's report is none. One that breaks off after the 2xx is still an applied batch.
    const body = await boundedText(response, ANSWER_MAX_BYTES).catch(() => null);
    let answer: unknown = null;
    try {
      if (body?.complete && body.text) answer = JSON.parse(body.text);
    } catch {
      // Not JSON: a partner that says nothing more than its status.
    }
    return { status: response.status, answer, complete: body?.complete === true };
  }

  /**
   * A GET whose body is read as a stream, however long the file: the partner must start answering
   * within `timeoutMs` and never let the body stall longer than that (a slow partner is given up on
   * and retried, not waited for). A 2xx or a 304 comes back; anything else is a DeliveryError as
   * for `send`. Redirects are not followed: the checked URL is the one fetched.
   */
  async download(url: string, headers: Record<string, string>): Promise<Download> {
    const response = await this.request(this.downloads, url, { method: 'GET', headers });
    if (response.status === 304) return { status: 304, headers: response.headers, body: null };
    if (response.status < 200 || response.status >= 300) throw await refusal(response);
    const body = response.body ? Readable.fromWeb(response.body as WebReadableStream<Uint8Array>) : Readable.from([]);
    // A transfer may break before anyone reads the body; the stream keeps the error, and reading it throws it.
    body.on('error', () => undefined);
    return { status: response.status, headers: response.headers, body };
  }

  private async request(agent: Agent, url: string, init: { method: string; headers?: Record<string, string>; body?: string | Buffer; signal?: AbortSignal }): Promise<Response> {
    const host = hostOf(new URL(url));
    if (!this.allowlist.has(host) && ipaddr.isValid(host) && !isPublic(host)) throw new DeliveryError(`${host} is a private address`, false);
    try {
      return await fetch(url, { ...init, dispatcher: agent, redirect: 'manual' });
    } catch (error) {
      const reason = (error as Error).name === 'TimeoutError' ? `no response within ${this.timeoutMs} ms` : describeFailure(error);
      throw new DeliveryError(reason, !/may not reach|private address/.test(reason));
    }
  }

  /** This client's requests, each abandoned once `until` aborts as well (an activity attempt given up). */
  until(until: AbortSignal): Pick<Outbound, 'send'> {
    return { send: (url, init) => this.send(url, init, until) };
  }

  async close(): Promise<void> {
    await Promise.all([this.agent.close(), this.downloads.close()]);
  }
}

/** `path` under a partner's base URL: its own path kept, and its query (a signed URL's signature); a fragment, which is never sent, dropped. */
export function urlUnder(base: string, path: string): string {
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/$/, '')}/${path}`;
  url.hash = '';
  return url.toString();
}

/** A fetch or stream error with its cause (undici says "fetch failed" or "terminated" and puts the reason in `cause`). */
export function describeFailure(error: unknown): string {
  const cause = (error as { cause?: Error }).cause;
  return `${(error as Error).message}${cause ? `: ${cause.message}` : ''}`;
}

/** A partner's success: its status, and its body as JSON (null when empty, unreadable, or larger than a report is). */
export interface Accepted {
  status: number;
  answer: unknown;
  /** The body was read whole (not larger than a report is, nor broken off). */
  complete: boolean;
}

/** The most of a successful answer read (a partner's report of ids it could not take). */
const ANSWER_MAX_BYTES = 1 << 20;
/** The most of a refusal's body read: its start is kept on the receipt. */
const REFUSAL_MAX_BYTES = 4096;

/** The start of a body, at most `maxBytes` (the rest is not read, and let go), and whether that was all of it. */
async function boundedText(response: Response, maxBytes: number): Promise<{ text: string; complete: boolean }> {
  if (!response.body) return { text: '', complete: true };
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of response.body) {
    const room = maxBytes - bytes;
    bytes += chunk.byteLength;
    chunks.push(Buffer.from(chunk).subarray(0, Math.max(0, room)));
    if (bytes > maxBytes) {
      await response.body.cancel().catch(() => undefined);
      return { text: Buffer.concat(chunks).toString('utf8'), complete: false };
    }
  }
  return { text: Buffer.concat(chunks).toString('utf8'), complete: true };
}

/** A partner's answer other than success: 408, 425, 429 and 5xx may be tried again (after its Retry-After). */
async function refusal(response: Response): Promise<DeliveryError> {
  const text = (await boundedText(response, REFUSAL_MAX_BYTES).catch(() => ({ text: '' }))).text.slice(0, 300);
  const retryable = response.status === 408 || response.status === 425 || response.status === 429 || response.status >= 500;
  return new DeliveryError(`HTTP ${response.status}${text ? `: ${text}` : ''}`, retryable, response.status, retryAfterMs(response.headers.get('retry-after')));
}

/** Longer than this, a Retry-After is read as "much later" and capped by the caller's own limit. */
const RETRY_AFTER_CAP_MS = 86_400_000;

const IMF_FIXDATE = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}:\d{2}:\d{2}) GMT$/;
const RFC850_DATE = /^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}:\d{2}:\d{2}) GMT$/;
const ASCTIME_DATE = /^[A-Za-z]{3} ([A-Za-z]{3}) ( \d|\d{2}) (\d{2}:\d{2}:\d{2}) (\d{4})$/;

/** An HTTP-date in any of the three forms RFC 9110 has recipients accept, in ms since the epoch; NaN when it is none. */
function httpDate(text: string, now: number): number {
  const at = (day: string, month: string, year: string | number, time: string) => Date.parse(`${day.trim().padStart(2, '0')} ${month} ${year} ${time} GMT`);
  let match = IMF_FIXDATE.exec(text);
  if (match) return at(match[1], match[2], match[3], match[4]);
  match = ASCTIME_DATE.exec(text);
  if (match) return at(match[2], match[1], match[4], match[3]);
  match = RFC850_DATE.exec(text);
  if (!match) return NaN;
  // A two-digit year more than 50 years ahead is of the century before (RFC 9110 §5.6.7).
  const century = Number(match[3]) + 2000 > new Date(now).getUTCFullYear() + 50 ? 1900 : 2000;
  return at(match[1], match[2], century + Number(match[3]), match[4]);
}

/** `Retry-After` as delay-seconds or an HTTP-date (RFC 9110), in milliseconds from now; null when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | null {
  const text = header?.trim();
  if (!text) return null;
  if (/^\d+$/.test(text)) return Math.min(RETRY_AFTER_CAP_MS, Number(text) * 1000);
  const at = httpDate(text, now);
  return Number.isNaN(at) ? null : Math.min(RETRY_AFTER_CAP_MS, Math.max(0, at - now));
}
