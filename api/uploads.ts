import type { Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { Router, type Request } from 'express';
import { CsvError, parse } from 'csv-parse';
import { z } from 'zod';
import { prepareEvents, type PrepareOptions } from '../domain/collect';
import type { StoredEvent } from '../domain/event';
import {
  columnOf,
  crmCsvOptions,
  crmRowToEvent,
  readCrmHeader,
  UPLOAD_REJECTIONS_KEPT,
  UploadListQuerySchema,
  UploadViewSchema,
  type CrmColumns,
  type CrmMapping,
  type UploadRejection,
  type UploadView,
} from '../domain/uploads';
import { crmImportWorkflowId } from '../domain/workflowIds';
import { logger } from '../logger';
import { SourceStore, type SourceDoc } from '../store/sources';
import { newUploadId, UploadStore, type UploadDoc } from '../store/uploads';
import { startCrmImport } from '../temporal/client';
import type { OpenApiParts } from './openapi';
import { parseOr400, ProblemError } from './problem';
import type { RouterDeps } from './routerDeps';

/** While a file is received, its counts on the upload are brought up to date every this many chunks. */
const PROGRESS_EVERY_CHUNKS = 25;

const DECOMPRESSORS: Record<string, () => Transform> = { gzip: createGunzip, deflate: createInflate, br: createBrotliDecompress };

/** What a batch of rows became: the events to stage, the rows refused, and how many events may not be profiled. */
export interface PreparedRows {
  events: StoredEvent[];
  rejections: UploadRejection[];
  nonProfiling: number;
}

/**
 * Rows of a CRM file as events of the source log: each row mapped through the source's mapping, then
 * validated, normalized and hashed by `prepareEvents` like every event that enters — raw emails and
 * phones go no further than this. A refused row is reported with its row number and the column at fault.
 */
export function prepareCrmRows(rows: Array<{ row: number; fields: string[] }>, columns: CrmColumns, uploadId: string, options: PrepareOptions): PreparedRows {
  const rejections: UploadRejection[] = [];
  const mapped: Array<{ row: number; event: unknown }> = [];
  for (const { row, fields } of rows) {
    const result = crmRowToEvent(fields, row, columns, uploadId);
    if ('errors' in result) rejections.push({ row, errors: result.errors });
    else mapped.push({ row, event: result.event });
  }
  const prepared = prepareEvents(mapped.map(({ event }) => event), options);
  for (const { index, errors } of prepared.rejected) {
    rejections.push({ row: mapped[index].row, errors: errors.map((error) => ({ path: columnOf(error.path, columns), message: error.message })) });
  }
  const events = prepared.accepted.map(({ event }) => event);
  return { events, rejections: rejections.sort((a, b) => a.row - b.row), nonProfiling: events.filter((event) => event.nonProfiling).length };
}

export function uploadView(doc: UploadDoc, databaseName: string): UploadView {
  return {
    uploadId: doc._id,
    sourceId: doc.sourceId,
    state: doc.state,
    rowsReceived: doc.rowsReceived,
    rowsImported: doc.imported.rows,
    rowsRejected: doc.rowsRejected,
    rowsNonProfiling: doc.rowsNonProfiling,
    rejections: doc.rejections,
    workflowId: crmImportWorkflowId(databaseName, doc._id),
    startedAt: doc.startedAt.toISOString(),
    receivedAt: doc.receivedAt && doc.receivedAt.toISOString(),
    finishedAt: doc.finishedAt && doc.finishedAt.toISOString(),
    error: doc.error,
  };
}

function invalidFile(errors: Array<{ path: string; message: string }>): ProblemError {
  return new ProblemError(400, 'invalid-file', 'The file cannot be read with the source mapping', errors);
}

/** The request body as a stream of CSV text: refuses other types, charsets and encodings (415). */
function csvBody(req: Request): Readable {
  const unsupported = (path: string, message: string) => new ProblemError(415, 'unsupported-media-type', 'Send the file as text/csv', [{ path, message }]);
  if (!req.is('text/csv')) throw unsupported('headers.content-type', 'expected text/csv');
  const charset = /;\s*charset="?([^";]+)"?/i.exec(req.headers['content-type'] ?? '')?.[1]?.toLowerCase();
  if (charset && charset !== 'utf-8' && charset !== 'utf8' && charset !== 'us-ascii') throw unsupported('headers.content-type', `charset ${charset}; expected utf-8`);
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding === 'identity') return req;
  const decompress = Object.hasOwn(DECOMPRESSORS, encoding) ? DECOMPRESSORS[encoding] : undefined;
  if (!decompress) throw unsupported('headers.content-encoding', `${encoding}; expected gzip, deflate, br or none`);
  return req.pipe(decompress());
}

/** Ends reading a request whose answer is already decided: the rest of its body is read and dropped. */
function discardRest(req: Request, body: Readable): void {
  req.unpipe();
  if (body !== req) body.destroy();
  req.resume();
}

/** Why reading the file stopped, said without the file's content (csv-parse may quote a field). */
class FileUnreadable extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** Uploads of CRM files into `crm` sources: received as a stream, hashed and staged at the edge, imported by a workflow each. */
export function uploadsRouter({ store, temporal, config, admin }: RouterDeps): Router {
  const uploads = new UploadStore(store);
  const sources = new SourceStore(store);
  const databaseName = store.db.databaseName;
  const router = Router();

  async function requireSource(id: string): Promise<SourceDoc> {
    const source = await sources.get(id);
    if (!source) throw new ProblemError(404, 'source-not-found', 'No such source', [{ path: 'params.id', message: `no source ${id}` }]);
    return source;
  }

  async function requireCrmSource(id: string): Promise<SourceDoc & { mapping: CrmMapping }> {
    const source = await requireSource(id);
    if (source.kind !== 'crm' || !source.mapping) {
      throw new ProblemError(400, 'not-a-crm-source', 'Uploads go to crm sources', [{ path: 'kind', message: `source ${id} is of kind "${source.kind}"; uploads go to sources of kind "crm"` }]);
    }
    return source as SourceDoc & { mapping: CrmMapping };
  }

  /**
   * Reads the file as it streams in: the header is checked against the mapping, then rows are
   * prepared and staged a chunk at a time (one chunk written while the next is read). Resolves with
   * the upload once every row is staged. A file refused for its header leaves nothing; one that
   * stops being readable later leaves a failed upload, named by its row, and no staged rows.
   */
  async function receive(req: Request, source: SourceDoc & { mapping: CrmMapping }): Promise<UploadDoc> {
    const body = csvBody(req);
    const parser = parse(crmCsvOptions(source.mapping));
    const interrupted = () => parser.destroy(new FileUnreadable('(body)', 'the upload was interrupted'));
    req.on('error', interrupted);
    req.on('close', () => {
      if (!req.complete) interrupted();
    });
    if (body !== req) body.on('error', (error) => parser.destroy(new FileUnreadable('(body)', `the body could not be decompressed: ${error.message}`)));
    // Errors reach the reading loop through its iterator; this keeps one that comes after it (a late abort) from going unhandled.
    parser.on('error', () => undefined);

    // Recorded before reading: a parse error may come before the header is handed over, and is still this upload's.
    const upload: UploadDoc = {
      _id: newUploadId(),
      sourceId: source._id,
      state: 'receiving',
      rowsReceived: 0,
      rowsRejected: 0,
      rowsNonProfiling: 0,
      rejections: [],
      chunks: 0,
      imported: { chunks: 0, rows: 0, resumed: 0 },
      startedAt: new Date(),
      receivedAt: null,
      finishedAt: null,
      error: null,
    };
    await uploads.create(upload);
    body.pipe(parser);
    const options: PrepareOptions = { now: upload.startedAt, defaultPhoneRegion: config.DMP_DEFAULT_PHONE_REGION, consentPolicy: source.consent };
    let columns: CrmColumns | null = null;
    let row = 0;
    let rows: Array<{ row: number; fields: string[] }> = [];
    let staging: Promise<void> = Promise.resolve();
    const counts = { received: 0, rejected: 0, nonProfiling: 0, chunks: 0 };
    const rejections: UploadRejection[] = [];
    /** Set when the file is refused before any row: then it leaves nothing behind. */
    let refusedWhole = false;
    const refuse = (errors: Array<{ path: string; message: string }>) => {
      refusedWhole = true;
      return invalidFile(errors);
    };

    const stage = async (cols: CrmColumns) => {
      const prepared = prepareCrmRows(rows, cols, upload._id, options);
      counts.received += rows.length;
      counts.rejected += prepared.rejections.length;
      counts.nonProfiling += prepared.nonProfiling;
      rejections.push(...prepared.rejections.slice(0, UPLOAD_REJECTIONS_KEPT - rejections.length));
      rows = [];
      await staging;
      if (prepared.events.length === 0) return;
      const n = counts.chunks++;
      staging = uploads.stageChunk(upload._id, n, prepared.events);
      staging.catch(() => undefined); // awaited before the next chunk, and at the end
      if (counts.chunks % PROGRESS_EVERY_CHUNKS === 0) await uploads.update(upload._id, { rowsReceived: counts.received, rowsRejected: counts.rejected, rowsNonProfiling: counts.nonProfiling, rejections });
    };

    try {
      for await (const fields of parser as AsyncIterable<string[]>) {
        row++;
        if (!columns) {
          const header = readCrmHeader(fields, source.mapping);
          if ('errors' in header) throw refuse(header.errors);
          columns = header.columns;
          continue;
        }
        // A blank line keeps its row number but is no record.
        if (fields.length === 1 && fields[0].trim() === '') continue;
        rows.push({ row, fields });
        if (rows.length >= config.DMP_CHUNK_MAX_EVENTS) await stage(columns);
      }
      if (!columns) throw refuse([{ path: '(body)', message: 'empty file: expected a header row' }]);
      await stage(columns);
      await staging;
    } catch (error) {
      discardRest(req, body);
      await staging.catch(() => undefined); // a chunk still being written is removed with the others
      const problem = unreadable(error);
      if (refusedWhole) {
        await uploads.remove(upload._id);
      } else {
        await uploads.finish(upload._id, 'receiving', 'failed', problem ? `${problem.errors?.[0].path}: ${problem.errors?.[0].message}` : 'the file could not be staged', new Date());
        await uploads.dropChunks(upload._id, counts.chunks);
      }
      throw problem ?? error;
    }
    const received = { rowsReceived: counts.received, rowsRejected: counts.rejected, rowsNonProfiling: counts.nonProfiling, rejections, chunks: counts.chunks, receivedAt: new Date() };
    await uploads.update(upload._id, { ...received, state: 'importing' });
    return { ...upload, ...received, state: 'importing' };
  }

  router.post('/v1/sources/:id/uploads', admin, async (req, res) => {
    const source = await requireCrmSource(String(req.params.id));
    const upload = await receive(req, source);
    try {
      await startCrmImport(temporal, databaseName, upload._id, source, config);
    } catch (error) {
      // Nothing will import it: recorded as failed, its staged rows removed.
      await uploads.finish(upload._id, 'importing', 'failed', 'its import workflow could not be started', new Date());
      await uploads.dropChunks(upload._id, upload.chunks);
      throw error;
    }
    logger.info({ sourceId: source._id, uploadId: upload._id, workflowId: crmImportWorkflowId(databaseName, upload._id), rows: upload.rowsReceived, rejected: upload.rowsRejected }, 'upload received');
    res.status(202).location(`/v1/sources/${source._id}/uploads/${upload._id}`).json(uploadView(upload, databaseName));
  });

  router.get('/v1/sources/:id/uploads', admin, async (req, res) => {
    const source = await requireSource(String(req.params.id));
    const query = parseOr400(UploadListQuerySchema, req.query, 'uploads query');
    res.json({ uploads: (await uploads.listForSource(source._id, query.limit)).map((doc) => uploadView(doc, databaseName)) });
  });

  router.get('/v1/sources/:id/uploads/:uploadId', admin, async (req, res) => {
    const source = await requireSource(String(req.params.id));
    const uploadId = String(req.params.uploadId);
    const doc = await uploads.get(uploadId);
    if (!doc || doc.sourceId !== source._id) throw new ProblemError(404, 'upload-not-found', 'No such upload', [{ path: 'params.uploadId', message: `no upload ${uploadId} of source ${source._id}` }]);
    res.json(uploadView(doc, databaseName));
  });

  return router;
}

/** The 400 for a file that cannot be read (null for other failures, e.g. of the store): never quoting the file. */
function unreadable(error: unknown): ProblemError | null {
  if (error instanceof ProblemError) return error;
  if (error instanceof FileUnreadable) return invalidFile([{ path: error.path, message: error.message }]);
  // `records` counts the records read before the one that failed, the header included.
  if (error instanceof CsvError) return invalidFile([{ path: `row ${((error as CsvError & { records?: number }).records ?? 0) + 1}`, message: `not valid CSV (${error.code})` }]);
  return null;
}

export function registerUploadPaths({ registry, problem, json, adminKey }: OpenApiParts): void {
  const security = [{ [adminKey]: [] }];
  const admin = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  const sourceParam = z.object({ id: z.string() });
  registry.registerPath({
    method: 'post',
    path: '/v1/sources/{id}/uploads',
    summary: "Upload a CRM file (CSV) into a crm source: read as it streams in, mapped by the source's `mapping`, emails and phones hashed before anything is stored; then imported by a durable workflow",
    description: [
      'The body is the file itself (`Content-Type: text/csv`, UTF-8; optionally `Content-Encoding: gzip`, `deflate` or `br`), of any length: it is never held whole.',
      "The first row is the header; every column the mapping names must be in it. Each row becomes one event of the mapping's `eventType`, stamped with the upload's start,",
      "with the non-empty identity cells as identities and the non-empty trait cells as traits (text, as in the file). Rows are checked one by one: a refused row",
      '(a bad email, no identity, a wrong number of fields, …) is counted and reported with its row number (the header is row 1) and column, and does not stop the others.',
      'The answer comes once every row is staged; the import workflow (`crm-import:<store>:<uploadId>`) then appends the rows to the source log in checkpointed steps',
      '— each row under the event id `<uploadId>:<row>`, so a resumed import appends no row twice — and the source drains them into profiles.',
      'Every upload is a fresh set of records: sending the same file again imports its rows again, into the same profiles (found by their identities), with their traits',
      "as the newer file has them; only the count of the `eventType` event grows, by one per file that lists the person.",
    ].join(' '),
    security,
    request: { params: sourceParam, body: { description: 'The CSV file', required: true, content: { 'text/csv': { schema: z.string().openapi({ example: 'customer_id,email\nc-1,ada@example.com\n' }) } } } },
    responses: {
      202: {
        description: 'Every row read and staged; the import runs in the background. Follow `Location`.',
        ...json(UploadViewSchema),
        links: { upload: { operationId: 'getUpload', parameters: { id: '$request.path.id', uploadId: '$response.body#/uploadId' } } },
      },
      400: problem('Not a crm source (`kind`); the header lacks a mapped column (`mapping.identities.email: column "Email" is not in the header`) or has it twice; an empty file (`(body)`); text that is not CSV (`row <n>`); a body that could not be inflated or was cut off (`(body)`)'),
      ...admin,
      404: problem('No such source'),
      415: problem('Not `text/csv` or not UTF-8 (`headers.content-type`), or an unknown `Content-Encoding` (`headers.content-encoding`)'),
      503: problem('The store or Temporal is unavailable; nothing was imported (send the file again)'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/sources/{id}/uploads',
    summary: "A source's uploads, newest first",
    security,
    request: { params: sourceParam, query: UploadListQuerySchema },
    responses: {
      200: { description: 'Uploads', ...json(z.object({ uploads: z.array(UploadViewSchema) }).openapi('Uploads')) },
      400: problem('Invalid query (`limit`)'),
      ...admin,
      404: problem('No such source'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/sources/{id}/uploads/{uploadId}',
    operationId: 'getUpload',
    summary: 'Where an upload stands: rows received, imported and refused (the first ones with their reasons)',
    security,
    request: { params: z.object({ id: z.string(), uploadId: z.string() }) },
    responses: { 200: { description: 'The upload', ...json(UploadViewSchema) }, ...admin, 404: problem('No such source or upload') },
  });
}
