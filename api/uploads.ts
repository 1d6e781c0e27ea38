import { createHash } from 'node:crypto';
import type { Readable, Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { Router, type Request } from 'express';
import { parse } from 'csv-parse';
import { z } from 'zod';
import { newUpload, prepareMappedRows, UploadStaging, UploadSuperseded, type NumberedRow, type PreparedRows } from '../activities/uploadStaging';
import type { PrepareOptions } from '../domain/collect';
import {
  BoundedLines,
  columnOf,
  crmCsvOptions,
  crmRowToEvent,
  fileProblems,
  FileUnreadable,
  readCrmHeader,
  UploadListQuerySchema,
  UploadViewSchema,
  type CrmColumns,
  type CrmMapping,
  type UploadView,
} from '../domain/uploads';
import { crmImportWorkflowId } from '../domain/workflowIds';
import { logger } from '../logger';
import { SourceStore, type SourceDoc } from '../store/sources';
import { newUploadId, rowsImported, UploadStore, type UploadDoc } from '../store/uploads';
import { startCrmImport, startGated } from '../temporal/client';
import { StartGates, startGateKey } from '../store/startGates';
import { UploadKeys } from '../store/uploadKeys';
import { idForKey, IdempotencyKeySchema } from '../domain/idempotency';
import { idempotencyKeyOf, keyUsed } from './idempotency';
import type { OpenApiParts } from './openapi';
import { bodySent, parseOr400, ProblemError } from './problem';
import { requireSource } from './requireSource';
import type { RouterDeps } from './routerDeps';

const DECOMPRESSORS: Record<string, () => Transform> = { gzip: createGunzip, deflate: createInflate, br: createBrotliDecompress };

/** Rows of a CRM file as events of the source log, each mapped through the source's mapping (see prepareMappedRows). */
export function prepareCrmRows(rows: NumberedRow[], columns: CrmColumns, uploadId: string, options: PrepareOptions): PreparedRows {
  return prepareMappedRows(
    rows.map(({ row, fields }) => ({ row, mapped: crmRowToEvent(fields, row, columns, uploadId) })),
    (path) => columnOf(path, columns),
    options,
  );
}

export function uploadView(doc: UploadDoc, databaseName: string): UploadView {
  return {
    uploadId: doc._id,
    sourceId: doc.sourceId,
    state: doc.state,
    rowsReceived: doc.rowsReceived,
    rowsImported: rowsImported(doc.imported),
    rowsDuplicate: doc.imported.duplicates,
    rowsErased: doc.imported.erased ?? 0,
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

/**
 * A file the upload refuses: one whose header lacks what the source's mapping names does not fit
 * that source as it is now (409: change the file or the mapping); a body that holds no file (empty,
 * or not decompressible) is a bad request (400); text that stops being CSV cannot be processed (422).
 */
function invalidFile(errors: Array<{ path: string; message: string }>): ProblemError {
  if (errors.every((error) => error.path.startsWith('mapping.'))) {
    return new ProblemError(409, 'file-does-not-fit-mapping', "The file's header does not fit the source's mapping", errors);
  }
  const status = errors.every((error) => error.path === '(body)') ? 400 : 422;
  return new ProblemError(status, 'invalid-file', 'The file cannot be read as CSV', errors);
}

/**
 * Opens the request body as a stream of CSV text, once checked: refuses other types, charsets and
 * encodings (415) at once; the stream opens (and flows) when its reader is ready for its errors.
 */
function csvBody(req: Request): () => Readable {
  const unsupported = (path: string, message: string) => new ProblemError(415, 'unsupported-media-type', 'Send the file as text/csv', [{ path, message }]);
  // No body at all, whatever its type says (or without one): an empty file.
  if (!bodySent(req)) throw invalidFile([{ path: '(body)', message: 'empty file: expected a header row' }]);
  if (!req.is('text/csv')) throw unsupported('headers.content-type', 'expected text/csv');
  const charset = /;\s*charset="?([^";]+)"?/i.exec(req.headers['content-type'] ?? '')?.[1]?.toLowerCase();
  if (charset && charset !== 'utf-8' && charset !== 'utf8' && charset !== 'us-ascii') throw unsupported('headers.content-type', `charset ${charset}; expected utf-8`);
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding === 'identity') return () => req;
  const decompress = Object.hasOwn(DECOMPRESSORS, encoding) ? DECOMPRESSORS[encoding] : undefined;
  if (!decompress) throw unsupported('headers.content-encoding', `${encoding}; expected gzip, deflate, br or none`);
  return () => req.pipe(decompress());
}

/** What a repeat under an upload's Idempotency-Key is compared by: a hash of the file's text (as inflated), read alongside whoever reads the body. */
function fingerprintOf(body: Readable): Promise<string> {
  const sha = createHash('sha256');
  body.on('data', (chunk: Buffer) => sha.update(chunk));
  return new Promise((resolve, reject) => {
    body.on('end', () => resolve(sha.digest('base64url').slice(0, 22)));
    body.on('error', reject);
  });
}

/** An upload's key document (store/uploadKeys): per source, so two sources may use the same key. */
function uploadKeyId(sourceId: string, key: string): string {
  return idForKey('uplkey', `${sourceId}\u0000${key}`);
}

/** A keyed upload receiving with no progress for this long was left by its reader (progress is written at least every 30 seconds while rows are staged). */
const KEYED_STALL_MS = 10 * 60_000;

/** Ends reading a request whose answer is already decided: the rest of its body is read and dropped. */
function discardRest(req: Request, body: Readable): void {
  req.unpipe();
  if (body !== req) body.destroy();
  req.resume();
}

/** Uploads of CRM files into `crm` sources: received as a stream, hashed and staged at the edge, imported by a workflow each. */
export function uploadsRouter({ store, temporal, config, admin }: RouterDeps): Router {
  const uploads = new UploadStore(store);
  const gates = new StartGates(store);
  const keys = new UploadKeys(store);
  const sources = new SourceStore(store);
  const databaseName = store.db.databaseName;
  const router = Router();

  async function requireCrmSource(id: string): Promise<SourceDoc & { mapping: CrmMapping }> {
    const source = await requireSource(sources, id);
    if (source.kind !== 'crm' || !source.mapping) {
      throw new ProblemError(409, 'not-a-crm-source', 'Uploads go to crm sources', [{ path: 'kind', message: `source ${id} is of kind "${source.kind}"; uploads go to sources of kind "crm"` }]);
    }
    return source as SourceDoc & { mapping: CrmMapping };
  }

  /**
   * Reads the file as it streams in and stages its rows into `upload`, recorded before reading (a
   * parse error may come before the header is handed over, and is still this upload's; see
   * UploadStaging). Resolves with the upload once every row is staged. A file refused for its
   * header leaves nothing; one that stops being readable later leaves a failed upload, named by its
   * row, and no staged rows.
   */
  async function receive(req: Request, openBody: () => Readable, source: SourceDoc & { mapping: CrmMapping }, upload: UploadDoc): Promise<UploadDoc> {
    const body = openBody();
    const parser = parse(crmCsvOptions(source.mapping));
    const interrupted = () => parser.destroy(new FileUnreadable('(body)', 'the upload was interrupted'));
    req.on('error', interrupted);
    req.on('close', () => {
      if (!req.complete) interrupted();
    });
    if (body !== req) body.on('error', (error) => parser.destroy(new FileUnreadable('(body)', `the body could not be decompressed: ${error.message}`)));
    // Errors reach the reading loop through its iterator; this keeps one that comes after it (a late abort) from going unhandled.
    parser.on('error', () => undefined);
    const fingerprint = upload.keyId === undefined ? null : fingerprintOf(body);
    fingerprint?.catch(() => undefined); // a body that fails fails the file too, reported by the parser
    const bounded = new BoundedLines();
    bounded.on('error', (error) => parser.destroy(error));
    body.pipe(bounded).pipe(parser);
    const options: PrepareOptions = { now: upload.startedAt, defaultPhoneRegion: config.DMP_DEFAULT_PHONE_REGION, consentPolicy: source.consent };
    const staging = new UploadStaging(uploads, upload, config.DMP_CHUNK_MAX_EVENTS);
    try {
      await staging.readFile(parser, (header) => {
        const read = readCrmHeader(header, source.mapping);
        return 'errors' in read ? read : { prepare: (rows) => prepareCrmRows(rows, read.columns, upload._id, options) };
      });
      return await staging.complete(fingerprint ? await fingerprint : undefined);
    } catch (error) {
      discardRest(req, body);
      const problems = fileProblems(error);
      await staging.abandon(error, problems ? `${problems[0].path}: ${problems[0].message}` : 'the file could not be staged');
      if (error instanceof UploadSuperseded) {
        throw new ProblemError(409, 'upload-superseded', 'The upload was failed while its file was arriving', [{ path: '(body)', message: `upload ${upload._id} made no progress for 10 minutes and was sent again under its Idempotency-Key` }]);
      }
      throw problems ? invalidFile(problems) : error;
    }
  }

  /** Starts a received upload's import. Nothing will import an abandoned start: recorded as failed, its staged rows removed. */
  async function startImport(upload: UploadDoc, source: SourceDoc): Promise<void> {
    await startGated(
      gates,
      startGateKey.import(upload._id),
      () => startCrmImport(temporal, databaseName, upload._id, source, config),
      async () => {
        await uploads.finish(upload._id, 'importing', 'failed', 'its import workflow could not be started', new Date());
        await uploads.dropChunks(upload._id, upload.chunks);
      },
    );
  }

  /**
   * The upload a request under an Idempotency-Key makes (`fresh`, recorded before its key is
   * claimed, so a key never names an upload not yet made), or the one it repeats. The key passes
   * to this request from an upload that imported nothing: gone (refused before any row), failed
   * before its import began, or left receiving by a reader that stopped. One still receiving is a 409.
   */
  async function keyedUpload(source: SourceDoc, key: string): Promise<{ fresh: UploadDoc } | { repeat: UploadDoc }> {
    const keyId = uploadKeyId(source._id, key);
    const ours: UploadDoc = { ...newUpload(newUploadId(), source._id, new Date()), keyId };
    await uploads.create(ours);
    try {
      for (;;) {
        const held = await keys.claim(keyId, ours._id);
        if (held === ours._id) return { fresh: ours };
        const upload = await uploads.get(held);
        if (upload?.state === 'receiving') {
          if ((upload.progressAt ?? upload.startedAt).getTime() > Date.now() - KEYED_STALL_MS) {
            throw new ProblemError(409, 'upload-in-progress', 'The upload under this Idempotency-Key is still being received', [{ path: 'headers.idempotency-key', message: `upload ${upload._id} is receiving its file; ask again once it is received` }]);
          }
          // Failed only while still receiving: one its reader moved on to its import meanwhile is looked at again.
          if (!(await uploads.finish(held, 'receiving', 'failed', 'abandoned: its file stopped arriving; it was sent again under its Idempotency-Key', new Date()))) continue;
        } else if (upload && !(await importedNothing(upload))) {
          await uploads.remove(ours._id);
          return { repeat: upload };
        }
        if (await keys.takeOver(keyId, held, ours._id)) return { fresh: ours };
      }
    } catch (error) {
      await uploads.remove(ours._id);
      throw error;
    }
  }

  /** A failed upload imported nothing when it failed while receiving, or its import's start was given up (its workflow never began). */
  async function importedNothing(upload: UploadDoc): Promise<boolean> {
    return upload.state === 'failed' && (upload.receivedAt === null || (await gates.outcome(startGateKey.import(upload._id))) === 'abandoned');
  }

  /** The same file sent again under its key: read whole and compared, then answered as the first (its import started if that one stopped before). */
  async function repeatUpload(req: Request, openBody: () => Readable, source: SourceDoc, upload: UploadDoc): Promise<UploadDoc> {
    const body = openBody();
    const fingerprint = await new Promise<string>((resolve, reject) => {
      req.on('close', () => !req.complete && reject(invalidFile([{ path: '(body)', message: 'the upload was interrupted' }])));
      fingerprintOf(body).then(resolve, (error: Error) => {
        discardRest(req, body);
        reject(invalidFile([{ path: '(body)', message: `the body could not be decompressed: ${error.message}` }]));
      });
    });
    if (fingerprint !== upload.createdWith) throw keyUsed(`it came with another file (upload ${upload._id}); a new file needs a new key`);
    if (upload.state === 'importing') await startImport(upload, source);
    return (await uploads.get(upload._id)) ?? upload;
  }

  router.post('/v1/sources/:id/uploads', admin, async (req, res) => {
    const source = await requireCrmSource(String(req.params.id));
    const openBody = csvBody(req);
    const key = idempotencyKeyOf(req);
    const keyed = key === undefined ? null : await keyedUpload(source, key);
    if (keyed && 'repeat' in keyed) {
      const upload = await repeatUpload(req, openBody, source, keyed.repeat);
      res.status(202).location(`/v1/sources/${source._id}/uploads/${upload._id}`).json(uploadView(upload, databaseName));
      return;
    }
    let upload = keyed?.fresh;
    if (!upload) {
      upload = newUpload(newUploadId(), source._id, new Date());
      await uploads.create(upload);
    }
    upload = await receive(req, openBody, source, upload);
    await startImport(upload, source);
    logger.info({ sourceId: source._id, uploadId: upload._id, workflowId: crmImportWorkflowId(databaseName, upload._id), rows: upload.rowsReceived, rejected: upload.rowsRejected }, 'upload received');
    res.status(202).location(`/v1/sources/${source._id}/uploads/${upload._id}`).json(uploadView(upload, databaseName));
  });

  router.get('/v1/sources/:id/uploads', admin, async (req, res) => {
    const source = await requireSource(sources, String(req.params.id));
    const query = parseOr400(UploadListQuerySchema, req.query, 'uploads query');
    res.json({ uploads: (await uploads.listForSource(source._id, query.limit)).map((doc) => uploadView(doc, databaseName)) });
  });

  router.get('/v1/sources/:id/uploads/:uploadId', admin, async (req, res) => {
    const source = await requireSource(sources, String(req.params.id));
    const uploadId = String(req.params.uploadId);
    const doc = await uploads.get(uploadId);
    if (!doc || doc.sourceId !== source._id) throw new ProblemError(404, 'upload-not-found', 'No such upload', [{ path: 'params.uploadId', message: `no upload ${uploadId} of source ${source._id}` }]);
    res.json(uploadView(doc, databaseName));
  });

  return router;
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
      'A client that may send a file twice (its answer lost) sends an `Idempotency-Key`: the same file again under the key answers with the upload it made (starting its import',
      'if that request stopped before); until that upload is received whole, a 409. A key whose upload imported nothing (refused, interrupted, not started, or left receiving',
      'for 10 minutes by a stopped API) passes to the next upload under it. Keys are per source, and kept as long as their upload\'s record.',
    ].join(' '),
    security,
    request: { params: sourceParam, headers: z.object({ 'idempotency-key': IdempotencyKeySchema.optional() }), body: { description: 'The CSV file', required: true, content: { 'text/csv': { schema: z.string().min(1).openapi({ example: 'customer_id,email\nc-1,ada@example.com\n' }) } } } },
    responses: {
      202: {
        description: 'Every row read and staged; the import runs in the background. Follow `Location`.',
        ...json(UploadViewSchema),
        links: { upload: { operationId: 'getUpload', parameters: { id: '$request.path.id', uploadId: '$response.body#/uploadId' } } },
      },
      400: problem('An empty file, or a body that could not be inflated or was cut off (`(body)`), or an invalid Idempotency-Key (`headers.idempotency-key`)'),
      409: problem(
        'Not a crm source (`kind`); the header does not fit the source\'s mapping: it lacks a mapped column (`mapping.identities.email: column "Email" is not in the header`) or has it twice; or, under an Idempotency-Key (`headers.idempotency-key`), the upload it made is still receiving (`upload-in-progress`) or came with another file (`idempotency-key-reused`), or this upload was failed while its file arrived because it made no progress for 10 minutes and was sent again under its key (`upload-superseded`)',
      ),
      ...admin,
      404: problem('No such source'),
      415: problem('Not `text/csv` or not UTF-8 (`headers.content-type`), or an unknown `Content-Encoding` (`headers.content-encoding`)'),
      422: problem('Text that stops being CSV, naming the row (`row <n>`): nothing was imported'),
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
    responses: { 200: { description: 'The upload', ...json(UploadViewSchema) }, ...admin, 404: problem('No such source or upload (the records of uploads ended more than DMP_SOURCE_HISTORY_DAYS ago are removed, except a source’s newest ended one and the one its feed’s last pull read)') },
  });
}
