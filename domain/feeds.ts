import { createHash } from 'node:crypto';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import type { FieldError } from './collect';
import { setOwn } from './fieldNames';
import { SECRET_SET } from './secrets';
import { INPUT_IDENTITY_TYPES, type InputIdentityType, partnerUserIdProblem } from './identity';
import type { EventInput } from './schemas';
import { SegmentScheduleSchema } from './segments';
import { compareText, FLAT_LIST_MAX, storableText } from './text';
import { ColumnName, locateColumns, MappingFields, refuseRawPiiTraits, UploadRejectionSchema } from './uploads';

extendZodWithOpenApi(z);

// ---- configuration ---------------------------------------------------------------------------

const FEED_FORMATS = ['csv', 'ndjson'] as const;

/**
 * A sync partner's user ids as a feed's identity column: mapped to our cookie ids through the match
 * table. The partner must exist when the source is created (the API checks it against the partner
 * store, which holds only valid partner ids); domain/partners is not imported here, since it
 * reaches domain/schemas, which imports this module.
 */
const PartnerIdentitySchema = z.templateLiteral(['partner:', z.string().min(1).max(32)]);
type PartnerIdentity = z.infer<typeof PartnerIdentitySchema>;

/** The keys the document allows (OpenAPI 3.1's `propertyNames`, which the metadata type does not know). */
const IDENTITY_KEYS = { propertyNames: { anyOf: [{ enum: [...INPUT_IDENTITY_TYPES] }, { pattern: '^partner:.{1,32}$' }] } };

const FeedMappingSchema = z
  .object({
    identities: z
      .partialRecord(z.union([z.enum(INPUT_IDENTITY_TYPES), PartnerIdentitySchema], { error: `one of ${INPUT_IDENTITY_TYPES.join(', ')}, or partner:<partner id>` }), ColumnName)
      .refine((columns) => Object.keys(columns).length > 0, 'map at least one identity column')
      .openapi({
        minProperties: 1,
        ...IDENTITY_KEYS,
        description:
          'Identity type → column, e.g. `{"email_sha256": "hashed_email", "partner:ttd": "tdid"}`. `partner:<partner id>` holds a cookie-sync partner\'s user ids: each lands on our cookie id matched with it (the newest, from the match table) and carries the partner\'s id as identity `partner_uid` (`<partner>:<id>`); what becomes of a row whose only ids have no match is `unmatched`.',
        example: { email_sha256: 'hashed_email', 'partner:ttd': 'tdid' },
      }),
    traits: MappingFields.traits,
    eventType: z.string().min(1).max(128).default('feed_record').openapi({ description: 'The event type each row is recorded as' }),
    unmatched: z
      .enum(['skip', 'hold'])
      .default('skip')
      .openapi({
        description:
          'A row whose only ids are a partner id the match table does not hold: `skip` reads it and counts it as unmatched; `hold` also imports it, onto a profile of its own keyed by identity `partner_uid`, which the partner\'s later cookie sync of that id joins to our cookie in the identity graph (when the partner has a `sourceId`) and which exports to the partner\'s id type send. Either way the pull counts the row in `rowsUnmatched`.',
      }),
    delimiter: MappingFields.delimiter.openapi({ description: 'The CSV delimiter (CSV feeds)' }),
  })
  .strict()
  .superRefine(refuseRawPiiTraits)
  .superRefine((mapping, ctx) => {
    // One partner id becomes the row's one cookie id and partner_uid: a second, or a column of either beside it, would contradict it.
    const partners = Object.keys(mapping.identities).filter((type) => type.startsWith('partner:'));
    if (partners.length > 1) ctx.addIssue({ code: 'custom', path: ['identities'], message: 'at most one partner id column' });
    if (partners.length > 0 && mapping.identities.cookie_id !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['identities', 'cookie_id'], message: 'a partner id column already gives the row its cookie id' });
    }
    if (partners.length > 0 && mapping.identities.partner_uid !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['identities', 'partner_uid'], message: 'a partner id column already gives the row its partner_uid' });
    }
    if (partners.length === 0 && mapping.unmatched === 'hold') ctx.addIssue({ code: 'custom', path: ['unmatched'], message: 'holds rows of a partner id column (`partner:<partner id>`): map one' });
  })
  .openapi('FeedMapping');

const FeedTaxonomySchema = z
  .object({
    column: ColumnName.openapi({ description: "The column holding the row's segment ids in the provider's taxonomy (e.g. IAB Audience Taxonomy ids)" }),
    provider: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lowercase letters, digits, `_` or `-`, at most 64')
      .openapi({ description: 'Names the trait the ids land in: `provider_segments.<provider>`, a list segment rules test with `contains`', example: 'iab' }),
    separator: z.string().min(1).max(8).default('|').openapi({ description: 'Between the ids in one cell (NDJSON lists are read as lists)' }),
  })
  .strict()
  .openapi('FeedTaxonomy');

/**
 * A drop folder under DMP_FEED_DIR: a relative path that stays inside it. One pattern (the document
 * shows only one), which also keeps out what the store cannot hold (NUL) and line breaks.
 */
const FolderSchema = z
  .string()
  .max(512)
  .regex(/^(?![/\\])(?!.*(^|[/\\])\.\.?([/\\]|$))[^\u0000\n\r\u2028\u2029]+$/, 'a relative path under DMP_FEED_DIR, without `.` or `..` parts, line breaks or NUL')
  .openapi({ example: 'partner-x/audiences' });

const FeedConfigFields = {
  url: z
    .url({ protocol: /^https?$/, error: 'an http or https URL' })
    .max(2048)
    .optional()
    .openapi({ description: 'Where the file is fetched (GET): https, or http to a host in DMP_DESTINATION_ALLOWLIST; never a private, loopback or link-local address unless allowlisted' }),
  folder: FolderSchema.optional().openapi({ description: 'A drop folder under DMP_FEED_DIR: every new file in it (by name, size and modification time) is imported once' }),
  format: z.enum(FEED_FORMATS).default('csv').openapi({ description: '`csv` (a header row first) or `ndjson` (one JSON object per line, read by the mapped names); gzip is decompressed (told by its first bytes)' }),
  schedule: SegmentScheduleSchema.openapi({ description: 'When the feed is pulled: `{"every": "PT1H"}` or `{"cron": "0 * * * *"}` (a Temporal Schedule)' }),
  mapping: FeedMappingSchema,
  cursorColumn: ColumnName.optional().openapi({
    description:
      'A column whose values order the rows (ISO timestamps, or numbers): a pull imports only rows at or past the cursor the last completed pull reached, and a backfill re-reads a window of it',
  }),
  taxonomy: FeedTaxonomySchema.optional(),
  bearerToken: storableText(4096).min(1).optional().openapi({ description: 'Sent as `Authorization: Bearer …` to the URL; never shown again' }),
};

export const FeedConfigSchema = z
  .object(FeedConfigFields)
  .strict()
  .superRefine((feed, ctx) => {
    if (feed.url === undefined && feed.folder === undefined) ctx.addIssue({ code: 'custom', path: ['url'], message: 'give the feed a url or a folder' });
    if (feed.url !== undefined && feed.folder !== undefined) ctx.addIssue({ code: 'custom', path: ['folder'], message: 'a url or a folder, not both' });
    if (feed.folder !== undefined && feed.bearerToken !== undefined) ctx.addIssue({ code: 'custom', path: ['bearerToken'], message: 'a token is for a url' });
  })
  .openapi('FeedConfig', {
    description: "A second- or third-party feed: a file pulled on a schedule from a partner's URL or a drop folder, incrementally, and read through the mapping",
    // The checks above, as the document states them.
    oneOf: [{ required: ['url'] }, { required: ['folder'] }],
    // OpenAPI 3.1 takes JSON Schema's dependentRequired; the generator's types predate it.
    ...({ dependentRequired: { bearerToken: ['url'] } } as object),
  });
export type FeedConfig = z.infer<typeof FeedConfigSchema>;

/** The trait a provider's segment ids land in. */
function providerSegmentsTrait(provider: string): string {
  return `provider_segments.${provider}`;
}

// ---- cursors ---------------------------------------------------------------------------------

const INTEGER = /^-?\d+$/;
const DECIMAL = /^-?\d+(\.\d+)?$/;
/**
 * An ISO 8601 date, or date and time (`T` or a space between), with an optional fraction and an
 * optional offset: `Z`, `±HH`, `±HHMM` or `±HH:MM`, a space before it allowed (as databases print it).
 */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?\s?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/;

/** The time an ISO 8601 cursor value names (one without an offset read as UTC, whatever the process's zone), or NaN — also for a day or time that does not exist. */
function cursorTime(value: string): number {
  const match = ISO_TIME.exec(value);
  if (!match) return NaN;
  const [year, month, day, hour = 0, minute = 0, second = 0] = match.slice(1, 7).map((part) => (part === undefined ? undefined : Number(part))) as number[];
  const millis = Number((match[7] ?? '').padEnd(3, '0').slice(0, 3));
  const at = Date.UTC(year, month - 1, day, hour, minute, second, millis);
  const date = new Date(at);
  if (date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) return NaN;
  const offset = match[8];
  if (!offset || offset === 'Z') return at;
  const [hours, minutes = '0'] = [offset.slice(1, 3), offset.slice(3).replace(':', '')];
  if (Number(hours) > 23 || Number(minutes) > 59) return NaN;
  return at - (offset[0] === '-' ? -1 : 1) * (Number(hours) * 60 + Number(minutes)) * 60_000;
}

/** What a feed's cursor holds: numbers or times, never both (a stray one of the other would sort anywhere). */
export type CursorKind = 'number' | 'time';

/** A cursor value's kind, or null for one that is neither. */
export function cursorKind(value: string): CursorKind | null {
  return DECIMAL.test(value) ? 'number' : Number.isNaN(cursorTime(value)) ? null : 'time';
}

/**
 * What a cursor value must be: a number, or an ISO 8601 date or time — and of the kind the feed's
 * cursor holds, when known. Text ordered as text would let one stray cell (`N/A`, a shifted column)
 * sort past every time and stall the feed.
 */
export function cursorValueProblem(value: string, kind: CursorKind | null = null): string | null {
  const found = cursorKind(value);
  if (found === null) return 'is not a number or an ISO 8601 date or time, so it cannot order rows';
  if (kind !== null && found !== kind) return `is a ${found} where this feed's cursor values are ${kind}s`;
  return null;
}

/**
 * Orders cursor values: numbers by value (integers exactly, however long), ISO 8601 times by the
 * time they name (`…09:00:00.5Z` after `…09:00:00Z`, offsets counted, UTC without one), anything
 * else as text.
 */
export function compareCursors(a: string, b: string): number {
  if (INTEGER.test(a) && INTEGER.test(b)) return Math.sign(Number(BigInt(a) - BigInt(b)));
  if (DECIMAL.test(a) && DECIMAL.test(b)) return Math.sign(Number(a) - Number(b));
  const [at, bt] = [cursorTime(a), cursorTime(b)];
  if (!Number.isNaN(at) && !Number.isNaN(bt)) return Math.sign(at - bt) || compareText(subMillisecond(a), subMillisecond(b));
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The digits of a time's fraction past the millisecond, padded alike: what orders two times in one millisecond. */
function subMillisecond(value: string): string {
  return (ISO_TIME.exec(value)?.[7] ?? '').slice(3).padEnd(12, '0');
}

/** The cursor values a pull reads, both ends included; null leaves an end open. */
export interface CursorWindow {
  from: string | null;
  to: string | null;
  /** The kind of value the feed's cursor holds: its ends', else the first a pull read (see `windowKind`); not stored. */
  kind?: CursorKind | null;
  /** Event ids of rows at `from` imported already, which the pull skips (see FeedStateDoc `cursorSeen`); not stored. */
  seen?: ReadonlySet<string>;
}

/** The kind of value a window's ends hold (null when open at both ends, or of no kind: a cursor saved before kinds were checked). */
export function windowKind(window: CursorWindow): CursorKind | null {
  const end = window.from ?? window.to;
  return end === null ? null : cursorKind(end);
}

export function inCursorWindow(value: string, window: CursorWindow): boolean {
  return (window.from === null || compareCursors(value, window.from) >= 0) && (window.to === null || compareCursors(value, window.to) <= 0);
}

/** The later of two cursor values (null is before every value). */
export function laterCursor(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareCursors(a, b) >= 0 ? a : b;
}

/**
 * The rows a feed remembers as imported at its cursor once a pull completes (at most `max`): the
 * pull's, when it moved the cursor on; both, when it read up to the same value; else the feed's.
 */
export function seenAtCursorAfter(saved: { cursor: string | null; seen?: readonly string[] }, read: { cursor: string | null; seen?: readonly string[] }, max: number): string[] {
  if (read.cursor === null) return [...(saved.seen ?? [])];
  const order = saved.cursor === null ? 1 : compareCursors(read.cursor, saved.cursor);
  if (order > 0) return [...(read.seen ?? [])];
  if (order < 0) return [...(saved.seen ?? [])];
  return [...new Set([...(saved.seen ?? []), ...(read.seen ?? [])])].slice(0, max);
}

const CursorValue = storableText(256)
  .min(1)
  .refine((value) => cursorValueProblem(value) === null, 'must be a number or an ISO 8601 date or time');

export const BackfillRequestSchema = z
  .object({
    from: CursorValue.openapi({ description: 'The first cursor value re-read (included)', example: '2026-03-01T00:00:00Z' }),
    to: CursorValue.openapi({ description: 'The last cursor value re-read (included)', example: '2026-03-02T00:00:00Z' }),
  })
  .strict()
  .refine((window) => cursorKind(window.from) === cursorKind(window.to), { path: ['to'], message: 'must be of the kind `from` is: both numbers, or both times' })
  .refine((window) => compareCursors(window.from, window.to) <= 0, { path: ['to'], message: 'must not come before `from`' })
  .openapi('BackfillRequest');

// ---- rows ------------------------------------------------------------------------------------

/** Where a feed's mapped columns are in one file's header. */
export interface FeedColumns {
  width: number;
  identities: Array<{ type: InputIdentityType; column: string; index: number }>;
  partner: { partnerId: string; column: string; index: number; hold: boolean } | null;
  traits: Array<{ trait: string; column: string; index: number }>;
  taxonomy: { trait: string; column: string; index: number; separator: string } | null;
  cursor: { column: string; index: number } | null;
  eventType: string;
}

type FeedReading = Pick<FeedConfig, 'mapping' | 'cursorColumn' | 'taxonomy'>;

/** Every column a feed reads, with the config field that names it. */
function wantedColumns(feed: FeedReading): Array<{ column: string; path: string }> {
  return [
    ...Object.entries(feed.mapping.identities).map(([type, column]) => ({ column: column as string, path: `feed.mapping.identities.${type}` })),
    ...Object.keys(feed.mapping.traits).map((column) => ({ column, path: `feed.mapping.traits.${column}` })),
    ...(feed.taxonomy ? [{ column: feed.taxonomy.column, path: 'feed.taxonomy.column' }] : []),
    ...(feed.cursorColumn ? [{ column: feed.cursorColumn, path: 'feed.cursorColumn' }] : []),
  ];
}

/** The names an NDJSON feed reads from each object: its header, as a CSV file would have it. */
export function feedColumnNames(feed: FeedReading): string[] {
  return [...new Set(wantedColumns(feed).map(({ column }) => column))];
}

/** Finds every column a feed reads in a file's header; a missing or repeated one names the config field that wants it. */
export function readFeedHeader(header: string[], feed: FeedReading): { columns: FeedColumns } | { errors: FieldError[] } {
  const wanted = wantedColumns(feed);
  const located = locateColumns(header, wanted);
  if ('errors' in located) return located;
  const indexOf = (column: string) => located.indexes[wanted.findIndex((entry) => entry.column === column)];
  const identities: FeedColumns['identities'] = [];
  let partner: FeedColumns['partner'] = null;
  for (const [type, column] of Object.entries(feed.mapping.identities) as Array<[InputIdentityType | PartnerIdentity, string]>) {
    if (type.startsWith('partner:')) partner = { partnerId: type.slice('partner:'.length), column, index: indexOf(column), hold: feed.mapping.unmatched === 'hold' };
    else identities.push({ type: type as InputIdentityType, column, index: indexOf(column) });
  }
  return {
    columns: {
      width: header.length,
      identities,
      partner,
      traits: Object.entries(feed.mapping.traits).map(([column, trait]) => ({ trait, column, index: indexOf(column) })),
      taxonomy: feed.taxonomy ? { trait: providerSegmentsTrait(feed.taxonomy.provider), column: feed.taxonomy.column, index: indexOf(feed.taxonomy.column), separator: feed.taxonomy.separator } : null,
      cursor: feed.cursorColumn ? { column: feed.cursorColumn, index: indexOf(feed.cursorColumn) } : null,
      eventType: feed.mapping.eventType,
    },
  };
}

/**
 * A feed row's event id: a hash of the cells the feed reads (identities, partner id, traits,
 * segments, cursor), so the same row read again — a backfill, a retried pull, a file sent twice —
 * is a duplicate of the first, and a row the partner changed is a new event.
 */
export function feedRowEventId(fields: string[], columns: FeedColumns): string {
  const indexes = [
    ...columns.identities.map(({ index }) => index),
    ...(columns.partner ? [columns.partner.index] : []),
    ...columns.traits.map(({ index }) => index),
    ...(columns.taxonomy ? [columns.taxonomy.index] : []),
    ...(columns.cursor ? [columns.cursor.index] : []),
  ];
  return `fr_${createHash('sha256')
    .update(JSON.stringify(indexes.map((index) => fields[index].trim())))
    .digest('base64url')
    .slice(0, 32)}`;
}

/** What one feed row is for a pull. */
export type FeedRow =
  /** `unmatched`: held under its partner id alone (the mapping's `unmatched: "hold"`). */
  | { event: EventInput; unmatched?: true }
  /** `unmatched`: a row the mapping would hold that cannot be. */
  | { errors: FieldError[]; unmatched?: true }
  /** Outside the pull's cursor window, or at its start and imported already: read, not imported. */
  | { skipped: true }
  /** Its only identity is a partner id the match table does not hold, and the mapping skips such rows: not imported. */
  | { unmatched: true };

/**
 * One feed row as an event of our shape (validated, hashed and stamped afterwards by
 * `prepareEvents`): a row outside the cursor window is skipped; its identity cells become
 * identities, its partner id the cookie id the match table holds for it (`cookieIdOf`) and its
 * `partner_uid` (or, unmatched, is skipped or held as the mapping says), its trait
 * cells traits, its segment ids one list trait. Refusals name the column at fault.
 */
export function feedRowToEvent(fields: string[], columns: FeedColumns, window: CursorWindow, cookieIdOf: (partnerUserId: string) => string | null): FeedRow {
  if (fields.length !== columns.width) return { errors: [{ path: '(row)', message: `has ${fields.length} fields; the header has ${columns.width}` }] };
  if (columns.cursor) {
    const cursor = fields[columns.cursor.index].trim();
    if (cursor === '') return { errors: [{ path: columns.cursor.column, message: 'is empty: every row needs its cursor value' }] };
    const problem = cursorValueProblem(cursor, window.kind ?? null);
    if (problem !== null) return { errors: [{ path: columns.cursor.column, message: problem }] };
    if (!inCursorWindow(cursor, window)) return { skipped: true };
    if (window.seen?.size && window.from !== null && compareCursors(cursor, window.from) === 0 && window.seen.has(feedRowEventId(fields, columns))) return { skipped: true };
  }
  const identities: EventInput['identities'] = {};
  for (const { type, index } of columns.identities) {
    const value = fields[index].trim();
    if (value !== '') identities[type] = value;
  }
  const partnerUserId = columns.partner ? fields[columns.partner.index].trim() : '';
  let unmatched = false;
  if (columns.partner && partnerUserId !== '') {
    const cookieId = cookieIdOf(partnerUserId);
    if (cookieId !== null) identities.cookie_id = cookieId;
    unmatched = Object.keys(identities).length === 0;
    if (unmatched && !columns.partner.hold) return { unmatched: true };
    // As a sync does: an id the graph refuses (a placeholder, say) still maps through the match table.
    const partnerUid = `${columns.partner.partnerId}:${partnerUserId}`;
    const problem = partnerUserIdProblem(partnerUid);
    if (problem === null) identities.partner_uid = partnerUid;
    else if (unmatched) return { errors: [{ path: columns.partner.column, message: `cannot be held: ${problem}` }], unmatched: true };
  }
  if (Object.keys(identities).length === 0) {
    const named = [...columns.identities.map(({ column }) => column), ...(columns.partner ? [columns.partner.column] : [])];
    return { errors: [{ path: '(row)', message: `no identity: ${named.map((column) => `"${column}"`).join(', ')} ${named.length === 1 ? 'is' : 'are all'} empty` }] };
  }
  const traits: Record<string, string | string[]> = {};
  for (const { trait, index } of columns.traits) {
    const value = fields[index].trim();
    if (value !== '') setOwn(traits, trait, value);
  }
  if (columns.taxonomy) {
    const { trait, index, separator } = columns.taxonomy;
    const ids = [...new Set(fields[index].split(separator).map((id) => id.trim()).filter((id) => id !== ''))];
    if (ids.length > FLAT_LIST_MAX) return { errors: [{ path: columns.taxonomy.column, message: `holds ${ids.length} segment ids; a profile keeps at most ${FLAT_LIST_MAX} of a provider's` }] };
    if (ids.length > 0) setOwn(traits, trait, ids);
  }
  const event: EventInput = { id: feedRowEventId(fields, columns), type: columns.eventType, identities };
  if (Object.keys(traits).length > 0) event.traits = traits;
  return unmatched ? { event, unmatched: true } : { event };
}

/**
 * The cursor value of a row the pull reads (in its window), or null: how far a pull has read, whatever
 * became of the row — unless the row is not one to trust it from (its fields do not fit the header,
 * or its value is no cursor value).
 */
export function rowCursor(fields: string[], columns: FeedColumns, window: CursorWindow): string | null {
  if (!columns.cursor || fields.length !== columns.width) return null;
  const value = fields[columns.cursor.index].trim();
  return value !== '' && cursorValueProblem(value, window.kind ?? null) === null && inCursorWindow(value, window) ? value : null;
}

/** Names the column an event field came from (`identities.cookie_id` → the partner id column), so a rejection points into the file. */
export function feedColumnOf(path: string, columns: FeedColumns): string {
  for (const { type, column } of columns.identities) if (path === `identities.${type}`) return column;
  if (columns.partner && (path === 'identities.cookie_id' || path === 'identities.partner_uid')) return columns.partner.column;
  const traits = [...columns.traits, ...(columns.taxonomy ? [columns.taxonomy] : [])];
  for (const { trait, column } of traits) if (path === `traits.${trait}` || path.startsWith(`traits.${trait}.`)) return column;
  return path;
}

/**
 * One NDJSON object as the cells of a row whose header is `names`: text as it is, numbers and
 * booleans as text, null or absent as empty, a list's items joined by `separator` (how a segment
 * list is read), anything else as its JSON.
 */
export function ndjsonFields(record: Record<string, unknown>, names: string[], separator: string): string[] {
  return names.map((name) => {
    const value = Object.hasOwn(record, name) ? record[name] : undefined;
    if (value === undefined || value === null) return '';
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'boolean') return String(value);
    if (Array.isArray(value) && value.every((item) => typeof item !== 'object' || item === null)) return value.map((item) => (item === null ? '' : String(item))).join(separator);
    return JSON.stringify(value);
  });
}

// ---- pulls -----------------------------------------------------------------------------------

export const FEED_TRIGGERS = ['schedule', 'api', 'backfill'] as const;
export type FeedTrigger = (typeof FEED_TRIGGERS)[number];

export const FeedPullStateSchema = z.enum(['running', 'completed', 'failed']).openapi({
  description: '`running`: fetching, staging or importing; `completed` (also when the partner had nothing new: HTTP 304, no new file); `failed` (see `error`; the next scheduled pull tries again)',
});
export type FeedPullState = z.infer<typeof FeedPullStateSchema>;

const Iso = z.string().openapi({ format: 'date-time' });
const Count = z.number().int();

export const FeedPullViewSchema = z
  .object({
    pullId: z.string(),
    sourceId: z.string(),
    trigger: z.enum(FEED_TRIGGERS).openapi({ description: '`schedule`, `api` (`POST …/pulls`) or `backfill` (`POST …/backfill`)' }),
    state: FeedPullStateSchema,
    window: z
      .object({ from: z.string().nullable(), to: z.string().nullable() })
      .openapi({ description: "Cursor values read, both ends included: from the feed's cursor when the pull began (or a backfill's `from`) to a backfill's `to`; null ends are open" }),
    http: z
      .object({
        status: Count.openapi({ description: 'The status of the last response (304: nothing new since the last completed pull)' }),
        etag: z.string().nullable(),
        lastModified: z.string().nullable(),
      })
      .nullable()
      .openapi({ description: 'A URL feed: what the partner last answered' }),
    files: z
      .array(z.object({ name: z.string(), size: Count, modifiedAt: Iso }))
      .openapi({ description: 'A folder feed: the new files read (a backfill reads them all), the first 1,000 of them' }),
    filesRead: Count.openapi({ description: 'A folder feed: how many new files it read' }),
    cursor: z.string().nullable().openapi({ description: 'The highest cursor value read; the feed continues from it once the pull completes (a backfill leaves the feed where it was)' }),
    rowsReceived: Count.openapi({ description: 'Data rows read (headers not counted)' }),
    rowsSkipped: Count.openapi({ description: 'Rows outside the cursor window, and rows at its start that an earlier pull imported' }),
    rowsUnmatched: Count.openapi({ description: 'Rows whose only identity is a partner id without a match in the cookie-sync match table' }),
    rowsRejected: Count,
    rowsImported: Count.openapi({ description: 'Rows appended to the source log as new events, each exactly once' }),
    rowsDuplicate: Count.openapi({ description: 'Rows an earlier pull imported already (found by their event id within DMP_DEDUPE_WINDOW_HOURS)' }),
    rowsErased: Count.openapi({ description: 'Rows naming an identity an erasure tombstoned: dropped, never appended, and counted on that request as late events' }),
    rowsNonProfiling: Count,
    rejections: z.array(UploadRejectionSchema).openapi({ description: 'The first rows refused, with the column and the reason' }),
    attempts: z
      .array(z.object({ attempt: Count, at: Iso, error: z.string() }))
      .openapi({ description: 'Attempts that failed and were retried with backoff (a 5xx, a timeout, a cut-off or broken file: nothing of them was imported)' }),
    uploadId: z.string().nullable().openapi({ description: 'The upload its rows were staged in and imported from' }),
    workflowId: z.string(),
    startedAt: Iso,
    finishedAt: Iso.nullable(),
    error: z.string().nullable(),
  })
  .openapi('FeedPull');
export type FeedPullView = z.infer<typeof FeedPullViewSchema>;

export const FeedStatusSchema = z
  .object({
    ...FeedConfigFields,
    url: z.string().optional().openapi({ description: 'Where the file is fetched; each value of its query reads `"(set)"` (a signed URL\'s signature is a credential)' }),
    bearerToken: z.literal(SECRET_SET).optional().openapi({ description: 'Set; never shown' }),
    scheduleId: z.string().openapi({ description: 'The Temporal Schedule that starts its pulls (paused with the source)' }),
    cursor: z.string().nullable().openapi({ description: 'Where the next pull reads from (the highest cursor value of the last completed pulls)' }),
    etag: z.string().nullable().openapi({ description: 'Sent as If-None-Match by the next pull' }),
    lastModified: z.string().nullable().openapi({ description: 'Sent as If-Modified-Since by the next pull' }),
    filesImported: Count.openapi({ description: 'A folder feed: files of the folder imported already' }),
    lastSuccessAt: Iso.nullable(),
    lastPull: FeedPullViewSchema.nullable(),
  })
  .openapi('FeedStatus');
export type FeedStatus = z.infer<typeof FeedStatusSchema>;
