import type { Collection } from 'mongodb';
import type { ConsentPolicy, DrainPosition, Party, SourceKind, SourceState } from '../domain/schemas';
import type { FeedConfig } from '../domain/feeds';
import type { CrmMapping } from '../domain/uploads';
import { COLLECTIONS, insertKeyed, isDuplicateKeyError, type Store } from './db';
import { ScheduleSyncs, type ScheduleSyncMark } from './scheduleSyncs';
import { decodeFieldName, encodeFieldName } from '../domain/fieldNames';

export interface SourceDoc {
  _id: string;
  name: string;
  kind: SourceKind;
  party: Party;
  labels: string[];
  writeKeyHash: string;
  createdAt: Date;
  /** Absent on sources made before policies existed: they get DEFAULT_CONSENT_POLICY. */
  consent?: ConsentPolicy;
  /** How a `crm` source's uploads are read. */
  mapping?: CrmMapping;
  /** Where a `feed` source's files come from, when, and how they are read. */
  feed?: FeedConfig;
  /** Whether draining is paused; absent means active. Set by the API, read when a workflow (re)starts. */
  state?: SourceState;
  /** A feed source's change whose schedule update is still owed (see ScheduleSyncs). */
  scheduleSync?: ScheduleSyncMark;
  /** Made under an Idempotency-Key: what tells a repeat of its request from another (api/idempotency). */
  createdWith?: string;
}

/**
 * Where a source's drain stands, written by the drain itself after each batch (one writer: the
 * source's workflow), so a terminated and restarted workflow resumes at its cursor with its counts.
 */
interface DrainPositionDoc extends DrainPosition {
  _id: string;
  /**
   * The partitions the turn that saved it routed events to, until they are woken: a worker that
   * dies between the save and the wake-ups leaves them here for the next turn, which finds no new
   * chunk to route and would otherwise wake nobody. Absent in positions saved before it existed.
   */
  wakes?: number[];
}

/** Write keys are looked up by the hash of the key, as an exact `_id`; the key itself is never stored. */
interface SourceKeyDoc {
  _id: string;
  sourceId: string;
}

/**
 * The columns a mapping reads traits from are named by clients and are keys of the stored mapping:
 * stored encoded as field names are (a `.` or leading `$` is refused by the store), read back decoded.
 */
function withTraitColumns(doc: SourceDoc, code: (name: string) => string): SourceDoc {
  const recoded = <M extends { traits: Record<string, string> }>(mapping: M): M => ({ ...mapping, traits: Object.fromEntries(Object.entries(mapping.traits).map(([column, trait]) => [code(column), trait])) });
  return { ...doc, ...(doc.mapping && { mapping: recoded(doc.mapping) }), ...(doc.feed && { feed: { ...doc.feed, mapping: recoded(doc.feed.mapping) } }) };
}

const stored = (doc: SourceDoc) => withTraitColumns(doc, encodeFieldName);
const read = (doc: SourceDoc) => withTraitColumns(doc, decodeFieldName);

export class SourceStore {
  private readonly sources: Collection<SourceDoc>;
  private readonly keys: Collection<SourceKeyDoc>;
  private readonly positions: Collection<DrainPositionDoc>;
  readonly scheduleSyncs: ScheduleSyncs<SourceDoc>;

  constructor(store: Store) {
    this.sources = store.db.collection<SourceDoc>(COLLECTIONS.sources);
    this.scheduleSyncs = new ScheduleSyncs(store, this.sources);
    this.keys = store.db.collection<SourceKeyDoc>(COLLECTIONS.sourceKeys);
    this.positions = store.db.collection<DrainPositionDoc>(COLLECTIONS.drainPositions);
  }

  /** False when a source of its id is there already (a create under the same Idempotency-Key). */
  async create(source: SourceDoc): Promise<boolean> {
    try {
      await this.sources.insertOne(stored(source));
    } catch (error) {
      if (isDuplicateKeyError(error)) return false;
      throw error;
    }
    try {
      await this.keys.insertOne({ _id: source.writeKeyHash, sourceId: source._id });
    } catch (error) {
      // Written already for this source: a repeat of its create under the same key finished it first.
      if (isDuplicateKeyError(error) && (await this.keys.findOne({ _id: source.writeKeyHash }))?.sourceId === source._id) return true;
      await this.sources.deleteOne({ _id: source._id });
      throw error;
    }
    return true;
  }

  /** The write key's lookup of a source a create under a key made, written again if that create stopped before it. */
  async ensureKey(source: SourceDoc): Promise<void> {
    await insertKeyed(this.keys, [{ _id: source.writeKeyHash, sourceId: source._id }]);
  }

  /** Undoes `create` when the source's workflow could not be started, so nothing is left half-made. */
  async remove(source: SourceDoc): Promise<void> {
    await this.keys.deleteOne({ _id: source.writeKeyHash });
    await this.sources.deleteOne({ _id: source._id });
  }

  async get(id: string): Promise<SourceDoc | null> {
    const doc = await this.sources.findOne({ _id: id });
    return doc && read(doc);
  }

  async sourceIdForKeyHash(keyHash: string): Promise<string | null> {
    return (await this.keys.findOne({ _id: keyHash }))?.sourceId ?? null;
  }

  async list(): Promise<SourceDoc[]> {
    return (await this.sources.find({}).sort({ createdAt: 1 }).toArray()).map(read);
  }

  /** Saves a pause or resume, with the mark of its schedule update when the source has a schedule. */
  async setState(id: string, state: SourceState, scheduleSync?: ScheduleSyncMark): Promise<void> {
    await this.scheduleSyncs.exclusive(id, () => this.sources.updateOne({ _id: id }, { $set: { state, ...(scheduleSync && { scheduleSync }) } }));
  }

  /** The drain's saved position, or null before its first batch. */
  async loadPosition(id: string): Promise<DrainPosition | null> {
    const doc = await this.positions.findOne({ _id: id });
    if (!doc) return null;
    const { _id, wakes: _, ...position } = doc;
    return position;
  }

  /** The partitions a turn saved as to be woken and not yet as woken (see `DrainPositionDoc.wakes`). */
  async owedWakes(id: string): Promise<{ cursor: number; partitions: number[] } | null> {
    const doc = await this.positions.findOne({ _id: id }, { projection: { cursor: 1, wakes: 1 } });
    return doc?.wakes?.length ? { cursor: doc.cursor, partitions: doc.wakes } : null;
  }

  /** Records the wake-ups of the turn that saved the position at `cursor` as sent; a later turn's are left be. */
  async wakesSent(id: string, cursor: number): Promise<void> {
    await this.positions.updateOne({ _id: id, cursor }, { $set: { wakes: [] } });
  }

  /**
   * Replaces the saved position by `_id`, unless the stored one is further on: the same batch saved
   * twice writes the same document, and a turn of a stalled worker, routing a range again after
   * another worker took the source over and went past it, cannot set the position back (a fresh
   * start would route from there again). When it is further on, the filter matches nothing and the
   * upsert's insert is a duplicate, which leaves it be. Atomic on MongoDB; on FerretDB a read and a
   * write back, which leaves a window of milliseconds, not a stall's length.
   */
  async savePosition(id: string, position: DrainPosition, wakes: number[] = []): Promise<void> {
    try {
      await this.positions.replaceOne({ _id: id, cursor: { $lte: position.cursor } }, { ...position, wakes }, { upsert: true });
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error;
    }
  }
}
