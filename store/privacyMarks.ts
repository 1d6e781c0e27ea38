import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { Identity } from '../domain/identity';
import { identityKey } from '../domain/identity';
import { documentIdsOf, subjectHash } from '../domain/privacy';
import { insertKeyed, type Store } from './db';
import { firstAbsent } from './keyedSequence';
import { PrivacyStore } from './privacy';

export const PRIVACY_MARK_COLLECTIONS = {
  /** Opt-outs and erasures, one slot `<n12>` per request: the subject's profile documents when it was made, and an erasure's tombstones. */
  marks: 'privacy_marks',
  /** Events of erased subjects dropped at the door or at a drain, per request and process (`<requestId>:<process>`). */
  lateEvents: 'privacy_late_events',
} as const;

interface MarkSlot {
  _id: string;
  requestId: string;
  at: Date;
  /** Profile document ids (pseudonymous), never identities. An erasure empties them once the documents are gone. */
  documents: string[];
  /** An erasure's tombstones: the subject's identity keys, each salted and hashed (domain/privacy `subjectHash`). */
  tombstones?: string[];
}

interface LateEventsDoc {
  _id: string;
  requestId: string;
  events: number;
}

const slotId = (n: number) => String(n).padStart(12, '0');

/** How often a process looks for new opt-outs: one read by `_id` when there is none. */
const REFRESH_MS = 1000;

/**
 * The documents of people who opted out ("do not sell or share"), held in memory by every process
 * that folds, evaluates or exports. Slots are inserted and never changed, so a process reads only
 * the slots after the last it read, by exact `_id` — at most one read a second when nothing is new,
 * and no scan. A person is opted out when any document of theirs (or one it was split from) is:
 * the mark survives merges, since a merged person holds the marked document.
 */
export class PrivacyMarks {
  private readonly slots: Collection<MarkSlot>;
  private readonly late: Collection<LateEventsDoc>;
  private readonly documents = new Map<string, string>();
  /** Tombstone → the erasure request that wrote it. */
  private readonly tombstones = new Map<string, string>();
  private salt: string | null = null;
  private read = 0;
  private refreshedAt = 0;
  private refreshing: Promise<void> | null = null;
  private readonly process = randomBytes(6).toString('hex');

  /** `salt`: DMP_PRIVACY_SALT when set; else the store's own, read when the first tombstone is. */
  constructor(
    private readonly store: Store,
    private readonly configuredSalt?: string,
  ) {
    this.slots = store.db.collection<MarkSlot>(PRIVACY_MARK_COLLECTIONS.marks);
    this.late = store.db.collection<LateEventsDoc>(PRIVACY_MARK_COLLECTIONS.lateEvents);
  }

  /** Reads the slots written since the last read (if the last was more than a second ago). */
  refresh(force = false): Promise<void> {
    if (!force && Date.now() - this.refreshedAt < REFRESH_MS) return Promise.resolve();
    this.refreshing ??= (async () => {
      try {
        for (;;) {
          const slot = await this.slots.findOne({ _id: slotId(this.read + 1) });
          if (!slot) break;
          for (const id of slot.documents) this.documents.set(id, slot.requestId);
          for (const tombstone of slot.tombstones ?? []) this.tombstones.set(tombstone, slot.requestId);
          if (slot.tombstones?.length) this.salt ??= this.configuredSalt ?? (await new PrivacyStore(this.store).salt());
          this.read++;
        }
        this.refreshedAt = Date.now();
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Whether a subject — a document and those it was split from, or a person's documents — is opted out (as of the last refresh). */
  optedOut(subject: Parameters<typeof documentIdsOf>[0]): boolean {
    if (this.documents.size === 0) return false;
    return documentIdsOf(subject).some((id) => this.documents.has(id));
  }

  /**
   * The erasure request whose tombstone one of these identities hits (as of the last refresh), or
   * null. Costs nothing while no one has been erased; else one HMAC per identity.
   */
  erasedBy(identities: readonly Identity[]): string | null {
    if (this.tombstones.size === 0 || this.salt === null) return null;
    for (const identity of identities) {
      const requestId = this.tombstones.get(subjectHash(this.salt, identityKey(identity)));
      if (requestId) return requestId;
    }
    return null;
  }

  /** Records an opt-out of these documents (with an erasure's tombstones) in a new slot; returns the slot. A retry of the same request adds the same again: a set. */
  async add(requestId: string, documents: string[], at: Date, tombstones?: string[]): Promise<number> {
    let n: number;
    for (;;) {
      n = await firstAbsent(async (k) => (await this.slots.findOne({ _id: slotId(k) }, { projection: { _id: 1 } })) !== null, this.read + 1);
      if ((await insertKeyed(this.slots, [{ _id: slotId(n), requestId, at, documents, ...(tombstones && { tombstones }) }])).size === 0) break;
    }
    await this.refresh(true);
    return n;
  }

  /** Empties a slot's documents (an erasure's, once they are gone): processes that read it keep them, harmlessly; its tombstones stay. */
  async forgetDocuments(n: number): Promise<void> {
    await this.slots.updateOne({ _id: slotId(n) }, { $set: { documents: [] } });
  }

  /** Counts events of an erased subject that were dropped (this process's own document per request: no two writers). */
  async countLate(counts: Map<string, number>): Promise<void> {
    for (const [requestId, events] of counts) {
      await this.late.updateOne({ _id: `${requestId}:${this.process}` }, { $inc: { events }, $setOnInsert: { requestId } }, { upsert: true });
    }
  }

  /** Late events dropped for a request, over every process (a scan of a collection that holds a few documents per erasure). */
  async lateEventsOf(requestId: string): Promise<number> {
    return (await this.late.find({ requestId }).toArray()).reduce((sum, doc) => sum + doc.events, 0);
  }
}
