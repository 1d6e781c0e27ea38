import { z } from 'zod';
import { keyedRecord } from '../../domain/keyedRecord';

const own = (value: unknown) => Object.entries(value as Record<string, unknown>);

describe('keyedRecord', () => {
  const names = keyedRecord(z.string().min(1).max(16), z.union([z.string(), z.number()]));

  it('parses a record as zod does, and keeps a key named __proto__ as a plain own key', () => {
    expect(names.parse({ a: 1, b: 'x' })).toEqual({ a: 1, b: 'x' });
    const parsed = names.parse(JSON.parse('{"a": 1, "__proto__": "kept"}'));
    expect(own(parsed)).toEqual([['a', 1], ['__proto__', 'kept']]);
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
  });

  it('names every bad entry, __proto__ among them, at its own path', () => {
    const result = names.safeParse(JSON.parse('{"a": true, "__proto__": {"x": 1}, "": 2}'));
    expect(result.success).toBe(false);
    expect(result.error?.issues.map((issue) => issue.path).sort()).toEqual([[''], ['__proto__'], ['a']]);
  });

  it('keeps each record its own __proto__ value when many are parsed asynchronously, after an asynchronous step', async () => {
    const many = z.array(z.object({ traits: z.unknown().transform(async (traits) => traits).pipe(names) }));
    const input = JSON.parse('[{"traits": {"__proto__": "first"}}, {"traits": {"b": 2}}, {"traits": {"__proto__": "third", "c": 3}}]');
    const [a, b] = await Promise.all([many.parseAsync(input), many.parseAsync(input)]);
    for (const parsed of [a, b]) expect(parsed.map((row) => own(row.traits))).toEqual([[['__proto__', 'first']], [['b', 2]], [['c', 3], ['__proto__', 'third']]]);
  });

  it('refuses __proto__ under a key schema that refuses it, without checking its value', () => {
    const strict = keyedRecord(z.string().regex(/^[a-z]+$/), z.number());
    const result = strict.safeParse(JSON.parse('{"__proto__": "not a number"}'));
    expect(result.error?.issues).toEqual([expect.objectContaining({ code: 'invalid_key', path: ['__proto__'] })]);
  });
});
