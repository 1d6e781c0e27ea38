import { parse } from 'csv-parse/sync';
import { prepareCrmRows } from '../../api/uploads';
import type { PrepareOptions } from '../../domain/collect';
import { sha256Hex } from '../../domain/identity';
import { ConsentPolicySchema } from '../../domain/schemas';
import { Readable } from 'node:stream';
import { BoundedLines, crmCsvOptions, CrmMappingSchema, crmRowToEvent, FileUnreadable, readCrmHeader, type CrmColumns, type CrmMapping } from '../../domain/uploads';

const NOW = new Date('2026-03-01T09:00:00.000Z');
const OPTIONS: PrepareOptions = { now: NOW, defaultPhoneRegion: 'US' };
const MAPPING: CrmMapping = CrmMappingSchema.parse({
  identities: { crm_id: 'customer_id', email: 'Email', phone: 'Phone' },
  traits: { Tier: 'loyalty_tier', 'Home City': 'address.city' },
  eventType: 'crm_customer',
});
const HEADER = ['customer_id', 'Email', 'Phone', 'Tier', 'Home City', 'Notes'];

function columnsOf(header: string[], mapping: CrmMapping = MAPPING): CrmColumns {
  const read = readCrmHeader(header, mapping);
  if ('errors' in read) throw new Error(JSON.stringify(read.errors));
  return read.columns;
}

/** Rows numbered as in the file: the header is row 1. */
function numbered(records: string[][]): Array<{ row: number; fields: string[] }> {
  return records.map((fields, index) => ({ row: index + 2, fields }));
}

describe('CRM uploads: the header against the mapping', () => {
  it('finds every mapped column, names trimmed', () => {
    const columns = columnsOf([' customer_id ', 'Email', 'Phone', 'Tier ', 'Home City', 'Notes']);
    expect(columns.width).toBe(6);
    expect(columns.identities).toEqual([
      { type: 'crm_id', column: 'customer_id', index: 0 },
      { type: 'email', column: 'Email', index: 1 },
      { type: 'phone', column: 'Phone', index: 2 },
    ]);
    expect(columns.traits).toEqual([
      { trait: 'loyalty_tier', column: 'Tier', index: 3 },
      { trait: 'address.city', column: 'Home City', index: 4 },
    ]);
  });

  it('names the mapping field of every column the header lacks or repeats', () => {
    expect(readCrmHeader(['customer_id', 'email', 'Phone', 'Tier', 'Tier'], MAPPING)).toEqual({
      errors: [
        { path: 'mapping.identities.email', message: 'column "Email" is not in the header' },
        { path: 'mapping.traits.Tier', message: 'column "Tier" appears 2 times in the header' },
        { path: 'mapping.traits.Home City', message: 'column "Home City" is not in the header' },
      ],
    });
  });

  it('refuses a mapping that would keep raw emails or phones as a trait', () => {
    const parsed = CrmMappingSchema.safeParse({ identities: { email: 'Email' }, traits: { Email: 'email' } });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.map((issue) => [issue.path.join('.'), issue.message])).toEqual([['traits.Email', 'column "Email" holds raw emails (identities.email); it cannot also be a trait']]);
  });
});

describe('CRM uploads: a row as an event', () => {
  const columns = columnsOf(HEADER);

  it('maps identity and trait cells, skips empty ones, and fixes the event id by upload and row', () => {
    expect(crmRowToEvent(['c-7', ' Ada@Example.com ', '', 'gold', '', 'ignored'], 12, columns, 'upl_1')).toEqual({
      event: { id: 'upl_1:12', type: 'crm_customer', identities: { crm_id: 'c-7', email: 'Ada@Example.com' }, traits: { loyalty_tier: 'gold' } },
    });
  });

  it('keeps a trait named __proto__ as a plain trait, from a column of that name or to a trait of that name', () => {
    const mapping = CrmMappingSchema.parse(JSON.parse('{"identities": {"crm_id": "customer_id"}, "traits": {"Tier": "__proto__", "__proto__": "odd"}}'));
    const row = crmRowToEvent(['c-1', 'gold', 'x'], 2, columnsOf(['customer_id', 'Tier', '__proto__'], mapping), 'upl_p');
    expect('event' in row && Object.entries(row.event.traits ?? {}).sort()).toEqual([['__proto__', 'gold'], ['odd', 'x']]);
  });

  it('leaves traits out when every trait cell is empty', () => {
    expect(crmRowToEvent(['c-8', '', '', '', '', ''], 3, columns, 'upl_1')).toEqual({ event: { id: 'upl_1:3', type: 'crm_customer', identities: { crm_id: 'c-8' } } });
  });

  it('refuses a row without any identity, and a row of another length, as a whole', () => {
    expect(crmRowToEvent(['', ' ', '', 'gold', 'Paris', ''], 4, columns, 'upl_1')).toEqual({
      errors: [{ path: '(row)', message: 'no identity: "customer_id", "Email", "Phone" are all empty' }],
    });
    expect(crmRowToEvent(['c-9', 'a@example.com'], 5, columns, 'upl_1')).toEqual({ errors: [{ path: '(row)', message: 'has 2 fields; the header has 6' }] });
  });
});

describe('CRM uploads: rows prepared at the edge', () => {
  const columns = columnsOf(HEADER);

  it('hashes emails and phones, keeps no raw value, and carries traits under their encoded names', () => {
    const rows = numbered([
      ['c-1', ' Ada@Example.com', '(415) 555-2671', 'gold', 'Paris', 'x'],
      ['', '', '+44 20 7946 0958', '', '', ''],
    ]);
    const prepared = prepareCrmRows(rows, columns, 'upl_a', OPTIONS);
    expect(prepared.rejections).toEqual([]);
    expect(prepared.events).toHaveLength(2);
    const [first, second] = prepared.events;
    expect(first).toMatchObject({ id: 'upl_a:2', type: 'crm_customer', timestamp: NOW, receivedAt: NOW, traits: { loyalty_tier: 'gold', 'address%2Ecity': 'Paris' } });
    expect(first.identities).toEqual([
      { type: 'crm_id', value: 'c-1' },
      { type: 'email_sha256', value: sha256Hex('ada@example.com') },
      { type: 'phone_sha256', value: sha256Hex('+14155552671'), digits: sha256Hex('14155552671') },
    ]);
    expect(second.identities).toEqual([{ type: 'phone_sha256', value: sha256Hex('+442079460958'), digits: sha256Hex('442079460958') }]);
    const stored = JSON.stringify(prepared.events);
    for (const raw of ['Ada@Example.com', 'ada@example.com', '555-2671', '4155552671', '7946']) expect(stored).not.toContain(raw);
  });

  it('names the row and the column of each refusal, in file order, and keeps the good rows', () => {
    const rows = numbered([
      ['c-1', 'not-an-email', '', 'gold', '', ''],
      ['c-2', 'b@example.com', '', 'x'.repeat(1025), '', ''],
      ['', '', '', 'silver', '', ''],
      ['c-4', 'd@example.com', '12', '', '', ''],
      ['c-5', 'e@example.com', '', 'gold', '', ''],
    ]);
    const prepared = prepareCrmRows(rows, columns, 'upl_b', OPTIONS);
    expect(prepared.events.map((event) => event.id)).toEqual(['upl_b:6']);
    expect(prepared.rejections.map(({ row, errors }) => [row, errors.map((error) => error.path)])).toEqual([
      [2, ['Email']],
      [3, ['Tier']],
      [4, ['(row)']],
      [5, ['Phone']],
    ]);
    expect(prepared.rejections[0].errors[0].message).toBe('not a valid email address');
    expect(prepared.rejections[3].errors[0].message).toBe('not a possible phone number');
    // A refusal never quotes the value it refused.
    expect(JSON.stringify(prepared.rejections)).not.toContain('not-an-email');
  });

  it("counts the rows the source's consent policy keeps from profiling", () => {
    const strict = { ...OPTIONS, consentPolicy: ConsentPolicySchema.parse({ mode: 'require' }) };
    const prepared = prepareCrmRows(numbered([['c-1', '', '', '', '', '']]), columns, 'upl_c', strict);
    expect(prepared.nonProfiling).toBe(1);
    expect(prepareCrmRows(numbered([['c-1', '', '', '', '', '']]), columns, 'upl_c', OPTIONS).nonProfiling).toBe(0);
  });
});

describe('CRM uploads: reading a file with the source delimiter', () => {
  it('reads a semicolon file with quoted delimiters, a byte-order mark and a stray quote', () => {
    const mapping = CrmMappingSchema.parse({ identities: { crm_id: 'id' }, traits: { name: 'name', segment: 'segment' }, delimiter: ';' });
    const text = '\uFEFFid;name;segment\nc-1;"Smith; Ada";a\nc-2;O"Brien;b\n';
    const [header, ...records] = parse(text, crmCsvOptions(mapping)) as string[][];
    const columns = columnsOf(header, mapping);
    const events = numbered(records).map(({ row, fields }) => crmRowToEvent(fields, row, columns, 'upl_d'));
    expect(events).toEqual([
      { event: { id: 'upl_d:2', type: 'crm_record', identities: { crm_id: 'c-1' }, traits: { name: 'Smith; Ada', segment: 'a' } } },
      { event: { id: 'upl_d:3', type: 'crm_record', identities: { crm_id: 'c-2' }, traits: { name: 'O"Brien', segment: 'b' } } },
    ]);
  });

  it('reads the same file with commas as one column per line when the mapping says semicolons', () => {
    const mapping = CrmMappingSchema.parse({ identities: { crm_id: 'id' }, delimiter: ';' });
    const [header] = parse('id,name\nc-1,Ada\n', crmCsvOptions(mapping)) as string[][];
    expect(readCrmHeader(header, mapping)).toEqual({ errors: [{ path: 'mapping.identities.crm_id', message: 'column "id" is not in the header' }] });
  });

  /** What BoundedLines lets through of these chunks, or the error it stops with. */
  async function bounded(chunks: Buffer[]): Promise<{ bytes: number } | { error: FileUnreadable }> {
    const stream = Readable.from(chunks).pipe(new BoundedLines());
    let bytes = 0;
    try {
      for await (const chunk of stream) bytes += (chunk as Buffer).length;
      return { bytes };
    } catch (error) {
      return { error: error as FileUnreadable };
    }
  }

  it('refuses a line of delimiters alone, which the record bound does not see, naming the line', async () => {
    // csv-parse's own bound counts field text only: a line of commas would grow one record without end.
    const commas = Buffer.from(','.repeat(100_000));
    const result = await bounded([Buffer.from('a,b\r\nc,d\n'), ...Array.from({ length: 10 }, () => commas)]);
    expect(result).toEqual({ error: expect.any(FileUnreadable) });
    expect('error' in result && { path: result.error.path, message: result.error.message }).toEqual({ path: 'line 3', message: 'longer than 524288 bytes' });
  });

  it('passes long files of ordinary lines, and a record at the bound with a delimiter after every character, as they are', async () => {
    const row = Buffer.from(`${'x,'.repeat(65_536)}\r\n`);
    expect(await bounded(Array.from({ length: 20 }, () => row))).toEqual({ bytes: row.length * 20 });
    // Old Mac line breaks (CR alone) end lines too.
    expect(await bounded([Buffer.from(`${'y'.repeat(400_000)}\r`), Buffer.from(`${'z'.repeat(400_000)}\r`)])).toEqual({ bytes: 800_002 });
  });
});
