import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Binary, type Collection } from 'mongodb';
import type { PrivacyRequestType, PrivacyResult, PrivacyState, PrivacyStepName, Removal } from '../domain/privacy';
import { findByIds, findByParents, insertKeyed, type Store } from './db';

export const PRIVACY_COLLECTIONS = {
  /** One per request: its type, state, steps, deadline and result; the subject only as a salted hash. */
  requests: 'privacy_requests',
  /** A request's working set while it runs: the identity key it resolves from. Removed when it ends. */
  subjects: 'privacy_subjects',
  /** Insert-only, `<requestId>:<nn>:<step>`: who asked, when, what each step touched (counts, never values). */
  audit: 'privacy_audit',
  /** An access request's export, `<requestId>:<n>`, gzipped JSON in parts. */
  exports: 'privacy_exports',
  /** `salt`: the store's salt for subject hashes, when DMP_PRIVACY_SALT does not give one. */
  settings: 'privacy_settings',
  /**
   * The ledger, one line per request and destination (`<requestId>:<destinationId>`), each written
   * by that destination's branch of the request's workflow alone: the branches run at once, and
   * lines kept in one array of the request lost one another's writes.
   */
  removals: 'privacy_removals',
} as const;

/** Gzipped bytes per stored export part: well under a document's 16 MB. */
const EXPORT_PART_BYTES = 8 * 1024 * 1024;

export interface PrivacyStepDoc {
  name: PrivacyStepName;
  state: 'pending' | 'done';
  at: Date | null;
  touched: Record<string, number>;
}

export interface PrivacyRequestDoc {
  _id: string;
  type: PrivacyRequestType;
  /** `<identity type>:<salted hash>`. */
  subject: string;
  state: PrivacyState;
  requestedBy: string | null;
  receivedAt: Date;
  deadline: Date;
  target: Date;
  steps: PrivacyStepDoc[];
  completedAt: Date | null;
  error: string | null;
  result: PrivacyResult | null;
  /**
   * The ledger: per destination that held the subject, where its removal stands. Read from its
   * lines (`privacy_removals`); stored here only by requests that kept it before, merged under them.
   */
  destinations?: RemovalDoc[];
  /** Parts of the access export, once written. */
  exportParts?: number;
}

export type RemovalDoc = Omit<Removal, 'updatedAt'> & { updatedAt: Date };

interface RemovalLineDoc extends RemovalDoc {
  _id: string;
  requestId: string;
}

/** A request with its ledger: its lines, over any it stored itself before, by destination. */
function withLedger(doc: PrivacyRequestDoc, lines: RemovalLineDoc[]): PrivacyRequestDoc {
  if (lines.length === 0) return doc;
  const ledger = new Map((doc.destinations ?? []).map((line) => [line.destinationId, line]));
  for (const { _id: _, requestId: __, ...line } of lines) ledger.set(line.destinationId, line);
  return { ...doc, destinations: [...ledger.values()].sort((a, b) => (a.destinationId < b.destinationId ? -1 : 1)) };
}

export interface PrivacyAuditDoc {
  _id: string;
  requestId: string;
  step: string;
  at: Date;
  actor: string;
  touched: Record<string, number>;
}

/**
 * A request's working set while it runs: the identity it resolves from and, for an erasure, what it
 * found of the subject. Removed when the request ends: only then are the subject's ids gone.
 */
export interface SubjectDoc {
  _id: string;
  key: string;
  /** Keys the same identity may be stored under too: a cookie or customer id an older version kept as sent (domain/identity identityKeysOf). */
  alsoKeys?: string[];
  /** When the API recorded it (absent on subjects recorded before): one whose request never was is removed a while after. */
  at?: Date;
  partnerIds?: Record<string, string[]>;
  /** An erasure's closure: every identity key and profile document of the subject found so far (it only grows). */
  keys?: string[];
  documents?: string[];
  /** Documents an unlink split that held the subject among others: only the subject's share of them is erased (domain/erasure ErasedSubject.splitFrom). */
  splitFrom?: string[];
  /** The destinations whose partner held the subject when the erasure began (each has its ledger line). */
  holders?: string[];
  /** Set with the closure until `holders` are found: while it is, nothing of the subject has been scrubbed. */
  findingHolders?: boolean;
  /** Keys whose tombstones are written. */
  tombstoned?: string[];
  /** Per source, where its drain stood before the first tombstones: events from there on may be in no routed batch. */
  undrained?: Record<string, number>;
  /** Segment runs that were running during the erasure: their snapshots are done once they end. */
  runsRunning?: string[];
  /** The subject's events erased so far. */
  events?: number;
}

/** Privacy requests and what they keep, each read and written by `_id` (listing scans the small request collection). */
export class PrivacyStore {
  readonly requests: Collection<PrivacyRequestDoc>;
  readonly subjects: Collection<SubjectDoc>;
  readonly audit: Collection<PrivacyAuditDoc>;
  readonly exports: Collection<{ _id: string; body: Binary }>;
  readonly settings: Collection<{ _id: string; value: string }>;
  private readonly removals: Collection<RemovalLineDoc>;

  constructor(store: Store) {
    this.requests = store.db.collection(PRIVACY_COLLECTIONS.requests);
    this.subjects = store.db.collection(PRIVACY_COLLECTIONS.subjects);
    this.audit = store.db.collection(PRIVACY_COLLECTIONS.audit);
    this.exports = store.db.collection(PRIVACY_COLLECTIONS.exports);
    this.settings = store.db.collection(PRIVACY_COLLECTIONS.settings);
    this.removals = store.db.collection(PRIVACY_COLLECTIONS.removals);
  }

  /** The store's salt: made once by whoever asks first (an insert decides), then read. */
  async salt(): Promise<string> {
    await insertKeyed(this.settings, [{ _id: 'salt', value: randomBytes(32).toString('base64url') }]);
    const stored = await this.settings.findOne({ _id: 'salt' });
    if (!stored) throw new Error('the privacy salt could not be read back');
    return stored.value;
  }

  async get(id: string): Promise<PrivacyRequestDoc | null> {
    const doc = await this.requests.findOne({ _id: id });
    return doc && (await this.withLedgers([doc]))[0];
  }

  /** `docs` with their ledgers. */
  private async withLedgers(docs: PrivacyRequestDoc[]): Promise<PrivacyRequestDoc[]> {
    if (docs.length === 0) return docs;
    const byRequest = await findByParents(this.removals, 'requestId', docs.map((doc) => doc._id));
    return docs.map((doc) => withLedger(doc, byRequest.get(doc._id) ?? []));
  }

  /** The requests of ids, by id (absent ids left out). */
  getMany(ids: string[]): Promise<Map<string, PrivacyRequestDoc>> {
    return findByIds(this.requests, ids, 4);
  }

  /** Records a request and its subject's key (and the keys it may also be stored under); returns false when the id was taken (a concurrent repeat). */
  async create(doc: PrivacyRequestDoc, key: string, alsoKeys: string[] = []): Promise<boolean> {
    await insertKeyed(this.subjects, [{ _id: doc._id, key, ...(alsoKeys.length > 0 && { alsoKeys }), at: doc.receivedAt }]);
    return (await insertKeyed(this.requests, [doc])).size === 0;
  }

  async list(state: PrivacyState | undefined, limit: number): Promise<PrivacyRequestDoc[]> {
    const docs = await this.requests.find(state ? { state } : {}).toArray();
    return this.withLedgers(docs.sort((a, b) => b.receivedAt.getTime() - a.receivedAt.getTime() || (a._id < b._id ? -1 : 1)).slice(0, limit));
  }

  /** Requests received before `before` and neither completed nor failed (a scan of the requests, a small collection). */
  async openBefore(before: Date): Promise<Array<Pick<PrivacyRequestDoc, '_id' | 'type'>>> {
    return this.requests.find({ state: { $in: ['received', 'running'] }, receivedAt: { $lt: before } }, { projection: { _id: 1, type: 1 } }).toArray();
  }

  /** The subject's keys: the one its request is named by first, then those it may also be stored under. */
  async keysOf(id: string): Promise<string[] | null> {
    const subject = await this.subjects.findOne({ _id: id });
    return subject ? [subject.key, ...(subject.alsoKeys ?? [])] : null;
  }

  subjectOf(id: string): Promise<SubjectDoc | null> {
    return this.subjects.findOne({ _id: id });
  }

  /** Saves an erasure's working set (this request's workflow is its one writer). */
  async saveSubject(doc: SubjectDoc): Promise<void> {
    await this.subjects.replaceOne({ _id: doc._id }, doc);
  }

  /** The subject's ids as each holding destination's partner knows them, kept while the request runs (to check each removal). */
  async setPartnerIds(id: string, partnerIds: Record<string, string[]>): Promise<void> {
    await this.subjects.updateOne({ _id: id }, { $set: { partnerIds } });
  }

  async partnerIdsOf(id: string, destinationId: string): Promise<string[]> {
    const partnerIds = (await this.subjects.findOne({ _id: id }))?.partnerIds ?? {};
    return Object.hasOwn(partnerIds, destinationId) ? partnerIds[destinationId] : [];
  }

  /** Sets one destination's line of the ledger (that destination's branch of the request's workflow is its one writer). */
  async setRemoval(id: string, removal: RemovalDoc): Promise<void> {
    const line: RemovalLineDoc = { ...removal, _id: `${id}:${removal.destinationId}`, requestId: id };
    await this.removals.replaceOne({ _id: line._id }, line, { upsert: true });
  }

  /** Records a step done and its audit entry (`nn` its place in the request); a retry writes the same. */
  async stepDone(request: PrivacyRequestDoc, name: PrivacyStepName, touched: Record<string, number>, at: Date, actor: string): Promise<void> {
    const n = request.steps.findIndex((step) => step.name === name);
    await insertKeyed(this.audit, [{ _id: `${request._id}:${String(n).padStart(2, '0')}:${name}`, requestId: request._id, step: name, at, actor, touched }]);
    const steps = request.steps.map((step) => (step.name === name && step.state !== 'done' ? { ...step, state: 'done' as const, at, touched } : step));
    const state = request.state === 'received' ? 'running' : request.state;
    // Not over an ended request: an attempt Temporal replaced may still be running from an older copy of it.
    await this.requests.updateOne({ _id: request._id, state: { $nin: ['completed', 'failed'] } }, { $set: { steps, state } });
    // The caller's copy follows, so its next step is recorded on top of this one.
    Object.assign(request, { steps, state });
  }

  async finish(id: string, set: Pick<PrivacyRequestDoc, 'state' | 'completedAt' | 'error' | 'result'>): Promise<void> {
    await this.requests.updateOne({ _id: id }, { $set: set });
    await this.forgetSubject(id);
  }

  /** Removes what a request kept of its subject (its identity key, and an erasure's closure); safe to repeat. */
  async forgetSubject(id: string): Promise<void> {
    await this.subjects.deleteOne({ _id: id });
  }

  /**
   * Removes the subjects of ended requests (a finish cut short between its two writes) and of
   * requests never recorded that were received before `before` (the API stopped between the two
   * inserts of `create`). One read of the subjects (one per open request) and of their requests.
   */
  async forgetOrphanSubjects(before: Date): Promise<number> {
    const subjects = await this.subjects.find({}, { projection: { _id: 1, at: 1 } }).toArray();
    const requests = await this.getMany(subjects.map((subject) => subject._id));
    let forgotten = 0;
    for (const subject of subjects) {
      const request = requests.get(subject._id);
      const orphan = request ? request.state === 'completed' || request.state === 'failed' : (subject.at ?? new Date(0)) < before;
      // A request recorded since the read above (a repeat reusing a lost create's subject) keeps it.
      if (!orphan || (!request && (await this.get(subject._id)))) continue;
      await this.forgetSubject(subject._id);
      forgotten++;
    }
    return forgotten;
  }

  async auditOf(request: PrivacyRequestDoc): Promise<PrivacyAuditDoc[]> {
    const ids = request.steps.map((step, n) => `${request._id}:${String(n).padStart(2, '0')}:${step.name}`);
    const found = await findByIds(this.audit, ids, 4);
    return ids.flatMap((id) => found.get(id) ?? []);
  }

  /** Writes an access export in gzipped parts (the same ids again on a retry); returns how many. */
  async writeExport(id: string, json: string): Promise<number> {
    const gz = gzipSync(json);
    const parts = Math.max(1, Math.ceil(gz.length / EXPORT_PART_BYTES));
    for (let n = 0; n < parts; n++) {
      await this.exports.replaceOne({ _id: `${id}:${n}` }, { body: new Binary(gz.subarray(n * EXPORT_PART_BYTES, (n + 1) * EXPORT_PART_BYTES)) }, { upsert: true });
    }
    await this.requests.updateOne({ _id: id }, { $set: { exportParts: parts } });
    return parts;
  }

  /** Removes an access export written (`parts` of it) and its count on the request. */
  async dropExport(id: string, parts: number): Promise<void> {
    await this.requests.updateOne({ _id: id }, { $unset: { exportParts: '' } });
    for (let n = 0; n < parts; n++) await this.exports.deleteOne({ _id: `${id}:${n}` });
  }

  /** An access export as JSON text; null when it is not (or no longer) there. */
  async readExport(request: PrivacyRequestDoc): Promise<string | null> {
    if (!request.exportParts) return null;
    const parts: Buffer[] = [];
    for (let n = 0; n < request.exportParts; n++) {
      const part = await this.exports.findOne({ _id: `${request._id}:${n}` });
      if (!part) return null;
      parts.push(Buffer.from(part.body.buffer));
    }
    return gunzipSync(Buffer.concat(parts)).toString('utf8');
  }
}
