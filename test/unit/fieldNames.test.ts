import { decodeFieldName, decodeKeys, encodeFieldName, encodeKeys } from '../../domain/fieldNames';

const NAMES = [
  'plain',
  'with.dot',
  'a.b.c',
  '$leading',
  'mid$dle',
  '$',
  '.',
  '%',
  '100%',
  'literal %2E escape',
  'literal %25 and %24',
  '%2e lowercase escape',
  '$set.price%',
  '..$$%%',
  'ünïcödé.名前',
  'emoji 🎉.party',
  '',
];

describe('encodeFieldName / decodeFieldName', () => {
  it.each(NAMES.map((name) => [name]))('round-trips %j', (name) => {
    expect(decodeFieldName(encodeFieldName(name))).toBe(name);
  });

  it.each(NAMES.map((name) => [name]))('encodes %j to a key without "." and without a leading "$"', (name) => {
    const key = encodeFieldName(name);
    expect(key).not.toContain('.');
    expect(key.startsWith('$')).toBe(false);
  });

  it('percent-encodes ".", "$" and "%" in upper-case hex', () => {
    expect(encodeFieldName('a.b')).toBe('a%2Eb');
    expect(encodeFieldName('$x')).toBe('%24x');
    expect(encodeFieldName('50%')).toBe('50%25');
  });

  it('leaves names without reserved characters unchanged', () => {
    expect(encodeFieldName('page_view')).toBe('page_view');
    expect(encodeFieldName('ünïcödé 名前')).toBe('ünïcödé 名前');
  });

  it('gives different keys to names that differ only in an escape sequence', () => {
    expect(encodeFieldName('a.b')).not.toBe(encodeFieldName('a%2Eb'));
    expect(decodeFieldName(encodeFieldName('a%2Eb'))).toBe('a%2Eb');
  });
});

describe('encodeKeys / decodeKeys', () => {
  it('encodes every key of a record and keeps the values', () => {
    const record = { 'plan.tier': 'gold', $score: 3, ok: true };
    expect(encodeKeys(record)).toEqual({ 'plan%2Etier': 'gold', '%24score': 3, ok: true });
  });

  it('round-trips a record', () => {
    const record: Record<string, unknown> = {};
    NAMES.forEach((name, i) => (record[name] = i));
    const encoded = encodeKeys(record);
    for (const key of Object.keys(encoded)) {
      expect(key).not.toContain('.');
      expect(key.startsWith('$')).toBe(false);
    }
    expect(decodeKeys(encoded)).toEqual(record);
  });

  it('keeps a name such as __proto__ as a plain own key, not as the prototype', () => {
    const record = JSON.parse('{"__proto__": {"polluted": true}, "a.b": 1}') as Record<string, unknown>;
    for (const copy of [encodeKeys(record), decodeKeys(encodeKeys(record))]) {
      expect(Object.keys(copy)).toEqual(['__proto__', expect.stringMatching(/^a(%2E|\.)b$/)]);
      expect(Object.getPrototypeOf(copy)).toBe(Object.prototype);
      expect((copy as { polluted?: boolean }).polluted).toBeUndefined();
    }
  });

  it('does not modify the record it is given', () => {
    const record = { 'a.b': 1 };
    encodeKeys(record);
    expect(record).toEqual({ 'a.b': 1 });
  });
});
