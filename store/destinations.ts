import { randomBytes } from 'node:crypto';
import { Binary, BSON, type Collection } from 'mongodb';
import { DestinationConsentSchema, type DestinationConsent, type ExportState, type IdType, type PartnerState, type SegmentExport } from '../domain/destinations';
import { rangesBySize, storedStringBytes } from '../domain/bySize';
import type { SegmentSchedule } from '../domain/segments';
import { deleteByIds, findByIds, forEachConcurrently, idsByOwner, insertKeyed, type Store } from './db';
import { ScheduleSyncs, type ScheduleSyncMark } from './scheduleSyncs';
import { VersionClaims } from './versionClaims';

export const DESTINATION_COLLECTIONS = {
  /** Destination definitions, written by the API alone (but for `partnerWaitUntil`, see DestinationDefinition). */
  destinations: 'destinations',
  /** One per destination: what its partner holds per segment, written by the export holding the destination's turn. */
  holdings: 'destination_holdings',
  /** One per destination: how its last export ended, written by each export as it ends. */
  lastExports: 'destination_last_exports',
  /** Turns of a destination's exports (`<destinationId>:<n>`, ended by `<destinationId>:<n>:end`): inserts only. */
  turns: 'destination_turns',
  /** One per export: its plan, counts and outcome. */
  exports: 'destination_exports',
  /** An export's planned batches (`<planId>:<n>`), removed once the export is finished. */
  batches: 'export_batches',
  /** One per delivered batch (`_id` = batch id): the partner's confirmation, kept. */
  receipts: 'export_receipts',
  /** What each partner holds per segment, in chunks written by the export that confirmed it. */
  partnerState: 'partner_state',
} as const;

/** Where the ids a partner holds for one segment are stored: the chunks an export wrote. */
export interface HeldState {
  exportId: string;
  chunks: number;
  ids: number;
  uncertain: number;
  /** When every id held was last sent, all confirmed (a first or full export, a resend, a renewal): a connector whose adds expire renews from it. */
  sentAllAt?: Date;
  /**
   * A resend (the partner's address changed) found the segment under the partner's minimum
   * audience and sent none of it: the segment's next export that may add sends it all.
   */
  resendOwed?: boolean;
}

/**
 * A destination as the API defines it. The API is its only writer: the store's updates read, change
 * and write back whole documents, so what exports write about a destination lives in documents of
 * its own (holdings, last export, turns).
 */
export interface DestinationDefinition {
  _id: string;
  name: string;
  connector: string;
  /** The connector's config as validated, secrets included (the API never echoes them). */
  config: Record<string, unknown>;
  segments: string[];
  idType: IdType;
  schedule: SegmentSchedule | null;
  nearRealTime: boolean;
  labelsAllowed: string[];
  consent: DestinationConsent;
  /** The share of each segment held out from the partner (domain/destinations isHeldOut); absent on destinations made before holdouts. */
  holdoutShare?: number;
  state: 'active' | 'paused';
  /**
   * Until when the partner asked, by a Retry-After longer than a delivery waits, not to be sent to:
   * scheduled exports skip; an export the partner then takes whole clears it. The one field exports
   * write on the definition, through the same exclusive write as the API's.
   */
  partnerWaitUntil?: Date | null;
  /** When the partner's address last changed: exports planned before it did not send everything to the new one. */
  addressChangedAt?: Date | null;
  /** A change whose schedule update is still owed (see ScheduleSyncs). */
  scheduleSync?: ScheduleSyncMark;
  /** The fingerprint of the request that created it under an Idempotency-Key (api/idempotency). */
  createdWith?: string;
  /** While it is removed: the partner states to drop (see `remove`). */
  dropping?: Array<{ segmentId: string; held: HeldState }>;
  createdAt: Date;
  updatedAt: Date;
}

/** Fields of destinations stored before exports kept their own documents: read until those exist. */
interface LegacyExportFields {
  held?: Record<string, HeldState>;
  lastExport?: LastExport | null;
  resend?: boolean;
}

/** The destination's last export; `failingSince`: when the first of the exports failing in a row up to it ended (absent after a completed one). */
type LastExport = { exportId: string; state: ExportState; startedAt: Date; finishedAt: Date | null; failingSince?: Date };

interface HoldingsDoc {
  _id: string;
  /** Per segment id. A segment dropped from the destination keeps its entry until an export removed its ids. */
  held: Record<string, HeldState>;
  /** When the last export that sent everything again was planned. */
  resentFor: Date | null;
}

interface LastExportDoc {
  _id: string;
  lastExport: LastExport;
}

interface TurnDoc {
  _id: string;
  destinationId: string;
  n: number;
  /** The export that took the turn; absent on its end marker. */
  exportId?: string;
  at: Date;
}

/** A destination with what its exports recorded about it. */
export interface DestinationDoc extends DestinationDefinition {
  held: Record<string, HeldState>;
  /** Whether the partner's address changed since everything was last sent: the next export sends everything again. */
  resend: boolean;
  /** When the last export that sent everything again was planned (null before any). */
  resentFor: Date | null;
  lastExport: LastExport | null;
}

export interface PlannedSegment extends Omit<SegmentExport, 'refused'> {
  /** The partner state the plan was computed from (finishing computes the next from it, so a retry agrees). */
  before: HeldState | null;
  /** The plan's batches of this segment: `[from, to)`. */
  batches: [number, number];
  /** Why nothing was added (e.g. under the partner's minimum audience), when so. */
  refused: string | null;
  /** The segment snapshot the plan read (a near-real-time check compares it). */
  runId: string | null;
  /** The plan sends every id of the segment's target, not only the changes. */
  sentAll?: boolean;
}

export interface ExportDoc {
  _id: string;
  destinationId: string;
  state: ExportState;
  full: boolean;
  trigger: 'api' | 'schedule' | 'near_real_time' | 'privacy';
  /** The workflow running it, once it started: a later export waits only for a live one. */
  workflowId?: string;
  /**
   * The workflow that opened it for its window (scheduled, near-real-time and privacy exports): a
   * retry of that workflow's open finds it; another workflow opening the same second takes the next.
   */
  openedBy?: string;
  /** Set once planned; `plannedAt` is when planning began (changes after it are the next export's). */
  plan: { id: string; segments: PlannedSegment[]; batches: number; plannedAt: Date; /** Whether it sends everything again (the partner's address changed). */ resent: boolean; /** How long planning took. */ tookMs: number } | null;
  batchesConfirmed: number;
  rejected: number;
  startedAt: Date;
  finishedAt: Date | null;
  error: string | null;
}

export interface BatchDoc {
  segmentId: string;
  adds: string[];
  removes: string[];
}

export interface ReceiptDoc {
  _id: string;
  exportId: string;
  destinationId: string;
  state: 'applied' | 'failed';
  attempts: number;
  rejected: number;
  /** Of an applied batch, the lines (its adds, then its removes, by position) the partner may not have applied: those it refused. */
  refusedLines?: number[];
  status: number | null;
  error: string | null;
  at: Date;
}

interface StoredBinary {
  _id: string;
  body: Binary;
}

/** Ids per stored partner-state chunk, and the most their text takes (ids are up to 512 characters): a chunk stays a few megabytes. */
const STATE_CHUNK = 50_000;
const STATE_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * At most what a list of ids takes in memory: two bytes a character (one for most ids), a string's
 * header and its slot. Ids are up to 512 characters: counting ids alone let long ones take gigabytes.
 */
function keptBytes(ids: string[]): number {
  let bytes = 0;
  for (const id of ids) bytes += 2 * id.length + 40;
  return bytes;
}

export function newDestinationId(): string {
  return `dst_${randomBytes(8).toString('hex')}`;
}

export function batchId(exportId: string, n: number): string {
  return `${exportId}:${n}`;
}

/**
 * Destinations and their exports. Every read and write is by exact `_id`, except listing (a small
 * collection of destinations, and one destination's exports). Batch and state contents are stored
 * as one binary value each: the store converts nothing field by field.
 */
export class DestinationStore {
  readonly destinations: Collection<DestinationDefinition & LegacyExportFields>;
  readonly holdings: Collection<HoldingsDoc>;
  readonly lastExports: Collection<LastExportDoc>;
  readonly turns: Collection<TurnDoc>;
  readonly exports: Collection<ExportDoc>;
  readonly batches: Collection<StoredBinary>;
  readonly receipts: Collection<ReceiptDoc>;
  readonly partnerState: Collection<StoredBinary>;
  private readonly claims: VersionClaims;
  readonly scheduleSyncs: ScheduleSyncs<DestinationDefinition>;
  /**
   * Planned batches this process wrote or read, newest last, up to `keepBatchBytes` of memory in
   * all (as keptBytes counts it): a batch is written once under its plan's id and never changed,
   * so delivering and finishing an export planned here read it without the store's round trip.
   */
  private readonly keptBatches = new Map<string, { batch: BatchDoc; bytes: number }>();
  private keptBytes = 0;

  constructor(
    store: Store,
    private readonly options: { keepBatchBytes?: number } = {},
  ) {
    this.claims = new VersionClaims(store);
    this.destinations = store.db.collection(DESTINATION_COLLECTIONS.destinations);
    this.scheduleSyncs = new ScheduleSyncs(store, this.destinations);
    this.holdings = store.db.collection<HoldingsDoc>(DESTINATION_COLLECTIONS.holdings);
    this.lastExports = store.db.collection<LastExportDoc>(DESTINATION_COLLECTIONS.lastExports);
    this.turns = store.db.collection<TurnDoc>(DESTINATION_COLLECTIONS.turns);
    this.exports = store.db.collection<ExportDoc>(DESTINATION_COLLECTIONS.exports);
    this.batches = store.db.collection<StoredBinary>(DESTINATION_COLLECTIONS.batches);
    this.receipts = store.db.collection<ReceiptDoc>(DESTINATION_COLLECTIONS.receipts);
    this.partnerState = store.db.collection<StoredBinary>(DESTINATION_COLLECTIONS.partnerState);
  }

  async get(id: string): Promise<DestinationDoc | null> {
    const [definition, holdings, last] = await Promise.all([this.destinations.findOne({ _id: id }), this.holdings.findOne({ _id: id }), this.lastExports.findOne({ _id: id })]);
    return definition && withExportState(definition, holdings, last);
  }

  async list(): Promise<DestinationDoc[]> {
    const [definitions, holdings, lasts] = await Promise.all([this.destinations.find({}).sort({ createdAt: 1 }).toArray(), this.holdings.find({}).toArray(), this.lastExports.find({}).toArray()]);
    const holdingsOf = new Map(holdings.map((doc) => [doc._id, doc]));
    const lastOf = new Map(lasts.map((doc) => [doc._id, doc]));
    return definitions.map((definition) => withExportState(definition, holdingsOf.get(definition._id) ?? null, lastOf.get(definition._id) ?? null));
  }

  /** Whether it was created: false when its id is taken (a create repeated under its Idempotency-Key). */
  async create(doc: DestinationDefinition): Promise<boolean> {
    return (await insertKeyed(this.destinations, [doc])).size === 0;
  }

  /**
   * Changes a destination's definition (the API's writes). Requests on one destination may run at
   * once (a pause during an edit): on FerretDB each writes under a claim of the document, after any
   * other's, so neither writes the document back over the other's fields.
   */
  async update(id: string, set: Partial<DestinationDefinition>): Promise<void> {
    await this.scheduleSyncs.exclusive(id, () => this.destinations.updateOne({ _id: id }, { $set: set }));
  }

  /**
   * Removes a destination with what its exports kept: its holdings, last export and turns, then the
   * partner's state (the ids it holds) they named, the definition last — so a removal cut short
   * leaves the destination listed, for the same DELETE to finish, and readers never meet holdings
   * whose state is gone. The states to drop are first noted on the definition (`dropping`), for a
   * repeat to find once the holdings are gone. Also what an export that finished after the removal
   * wrote (no definition then). Safe to repeat. The definition is marked (`dropping`) before anything
   * is read: an export finishing meanwhile, which reads its definition after writing its state,
   * finds the mark and removes what it wrote (`finish`).
   */
  async remove(id: string): Promise<void> {
    await this.scheduleSyncs.exclusive(id, () => this.destinations.updateOne({ _id: id, dropping: { $exists: false } }, { $set: { dropping: [] } }));
    await this.removeExportState(id);
    await this.destinations.deleteOne({ _id: id });
  }

  /** What `remove` removes before the definition: for a definition removed already (an undone create). */
  async removeExportState(id: string): Promise<void> {
    const [definition, holdings] = await Promise.all([this.destinations.findOne({ _id: id }), this.holdings.findOne({ _id: id })]);
    const named = [...Object.entries(definition?.held ?? {}), ...Object.entries(holdings?.held ?? {})].map(([segmentId, held]) => ({ segmentId, held }));
    const dropping = [...(definition?.dropping ?? []), ...named].filter((entry, n, all) => all.findIndex((other) => other.segmentId === entry.segmentId && other.held.exportId === entry.held.exportId) === n);
    if (definition && named.length > 0) await this.update(id, { dropping });
    await Promise.all([this.holdings.deleteOne({ _id: id }), this.lastExports.deleteOne({ _id: id }), this.turns.deleteMany({ destinationId: id })]);
    for (const { segmentId, held } of dropping) await this.dropState(id, segmentId, held);
  }

  /** Every segment some destination exports: the batch runs keep export facts for their members. */
  async exportedSegments(): Promise<Set<string>> {
    return new Set((await this.list()).flatMap((doc) => [...doc.segments, ...Object.keys(doc.held)]));
  }

  /** Records what the partner holds after an export; only the export holding the destination's turn calls it. */
  async saveHoldings(id: string, held: Record<string, HeldState>, resentFor: Date | null): Promise<void> {
    await this.holdings.replaceOne({ _id: id }, { held, resentFor }, { upsert: true });
  }

  async saveLastExport(id: string, lastExport: LastExport): Promise<void> {
    await this.lastExports.replaceOne({ _id: id }, { lastExport }, { upsert: true });
  }

  /**
   * Takes the destination's next turn for `exportId` unless an export holds the current one; returns
   * the holder (`exportId` itself when it holds it, also on a repeated claim). Turns are only ever
   * inserted, never updated, so two exports claiming at once cannot both win on a store whose
   * conditional updates are not atomic against each other.
   */
  async claim(id: string, exportId: string): Promise<string> {
    const { docs, latest, holder } = await this.turnsOf(id);
    if (holder) return holder;
    const next = latest + 1;
    await insertKeyed(this.turns, [{ _id: `${id}:${next}`, destinationId: id, n: next, exportId, at: new Date() }]);
    const taken = (await this.turns.findOne({ _id: `${id}:${next}` })) as TurnDoc;
    // Ended turns are only history now: whoever claims next reads the newest turn, which stays.
    if (taken.exportId === exportId) await Promise.all(docs.map((doc) => this.turns.deleteOne({ _id: doc._id })));
    return taken.exportId as string;
  }

  /** The export holding the destination's current turn, if one does. */
  async holder(id: string): Promise<string | null> {
    return (await this.turnsOf(id)).holder;
  }

  private async turnsOf(id: string): Promise<{ docs: TurnDoc[]; latest: number; holder: string | null }> {
    const docs = await this.turns.find({ destinationId: id }).toArray();
    const latest = Math.max(0, ...docs.filter((doc) => doc.exportId !== undefined).map((doc) => doc.n));
    const taken = docs.find((doc) => doc.n === latest && doc.exportId !== undefined);
    const ended = docs.some((doc) => doc.n === latest && doc.exportId === undefined);
    return { docs, latest, holder: taken && !ended ? (taken.exportId as string) : null };
  }

  /** Ends the turns `exportId` took (its own release, or another export's once its workflow is gone). Safe to repeat. */
  async release(id: string, exportId: string): Promise<void> {
    const taken = await this.turns.find({ destinationId: id, exportId }).toArray();
    await insertKeyed(
      this.turns,
      taken.map((turn) => ({ _id: `${turn._id}:end`, destinationId: id, n: turn.n, at: new Date() })),
    );
  }

  getExport(id: string): Promise<ExportDoc | null> {
    return this.exports.findOne({ _id: id });
  }

  /** Records an export's start; a repeated start finds the first record. */
  async openExport(doc: ExportDoc): Promise<ExportDoc> {
    await insertKeyed(this.exports, [doc]);
    return (await this.getExport(doc._id)) as ExportDoc;
  }

  /**
   * Saves an export's plan unless one is saved already; whether this one was. Two attempts at
   * planning (one timed out, still going) can save at once: on FerretDB both would pass the filter
   * and the earlier plan's batches be left to nobody, so there the save is made under a claim.
   */
  async savePlan(id: string, plan: NonNullable<ExportDoc['plan']>): Promise<boolean> {
    const save = () => this.exports.updateOne({ _id: id, state: 'running', plan: null }, { $set: { plan } });
    const held = await this.claims.hold(`${DESTINATION_COLLECTIONS.exports}/${id}@plan`, save);
    return held?.value.modifiedCount === 1;
  }

  /**
   * Exports the API started (under `destinationExportWorkflowId`; scheduled ones run under their
   * schedule's ids) recorded as running since before `before`: one scan of the export records.
   */
  async apiExportsRunningBefore(before: Date): Promise<string[]> {
    const running = await this.exports.find({ state: 'running' }, { projection: { _id: 1, startedAt: 1, trigger: 1 } }).toArray();
    return running.filter((doc) => doc.trigger === 'api' && doc.startedAt < before).map((doc) => doc._id);
  }

  /** Records as failed an export whose workflow never began (its start gate abandoned: nothing else writes it). */
  async failUnstarted(id: string, error: string, at: Date): Promise<void> {
    await this.exports.updateOne({ _id: id, state: 'running' }, { $set: { state: 'failed', finishedAt: at, error } });
  }

  async saveExport(doc: ExportDoc): Promise<void> {
    await this.exports.replaceOne({ _id: doc._id }, doc);
  }

  /**
   * Removes the records of at most `limit` exports that ended before `before`, with their batches'
   * receipts (and any batches a failed export left), the record last, so a retry finds it again. A
   * destination's last export stays while the destination shows it.
   */
  async expireExports(before: Date, limit: number): Promise<{ exports: number; receipts: number }> {
    const shown = new Set((await this.lastExports.find({}).toArray()).map((doc) => doc.lastExport.exportId));
    const ended = (await this.exports.find({ finishedAt: { $lt: before } }).limit(limit + shown.size).toArray()).filter((doc) => doc.state !== 'running' && !shown.has(doc._id)).slice(0, limit);
    let receipts = 0;
    for (const doc of ended) {
      const batches = Array.from({ length: doc.plan?.batches ?? 0 }, (_, n) => n);
      if (doc.plan) await this.dropBatches(doc.plan.id, batches.length);
      await forEachConcurrently(batches, 8, async (n) => {
        const { deletedCount } = await this.receipts.deleteOne({ _id: batchId(doc._id, n) });
        receipts += deletedCount;
      });
      await this.exports.deleteOne({ _id: doc._id });
    }
    return { exports: ended.length, receipts };
  }

  async listExports(destinationId: string, limit: number): Promise<ExportDoc[]> {
    const docs = await this.exports.find({ destinationId }).toArray();
    return docs.sort((a, b) => b.startedAt.getTime() - a.startedAt.getTime()).slice(0, limit);
  }

  /** Writes a planned batch under its plan's id: two attempts at planning never write into each other's batches. */
  async writeBatch(planId: string, n: number, batch: BatchDoc): Promise<void> {
    await this.batches.replaceOne({ _id: `${planId}:${n}` }, { body: new Binary(BSON.serialize(batch)) }, { upsert: true });
    this.keepBatch(`${planId}:${n}`, batch);
  }

  async readBatch(planId: string, n: number): Promise<BatchDoc | null> {
    const kept = this.keptBatches.get(`${planId}:${n}`);
    if (kept) return kept.batch;
    const stored = await this.batches.findOne({ _id: `${planId}:${n}` });
    const batch = stored ? (BSON.deserialize(stored.body.buffer) as BatchDoc) : null;
    if (batch) this.keepBatch(`${planId}:${n}`, batch);
    return batch;
  }

  async dropBatches(planId: string, count: number): Promise<void> {
    await forEachConcurrently(
      Array.from({ length: count }, (_, n) => n),
      8,
      async (n) => {
        await this.batches.deleteOne({ _id: `${planId}:${n}` });
        this.forgetBatch(`${planId}:${n}`);
      },
    );
  }

  /**
   * Removes the batches no export will read: those of exports that ended before `endedBefore`, or
   * are gone. An attempt at planning that died before saving its plan leaves its batches under a
   * plan id nobody records (`<exportId>:<plan>:<n>`). One scan of the batches' ids: the collection
   * holds only running exports' batches and such leftovers.
   */
  async dropLeftBatches(endedBefore: Date): Promise<number> {
    const byExport = await idsByOwner(this.batches, (id) => id.split(':').slice(0, -2).join(':'));
    let dropped = 0;
    for (const [exportId, ids] of byExport) {
      const exp = await this.getExport(exportId);
      if (exp && !(exp.finishedAt && exp.finishedAt < endedBefore)) continue;
      for (const id of ids) this.forgetBatch(id);
      dropped += await deleteByIds(this.batches, ids);
    }
    return dropped;
  }

  private keepBatch(id: string, batch: BatchDoc): void {
    const limit = this.options.keepBatchBytes ?? 0;
    const bytes = keptBytes(batch.adds) + keptBytes(batch.removes);
    if (bytes > limit) return;
    this.forgetBatch(id);
    this.keptBatches.set(id, { batch, bytes });
    this.keptBytes += bytes;
    for (const [oldest] of this.keptBatches) {
      if (this.keptBytes <= limit) break;
      this.forgetBatch(oldest);
    }
  }

  private forgetBatch(id: string): void {
    const kept = this.keptBatches.get(id);
    if (!kept) return;
    this.keptBatches.delete(id);
    this.keptBytes -= kept.bytes;
  }

  /** The receipts of an export's batches, by batch number. */
  async receiptsOf(exportId: string, count: number): Promise<Map<number, ReceiptDoc>> {
    const ids = Array.from({ length: count }, (_, n) => batchId(exportId, n));
    const found = await findByIds(this.receipts, ids, 16);
    return new Map(ids.flatMap((id, n) => (found.has(id) ? [[n, found.get(id) as ReceiptDoc] as const] : [])));
  }

  async writeReceipt(receipt: ReceiptDoc): Promise<void> {
    await this.receipts.replaceOne({ _id: receipt._id }, receipt, { upsert: true });
  }

  /** A partner's state for one segment; empty before its first confirmed export. */
  async readState(destinationId: string, segmentId: string, held: HeldState | null): Promise<PartnerState> {
    const state: PartnerState = { held: [], uncertain: [] };
    if (!held) return state;
    const bodies: PartnerState[] = [];
    await forEachConcurrently(
      Array.from({ length: held.chunks }, (_, n) => n),
      4,
      async (n) => {
        const stored = await this.partnerState.findOne({ _id: stateChunkId(destinationId, segmentId, held.exportId, n) });
        if (!stored) throw new Error(`partner state chunk ${n} of ${destinationId}/${segmentId} (export ${held.exportId}) is missing`);
        bodies[n] = BSON.deserialize(stored.body.buffer) as PartnerState;
      },
    );
    // In chunk order: each list comes back whole and sorted (a chunk holds the next slice of either list, or of both as states written before did).
    for (const body of bodies) {
      for (const id of body.held) state.held.push(id);
      for (const id of body.uncertain) state.uncertain.push(id);
    }
    return state;
  }

  /** Writes a segment's new partner state under the export that made it; a retry writes the same ids. */
  async writeState(destinationId: string, segmentId: string, exportId: string, state: PartnerState): Promise<HeldState> {
    // The held ids' chunks, then the uncertain ones': readers concatenate each list in chunk order, which keeps it sorted.
    const cut = (ids: string[]) => (ids.length === 0 ? [] : rangesBySize(ids, storedStringBytes, STATE_CHUNK_BYTES, STATE_CHUNK).map(([from, to]) => ids.slice(from, to)));
    const bodies: PartnerState[] = [...cut(state.held).map((held) => ({ held, uncertain: [] })), ...cut(state.uncertain).map((uncertain) => ({ held: [], uncertain }))];
    if (bodies.length === 0) bodies.push({ held: [], uncertain: [] });
    await forEachConcurrently(
      bodies.map((body, n) => ({ body, n })),
      4,
      async ({ body, n }) => {
        await this.partnerState.replaceOne({ _id: stateChunkId(destinationId, segmentId, exportId, n) }, { body: new Binary(BSON.serialize(body)) }, { upsert: true });
      },
    );
    return { exportId, chunks: bodies.length, ids: state.held.length, uncertain: state.uncertain.length };
  }

  async dropState(destinationId: string, segmentId: string, held: HeldState): Promise<void> {
    for (let n = 0; n < held.chunks; n++) await this.partnerState.deleteOne({ _id: stateChunkId(destinationId, segmentId, held.exportId, n) });
  }
}

function withExportState(definition: DestinationDefinition & LegacyExportFields, holdings: HoldingsDoc | null, last: LastExportDoc | null): DestinationDoc {
  const { held: legacyHeld, lastExport: legacyLast, resend: legacyResend, ...rest } = definition;
  // A change recorded before the time of it was (then a flag cleared by the next complete export).
  const changedAt = definition.addressChangedAt ?? (legacyResend ? definition.updatedAt : null);
  const resentFor = holdings?.resentFor ?? null;
  return {
    ...rest,
    // Settings added since a destination was made read as their defaults.
    consent: DestinationConsentSchema.parse(rest.consent),
    held: holdings?.held ?? legacyHeld ?? {},
    resend: changedAt !== null && (resentFor === null || resentFor <= changedAt),
    resentFor,
    lastExport: last?.lastExport ?? legacyLast ?? null,
  };
}

function stateChunkId(destinationId: string, segmentId: string, exportId: string, n: number): string {
  return `${destinationId}:${segmentId}:${exportId}:${n}`;
}
