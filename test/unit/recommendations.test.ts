import { encodeFieldName } from '../../domain/fieldNames';
import { seededRandom } from '../support/random';
import { CooccurrenceCounter, ITEMS_PER_PERSON, itemsOf, NEIGHBOURS_KEPT, recommend } from '../../domain/recommendations';

const at = new Date('2026-11-30T00:00:00Z');
const counter = (items: unknown[]) => ({ count: items.length, firstSeen: at, lastSeen: at, days: {}, recent: items.map((item) => ({ at, properties: { item } })) });

describe('recommendations', () => {
  it("read a person's items from the recent events of the item types only, strings and finite numbers", () => {
    const subject = { counters: { purchase: counter(['b', 'a', 7, null, '', Infinity]), page_view: counter(['x']), [encodeFieldName('add.to.cart')]: counter(['c']) } };
    expect(itemsOf(subject, ['purchase', 'add.to.cart'])).toEqual(['7', 'a', 'b', 'c']);
    const many = { counters: { purchase: counter(Array.from({ length: ITEMS_PER_PERSON + 10 }, (_, n) => `i${String(n).padStart(3, '0')}`)) } };
    expect(itemsOf(many, ['purchase'])).toHaveLength(ITEMS_PER_PERSON);
  });

  it('score neighbours by cosine co-occurrence, each pair counted once per person', () => {
    const counts = new CooccurrenceCounter();
    for (let i = 0; i < 3; i++) counts.add(['tent', 'stove', 'tent']);
    counts.add(['tent', 'lamp']);
    counts.add(['book']);
    const model = new Map(counts.neighbours().map((entry) => [entry.item, entry]));
    expect(model.get('tent')).toEqual({ item: 'tent', people: 4, neighbours: [['stove', 3 / Math.sqrt(12)], ['lamp', 1 / Math.sqrt(4)]] });
    expect(model.get('book')).toEqual({ item: 'book', people: 1, neighbours: [] });
    expect(recommend(model, ['tent'], 10)).toEqual([
      { item: 'stove', score: 3 / Math.sqrt(12) },
      { item: 'lamp', score: 0.5 },
    ]);
    // Similarities add up across the person's items; what it holds is never recommended.
    expect(recommend(model, ['stove', 'lamp'], 10)).toEqual([{ item: 'tent', score: 3 / Math.sqrt(12) + 0.5 }]);
    expect(recommend(model, ['unknown'], 10)).toEqual([]);
  });

  it('keep the closest neighbours of an item only', () => {
    const counts = new CooccurrenceCounter();
    for (let n = 0; n < NEIGHBOURS_KEPT + 20; n++) for (let k = 0; k <= n; k++) counts.add(['hub', `spoke${n}`]);
    const hub = counts.neighbours().find((entry) => entry.item === 'hub');
    expect(hub?.neighbours).toHaveLength(NEIGHBOURS_KEPT);
    const similarities = hub?.neighbours.map(([, similarity]) => similarity) ?? [];
    expect(similarities).toEqual([...similarities].sort((a, b) => b - a));
  });

  it('apply changes to stored counts exactly as a recount of everyone would give', () => {
    const random = seededRandom(11);
    const catalogue = Array.from({ length: 30 }, (_, n) => `item${n}`);
    const basket = () => catalogue.filter(() => random() < 0.15);
    const people = Array.from({ length: 200 }, basket);
    const counted = new CooccurrenceCounter();
    for (const items of people) counted.add(items);

    // Through a stored state, as a refresh reads it: some people change their items, some lose all.
    const refreshed = CooccurrenceCounter.from(counted.state());
    for (let n = 0; n < people.length; n += 3) {
      const after = n % 2 === 0 ? basket() : [];
      refreshed.change(people[n], after);
      people[n] = after;
    }
    const recounted = new CooccurrenceCounter();
    for (const items of people) recounted.add(items);
    const byItem = (counter: CooccurrenceCounter) => counter.neighbours().sort((a, b) => catalogue.indexOf(a.item) - catalogue.indexOf(b.item));
    expect(byItem(refreshed)).toEqual(byItem(recounted));
  });

  it('keep similarities finite and at most 1 when applied changes took away more than was counted', () => {
    const counter = new CooccurrenceCounter();
    counter.add(['cap', 'yoyo']); // only Q holds the cap
    counter.add(['yoyo', 'ball']);
    // P's change names the cap among what it held, though the count never had it from P: the cap drops to 0 people.
    counter.change(['cap', 'kite'], ['kite']);
    const neighbours = counter.neighbours();
    expect(neighbours.find((entry) => entry.item === 'cap')).toBeUndefined();
    const yoyo = neighbours.find((entry) => entry.item === 'yoyo')!;
    expect(yoyo.neighbours.map(([item]) => item)).not.toContain('cap');
    const similarities = neighbours.flatMap((entry) => entry.neighbours.map(([, similarity]) => similarity));
    expect(similarities.length).toBeGreaterThan(0);
    expect(similarities.every((similarity) => similarity > 0 && similarity <= 1)).toBe(true);
    expect(recommend(new Map(neighbours.map((entry) => [entry.item, entry])), ['yoyo'], 5).every(({ score }) => Number.isFinite(score))).toBe(true);
  });
});
