import { Transform, type TransformCallback } from 'node:stream';
import { z } from 'zod';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import type { Options as CsvOptions } from 'csv-parse';
import type { FieldError } from './collect';
import { setOwn } from './fieldNames';
import { INPUT_IDENTITY_TYPES, type InputIdentityType } from './identity';
import { keyedRecord } from './keyedRecord';
import type { EventInput } from './schemas';

extendZodWithOpenApi(z);

export const ColumnName = z.string().min(1).max(128);
const TraitName = z.string().min(1).max(128);

/** Identity types whose raw values are personal data: their columns never become traits. */
const RAW_PII_TYPES: readonly InputIdentityType[] = ['email', 'phone'];

/** What every file mapping (a CRM source's, a feed's) has besides its identity columns. */
export const MappingFields = {
  traits: keyedRecord(ColumnName, TraitName)
    .default({})
    .openapi({
      default: {},
      description:
        'Column → trait name, e.g. `{"Tier": "loyalty_tier"}`; other columns are ignored. A column mapped as a raw `email` or `phone` cannot also be a trait; a trait named `email` or `phone` becomes that identity, hashed, unless the mapping has one of that kind (a value that is none refuses the row). Email addresses in other traits, and phone numbers in phone-named ones, are stored as `(redacted)`.',
    }),
  delimiter: z.enum([',', ';', '\t', '|']).default(','),
};

/** A trait is stored as it is: raw emails and phones would reach the store through one. */
export function refuseRawPiiTraits(mapping: { identities: Partial<Record<string, string>>; traits: Record<string, string> }, ctx: z.RefinementCtx): void {
  for (const type of RAW_PII_TYPES) {
    const column = mapping.identities[type];
    if (column !== undefined && Object.hasOwn(mapping.traits, column)) {
      ctx.addIssue({ code: 'custom', path: ['traits', column], message: `column "${column}" holds raw ${type}s (identities.${type}); it cannot also be a trait` });
    }
  }
}

/**
 * How a CRM source's CSV uploads become events: which columns hold identities (raw emails and
 * phones are hashed at the edge, as they stream in), which become traits, and what the row's event
 * is called. One mapping per source, so every upload of a customer file means the same thing.
 */
export const CrmMappingSchema = z
  .object({
    identities: z
      .partialRecord(z.enum(INPUT_IDENTITY_TYPES), ColumnName)
      .refine((columns) => Object.keys(columns).length > 0, 'map at least one identity column')
      .openapi({ minProperties: 1, additionalProperties: false, description: 'Identity type → column, e.g. `{"crm_id": "customer_id", "email": "Email"}`', example: { crm_id: 'customer_id', email: 'email' } }),
    traits: MappingFields.traits,
    eventType: z.string().min(1).max(128).default('crm_record').openapi({ description: 'The event type each row is recorded as' }),
    delimiter: MappingFields.delimiter,
  })
  .strict()
  .superRefine(refuseRawPiiTraits)
  .openapi('CrmMapping');
export type CrmMapping = z.infer<typeof CrmMappingSchema>;

// ---- reading a file --------------------------------------------------------------------------

/** A record longer than this is refused: an unclosed quote must not read the rest of the file into one field. */
const MAX_RECORD_CHARS = 65_536;

/**
 * How csv-parse reads a source's files: its delimiter, a byte-order mark dropped, rows of another
 * length kept (and refused one by one, not the whole file), stray quotes inside a field read as text.
 */
export function crmCsvOptions(mapping: Pick<CrmMapping, 'delimiter'>): CsvOptions {
  return { delimiter: mapping.delimiter, bom: true, relax_column_count: true, relax_quotes: true, max_record_size: MAX_RECORD_CHARS };
}

/**
 * A line longer than this is refused before csv-parse reads it: its record bound counts the text of
 * fields only, so a line of delimiters alone would grow one record (an array of empty fields) until
 * memory runs out. Room for a record at its bound with a delimiter after every character.
 */
const MAX_LINE_BYTES = 8 * MAX_RECORD_CHARS;

/** A file's bytes passed on as they are, failing (FileUnreadable, naming the line) at the first line longer than MAX_LINE_BYTES. */
export class BoundedLines extends Transform {
  private line = 1;
  private length = 0;
  private lastByte = -1;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte !== 0x0a && byte !== 0x0d) continue;
      if (this.length + i - start > MAX_LINE_BYTES) break;
      // A CRLF pair ends one line, not two.
      if (!(byte === 0x0a && (i > 0 ? chunk[i - 1] : this.lastByte) === 0x0d)) this.line++;
      this.length = 0;
      start = i + 1;
    }
    this.length += chunk.length - start;
    if (chunk.length > 0) this.lastByte = chunk[chunk.length - 1];
    if (this.length > MAX_LINE_BYTES) return callback(new FileUnreadable(`line ${this.line}`, `longer than ${MAX_LINE_BYTES} bytes`));
    callback(null, chunk);
  }
}

/** Where the mapped columns are in one file's header. */
export interface CrmColumns {
  /** Fields a row must have: the header's. */
  width: number;
  identities: Array<{ type: InputIdentityType; column: string; index: number }>;
  traits: Array<{ trait: string; column: string; index: number }>;
  eventType: string;
}

/**
 * Where each wanted column is in a file's header (names trimmed, compared exactly). A column that
 * is missing, or that appears twice, is an error naming the mapping field that wants it.
 */
export function locateColumns(header: string[], wanted: Array<{ column: string; path: string }>): { indexes: number[] } | { errors: FieldError[] } {
  const names = header.map((name) => name.trim());
  const errors: FieldError[] = [];
  const indexes = wanted.map(({ column, path }) => {
    const count = names.filter((name) => name === column).length;
    if (count === 0) errors.push({ path, message: `column "${column}" is not in the header` });
    if (count > 1) errors.push({ path, message: `column "${column}" appears ${count} times in the header` });
    return names.indexOf(column);
  });
  return errors.length > 0 ? { errors } : { indexes };
}

/** Finds every column a CRM mapping names in a file's header. */
export function readCrmHeader(header: string[], mapping: CrmMapping): { columns: CrmColumns } | { errors: FieldError[] } {
  const identities = Object.entries(mapping.identities) as Array<[InputIdentityType, string]>;
  const traits = Object.entries(mapping.traits);
  const located = locateColumns(header, [
    ...identities.map(([type, column]) => ({ column, path: `mapping.identities.${type}` })),
    ...traits.map(([column]) => ({ column, path: `mapping.traits.${column}` })),
  ]);
  if ('errors' in located) return located;
  const at = (n: number) => located.indexes[n];
  return {
    columns: {
      width: header.length,
      identities: identities.map(([type, column], n) => ({ type, column, index: at(n) })),
      traits: traits.map(([column, trait], n) => ({ trait, column, index: at(identities.length + n) })),
      eventType: mapping.eventType,
    },
  };
}

/** A row's event id: fixed by its upload and row, so appending it again is a duplicate of the first append. */
export function crmEventId(uploadId: string, row: number): string {
  return `${uploadId}:${row}`;
}

/**
 * One CSV row as an event of our shape (validated, hashed and stamped afterwards by `prepareEvents`,
 * like every event that enters): its non-empty identity cells as identities, its non-empty trait
 * cells as traits (text, as in the file; an empty cell leaves the trait as it was). `row` is the
 * row's number in the file, the header being row 1 — a spreadsheet's row number.
 */
export function crmRowToEvent(fields: string[], row: number, columns: CrmColumns, uploadId: string): { event: EventInput } | { errors: FieldError[] } {
  if (fields.length !== columns.width) {
    return { errors: [{ path: '(row)', message: `has ${fields.length} fields; the header has ${columns.width}` }] };
  }
  const identities: EventInput['identities'] = {};
  for (const { type, index } of columns.identities) {
    const value = fields[index].trim();
    if (value !== '') identities[type] = value;
  }
  if (Object.keys(identities).length === 0) {
    return { errors: [{ path: '(row)', message: `no identity: ${columns.identities.map(({ column }) => `"${column}"`).join(', ')} ${columns.identities.length === 1 ? 'is' : 'are all'} empty` }] };
  }
  const traits: Record<string, string> = {};
  for (const { trait, index } of columns.traits) {
    const value = fields[index].trim();
    if (value !== '') setOwn(traits, trait, value);
  }
  const event: EventInput = { id: crmEventId(uploadId, row), type: columns.eventType, identities };
  if (Object.keys(traits).length > 0) event.traits = traits;
  return { event };
}

/** Names the column an event field came from (`identities.email` → `Email`), so a rejection points into the file. */
export function columnOf(path: string, columns: CrmColumns): string {
  for (const { type, column } of columns.identities) if (path === `identities.${type}`) return column;
  for (const { trait, column } of columns.traits) if (path === `traits.${trait}` || path.startsWith(`traits.${trait}.`)) return column;
  return path;
}

/** A file refused before any of its rows was read (a header without a mapped column, an empty file). */
export class FileRefused extends Error {
  constructor(readonly errors: FieldError[]) {
    super(errors.map((error) => `${error.path}: ${error.message}`).join('; '));
  }
}

/** Why reading a file stopped, said without the file's content (csv-parse may quote a field). */
export class FileUnreadable extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** A file whose transfer broke off (a connection, a read): unlike its content, reading it again may go through. */
export class TransferBrokeOff extends FileUnreadable {}

/** What is wrong with a file, for its reader (null for other failures, e.g. of the store): never quoting the file. */
export function fileProblems(error: unknown): FieldError[] | null {
  if (error instanceof FileRefused) return error.errors;
  if (error instanceof FileUnreadable) return [{ path: error.path, message: error.message }];
  return null;
}

// ---- uploads ---------------------------------------------------------------------------------

/** Rejected rows kept on an upload, the first ones of the file; `rowsRejected` counts them all. */
export const UPLOAD_REJECTIONS_KEPT = 100;

export const UploadStateSchema = z.enum(['receiving', 'importing', 'completed', 'failed']).openapi({
  description: '`receiving`: the file is being read and its rows staged; `importing`: staged, the import workflow appends the rows to the source log; `completed`; `failed` (see `error`).',
});
export type UploadState = z.infer<typeof UploadStateSchema>;

export const UploadRejectionSchema = z.object({
  file: z.string().optional().openapi({ description: 'The file the row is in, when the upload read several (a drop-folder feed)' }),
  row: z.number().int().openapi({ description: "The row's number in the file, the header being row 1 (a spreadsheet's row number); in an NDJSON file, its line number" }),
  errors: z.array(z.object({ path: z.string().openapi({ description: 'The column (as the header names it), or `(row)` for the row as a whole' }), message: z.string() })),
});
export type UploadRejection = z.infer<typeof UploadRejectionSchema>;

const Iso = z.string().openapi({ format: 'date-time' });

export const UploadViewSchema = z
  .object({
    uploadId: z.string(),
    sourceId: z.string(),
    state: UploadStateSchema,
    rowsReceived: z.number().int().openapi({ description: 'Data rows read from the file (the header not counted)' }),
    rowsImported: z.number().int().openapi({ description: 'Rows appended to the source log as events, each exactly once (a resumed import counts the rows an interrupted attempt appended)' }),
    rowsDuplicate: z
      .number()
      .int()
      .openapi({ description: "Rows whose event id the source log held already from an earlier import (a feed's rows pulled again within DMP_DEDUPE_WINDOW_HOURS): not imported again" }),
    rowsErased: z
      .number()
      .int()
      .openapi({ description: 'Rows naming an identity an erasure tombstoned (POST /v1/privacy/requests): dropped, never appended, and counted on that request as late events' }),
    rowsRejected: z.number().int().openapi({ description: 'Rows refused; the first ones are listed in `rejections`' }),
    rowsNonProfiling: z.number().int().openapi({ description: "Of the rows kept, those the source's consent policy keeps from profiling (a CRM source usually sets `consent.mode: not_required`)" }),
    rejections: z.array(UploadRejectionSchema).openapi({ description: `The first ${UPLOAD_REJECTIONS_KEPT} rows refused, with the column and the reason` }),
    workflowId: z.string().openapi({ description: 'The import workflow (one per upload)' }),
    startedAt: Iso,
    receivedAt: Iso.nullable().openapi({ description: 'When the whole file was staged' }),
    finishedAt: Iso.nullable(),
    error: z.string().nullable(),
  })
  .openapi('Upload');
export type UploadView = z.infer<typeof UploadViewSchema>;

export const UploadListQuerySchema = z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) });
