import { randomBytes } from 'node:crypto';
import { Binary, BSON, type Collection } from 'mongodb';
import type { DestinationConsent, ExportState, IdType, PartnerState, SegmentExport } from '../domain/destinations';
import type { SegmentSchedule } from '../domain/segments';
import { findByIds, forEachConcurrently, insertKeyed, type Store } from './db';

export const DESTINATION_COLLECTIONS = {
  destinations: 'destinations',
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
}

export interface DestinationDoc {
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
  /** Per segment id. A segment dropped from the destination keeps its entry until an export removed its ids. */
  held: Record<string, HeldState>;
  /** The export holding the destination (exports of one destination run one at a time). */
  running: string | null;
  /** Set when the partner's address changed: the next export sends everything again. */
  resend?: boolean;
  lastExport: { exportId: string; state: ExportState; startedAt: Date; finishedAt: Date | null } | null;
  createdAt: Date;
  updatedAt: Date;
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
}

export interface ExportDoc {
  _id: string;
  destinationId: string;
  state: ExportState;
  full: boolean;
  trigger: 'api' | 'schedule' | 'near_real_time' | 'privacy';
  /** The workflow running it, once it started: a later export waits only for a live one. */
  workflowId?: string;
  /** Set once planned. */
  /** Set once planned; `plannedAt` is when planning began (changes after it are the next export's). */
  plan: { id: string; segments: PlannedSegment[]; batches: number; plannedAt: Date; resent: boolean; /** How long planning took. */ tookMs: number } | null;
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
  status: number | null;
  error: string | null;
  at: Date;
}

interface StoredBinary {
  _id: string;
  body: Binary;
}

/** Ids per stored partner-state chunk: ~65 bytes an id at most, so a chunk stays a few megabytes. */
const STATE_CHUNK = 50_000;

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
  readonly destinations: Collection<DestinationDoc>;
  readonly exports: Collection<ExportDoc>;
  readonly batches: Collection<StoredBinary>;
  readonly receipts: Collection<ReceiptDoc>;
  readonly partnerState: Collection<StoredBinary>;

  constructor(store: Store) {
    this.destinations = store.db.collection<DestinationDoc>(DESTINATION_COLLECTIONS.destinations);
    this.exports = store.db.collection<ExportDoc>(DESTINATION_COLLECTIONS.exports);
    this.batches = store.db.collection<StoredBinary>(DESTINATION_COLLECTIONS.batches);
    this.receipts = store.db.collection<ReceiptDoc>(DESTINATION_COLLECTIONS.receipts);
    this.partnerState = store.db.collection<StoredBinary>(DESTINATION_COLLECTIONS.partnerState);
  }

  get(id: string): Promise<DestinationDoc | null> {
    return this.destinations.findOne({ _id: id });
  }

  list(): Promise<DestinationDoc[]> {
    return this.destinations.find({}).sort({ createdAt: 1 }).toArray();
  }

  async create(doc: DestinationDoc): Promise<void> {
    await this.destinations.insertOne(doc);
  }

  async update(id: string, set: Partial<DestinationDoc>): Promise<void> {
    await this.destinations.updateOne({ _id: id }, { $set: set });
  }

  async remove(id: string): Promise<void> {
    await this.destinations.deleteOne({ _id: id });
  }

  /** Every segment some destination exports: the batch runs keep export facts for their members. */
  async exportedSegments(): Promise<Set<string>> {
    const all = await this.destinations.find({}, { projection: { segments: 1, held: 1 } }).toArray();
    return new Set(all.flatMap((doc) => [...doc.segments, ...Object.keys(doc.held ?? {})]));
  }

  /** Takes the destination for `exportId` if no other export holds it (or it holds it already). */
  async claim(id: string, exportId: string): Promise<string | null> {
    await this.destinations.updateOne({ _id: id, running: null }, { $set: { running: exportId } });
    return (await this.get(id))?.running ?? null;
  }

  async release(id: string, exportId: string): Promise<void> {
    await this.destinations.updateOne({ _id: id, running: exportId }, { $set: { running: null } });
  }

  getExport(id: string): Promise<ExportDoc | null> {
    return this.exports.findOne({ _id: id });
  }

  /** Records an export's start; a repeated start finds the first record. */
  async openExport(doc: ExportDoc): Promise<ExportDoc> {
    await insertKeyed(this.exports, [doc]);
    return (await this.getExport(doc._id)) as ExportDoc;
  }

  /** Saves an export's plan unless one is saved already; whether this one was. */
  async savePlan(id: string, plan: NonNullable<ExportDoc['plan']>): Promise<boolean> {
    const result = await this.exports.updateOne({ _id: id, state: 'running', plan: null }, { $set: { plan } });
    return result.modifiedCount === 1;
  }

  async saveExport(doc: ExportDoc): Promise<void> {
    await this.exports.replaceOne({ _id: doc._id }, doc);
  }

  async listExports(destinationId: string, limit: number): Promise<ExportDoc[]> {
    const docs = await this.exports.find({ destinationId }).toArray();
    return docs.sort((a, b) => b.startedAt.getTime() - a.startedAt.getTime()).slice(0, limit);
  }

  /** Writes a planned batch under its plan's id: two attempts at planning never write into each other's batches. */
  async writeBatch(planId: string, n: number, batch: BatchDoc): Promise<void> {
    await this.batches.replaceOne({ _id: `${planId}:${n}` }, { body: new Binary(BSON.serialize(batch)) }, { upsert: true });
  }

  async readBatch(planId: string, n: number): Promise<BatchDoc | null> {
    const stored = await this.batches.findOne({ _id: `${planId}:${n}` });
    return stored ? (BSON.deserialize(stored.body.buffer) as BatchDoc) : null;
  }

  async dropBatches(planId: string, count: number): Promise<void> {
    await forEachConcurrently(
      Array.from({ length: count }, (_, n) => n),
      8,
      async (n) => void (await this.batches.deleteOne({ _id: `${planId}:${n}` })),
    );
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
    for (let n = 0; n < held.chunks; n++) {
      const stored = await this.partnerState.findOne({ _id: stateChunkId(destinationId, segmentId, held.exportId, n) });
      if (!stored) throw new Error(`partner state chunk ${n} of ${destinationId}/${segmentId} (export ${held.exportId}) is missing`);
      const body = BSON.deserialize(stored.body.buffer) as PartnerState;
      state.held.push(...body.held);
      state.uncertain.push(...body.uncertain);
    }
    return state;
  }

  /** Writes a segment's new partner state under the export that made it; a retry writes the same ids. */
  async writeState(destinationId: string, segmentId: string, exportId: string, state: PartnerState): Promise<HeldState> {
    const chunks = Math.max(1, Math.ceil((state.held.length + state.uncertain.length) / STATE_CHUNK));
    // Each chunk holds a slice of both lists; readers concatenate them in order, which keeps them sorted.
    const heldPer = Math.ceil(state.held.length / chunks);
    const uncertainPer = Math.ceil(state.uncertain.length / chunks);
    await forEachConcurrently(
      Array.from({ length: chunks }, (_, n) => n),
      4,
      async (n) => {
        const body = { held: state.held.slice(n * heldPer, (n + 1) * heldPer), uncertain: state.uncertain.slice(n * uncertainPer, (n + 1) * uncertainPer) };
        await this.partnerState.replaceOne({ _id: stateChunkId(destinationId, segmentId, exportId, n) }, { body: new Binary(BSON.serialize(body)) }, { upsert: true });
      },
    );
    return { exportId, chunks, ids: state.held.length, uncertain: state.uncertain.length };
  }

  async dropState(destinationId: string, segmentId: string, held: HeldState): Promise<void> {
    for (let n = 0; n < held.chunks; n++) await this.partnerState.deleteOne({ _id: stateChunkId(destinationId, segmentId, held.exportId, n) });
  }
}

function stateChunkId(destinationId: string, segmentId: string, exportId: string, n: number): string {
  return `${destinationId}:${segmentId}:${exportId}:${n}`;
}
