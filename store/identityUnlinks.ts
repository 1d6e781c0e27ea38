import { BSON, type Collection } from 'mongodb';
import type { Severance } from '../domain/identitySplit';
import type { UnlinkState } from '../domain/schemas';
import { COLLECTIONS, forEachConcurrently, insertKeyed, type Store } from './db';

/** How an unlink splits its component, fixed by its first plan so every step and retry agrees. */
export interface UnlinkPlan {
  sides: number;
  /** Identity key → side, as a list: keys may hold characters a field name may not (and FerretDB stores no nested arrays). */
  sideOf: Array<{ key: string; side: number }>;
  /** The component's live documents when planned, and their partitions. */
  docs: Array<{ profileId: string; partition: number }>;
  /** The links between them, replaced once the documents are split. */
  links: string[];
}

export interface UnlinkResult {
  split: boolean;
  /** Per side after the split: the profile documents holding it (the profile id first). */
  sides: Array<{ profileIds: string[] }>;
  /** Events in which the identities were seen together and no longer join them. */
  eventsSevered: number;
  reason?: string;
}

/** One unlink request: written by the API, then advanced only by its own workflow. */
export interface UnlinkDoc {
  _id: string;
  keys: string[];
  state: UnlinkState;
  requestedAt: Date;
  plan?: UnlinkPlan;
  result?: UnlinkResult;
  completedAt?: Date;
}

/** The most an unlink stores in one document: the store's limit is 16 MiB, less room for the envelope. */
const MAX_DOCUMENT_BYTES = 15 * 1024 * 1024;

/**
 * The size in bytes of the largest document an unlink would store — its request with the plan, or a
 * severance — when it is over what the store takes; null when every one fits. An over-merged profile
 * (a junk id that joined millions) plans more than that: such an unlink fails at once, rather than
 * retrying for ever in front of every later one.
 */
export function oversized(doc: UnlinkDoc, severances: Severance[]): number | null {
  const sizes = [BSON.calculateObjectSize(doc), ...severances.map((severance) => BSON.calculateObjectSize(severance))];
  const largest = Math.max(...sizes);
  return largest > MAX_DOCUMENT_BYTES ? largest : null;
}

interface SeveranceDoc extends Severance {
  _id: string;
  unlinkId: string;
  at: Date;
}

/** Unlink requests and the co-occurrences they severed (kept for good: every later split must respect them). */
export class UnlinkStore {
  private readonly unlinks: Collection<UnlinkDoc>;
  private readonly severances: Collection<SeveranceDoc>;

  constructor(store: Store) {
    this.unlinks = store.db.collection<UnlinkDoc>(COLLECTIONS.identityUnlinks);
    this.severances = store.db.collection<SeveranceDoc>(COLLECTIONS.identitySeverances);
  }

  async create(doc: UnlinkDoc): Promise<void> {
    await this.unlinks.insertOne(doc);
  }

  get(id: string): Promise<UnlinkDoc | null> {
    return this.unlinks.findOne({ _id: id });
  }

  /** Only the request's workflow writes it after creation, one step at a time. */
  async save(doc: UnlinkDoc): Promise<void> {
    await this.unlinks.replaceOne({ _id: doc._id }, doc);
  }

  /** Requests not finished yet (few: unlinks are operator actions), oldest first; only those requested before `before` when given. */
  async unfinished(before?: Date): Promise<string[]> {
    const docs = await this.unlinks.find({ state: { $in: ['pending', 'splitting'] }, ...(before && { requestedAt: { $lt: before } }) }, { projection: { _id: 1, requestedAt: 1 } }).toArray();
    return docs.sort((a, b) => a.requestedAt.getTime() - b.requestedAt.getTime()).map((doc) => doc._id);
  }

  /** Keyed by request and pair: a retried plan records the same severance once. */
  async sever(unlinkId: string, severances: Severance[], at: Date): Promise<void> {
    await insertKeyed(
      this.severances,
      severances.map((severance) => ({ _id: `${unlinkId}:${severance.keys.join('|')}`, ...severance, unlinkId, at })),
    );
  }

  /** Every severance: unlinks are operator actions, so they are few (each naming the events it severed). */
  async allSeverances(): Promise<Severance[]> {
    return (await this.severances.find({}, { projection: { keys: 1, eventIds: 1 } }).toArray()).map((doc) => ({ keys: doc.keys, eventIds: doc.eventIds }));
  }

  /**
   * Removes an unlink request, and the severances it recorded that name any of `keys` (one indexed
   * read per key) — those first: a retry cut short in between still finds the request, and repeats this.
   */
  async forget(unlinkId: string, keys: string[]): Promise<void> {
    await forEachConcurrently(keys, 16, async (key) => {
      for (const doc of await this.severances.find({ keys: key }, { projection: { unlinkId: 1 } }).toArray()) {
        if (doc.unlinkId === unlinkId) await this.severances.deleteOne({ _id: doc._id });
      }
    });
    await this.unlinks.deleteOne({ _id: unlinkId });
  }

  /** Every severance touching one of `keys`: one indexed read per key. */
  async severancesOf(keys: string[]): Promise<Severance[]> {
    const found = new Map<string, Severance>();
    await forEachConcurrently(keys, 16, async (key) => {
      for (const doc of await this.severances.find({ keys: key }).toArray()) found.set(doc._id, { keys: doc.keys, eventIds: doc.eventIds });
    });
    return [...found.values()];
  }
}
