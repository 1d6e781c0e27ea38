import type { Config } from '../config';
import { CooccurrenceCounter, itemsOf } from '../domain/recommendations';
import { encodeFieldName } from '../domain/fieldNames';
import type { SubjectNeeds } from '../domain/segmentRules';
import type { Store } from '../store/db';
import { ItemModelStore, type ItemModelHead } from '../store/itemModel';
import { heartbeat, withHeartbeats } from './heartbeat';
import { passPeople, peoplePassStores } from './peoplePass';

export interface ItemModelDeps {
  store: Store;
  config: Pick<Config, 'DMP_ITEM_EVENT_TYPES' | 'DMP_ITEM_MODEL_EVERY_MINUTES'>;
  now?: () => Date;
}

/** How long a full build's mark holds without being renewed (a build that died lets refreshes go on after this). */
const FULL_BUILD_MARK_MS = 120_000;
const FULL_BUILD_RENEW_MS = 30_000;

export interface ItemModelResult {
  /**
   * `build`: a pass over every person; `refresh`: the changes folds recorded since, applied;
   * `unchanged`: none; `deferred`: a full build is under way, and what it publishes holds them.
   */
  kind: 'build' | 'refresh' | 'unchanged' | 'deferred';
  buildId: string;
  items: number;
  people: number;
  documentsScanned: number;
  changesApplied: number;
}

/** The activity that keeps the item model recommendations are served from. */
export function createItemModelActivities(deps: ItemModelDeps) {
  const stores = peoplePassStores(deps.store);
  const models = new ItemModelStore(deps.store);
  const now = deps.now ?? (() => new Date());
  const sameTypes = (head: ItemModelHead) => head.eventTypes.join('\u0000') === deps.config.DMP_ITEM_EVENT_TYPES.join('\u0000');

  /**
   * Writes a build's neighbours and counts, publishes it, removes the build it replaced and the
   * change records it holds. Safe to retry: the build id is its time, its chunks are written by key,
   * and the head remembers the build it replaced and the records it applied.
   */
  async function publish(at: Date, counter: CooccurrenceCounter, head: Omit<ItemModelHead, '_id' | 'buildId' | 'at' | 'chunks' | 'items' | 'stateChunks' | 'previous'>): Promise<string> {
    heartbeat({ phase: 'neighbours', items: counter.items });
    const neighbours = counter.neighbours();
    const buildId = String(at.getTime());
    const chunks = await models.writeChunks(buildId, neighbours);
    const stateChunks = await models.writeState(buildId, counter.state());
    const current = await models.head();
    const previous = current && current.buildId !== buildId ? { buildId: current.buildId, chunks: current.chunks, stateChunks: current.stateChunks } : (current?.previous ?? null);
    await models.publish({ _id: 'current', buildId, at, chunks, items: neighbours.length, stateChunks, previous, ...head });
    const served = await models.head();
    // Only the build this one replaced leaves: a newer build served meanwhile keeps what it replaced.
    if (served?.buildId === buildId && previous) await models.drop(previous);
    if (served?.buildId !== buildId) await models.drop({ buildId, chunks, stateChunks });
    else await models.dropChanges(head.applied ?? []);
    return buildId;
  }

  /**
   * One pass over every person (only the recent events of the item event types decoded), each
   * person's items counted together. Change records stamped before the pass began are in what it
   * reads and leave with it; later ones are applied by the next refresh (a fold landing during the
   * pass may so count twice until the next full build).
   */
  async function build(at: Date): Promise<ItemModelResult> {
    const types = deps.config.DMP_ITEM_EVENT_TYPES;
    const folded = (await models.pendingChanges()).filter((record) => record.at < at).map((record) => record._id);
    const needs: SubjectNeeds = { traits: false, identities: false, consent: false, events: new Map(types.map((type) => [encodeFieldName(type), true])) };
    const { people, documentsScanned } = await passPeople(stores, needs, {
      document: (_stored, fields) => itemsOf(fields, types),
      person: (person) => itemsOf(person, types),
    }, { skipOptedOut: true, skipRefused: true });
    const counter = new CooccurrenceCounter();
    let withItems = 0;
    for (const items of people.values()) {
      if (items.length === 0) continue;
      counter.add(items);
      withItems++;
    }
    const buildId = await publish(at, counter, { people: withItems, eventTypes: types, fullAt: at, applied: folded });
    return { kind: 'build', buildId, items: counter.items, people: withItems, documentsScanned, changesApplied: 0 };
  }

  /**
   * The served build's counts with the item changes folds recorded since applied (each person's old
   * item set out, the new one in): the same counts a pass would give, at the cost of the changes.
   */
  async function refresh(at: Date, head: ItemModelHead): Promise<ItemModelResult | null> {
    const state = await models.readState(head);
    if (!state) return null;
    const done = new Set(head.applied ?? []);
    const pending = await models.pendingChanges();
    // Applied by the served build but not yet removed (its update stopped short): carried until they are.
    const leftover = pending.filter((record) => done.has(record._id)).map((record) => record._id);
    const records = pending.filter((record) => !done.has(record._id));
    if (records.length === 0) {
      await models.dropChanges(leftover);
      return { kind: 'unchanged', buildId: head.buildId, items: head.items, people: head.people, documentsScanned: 0, changesApplied: 0 };
    }
    const counter = CooccurrenceCounter.from(state);
    let people = head.people;
    let changesApplied = 0;
    for (const record of records) {
      for (const { before, after } of record.people) {
        counter.change(before, after);
        people += (after.length > 0 ? 1 : 0) - (before.length > 0 ? 1 : 0);
        changesApplied++;
      }
    }
    const buildId = await publish(at, counter, { people, eventTypes: head.eventTypes, fullAt: head.fullAt, applied: [...leftover, ...records.map((record) => record._id)] });
    return { kind: 'refresh', buildId, items: counter.items, people, documentsScanned: 0, changesApplied };
  }

  /** Runs a full build under its mark, renewed while it runs and ended after. */
  async function marked(at: Date, work: () => Promise<ItemModelResult>): Promise<ItemModelResult> {
    const until = () => new Date(now().getTime() + FULL_BUILD_MARK_MS);
    await models.markFullBuild(at, until());
    const timer = setInterval(() => void models.renewFullBuild(at, until()).catch(() => undefined), FULL_BUILD_RENEW_MS);
    try {
      return await work();
    } finally {
      clearInterval(timer);
      // Left behind, the mark runs out by itself: not worth failing (and repeating) a finished build for.
      await models.endFullBuild(at).catch(() => undefined);
    }
  }

  return {
    /**
     * Brings the item model up to date at `at` (ms, fixed by its workflow): the changes since the
     * served build applied to its counts, or a full build when asked, when none is served or it has
     * no counts, when the event types changed, or when the last full build is DMP_ITEM_MODEL_EVERY_MINUTES old.
     */
    updateItemModel(input: { at: number; full?: boolean }): Promise<ItemModelResult> {
      return withHeartbeats(async () => {
        const at = new Date(input.at);
        const head = await models.head();
        const due = !head?.fullAt || at.getTime() - head.fullAt.getTime() >= deps.config.DMP_ITEM_MODEL_EVERY_MINUTES * 60_000;
        if (!input.full && head && !due && sameTypes(head)) {
          // Published first with a later time, a refresh would have the build dropped when it ends.
          if (await models.fullBuildUnderWay(now())) return { kind: 'deferred', buildId: head.buildId, items: head.items, people: head.people, documentsScanned: 0, changesApplied: 0 };
          const refreshed = await refresh(at, head);
          if (refreshed) return refreshed;
        }
        return marked(at, () => build(at));
      });
    },
  };
}

export type ItemModelActivities = ReturnType<typeof createItemModelActivities>;
