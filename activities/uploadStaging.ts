import { CsvError } from 'csv-parse';
import { prepareEvents, type FieldError, type PrepareOptions } from '../domain/collect';
import type { StoredEvent } from '../domain/event';
import { FileRefused, fileProblems, FileUnreadable, TransferBrokeOff, UPLOAD_REJECTIONS_KEPT, type UploadRejection } from '../domain/uploads';
import { NOTHING_IMPORTED, type UploadDoc, type UploadStore } from '../store/uploads';

/** While a file is read, its counts on the upload are brought up to date every this many chunks, or this often while chunks are staged. */
const PROGRESS_EVERY_CHUNKS = 25;
const PROGRESS_EVERY_MS = 30_000;
/**
 * A chunk is staged once its rows hold this much text, however few they are: wide rows (a record may
 * hold 64K characters) would otherwise make a chunk larger than a stored document may be. At three
 * bytes a character, with the names and hashes that become of it, well under 16 MB.
 */
const CHUNK_TEXT_CHARS = 2_000_000;

/**
 * The upload stopped receiving while its rows were still being staged: a later attempt of its
 * feed's fetch failed it (this one had been given up on, yet ran on). Abandoning removes its chunks.
 */
export class UploadSuperseded extends Error {
  constructor(uploadId: string) {
    super(`upload ${uploadId} is no longer receiving: a later attempt took its place`);
    this.name = 'UploadSuperseded';
  }
}

/** A data row of a file, numbered as in the file: the header is row 1 (a spreadsheet's row number). */
export interface NumberedRow {
  row: number;
  fields: string[];
}

/** What a batch of rows became: the events to stage, the rows refused, and how many events may not be profiled. */
export interface PreparedRows {
  events: StoredEvent[];
  rejections: UploadRejection[];
  nonProfiling: number;
}

/** One row as its mapping made it: an event of our shape, or why it was refused. */
export interface MappedRow {
  row: number;
  mapped: { event: unknown } | { errors: FieldError[] };
}

/**
 * Mapped rows as events of the source log: validated, normalized and hashed by `prepareEvents` like
 * every event that enters — raw emails and phones go no further than this. A refused row is reported
 * with its row number and, through `columnOf`, the column at fault.
 */
export function prepareMappedRows(rows: MappedRow[], columnOf: (path: string) => string, options: PrepareOptions): PreparedRows {
  const rejections: UploadRejection[] = [];
  const mapped: Array<{ row: number; event: unknown }> = [];
  for (const { row, mapped: result } of rows) {
    if ('errors' in result) rejections.push({ row, errors: result.errors });
    else mapped.push({ row, event: result.event });
  }
  const prepared = prepareEvents(
    mapped.map(({ event }) => event),
    options,
  );
  for (const { index, errors } of prepared.rejected) {
    rejections.push({ row: mapped[index].row, errors: errors.map((error) => ({ path: columnOf(error.path), message: error.message })) });
  }
  const events = prepared.accepted.map(({ event }) => event);
  return { events, rejections: rejections.sort((a, b) => a.row - b.row), nonProfiling: events.filter((event) => event.nonProfiling).length };
}

/** How one file's rows are read, once its header is known. */
export interface RowReader {
  prepare(rows: NumberedRow[]): PreparedRows | Promise<PreparedRows>;
}

/** A new upload, receiving. */
export function newUpload(uploadId: string, sourceId: string, at: Date): UploadDoc {
  return {
    _id: uploadId,
    sourceId,
    state: 'receiving',
    rowsReceived: 0,
    rowsRejected: 0,
    rowsNonProfiling: 0,
    rejections: [],
    chunks: 0,
    imported: NOTHING_IMPORTED,
    startedAt: at,
    receivedAt: null,
    finishedAt: null,
    error: null,
  };
}

/**
 * Stages the rows of one or more files into an upload as they stream in: each file's header is
 * read first, then rows are prepared and staged a chunk at a time (one chunk written while the next
 * is read). The same for a CRM file sent to the API and a feed's file pulled from a partner; the
 * import workflow then appends the staged chunks to the source log.
 */
export class UploadStaging {
  private readonly counts = { received: 0, rejected: 0, nonProfiling: 0, chunks: 0 };
  private readonly rejections: UploadRejection[] = [];
  private staging: Promise<void> = Promise.resolve();
  /** When progress was last written (the upload's start, before any). */
  private progressAt = Date.now();

  constructor(
    private readonly uploads: UploadStore,
    readonly upload: UploadDoc,
    private readonly chunkRows: number,
  ) {}

  /**
   * Reads one file's records, its header first (`readHeader` refuses it or says how its rows are
   * read). Blank lines keep their row number but are no records. `file` names the file in
   * rejections when an upload reads several; `lineNumbers` numbers rows as lines when the header
   * is not in the file (NDJSON).
   */
  async readFile(records: AsyncIterable<string[]>, readHeader: (header: string[]) => RowReader | { errors: FieldError[] }, options: { file?: string; lineNumbers?: boolean } = {}): Promise<void> {
    const { file } = options;
    let reader: RowReader | null = null;
    let row = options.lineNumbers ? -1 : 0;
    let rows: NumberedRow[] = [];
    let chars = 0;
    try {
      for await (const fields of records) {
        row++;
        if (!reader) {
          const read = readHeader(fields);
          if ('errors' in read) throw new FileRefused(read.errors);
          reader = read;
          continue;
        }
        if (fields.length === 1 && fields[0].trim() === '') continue;
        rows.push({ row, fields });
        for (const field of fields) chars += field.length;
        if (rows.length >= this.chunkRows || chars >= CHUNK_TEXT_CHARS) {
          await this.stage(reader, rows, file);
          rows = [];
          chars = 0;
        }
      }
    } catch (error) {
      // `records` counts the records read before the one that failed, the header included.
      if (error instanceof CsvError) throw new FileUnreadable(`${file ? `${file} ` : ''}row ${((error as CsvError & { records?: number }).records ?? 0) + 1}`, `not valid CSV (${error.code})`);
      throw error;
    }
    if (!reader) throw new FileRefused([{ path: file ?? '(body)', message: 'empty file: expected a header row' }]);
    await this.stage(reader, rows, file);
  }

  /**
   * Reads one file of several as `readFile` does, all or nothing: one refused for its header, or that
   * stops being readable partway (a broken quote, a line too long — what reading it again would meet
   * again), leaves none of its rows staged and is refused whole (`refuseFile`), so the other files go
   * on. Whether it was read.
   */
  async readFileWhole(records: AsyncIterable<string[]>, readHeader: (header: string[]) => RowReader | { errors: FieldError[] }, options: { file: string; lineNumbers?: boolean }): Promise<boolean> {
    // The previous file's last chunk is written (or its failure thrown) before this file's rows count.
    await this.staging;
    const before = { ...this.counts, rejections: this.rejections.length };
    try {
      await this.readFile(records, readHeader, options);
      return true;
    } catch (error) {
      const problems = error instanceof FileRefused || (error instanceof FileUnreadable && !(error instanceof TransferBrokeOff)) ? fileProblems(error) : null;
      if (!problems) throw error;
      await this.staging.catch(() => undefined);
      await this.uploads.dropChunks(this.upload._id, this.counts.chunks, before.chunks);
      Object.assign(this.counts, { received: before.received, rejected: before.rejected, nonProfiling: before.nonProfiling, chunks: before.chunks });
      this.rejections.length = before.rejections;
      this.staging = Promise.resolve();
      this.refuseFile(options.file, problems);
      return false;
    }
  }

  /**
   * One file of several refused whole (its header does not fit, it is empty): listed with the
   * rejections, its header as the row — past their bound too, as nothing else tells of it.
   */
  refuseFile(file: string, errors: FieldError[]): void {
    this.rejections.push({ file, row: 1, errors });
  }

  private async stage(reader: RowReader, rows: NumberedRow[], file: string | undefined): Promise<void> {
    const prepared = await reader.prepare(rows);
    this.counts.received += rows.length;
    this.counts.rejected += prepared.rejections.length;
    this.counts.nonProfiling += prepared.nonProfiling;
    const kept = prepared.rejections.slice(0, Math.max(0, UPLOAD_REJECTIONS_KEPT - this.rejections.length));
    this.rejections.push(...(file === undefined ? kept : kept.map((rejection) => ({ file, ...rejection }))));
    await this.staging;
    if (prepared.events.length === 0) return;
    // Checked before the chunk is written: a reader given up on while it hung stages nothing more once it runs again.
    if ((this.counts.chunks + 1) % PROGRESS_EVERY_CHUNKS === 0 || Date.now() - this.progressAt >= PROGRESS_EVERY_MS) await this.updateReceiving(this.received());
    const n = this.counts.chunks++;
    this.staging = this.uploads.stageChunk(this.upload._id, n, prepared.events);
    this.staging.catch(() => undefined); // awaited before the next chunk, and at the end
  }

  /** Every progress write also checks the upload is still this reader's to fill. */
  private async updateReceiving(set: Parameters<UploadStore['updateReceiving']>[1]): Promise<void> {
    this.progressAt = Date.now();
    if (!(await this.uploads.updateReceiving(this.upload._id, set))) throw new UploadSuperseded(this.upload._id);
  }

  private received() {
    return { rowsReceived: this.counts.received, rowsRejected: this.counts.rejected, rowsNonProfiling: this.counts.nonProfiling, rejections: this.rejections };
  }

  /** Every file is staged: the upload moves on to its import (`createdWith`: what a repeat under its key is compared by). */
  async complete(createdWith?: string): Promise<UploadDoc> {
    await this.staging;
    const received = { ...this.received(), chunks: this.counts.chunks, receivedAt: new Date(), ...(createdWith !== undefined && { createdWith }) };
    await this.updateReceiving({ ...received, state: 'importing' });
    return { ...this.upload, ...received, state: 'importing' };
  }

  /**
   * Reading stopped with `error`: an upload refused before any row was read leaves nothing behind;
   * otherwise it is failed with `reason`. Its staged chunks are removed either way.
   */
  async abandon(error: unknown, reason: string): Promise<void> {
    await this.staging.catch(() => undefined); // a chunk still being written is removed with the others
    if (error instanceof FileRefused && this.counts.received === 0) {
      await this.uploads.remove(this.upload._id);
    } else {
      // Removed before the upload reads as failed, so whoever sees it failed sees nothing staged; a
      // writer stopped in between leaves it receiving, and the stalled-upload sweep fails it.
      await this.uploads.dropChunks(this.upload._id, this.counts.chunks);
      await this.uploads.finish(this.upload._id, 'receiving', 'failed', reason, new Date());
    }
  }
}
