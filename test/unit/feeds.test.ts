import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { prepareMappedRows } from '../../activities/uploadStaging';
import { feedRecords } from '../../connectors/feedFiles';
import {
  BackfillRequestSchema,
  compareCursors,
  cursorValueProblem,
  windowKind,
  FeedConfigSchema,
  feedColumnOf,
  feedRowToEvent,
  inCursorWindow,
  laterCursor,
  ndjsonFields,
  readFeedHeader,
  rowCursor,
  seenAtCursorAfter,
  type FeedColumns,
  type FeedConfig,
} from '../../domain/feeds';
import { sha256Hex } from '../../domain/identity';
import { FileUnreadable } from '../../domain/uploads';

const HEADER = ['tdid', 'hashed_email', 'income', 'segments', 'updated_at', 'notes'];
const FEED: FeedConfig = FeedConfigSchema.parse({
  url: 'https://partner.example/audience.csv',
  schedule: { every: 'PT1H' },
  mapping: { identities: { 'partner:ttd': 'tdid', email_sha256: 'hashed_email' }, traits: { income: 'income_band' } },
  cursorColumn: 'updated_at',
  taxonomy: { column: 'segments', provider: 'iab' },
});
const OPEN = { from: null, to: null };
const EMAIL_HASH = sha256Hex('ada@example.com');

function columnsOf(header: string[] = HEADER, feed: FeedConfig = FEED): FeedColumns {
  const read = readFeedHeader(header, feed);
  if ('errors' in read) throw new Error(JSON.stringify(read.errors));
  return read.columns;
}

/** The match table as the rows see it: partner user id → our newest cookie id. */
const matched = (table: Record<string, string>) => (id: string) => table[id] ?? null;

async function recordsOf(text: string | Buffer, feed: FeedConfig, chunkBytes = Infinity): Promise<string[][]> {
  const bytes = Buffer.from(text);
  const chunks: Buffer[] = [];
  for (let start = 0; start < bytes.length; start += Math.min(chunkBytes, bytes.length)) chunks.push(bytes.subarray(start, start + chunkBytes));
  const records: string[][] = [];
  for await (const record of feedRecords(Readable.from(chunks), feed)) records.push(record);
  return records;
}

describe('feed config', () => {
  it('takes a partner id column beside our own identity types, and refuses two of them, one beside a cookie id or partner_uid column, or holding unmatched rows without one', () => {
    expect(FEED.mapping).toMatchObject({ eventType: 'feed_record', identities: { 'partner:ttd': 'tdid', email_sha256: 'hashed_email' } });
    const issues = (mapping: object) => FeedConfigSchema.safeParse({ ...FEED, mapping }).error?.issues.map((issue) => [issue.path.join('.'), issue.message]);
    expect(issues({ identities: { 'partner:ttd': 'a', 'partner:xandr': 'b' } })).toEqual([['mapping.identities', 'at most one partner id column']]);
    expect(issues({ identities: { 'partner:ttd': 'a', cookie_id: 'b' } })).toEqual([['mapping.identities.cookie_id', 'a partner id column already gives the row its cookie id']]);
    expect(issues({ identities: { 'partner:ttd': 'a', partner_uid: 'b' } })).toEqual([['mapping.identities.partner_uid', 'a partner id column already gives the row its partner_uid']]);
    expect(issues({ identities: { email_sha256: 'a' }, unmatched: 'hold' })).toEqual([['mapping.unmatched', 'holds rows of a partner id column (`partner:<partner id>`): map one']]);
    expect(FEED.mapping.unmatched).toBe('skip');
    expect(issues({ identities: { 'Partner:TTD': 'a' } })?.[0][0]).toBe('mapping.identities.Partner:TTD');
    expect(issues({ identities: { email: 'Email' }, traits: { Email: 'email' } })).toEqual([['mapping.traits.Email', 'column "Email" holds raw emails (identities.email); it cannot also be a trait']]);
  });

  it('needs a url or a folder (not both), and a folder that stays under the feed root', () => {
    const { url: _url, ...noUrl } = FEED;
    const paths = (feed: object) => FeedConfigSchema.safeParse(feed).error?.issues.map((issue) => issue.path.join('.'));
    expect(paths(noUrl)).toEqual(['url']);
    expect(paths({ ...FEED, folder: 'partner' })).toEqual(['folder']);
    for (const folder of ['../etc', '/etc', 'a/../../b', 'a/./b']) expect(paths({ ...noUrl, folder })).toEqual(['folder']);
    expect(FeedConfigSchema.safeParse({ ...noUrl, folder: 'partner-x/daily' }).success).toBe(true);
    expect(paths({ ...FEED, url: 'ftp://partner.example/f.csv' })).toEqual(['url']);
  });
});

describe('feed cursors', () => {
  /** Each pair's order by compareCursors: -1, 0 or 1. */
  const expectOrder = (cases: Array<[string, string, -1 | 0 | 1]>) => expect(cases.map(([a, b]) => Math.sign(compareCursors(a, b)))).toEqual(cases.map(([, , sign]) => sign));

  it('orders numbers by value, however long, and ISO timestamps by time', () => {
    expectOrder([
      ['9', '10', -1],
      ['123456789012345678901234567890', '123456789012345678901234567891', -1],
      ['2.5', '10', -1],
      ['2026-03-01T09:00:00Z', '2026-03-01T10:00:00Z', -1],
      ['7', '7', 0],
      // By the time named, not the text: a fraction after the whole second, an offset counted, a date at its midnight.
      ['2026-03-01T09:00:00.5Z', '2026-03-01T09:00:00Z', 1],
      ['2026-03-01T10:00:00+02:00', '2026-03-01T09:00:00Z', -1],
      ['2026-03-01', '2026-03-01T00:00:01Z', -1],
    ]);
  });

  it('takes numbers and ISO 8601 dates or times as cursor values, and nothing else: a stray cell must not sort past every time', () => {
    const values = ['42', '-3', '2.5', '2026-03-01', '2026-03-01T09:00:00Z', '2026-03-01 09:00:00', '2026-03-01T09:00:00.123456+0100', '2026-03-01 09:00:00+00', '2026-03-01 09:00:00 +0000'];
    for (const value of values) expect(cursorValueProblem(value)).toBeNull();
    for (const value of ['N/A', 'NULL', 'Platinum', '2026-13-45T99:00:00Z', '2026-02-30', '2026-02-31T10:00:00Z', '2026-03-01T24:00:00Z', '1e5']) {
      expect(cursorValueProblem(value)).toBe('is not a number or an ISO 8601 date or time, so it cannot order rows');
    }
    // Of one kind: a number in a feed of times (an epoch, a spreadsheet's date serial) would sort anywhere among them.
    expect(cursorValueProblem('46082', 'time')).toBe("is a number where this feed's cursor values are times");
    expect(cursorValueProblem('2026-03-01', 'number')).toBe("is a time where this feed's cursor values are numbers");
    expect(windowKind({ from: '2026-03-01T00:00:00Z', to: null })).toBe('time');
    expect(windowKind({ from: null, to: '17' })).toBe('number');
    expect(windowKind({ from: 'N/A', to: null })).toBeNull();
  });

  it('reads a time without an offset as UTC, whatever the zone the process runs in, and offsets of every ISO form', () => {
    expectOrder([
      ['2026-03-01T00:30:00', '2026-03-01', 1],
      ['2026-03-01T00:30:00', '2026-03-01T00:30:00Z', 0],
      ['2026-03-01 10:00:00+01', '2026-03-01T09:00:00Z', 0],
      ['2026-03-01 10:00:00 +0100', '2026-03-01T09:00:00Z', 0],
      ['2026-03-01T04:00:00-05:00', '2026-03-01T09:00:00Z', 0],
      // Within one millisecond, by the digits past it.
      ['2026-03-01T09:00:00.0001Z', '2026-03-01T09:00:00.0002Z', -1],
      ['2026-03-01T09:00:00.0001Z', '2026-03-01T09:00:00.00010Z', 0],
    ]);
  });

  it('reads a window with both ends included and an open end for null', () => {
    expect(inCursorWindow('5', { from: '5', to: '7' })).toBe(true);
    expect(inCursorWindow('7', { from: '5', to: '7' })).toBe(true);
    expect(inCursorWindow('8', { from: '5', to: '7' })).toBe(false);
    expect(inCursorWindow('4', { from: '5', to: null })).toBe(false);
    expect(inCursorWindow('4', OPEN)).toBe(true);
    expect(laterCursor(null, '3')).toBe('3');
    expect(laterCursor('10', '9')).toBe('10');
  });

  it('refuses a backfill window that ends before it begins, naming `to`', () => {
    expect(BackfillRequestSchema.safeParse({ from: '10', to: '9' }).error?.issues.map((issue) => issue.path.join('.'))).toEqual(['to']);
    expect(BackfillRequestSchema.safeParse({ from: '9', to: '10' }).success).toBe(true);
  });
});

describe('feed rows as events', () => {
  const columns = columnsOf();

  it('names the config field of every column the header lacks', () => {
    expect(readFeedHeader(['tdid', 'income', 'notes'], FEED)).toEqual({
      errors: [
        { path: 'feed.mapping.identities.email_sha256', message: 'column "hashed_email" is not in the header' },
        { path: 'feed.taxonomy.column', message: 'column "segments" is not in the header' },
        { path: 'feed.cursorColumn', message: 'column "updated_at" is not in the header' },
      ],
    });
  });

  it("maps a partner id to the cookie id the match table holds and to its partner_uid, the segment ids to a list trait, and keeps the cursor value", () => {
    const row = feedRowToEvent(['tdid-1', EMAIL_HASH, 'high', ' 123| 456 |123|', '2026-03-01T09:00:00Z', 'x'], columns, OPEN, matched({ 'tdid-1': 'cookie-1' }));
    expect(row).toEqual({
      event: {
        id: expect.stringMatching(/^fr_[A-Za-z0-9_-]{32}$/),
        type: 'feed_record',
        identities: { email_sha256: EMAIL_HASH, cookie_id: 'cookie-1', partner_uid: 'ttd:tdid-1' },
        traits: { income_band: 'high', 'provider_segments.iab': ['123', '456'] },
      },
    });
  });

  it('keeps a trait mapped to the name __proto__ as a plain trait', () => {
    const feed = FeedConfigSchema.parse({ ...FEED, mapping: { ...FEED.mapping, traits: { income: '__proto__' } } });
    const row = feedRowToEvent(['', EMAIL_HASH, 'high', '', '1', ''], columnsOf(HEADER, feed), OPEN, matched({}));
    expect('event' in row && Object.entries(row.event.traits ?? {})).toEqual([['__proto__', 'high']]);
  });

  it('counts a row whose only identity is an unmatched partner id as unmatched, and imports one with another identity with its partner_uid', () => {
    expect(feedRowToEvent(['tdid-9', '', 'low', '', '1', ''], columns, OPEN, matched({}))).toEqual({ unmatched: true });
    const withEmail = feedRowToEvent(['tdid-9', EMAIL_HASH, 'low', '', '1', ''], columns, OPEN, matched({}));
    expect(withEmail).toEqual({ event: expect.objectContaining({ identities: { email_sha256: EMAIL_HASH, partner_uid: 'ttd:tdid-9' } }) });
    expect(feedRowToEvent(['', '', 'low', '', '1', ''], columns, OPEN, matched({}))).toEqual({ errors: [{ path: '(row)', message: 'no identity: "hashed_email", "tdid" are all empty' }] });
  });

  it('holds a row whose only identity is an unmatched partner id under its partner_uid when the mapping says so, still counted as unmatched', () => {
    const holding = columnsOf(HEADER, FeedConfigSchema.parse({ ...FEED, mapping: { ...FEED.mapping, unmatched: 'hold' } }));
    const held = feedRowToEvent(['tdid-9', '', 'low', '', '1', ''], holding, OPEN, matched({}));
    expect(held).toEqual({ unmatched: true, event: expect.objectContaining({ identities: { partner_uid: 'ttd:tdid-9' }, traits: { income_band: 'low' } }) });
    // The same row read once matched is the same event: a duplicate, and the sync joins what was held.
    const later = feedRowToEvent(['tdid-9', '', 'low', '', '1', ''], holding, OPEN, matched({ 'tdid-9': 'cookie-9' }));
    expect(later).toEqual({ event: expect.objectContaining({ identities: { cookie_id: 'cookie-9', partner_uid: 'ttd:tdid-9' } }) });
    expect('event' in later && 'event' in held && later.event.id).toBe('event' in held && held.event.id);
    // An id the graph refuses cannot be held (the column is named); matched, it still lands on the cookie, without a partner_uid.
    expect(feedRowToEvent(['0000-0000', '', 'low', '', '1', ''], holding, OPEN, matched({}))).toEqual({ errors: [{ path: 'tdid', message: 'cannot be held: is all zeros: a partner placeholder, never a user' }], unmatched: true });
    expect(feedRowToEvent(['0000-0000', '', 'low', '', '1', ''], holding, OPEN, matched({ '0000-0000': 'cookie-0' }))).toEqual({ event: expect.objectContaining({ identities: { cookie_id: 'cookie-0' } }) });
  });

  it("refuses a row with more of a provider's segment ids than a profile keeps, saying so at the column", () => {
    const many = Array.from({ length: 101 }, (_, i) => `IAB-${i}`).join('|');
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', many, '2026-03-01T10:00:00Z', ''], columns, OPEN, matched({}))).toEqual({
      errors: [{ path: 'segments', message: "holds 101 segment ids; a profile keeps at most 100 of a provider's" }],
    });
  });

  it('skips rows outside the cursor window, and refuses a row without a cursor value, naming the column', () => {
    const window = { from: '2026-03-01T10:00:00Z', to: null };
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', '2026-03-01T09:59:59Z', ''], columns, window, matched({}))).toEqual({ skipped: true });
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', '2026-03-01T10:00:00Z', ''], columns, window, matched({}))).toMatchObject({ event: { identities: { email_sha256: EMAIL_HASH } } });
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', ' ', ''], columns, window, matched({}))).toEqual({ errors: [{ path: 'updated_at', message: 'is empty: every row needs its cursor value' }] });
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH], columns, window, matched({}))).toEqual({ errors: [{ path: '(row)', message: 'has 2 fields; the header has 6' }] });
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', 'N/A', ''], columns, window, matched({}))).toEqual({
      errors: [{ path: 'updated_at', message: 'is not a number or an ISO 8601 date or time, so it cannot order rows' }],
    });
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', '46082', ''], columns, { ...window, kind: 'time' }, matched({}))).toEqual({
      errors: [{ path: 'updated_at', message: "is a number where this feed's cursor values are times" }],
    });
  });

  it('skips a row at the start of its window that the feed imported already, and no other', () => {
    const row = ['tdid-1', EMAIL_HASH, '', '', '2026-03-01T10:00:00Z', ''];
    const imported = feedRowToEvent(row, columns, { from: null, to: null }, matched({})) as { event: { id: string } };
    const window = { from: '2026-03-01T10:00:00Z', to: null, seen: new Set([imported.event.id]) };
    expect(feedRowToEvent(row, columns, window, matched({}))).toEqual({ skipped: true });
    // Another row at the same value, the same row changed, and the same person at a later value are read.
    expect(feedRowToEvent(['tdid-2', EMAIL_HASH, '', '', '2026-03-01T10:00:00Z', ''], columns, window, matched({}))).toHaveProperty('event');
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, 'high', '', '2026-03-01T10:00:00Z', ''], columns, window, matched({}))).toHaveProperty('event');
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', '2026-03-01T10:00:01Z', ''], columns, window, matched({}))).toHaveProperty('event');
    // The same time written otherwise is another row (its id holds the value as written).
    expect(feedRowToEvent(['tdid-1', EMAIL_HASH, '', '', '2026-03-01T11:00:00+01:00', ''], columns, window, matched({}))).toHaveProperty('event');
  });

  it('remembers the rows imported at the cursor: those of a pull that moved it on, of both when it stayed, of none that read behind it', () => {
    const saved = { cursor: '5', seen: ['a', 'b'] };
    expect(seenAtCursorAfter(saved, { cursor: '7', seen: ['c'] }, 10)).toEqual(['c']);
    expect(seenAtCursorAfter(saved, { cursor: '5', seen: ['b', 'c'] }, 10)).toEqual(['a', 'b', 'c']);
    expect(seenAtCursorAfter(saved, { cursor: '5.0', seen: ['c'] }, 10)).toEqual(['a', 'b', 'c']);
    expect(seenAtCursorAfter(saved, { cursor: '3', seen: ['c'] }, 10)).toEqual(['a', 'b']);
    expect(seenAtCursorAfter(saved, { cursor: null, seen: [] }, 10)).toEqual(['a', 'b']);
    expect(seenAtCursorAfter({ cursor: null }, { cursor: '1', seen: ['x'] }, 10)).toEqual(['x']);
    // A state saved before it remembered rows.
    expect(seenAtCursorAfter({ cursor: '5' }, { cursor: '5', seen: ['c'] }, 10)).toEqual(['c']);
    // At most `max`: the rest are told apart by their event ids within the dedupe window, as before.
    expect(seenAtCursorAfter(saved, { cursor: '5', seen: ['c', 'd'] }, 3)).toEqual(['a', 'b', 'c']);
  });

  it("reads a row's cursor value when the row is in the window, whatever becomes of it", () => {
    const window = { from: '2026-03-01T10:00:00Z', to: null };
    expect(rowCursor(['tdid-9', '', '', '', ' 2026-03-01T11:00:00Z ', ''], columns, window)).toBe('2026-03-01T11:00:00Z');
    expect(rowCursor(['tdid-9', '', '', '', '2026-03-01T09:00:00Z', ''], columns, window)).toBeNull();
    expect(rowCursor(['tdid-9'], columns, window)).toBeNull();
    // Nor from a row whose cells do not fit the header (a comma unquoted shifts the cursor column), nor a value no cursor is.
    expect(rowCursor(['tdid-9', '', 'high', 'Gold', ' Platinum', '2026-03-01T11:00:00Z', ''], columns, window)).toBeNull();
    expect(rowCursor(['tdid-9', '', '', '', 'N/A', ''], columns, window)).toBeNull();
    expect(rowCursor(['tdid-9', '', '', '', '46082', ''], columns, { from: null, to: null, kind: 'time' })).toBeNull();
    expect(rowCursor(['tdid-9', '', '', '', '5', ''], columnsOf(HEADER, { ...FEED, cursorColumn: undefined }), OPEN)).toBeNull();
  });

  it('gives a row read again the same event id whatever its unread cells or match, and a changed row another', () => {
    const id = (fields: string[], table: Record<string, string> = {}) => (feedRowToEvent(fields, columns, OPEN, matched(table)) as { event: { id: string } }).event.id;
    const row = ['tdid-1', EMAIL_HASH, 'high', '1|2', '5', 'note'];
    expect(id(row)).toBe(id([' tdid-1 ', EMAIL_HASH, 'high', '1|2', '5', 'another note'], { 'tdid-1': 'cookie-1' }));
    expect(id(row)).not.toBe(id(['tdid-1', EMAIL_HASH, 'medium', '1|2', '5', 'note']));
    expect(id(row)).not.toBe(id(['tdid-1', EMAIL_HASH, 'high', '1|2', '6', 'note']));
  });

  it('names the column of a refusal found at preparation: the partner id column for its cookie id, the segments column for too many ids', () => {
    const many = Array.from({ length: 101 }, (_, i) => `s${i}`).join('|');
    const rows = [
      { row: 2, mapped: feedRowToEvent(['tdid-1', 'not-a-hash', 'high', '', '1', ''], columns, OPEN, matched({ 'tdid-1': 'cookie-1' })) as { event: unknown } },
      { row: 3, mapped: feedRowToEvent(['tdid-1', EMAIL_HASH, 'high', many, '1', ''], columns, OPEN, matched({ 'tdid-1': 'cookie-1' })) as { event: unknown } },
    ];
    const prepared = prepareMappedRows(rows, (path) => feedColumnOf(path, columns), { now: new Date(), defaultPhoneRegion: 'US' });
    expect(prepared.events).toHaveLength(0);
    expect(prepared.rejections.map(({ row, errors }) => [row, errors.map((error) => error.path)])).toEqual([
      [2, ['hashed_email']],
      [3, ['segments']],
    ]);
    expect(feedColumnOf('identities.cookie_id', columns)).toBe('tdid');
  });
});

describe('feed files as records', () => {
  it('reads NDJSON objects by the names the feed reads, lists as segment ids', () => {
    const ndjson = { ...FEED, format: 'ndjson' as const };
    expect(ndjsonFields({ tdid: 'a', hashed_email: null, income: 3, segments: ['1', 2], updated_at: true }, ['tdid', 'hashed_email', 'income', 'segments', 'updated_at'], '|')).toEqual(['a', '', '3', '1|2', 'true']);
    return expect(recordsOf('{"tdid":"a","updated_at":"1"}\n\n{"tdid":"b","segments":["x","y"],"updated_at":"2"}\n', ndjson)).resolves.toEqual([
      ['tdid', 'hashed_email', 'income', 'segments', 'updated_at'],
      ['a', '', '', '', '1'],
      [''],
      ['b', '', '', 'x|y', '2'],
    ]);
  });

  it('refuses a CSV file cut off inside its last row, and takes one whose last row simply lacks a line break', async () => {
    const whole = 'tdid,hashed_email,income,segments,updated_at,notes\na,,high,,1,\nb,,low,,2,';
    expect(await recordsOf(whole, FEED)).toHaveLength(3);
    await expect(recordsOf('tdid,hashed_email,income,segments,updated_at,notes\na,,high,,1,\nb,,lo', FEED)).rejects.toEqual(new FileUnreadable('row 3', 'the file ends inside this row: it was cut short'));
    await expect(recordsOf('tdid,hashed_email,income,segments,updated_at,notes\na,,"high', FEED)).rejects.toMatchObject({ code: 'CSV_QUOTE_NOT_CLOSED' });
  });

  it('refuses an NDJSON line that is not a JSON object, naming the line', async () => {
    const ndjson = { ...FEED, format: 'ndjson' as const };
    await expect(recordsOf('{"tdid":"a"}\n{"tdid":"b",', ndjson)).rejects.toEqual(new FileUnreadable('line 2', 'not valid JSON'));
    await expect(recordsOf('{"tdid":"a"}\n[1]\n', ndjson)).rejects.toEqual(new FileUnreadable('line 2', 'not a JSON object'));
  });

  it('decompresses gzip, told by its first bytes (a .gz file may arrive inflated already), even when they come one at a time, and refuses gzip cut short', async () => {
    const csv = 'tdid,hashed_email,income,segments,updated_at,notes\na,,high,,1,\n';
    expect(await recordsOf(gzipSync(csv), FEED)).toHaveLength(2);
    expect(await recordsOf(gzipSync(csv), FEED, 1)).toHaveLength(2);
    expect(await recordsOf(csv, FEED)).toHaveLength(2);
    const compressed = gzipSync(csv);
    await expect(recordsOf(compressed.subarray(0, compressed.length - 12), FEED)).rejects.toThrow(/^not gzip/);
  });

  it('reads an NDJSON file that starts with a byte-order mark, as CSV files are read', async () => {
    const ndjson = { ...FEED, format: 'ndjson' as const };
    expect(await recordsOf('\uFEFF{"tdid":"a","updated_at":"1"}\n', ndjson)).toEqual([['tdid', 'hashed_email', 'income', 'segments', 'updated_at'], ['a', '', '', '', '1']]);
  });
});
