import fc from 'fast-check';
import { delta, nextState, toBatches, type BatchOutcome, type PartnerState } from '../../domain/destinations';

/**
 * Exports against a reference: over a small universe of ids, a partner in any state (each id held,
 * uncertain or absent) is brought to a target by `delta`, cut by `toBatches` and settled by
 * `nextState`. Checked: the plan is exactly the set difference the contract names, confirmed rounds
 * converge on the target, and a round with unconfirmed batches converges once a later round is
 * confirmed, whatever the new target.
 */

// Mixed case and a non-ASCII id: the order used throughout is the code-unit order of Array.prototype.sort.
const UNIVERSE = ['B', 'a', 'a1', 'b', 'c', 'd', 'e', 'f', 'g', 'ü'];

const sorted = (ids: Iterable<string>) => [...ids].sort();
const idsArb = fc.subarray(UNIVERSE).map(sorted);
const stateArb: fc.Arbitrary<PartnerState> = fc.array(fc.constantFrom('held', 'uncertain', 'none'), { minLength: UNIVERSE.length, maxLength: UNIVERSE.length }).map((marks) => ({
  held: UNIVERSE.filter((_, i) => marks[i] === 'held').sort(),
  uncertain: UNIVERSE.filter((_, i) => marks[i] === 'uncertain').sort(),
}));
const sizeArb = fc.integer({ min: 1, max: 6 });
/** Which batches the partner confirms, cycled over however many batches there are. */
const confirmationsArb = fc.array(fc.boolean(), { minLength: 1, maxLength: 8 });

function plan(target: string[], state: PartnerState, full: boolean, size: number, confirm: (index: number) => boolean): BatchOutcome[] {
  const { adds, removes } = delta(target, state, full);
  return toBatches(adds, removes, size).map((batch, index) => ({ ...batch, confirmed: confirm(index) }));
}

const isSortedUnique = (ids: readonly string[]) => ids.every((id, i) => i === 0 || ids[i - 1] < id);
const allConfirmed = () => true;

describe('destination deltas: properties', () => {
  it('plans exactly: adds = target not surely held (all of it when full), removes = held or uncertain not targeted', () => {
    fc.assert(
      fc.property(idsArb, stateArb, fc.boolean(), (target, state, full) => {
        const { adds, removes } = delta(target, state, full);
        const held = new Set(state.held);
        const mayHold = new Set([...state.held, ...state.uncertain]);
        expect(adds).toEqual(full ? target : target.filter((id) => !held.has(id)));
        expect(removes).toEqual(sorted(mayHold).filter((id) => !target.includes(id)));
        expect(isSortedUnique(adds) && isSortedUnique(removes)).toBe(true);
        expect(adds.filter((id) => removes.includes(id))).toEqual([]);
      }),
    );
  });

  it('cuts batches of 1 to `size` ids that are all adds or all removes, in order', () => {
    fc.assert(
      fc.property(idsArb, idsArb, sizeArb, (adds, removes, size) => {
        const batches = toBatches(adds, removes, size);
        for (const batch of batches) {
          const count = batch.adds.length + batch.removes.length;
          expect(count >= 1 && count <= size).toBe(true);
          expect(batch.adds.length === 0 || batch.removes.length === 0).toBe(true);
        }
        expect(batches.flatMap((batch) => batch.adds)).toEqual(adds);
        expect(batches.flatMap((batch) => batch.removes)).toEqual(removes);
      }),
    );
  });

  it('settles each id by its batch: confirmed adds held, confirmed removes gone, unconfirmed uncertain, untouched as before', () => {
    fc.assert(
      fc.property(idsArb, stateArb, fc.boolean(), sizeArb, confirmationsArb, (target, state, full, size, confirmations) => {
        const batches = plan(target, state, full, size, (i) => confirmations[i % confirmations.length]);
        const next = nextState(state, batches);
        for (const id of UNIVERSE) {
          const batch = batches.find((b) => b.adds.includes(id) || b.removes.includes(id));
          const before = state.held.includes(id) ? 'held' : state.uncertain.includes(id) ? 'uncertain' : 'none';
          const expected = !batch ? before : !batch.confirmed ? 'uncertain' : batch.adds.includes(id) ? 'held' : 'none';
          const actual = next.held.includes(id) ? 'held' : next.uncertain.includes(id) ? 'uncertain' : 'none';
          expect([id, actual]).toEqual([id, expected]);
        }
        expect(isSortedUnique(next.held) && isSortedUnique(next.uncertain)).toBe(true);
        expect(next.held.filter((id) => next.uncertain.includes(id))).toEqual([]);
      }),
    );
  });

  it('settles batches of any shape (unsorted, overlapping, in any order) as applying them one after another would', () => {
    // The reference: each batch applied in turn, its adds then its removes.
    const applied = (state: PartnerState, batches: BatchOutcome[]): PartnerState => {
      const now = new Map<string, 'held' | 'gone' | 'uncertain'>([...state.held.map((id) => [id, 'held'] as const), ...state.uncertain.map((id) => [id, 'uncertain'] as const)]);
      for (const batch of batches) {
        const applies = (id: string) => batch.confirmed && !batch.refused?.has(id);
        for (const id of batch.adds) now.set(id, applies(id) ? 'held' : 'uncertain');
        for (const id of batch.removes) now.set(id, applies(id) ? 'gone' : 'uncertain');
      }
      const having = (wanted: string) => sorted([...now].filter(([, value]) => value === wanted).map(([id]) => id));
      return { held: having('held'), uncertain: having('uncertain') };
    };
    const anyIds = fc.array(fc.constantFrom(...UNIVERSE), { maxLength: 6 });
    // A confirmed batch may carry ids its partner refused inside it.
    const batchArb: fc.Arbitrary<BatchOutcome> = fc.record({ adds: anyIds, removes: anyIds, confirmed: fc.boolean(), refused: fc.subarray(UNIVERSE).map((ids) => new Set(ids)) }, { requiredKeys: ['adds', 'removes', 'confirmed'] });
    fc.assert(
      fc.property(stateArb, fc.array(batchArb, { maxLength: 6 }), (state, batches) => {
        expect(nextState(state, batches)).toEqual(applied(state, batches));
      }),
      { numRuns: 500 },
    );
  });

  it('reaches the target when every batch is confirmed, from any state, full or not', () => {
    fc.assert(
      fc.property(idsArb, stateArb, fc.boolean(), sizeArb, (target, state, full, size) => {
        expect(nextState(state, plan(target, state, full, size, allConfirmed))).toEqual({ held: target, uncertain: [] });
      }),
    );
  });

  it('sends again, adds or removes as the target says, every id a partner refused inside a confirmed batch, and then reaches the target', () => {
    fc.assert(
      fc.property(idsArb, stateArb, fc.boolean(), sizeArb, fc.subarray(UNIVERSE), (target, state, full, size, refusedIds) => {
        const refused = new Set(refusedIds);
        const first = nextState(state, plan(target, state, full, size, allConfirmed).map((batch) => ({ ...batch, refused })));
        const sentFirst = new Set([...delta(target, state, full).adds, ...delta(target, state, full).removes]);
        const again = delta(target, first, false);
        for (const id of refusedIds.filter((id) => sentFirst.has(id))) {
          expect([id, target.includes(id) ? again.adds.includes(id) : again.removes.includes(id)]).toEqual([id, true]);
        }
        expect(nextState(first, plan(target, first, false, size, allConfirmed))).toEqual({ held: target, uncertain: [] });
      }),
    );
  });

  it('after a round with unconfirmed batches, reaches any new target once a round is confirmed', () => {
    fc.assert(
      fc.property(idsArb, idsArb, stateArb, sizeArb, sizeArb, confirmationsArb, (target, target2, state, size, size2, confirmations) => {
        const first = nextState(state, plan(target, state, false, size, (i) => confirmations[i % confirmations.length]));
        expect(nextState(first, plan(target2, first, false, size2, allConfirmed))).toEqual({ held: target2, uncertain: [] });
      }),
    );
  });
});
