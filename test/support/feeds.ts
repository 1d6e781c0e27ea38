import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LocalServer } from './localServer';

/**
 * Faults a feed partner serves in turn, one per request: a 500; a 503 with Retry-After; a stall
 * before any answer (past the client's timeout); headers and half the file, then a stall; half the
 * file under the whole file's Content-Length, then the connection closed; the file cut inside a
 * row, framed as if it were whole.
 */
export type FeedFault = 'http500' | 'http503' | 'stall' | 'stallBody' | 'truncate' | 'cutRow';

export interface FeedServerOptions {
  /** The bearer token required, if any. */
  token?: string;
  /** How long a stall lasts before the connection is dropped. */
  stallMs?: number;
  /** Sends each file in pieces of this many bytes with `throttleMs` between them (a slow but steady partner). */
  throttleBytes?: number;
  throttleMs?: number;
}

interface PublishedFile {
  body: Buffer;
  etag: string;
  lastModified: string;
}

/** Resolves once a response can take more, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * A local HTTP server that behaves like a partner publishing audience files: each path serves its
 * latest version with an ETag and Last-Modified, answers conditional GETs with 304, checks a bearer
 * token, and misbehaves on cue (see FeedFault). Every request is recorded.
 */
export class FeedServer extends LocalServer {
  readonly requests: Array<{ path: string; ifNoneMatch: string | null; ifModifiedSince: string | null; authorization: string | null; status: number | 'dropped' }> = [];
  private readonly files = new Map<string, PublishedFile>();
  private readonly faults: FeedFault[] = [];

  constructor(readonly options: FeedServerOptions = {}) {
    super();
  }

  /** Publishes a new version of the file at `path` (a new ETag, Last-Modified `at`, to the second as HTTP dates are). */
  publish(path: string, body: string, at = new Date()): void {
    const bytes = Buffer.from(body);
    this.files.set(path, { body: bytes, etag: `"${createHash('sha1').update(bytes).digest('hex')}"`, lastModified: at.toUTCString() });
  }

  /** Queues faults for the next requests, one each. */
  fail(...faults: FeedFault[]): void {
    this.faults.push(...faults);
  }

  private record(req: IncomingMessage, status: number | 'dropped'): void {
    const header = (name: string) => (req.headers[name] as string | undefined) ?? null;
    this.requests.push({ path: req.url ?? '', ifNoneMatch: header('if-none-match'), ifModifiedSince: header('if-modified-since'), authorization: header('authorization'), status });
  }

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const file = this.files.get(req.url ?? '');
    if (this.options.token && req.headers.authorization !== `Bearer ${this.options.token}`) {
      this.record(req, 401);
      return void res.writeHead(401).end('bad token');
    }
    if (!file) {
      // Quoting what it was asked for, as a storage service's NoSuchKey does.
      this.record(req, 404);
      return void res.writeHead(404).end(`no such file: ${req.url}`);
    }
    const fault = this.faults.shift();
    if (fault === 'http500' || fault === 'http503') {
      this.record(req, fault === 'http500' ? 500 : 503);
      return void res.writeHead(fault === 'http500' ? 500 : 503, fault === 'http503' ? { 'retry-after': '1' } : {}).end('partner down');
    }
    if (fault === 'stall') {
      this.record(req, 'dropped');
      await sleep(this.options.stallMs ?? 5000);
      return void req.socket.destroy();
    }
    const half = file.body.subarray(0, Math.floor(file.body.length / 2));
    if (fault === 'stallBody' || fault === 'truncate') {
      this.record(req, 'dropped');
      res.writeHead(200, { 'content-type': 'text/csv', 'content-length': String(file.body.length), etag: file.etag, 'last-modified': file.lastModified });
      res.write(half);
      if (fault === 'stallBody') await sleep(this.options.stallMs ?? 5000);
      else await sleep(50);
      return void req.socket.destroy();
    }
    if (fault === 'cutRow') {
      // Cut inside the last row, right after its first cell.
      const lastRow = file.body.lastIndexOf('\n', file.body.length - 2) + 1;
      const cut = file.body.subarray(0, file.body.indexOf(',', lastRow));
      this.record(req, 200);
      return void res.writeHead(200, { 'content-type': 'text/csv', 'content-length': String(cut.length), etag: file.etag, 'last-modified': file.lastModified }).end(cut);
    }
    const notModified =
      (req.headers['if-none-match'] !== undefined && req.headers['if-none-match'] === file.etag) ||
      (req.headers['if-none-match'] === undefined && req.headers['if-modified-since'] !== undefined && Date.parse(req.headers['if-modified-since']) >= Date.parse(file.lastModified));
    if (notModified) {
      this.record(req, 304);
      return void res.writeHead(304, { etag: file.etag, 'last-modified': file.lastModified }).end();
    }
    this.record(req, 200);
    res.writeHead(200, { 'content-type': 'text/csv', 'content-length': String(file.body.length), etag: file.etag, 'last-modified': file.lastModified });
    const piece = this.options.throttleBytes ?? file.body.length;
    for (let from = 0; from < file.body.length; from += piece) {
      if (res.destroyed) return;
      if (from > 0) await sleep(this.options.throttleMs ?? 0);
      // Waits while the client reads no further (as a server streaming a file does): the response then stays open as long as the client needs.
      if (!res.write(file.body.subarray(from, from + piece))) await drained(res);
    }
    res.end();
  }
}
