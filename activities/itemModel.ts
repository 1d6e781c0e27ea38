import type { Config } from '../config';
import { CooccurrenceCounter, itemsOf, MODEL_CHUNK_ITEMS } from '../domain/recommendations';
import { encodeFieldName } from '../domain/fieldNames';
import type { SubjectNeeds } from '../domain/segmentRules';
import type { Store } from '../store/db';
import { ItemModelStore } from '../store/itemModel';
import { heartbeat, withHeartbeats } from './heartbeat';
import { passPeople, peoplePassStores } from './peoplePass';

export interface ItemModelDeps {
  store: Store;
  config: Pick<Config, 'DMP_ITEM_EVENT_TYPES'>;
}

export interface ItemModelResult {
  buildId: string;
  items: number;
  people: number;
  documentsScanned: number;
}

/** The activity that builds the item model recommendations are served from. */
export function createItemModelActivities(deps: ItemModelDeps) {
  const stores = peoplePassStores(deps.store);
  const models = new ItemModelStore(deps.store);

  /**
   * One pass over every person (only the recent events of the item event types decoded), each
   * person's items counted together, each item's closest neighbours written as a new build, then
   * published and the build before it removed. Safe to retry: the build id is the pass's time, its
   * chunks are written by key, and the head remembers the build it replaced.
   */
  async function build(at: Date): Promise<ItemModelResult> {
    const types = deps.config.DMP_ITEM_EVENT_TYPES;
    const needs: SubjectNeeds = { traits: false, identities: false, consent: false, events: new Map(types.map((type) => [encodeFieldName(type), true])) };
    const { people, documentsScanned } = await passPeople(stores, needs, {
      document: (_stored, fields) => itemsOf(fields, types),
      person: (person) => itemsOf(person, types),
    });
    const counter = new CooccurrenceCounter();
    let withItems = 0;
    for (const items of people.values()) {
      if (items.length === 0) continue;
      counter.add(items);
      withItems++;
    }
    heartbeat({ phase: 'neighbours', items: counter.items });
    const neighbours = counter.neighbours();
    const chunks = Array.from({ length: Math.ceil(neighbours.length / MODEL_CHUNK_ITEMS) }, (_, n) => neighbours.slice(n * MODEL_CHUNK_ITEMS, (n + 1) * MODEL_CHUNK_ITEMS));
    const buildId = String(at.getTime());
    await models.writeChunks(buildId, chunks);
    const current = await models.head();
    const previous = current && current.buildId !== buildId ? { buildId: current.buildId, chunks: current.chunks } : (current?.previous ?? null);
    await models.publish({ _id: 'current', buildId, at, chunks: chunks.length, items: neighbours.length, people: withItems, eventTypes: types, previous });
    const served = await models.head();
    // Only the build this one replaced leaves: a newer build served meanwhile keeps what it replaced.
    if (served?.buildId === buildId && previous) await models.drop(previous);
    if (served?.buildId !== buildId) await models.drop({ buildId, chunks: chunks.length });
    return { buildId, items: neighbours.length, people: withItems, documentsScanned };
  }

  return {
    /** See build; `at` (ms) is the build's time, fixed by its workflow. */
    buildItemModel(input: { at: number }): Promise<ItemModelResult> {
      return withHeartbeats(() => build(new Date(input.at)));
    },
  };
}

export type ItemModelActivities = ReturnType<typeof createItemModelActivities>;
