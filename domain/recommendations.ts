import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { encodeFieldName } from './fieldNames';
import { ITEM_PROPERTY, type SegmentSubject } from './profile';

extendZodWithOpenApi(z);

/**
 * Item-to-item recommendations: items seen together in people's interactions (events carrying
 * `properties.item`) are neighbours; a person is recommended the items closest to what they
 * interacted with, leaving those out. Similarity is the cosine of co-occurrence,
 * c(i, j) / √(n(i)·n(j)) — people who interacted with both over the root of the product of
 * each's people — so a best-seller everyone touches does not neighbour every item.
 */

/** Event types whose `properties.item` count as interactions when none are configured. */
export const DEFAULT_ITEM_EVENT_TYPES = ['product_view', 'add_to_cart', 'purchase'];
/** Neighbours kept per item, the closest first. */
export const NEIGHBOURS_KEPT = 50;
/** Items of one person counted together: the pairs of one person grow with its square. */
export const ITEMS_PER_PERSON = 64;

/** The items a person interacted with: `properties.item` of the recent events of the given types (what profiles keep: domain/profile RECENT_EVENTS_KEPT per type, within BEHAVIOUR_DAYS). */
export function itemsOf(subject: Pick<SegmentSubject, 'counters'>, types: string[]): string[] {
  const items = new Set<string>();
  for (const type of types) {
    const key = encodeFieldName(type);
    const counter = Object.hasOwn(subject.counters, key) ? subject.counters[key] : undefined;
    for (const event of counter?.recent ?? []) {
      const item = event.properties[ITEM_PROPERTY];
      if ((typeof item === 'string' && item.length > 0) || (typeof item === 'number' && Number.isFinite(item))) items.add(String(item));
    }
  }
  return [...items].sort().slice(0, ITEMS_PER_PERSON);
}

/** One item's neighbours as stored: `[item, similarity]`, the closest first. */
export interface ItemNeighbours {
  item: string;
  /** People who interacted with it. */
  people: number;
  neighbours: Array<[string, number]>;
}

/** A counter's counts as stored between builds: items, people per item, and `[key, count]` per pair flattened. */
export interface CooccurrenceState {
  names: string[];
  people: number[];
  pairs: Float64Array;
}

/** One person's items before and after a fold changed them (the incremental refresh applies these). */
export interface ItemChange {
  personId: string;
  before: string[];
  after: string[];
}

/** Counts, over people's item sets, how many people hold each item and each pair. */
export class CooccurrenceCounter {
  private readonly ids = new Map<string, number>();
  private readonly names: string[] = [];
  private readonly people: number[] = [];
  /** Pair counts keyed `low · 2^26 + high` (item ids below 2^26 — 67M items — keep the key an exact integer). */
  private readonly pairs = new Map<number, number>();

  /** A counter holding stored counts, to apply changes to. */
  static from(state: CooccurrenceState): CooccurrenceCounter {
    const counter = new CooccurrenceCounter();
    for (const [id, name] of state.names.entries()) {
      counter.ids.set(name, id);
      counter.names.push(name);
      counter.people.push(state.people[id]);
    }
    for (let i = 0; i < state.pairs.length; i += 2) counter.pairs.set(state.pairs[i], state.pairs[i + 1]);
    return counter;
  }

  state(): CooccurrenceState {
    const pairs = new Float64Array(this.pairs.size * 2);
    let i = 0;
    for (const [key, count] of this.pairs) {
      pairs[i++] = key;
      pairs[i++] = count;
    }
    return { names: [...this.names], people: [...this.people], pairs };
  }

  /**
   * A person's items changed from `before` to `after`: their old set's counts leave and the new
   * set's come in — the same counts a pass over everyone would give, as long as `before` is what
   * was counted of them.
   */
  change(before: string[], after: string[]): void {
    this.count(before, -1);
    this.count(after, 1);
  }

  private id(item: string): number {
    let id = this.ids.get(item);
    if (id === undefined) {
      id = this.names.push(item) - 1;
      this.ids.set(item, id);
      this.people.push(0);
    }
    return id;
  }

  add(items: string[]): void {
    this.count(items, 1);
  }

  private count(items: string[], by: 1 | -1): void {
    const ids = [...new Set(items.map((item) => this.id(item)))].sort((a, b) => a - b);
    for (const id of ids) this.people[id] += by;
    for (let a = 0; a < ids.length; a++) {
      for (let b = a + 1; b < ids.length; b++) {
        const key = ids[a] * 2 ** 26 + ids[b];
        const count = (this.pairs.get(key) ?? 0) + by;
        if (count > 0) this.pairs.set(key, count);
        else this.pairs.delete(key);
      }
    }
  }

  get items(): number {
    return this.names.length;
  }

  /** Every item's NEIGHBOURS_KEPT closest neighbours (ties: the more shared people, then by name). */
  neighbours(): ItemNeighbours[] {
    const lists: Array<Array<[number, number, number]>> = this.names.map(() => []);
    for (const [key, count] of this.pairs) {
      const low = Math.floor(key / 2 ** 26);
      const high = key - low * 2 ** 26;
      // Counts kept up by changes can drift below a pass's (a change whose `before` was never counted):
      // an item nobody holds has no neighbours, and no pair is shared by more people than hold either item.
      if (this.people[low] <= 0 || this.people[high] <= 0) continue;
      const shared = Math.min(count, this.people[low], this.people[high]);
      const similarity = shared / Math.sqrt(this.people[low] * this.people[high]);
      lists[low].push([high, similarity, shared]);
      lists[high].push([low, similarity, shared]);
    }
    return lists.flatMap((list, id) => (this.people[id] > 0 ? [{
      item: this.names[id],
      people: this.people[id],
      neighbours: list
        .sort((a, b) => b[1] - a[1] || b[2] - a[2] || (this.names[a[0]] < this.names[b[0]] ? -1 : 1))
        .slice(0, NEIGHBOURS_KEPT)
        .map(([other, similarity]) => [this.names[other], similarity] as [string, number]),
    }] : []));
  }
}

/** Items closest to what a person interacted with: each candidate scores the sum of its similarities to their items. */
export function recommend(model: ReadonlyMap<string, ItemNeighbours>, interacted: string[], limit: number): Array<{ item: string; score: number }> {
  const held = new Set(interacted);
  const scores = new Map<string, number>();
  for (const item of held) {
    for (const [neighbour, similarity] of model.get(item)?.neighbours ?? []) {
      if (!held.has(neighbour)) scores.set(neighbour, (scores.get(neighbour) ?? 0) + similarity);
    }
  }
  return [...scores]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, limit)
    .map(([item, score]) => ({ item, score }));
}

// ---- what the routes answer ---------------------------------------------------------------------

export const RecommendationsQuerySchema = z.object({ limit: z.coerce.number().int().min(1).max(100).default(10) });

export const RecommendationsSchema = z
  .object({
    profileId: z.string(),
    modelBuiltAt: z.string().openapi({ format: 'date-time' }).nullable().openapi({ description: 'When the item model was built; null before the first build (then no items)' }),
    items: z.array(z.object({ item: z.string(), score: z.number().openapi({ description: "The sum of the item's similarities to the profile's items" }) })),
  })
  .openapi('Recommendations');

export const ProfileSegmentsSchema = z
  .object({ profileId: z.string(), segments: z.array(z.object({ id: z.string(), name: z.string() })) })
  .openapi('ProfileSegments');

export const ItemModelRequestSchema = z
  .object({ full: z.boolean().default(true).openapi({ description: 'true (default): a pass over every profile; false: apply the interactions folded since the last update' }) })
  .strict()
  .openapi('ItemModelRequest');

export const ItemModelSchema = z
  .object({
    state: z.enum(['none', 'built']),
    builtAt: z.string().openapi({ format: 'date-time' }).nullable().openapi({ description: 'When the model served was last updated (a full build or a refresh)' }),
    fullBuildAt: z.string().openapi({ format: 'date-time' }).nullable().openapi({ description: 'When the full build its counts descend from began' }),
    items: z.number().int(),
    people: z.number().int().openapi({ description: 'People with at least one item' }),
    eventTypes: z.array(z.string()),
  })
  .openapi('ItemModel');
