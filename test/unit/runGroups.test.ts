import fc from 'fast-check';
import { referencedSegments, type Rule } from '../../domain/segmentRules';
import { runGroups } from '../../domain/segments';

const doc = (_id: string, rule: Rule) => ({ _id, ruleJson: JSON.stringify(rule) });
const ids = (groups: Array<{ segments: Array<{ _id: string }> }>) => groups.map((group) => group.segments.map((d) => d._id));

describe('runGroups: the runs a run of every segment is split into', () => {
  it('keeps every segment in one run while they fit, in id order', () => {
    const docs = [doc('c', { identity: 'maid' }), doc('a', { identity: 'email' }), doc('b', { event: 'purchase' })];
    expect(ids(runGroups(docs, 3))).toEqual([['a', 'b', 'c']]);
    expect(ids(runGroups(docs, 2))).toEqual([['a', 'b'], ['c']]);
    expect(ids(runGroups([], 10))).toEqual([[]]);
  });

  it('keeps a segment with those it refers to and those referring to it, past the limit if need be', () => {
    const docs = [
      doc('a', { identity: 'email' }),
      doc('b', { segment: 'd' }),
      doc('c', { identity: 'maid' }),
      doc('d', { all: [{ segment: 'a' }, { event: 'purchase' }] }),
      doc('e', { not: { segment: 'gone' } }),
    ];
    // a, b and d are one set (b → d → a); c and e stand alone; a missing segment joins nothing.
    expect(ids(runGroups(docs, 3))).toEqual([['a', 'b', 'd'], ['c', 'e']]);
    expect(ids(runGroups(docs, 2))).toEqual([['a', 'b', 'd'], ['c', 'e']]);
    expect(ids(runGroups(docs, 1))).toEqual([['a', 'b', 'd'], ['c'], ['e']]);
    // Each group's key is the first id of its last set: what the next group comes after.
    expect(runGroups(docs, 3).map((group) => group.key)).toEqual(['a', 'e']);
    expect(runGroups(docs, 1).map((group) => group.key)).toEqual(['a', 'c', 'e']);
  });

  it('groups what is left of a round after a key, so segments deleted or joined in groups that ran move nothing among the rest', () => {
    const docs = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => doc(id, { identity: 'email' }));
    expect(ids(runGroups(docs, 3))).toEqual([['a', 'b', 'c'], ['d', 'e', 'f']]);
    // `b` is deleted while the first run goes: the second is still d, e and f (packed from the start, it would be e and f, and d skipped).
    const [first] = runGroups(docs, 3);
    expect(first.key).toBe('c');
    expect(ids(runGroups(docs.filter((d) => d._id !== 'b'), 3, first.key))).toEqual([['d', 'e', 'f']]);
    // A segment made meanwhile among those that ran waits for its own run; nothing is left after the last.
    expect(ids(runGroups([...docs, doc('bb', { identity: 'maid' })], 3, first.key))).toEqual([['d', 'e', 'f']]);
    expect(runGroups(docs, 3, 'f')).toEqual([]);
    expect(ids(runGroups([], 3))).toEqual([[]]);
    expect(runGroups([], 3, '')).toEqual([]);
  });

  it('holds every segment exactly once, within the limit unless one set of joined segments is larger, and never splits a reference', () => {
    const arbitrary = fc.record({
      refs: fc.array(fc.array(fc.nat(39), { maxLength: 2 }), { minLength: 0, maxLength: 40 }),
      max: fc.integer({ min: 1, max: 12 }),
    });
    fc.assert(
      fc.property(arbitrary, ({ refs, max }) => {
        const name = (n: number) => `s${String(n).padStart(2, '0')}`;
        const docs = refs.map((to, n) => doc(name(n), to.length === 0 ? { identity: 'email' } : { any: to.map((t) => ({ segment: name(t) })) }));
        const groups = runGroups(docs, max).map((group) => group.segments);
        const placed = groups.flat().map((d) => d._id);
        // A round taken a group at a time, each after the key of the one before, takes the same groups.
        const round: string[][] = [];
        for (let after: string | null = null, next = runGroups(docs, max, after); next.length > 0 && round.length <= docs.length; after = next[0].key, next = runGroups(docs, max, after)) {
          round.push(next[0].segments.map((d) => d._id));
          if (next[0].segments.length === 0) break;
        }
        expect(round).toEqual(groups.map((group) => group.map((d) => d._id)));
        expect([...placed].sort()).toEqual(docs.map((d) => d._id).sort());
        const groupOf = new Map(groups.flatMap((group, g) => group.map((d) => [d._id, g] as const)));
        for (const d of docs) for (const to of referencedSegments(JSON.parse(d.ruleJson) as Rule)) if (groupOf.has(to)) expect(groupOf.get(to)).toBe(groupOf.get(d._id));
        for (const group of groups) {
          if (group.length <= max) continue;
          // Only a single set of joined segments may pass the limit: no two of its segments can be apart.
          expect(group.length).toBeGreaterThan(max);
          expect(runGroups(group, group.length - 1)).toHaveLength(1);
        }
      }),
    );
  });
});
