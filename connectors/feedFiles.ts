import { createReadStream } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { createGunzip } from 'node:zlib';
import { parse } from 'csv-parse';
import { feedColumnNames, ndjsonFields, type FeedConfig } from '../domain/feeds';
import { BoundedLines, crmCsvOptions, FileUnreadable, TransferBrokeOff } from '../domain/uploads';
import type { FeedFile } from '../store/feeds';
import { describeFailure } from './outbound';

/** A line longer than this is refused: a file without line breaks must not be read into one string. */
const MAX_LINE_CHARS = 1_048_576;

/** Names of files still being written by the usual conventions, hidden files and job markers (Hadoop's and Spark's `_SUCCESS`): never read. */
const NOT_DATA = /^[._]|\.(tmp|part|partial|crdownload)$/i;

/** Remembers whether the last byte through was a line break: a file cut off mid-row ends without one. */
class LastByte extends Transform {
  endsWithLineBreak = true;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (error: null, chunk: Buffer) => void): void {
    if (chunk.length > 0) this.endsWithLineBreak = chunk[chunk.length - 1] === 0x0a || chunk[chunk.length - 1] === 0x0d;
    callback(null, chunk);
  }
}

/**
 * A body's bytes, ended by a FileUnreadable when the transfer breaks off (a connection closed
 * early or short of its Content-Length, a stalled partner) — also when it broke before reading
 * began: a stream keeps its error, and reading it throws it.
 */
async function* transferred(body: Readable): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of body) yield chunk as Buffer;
  } catch (error) {
    throw new TransferBrokeOff('(body)', `the transfer broke off: ${describeFailure(error)}`);
  }
}

/** gzip's first two bytes: no CSV or JSON text starts with them. */
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);

/**
 * A body's bytes, inflated when they are gzip — told by their first bytes, not the file's name, as a
 * `.gz` file served with `Content-Encoding: gzip` arrives inflated already — a gzip stream that breaks
 * off ending the reading.
 */
async function* inflated(body: Readable): AsyncGenerator<Buffer> {
  const chunks = transferred(body);
  let head = Buffer.alloc(0);
  while (head.length < GZIP_MAGIC.length) {
    const next = await chunks.next();
    if (next.done) break;
    head = Buffer.concat([head, next.value]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    yield* chunks;
  }
  if (!head.subarray(0, GZIP_MAGIC.length).equals(GZIP_MAGIC)) return yield* all();
  const gunzip = createGunzip();
  const compressed = Readable.from(all());
  compressed.on('error', (error) => gunzip.destroy(error));
  compressed.pipe(gunzip);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (error) {
    throw error instanceof FileUnreadable ? error : new FileUnreadable('(body)', `not gzip: ${(error as Error).message}`);
  }
}

/** A feed file's text (see `inflated`), and whether it ended with a line break. */
function feedText(body: Readable): { text: Readable; tail: LastByte } {
  const tail = new LastByte();
  const bytes = Readable.from(inflated(body));
  bytes.on('error', (error) => tail.destroy(error));
  bytes.pipe(tail);
  return { text: tail, tail };
}

/**
 * A CSV feed file's records, its header first. A last row shorter than the header with no line
 * break after it is a file cut off mid-row: the whole file is refused as unreadable (and its pull
 * retried) rather than its last row taken for a row.
 */
async function* csvRecords(body: Readable, feed: FeedConfig): AsyncGenerator<string[]> {
  const { text, tail } = feedText(body);
  const parser = parse(crmCsvOptions(feed.mapping));
  const bounded = new BoundedLines();
  for (const stream of [text, bounded]) stream.on('error', (error) => parser.destroy(error));
  // Errors reach the loop below through the iterator; this keeps a late one from going unhandled.
  parser.on('error', () => undefined);
  text.pipe(bounded).pipe(parser);
  let row = 0;
  let width = 0;
  let last: string[] = [];
  for await (const fields of parser as AsyncIterable<string[]>) {
    row++;
    if (row === 1) width = fields.length;
    last = fields;
    yield fields;
  }
  if (row > 1 && !tail.endsWithLineBreak && last.length < width) throw new FileUnreadable(`row ${row}`, 'the file ends inside this row: it was cut short');
}

/** A text stream's lines (without their line breaks), each at most MAX_LINE_CHARS long. */
async function* lines(text: Readable): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let line = 0;
  for await (const chunk of text) {
    pending += decoder.write(chunk as Buffer);
    let end: number;
    while ((end = pending.indexOf('\n')) >= 0) {
      line++;
      yield pending.slice(0, end).replace(/\r$/, '');
      pending = pending.slice(end + 1);
    }
    if (pending.length > MAX_LINE_CHARS) throw new FileUnreadable(`line ${line + 1}`, `longer than ${MAX_LINE_CHARS} characters`);
  }
  pending += decoder.end();
  if (pending !== '') yield pending;
}

/**
 * An NDJSON feed file's records as CSV would give them: first the names the feed reads (its
 * header), then each line's object read by those names. A line that is not a JSON object (a file
 * cut off inside its last line is one) makes the whole file unreadable.
 */
async function* ndjsonRecords(body: Readable, feed: FeedConfig): AsyncGenerator<string[]> {
  const names = feedColumnNames(feed);
  yield names;
  const separator = feed.taxonomy?.separator ?? '|';
  let line = 0;
  for await (const read of lines(feedText(body).text)) {
    line++;
    // A byte-order mark before the first line, as CSV files are read with.
    const text = line === 1 && read.startsWith('\uFEFF') ? read.slice(1) : read;
    if (text.trim() === '') {
      yield [''];
      continue;
    }
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch {
      throw new FileUnreadable(`line ${line}`, 'not valid JSON');
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new FileUnreadable(`line ${line}`, 'not a JSON object');
    yield ndjsonFields(record as Record<string, unknown>, names, separator);
  }
}

/** A feed file's records in its format, the header first (NDJSON: the names the feed reads). */
export function feedRecords(body: Readable, feed: FeedConfig): AsyncGenerator<string[]> {
  return feed.format === 'ndjson' ? ndjsonRecords(body, feed) : csvRecords(body, feed);
}

/** The drop folder of a feed, resolved under the root and refused when a link leads out of it. */
export async function feedFolder(root: string, folder: string): Promise<string> {
  const base = await realpath(root).catch(() => {
    throw new FileUnreadable('feed.folder', `DMP_FEED_DIR (${root}) does not exist`);
  });
  const dir = await realpath(join(base, folder)).catch(() => {
    throw new FileUnreadable('feed.folder', `${folder} does not exist under DMP_FEED_DIR`);
  });
  if (!dir.startsWith(base + sep)) throw new FileUnreadable('feed.folder', `${folder} leads out of DMP_FEED_DIR`);
  return dir;
}

/** The files of a drop folder, oldest first: plain files only (no links, no hidden, empty, half-written ones or job markers). */
export async function listFeedFiles(dir: string): Promise<FeedFile[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const files = await Promise.all(
    entries
      .filter((entry) => entry.isFile() && !NOT_DATA.test(entry.name))
      .map(async (entry) => {
        const info = await stat(join(dir, entry.name));
        return { name: entry.name, size: info.size, modifiedAt: new Date(Math.floor(info.mtimeMs)) };
      }),
  );
  // An empty file is nothing yet (just made, its writer about to write): it is read once it holds something.
  return files.filter((file) => file.size > 0).sort((a, b) => a.modifiedAt.getTime() - b.modifiedAt.getTime() || (a.name < b.name ? -1 : 1));
}

export function openFeedFile(dir: string, file: FeedFile): Readable {
  return createReadStream(join(dir, file.name));
}

/** Refuses a file that changed while it was read: its writer was not done, and the next attempt reads it whole. */
export async function checkUnchanged(dir: string, file: FeedFile): Promise<void> {
  const info = await stat(join(dir, file.name)).catch(() => null);
  if (!info || info.size !== file.size || Math.floor(info.mtimeMs) !== file.modifiedAt.getTime()) {
    throw new FileUnreadable(file.name, 'changed while it was read (still being written?)');
  }
}
