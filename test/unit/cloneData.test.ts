import { cloneData } from '../../domain/cloneData';

describe('cloneData: a deep copy of stored data, the same as structuredClone makes', () => {
  const sample = () => {
    const nameless: Record<string, unknown> = Object.create(null);
    nameless.city = 'Lyon';
    const traits: Record<string, unknown> = { tier: 'gold', scores: [1, 2.5, -0], seen: null, nothing: undefined };
    Object.defineProperty(traits, '__proto__', { value: 'a trait named so', writable: true, enumerable: true, configurable: true });
    return {
      _id: 'p@00000001',
      version: 1,
      traits,
      nameless,
      counters: { page_view: { count: 3, firstSeen: new Date('2026-01-01T00:00:00Z'), days: { '20260101': 3 } as Record<string, number>, recent: [{ at: new Date('2026-01-01T10:00:00Z'), properties: { page: '/' } }] } },
      bytes: new Uint8Array([1, 2, 3]),
      consent: null,
    };
  };

  it('copies what structuredClone copies, fields named `__proto__` and objects without a prototype included', () => {
    const original = sample();
    const copy = cloneData(original);
    // Not strict: an object without a prototype comes back a plain one, from structuredClone too.
    expect(copy).toEqual(original);
    expect(copy).toEqual(structuredClone(original));
    expect(Object.keys(copy.nameless)).toEqual(['city']);
    expect(Object.keys(copy.traits)).toEqual(Object.keys(original.traits));
    expect(copy.traits.__proto__).toBe('a trait named so');
    expect(Object.getPrototypeOf(copy.traits)).toBe(Object.prototype);
    expect(copy.counters.page_view.firstSeen).toBeInstanceOf(Date);
    expect(Array.from(copy.bytes)).toEqual([1, 2, 3]);
    expect(ArrayBuffer.isView(copy.bytes)).toBe(true);
    expect(Object.is(copy.traits.scores && (copy.traits.scores as number[])[2], -0)).toBe(true);
  });

  it('shares nothing with the original: changing the copy leaves it as it was', () => {
    const original = sample();
    const copy = cloneData(original);
    copy.counters.page_view.count = 4;
    copy.counters.page_view.days['20260102'] = 1;
    copy.counters.page_view.recent[0].properties.page = '/changed';
    copy.counters.page_view.firstSeen.setUTCFullYear(2020);
    (copy.traits.scores as number[]).push(9);
    copy.bytes[0] = 9;
    expect(original).toEqual(sample());
    expect(Array.from(original.bytes)).toEqual([1, 2, 3]);
    expect(original.counters.page_view.days).toEqual({ '20260101': 3 });
  });
});
