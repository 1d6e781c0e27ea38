import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { Identity } from '../domain/identity';
import { identityKey } from '../domain/identity';
import { documentIdsOf, subjectHash } from '../domain/privacy';
import { insertKeyed, oneAtATime, type Store } from './db';
import { BoundedCache, firstAbsent } from './keyedSequence';
import { PrivacyStore } from './privacy';
import { SharedRewrites } from './sharedRewrites';

export const PRIVACY_MARK_COLLECTIONS = {
  /** Opt-outs and erasures, in slots `<n12>` of one or more requests: the subject's profile documents, and an erasure's tombstones. */
  marks: 'privacy_marks',
  /** Events of erased subjects dropped at the door or at a drain, per request and process (`<requestId>:<process>`). */
  lateEvents: 'privacy_late_events',
} as const;

/** One request's mark. */
interface MarkEntry {
  requestId: string;
  /** Profile document ids (pseudonymous), never identities. An erasure empties them once the documents are gone. */
  documents: string[];
  /** An erasure's tombstones: the subject's identity keys, each salted and hashed (domain/privacy `subjectHash`). */
  tombstones?: string[];
}

/** The marks of the requests one process wrote at once (older slots hold one request's entry at the top level). */
interface MarkSlot extends Partial<MarkEntry> {
  _id: string;
  at: Date;
  /** Rewrites of the slot (store/sharedRewrites): erasures sharing it empty their entries in turn. */
  erasures?: number;
  entries?: MarkEntry[];
  /** The requests of `entries` (indexed: a request finds its slot). */
  requestIds?: string[];
}

const entriesOf = (slot: MarkSlot): MarkEntry[] => slot.entries ?? [{ requestId: slot.requestId!, documents: slot.documents ?? [], tombstones: slot.tombstones }];

/** Requests whose marks go into one slot at most. */
const SLOT_ENTRIES = 50;

interface LateEventsDoc {
  _id: string;
  requestId: string;
  events: number;
}

const slotId = (n: number) => String(n).padStart(12, '0');

/**
 * How often a process looks for new opt-outs: one read by `_id` when there is none. A mark added
 * this long ago is seen by every process's next refresh-checked read (a refresh counts from when it began).
 */
export const MARKS_REFRESH_MS = 1000;

/**
 * The documents of people who opted out ("do not sell or share") and the tombstones of those
 * erased, held in memory by every process that collects, folds, evaluates or exports. Slots are
 * inserted (only an erasure, once done, empties its documents), so a process reads only the slots
 * after the last it read, by exact `_id` — at most one read a second when nothing is new, and no scan. A person is opted out when any document of theirs (or one it was split from) is:
 * the mark survives merges, since a merged person holds the marked document.
 */
export class PrivacyMarks {
  private readonly slots: Collection<MarkSlot>;
  private readonly late: Collection<LateEventsDoc>;
  private readonly rewrites: SharedRewrites;
  private readonly documents = new Map<string, string>();
  /** The documents of erasures (marks with tombstones), as of the last refresh. */
  private readonly erasedDocuments = new Set<string>();
  /** Tombstone → the erasure request that wrote it. */
  private readonly tombstones = new Map<string, string>();
  private salt: string | null = null;
  /** Salted hashes of identity keys seen lately: the keys of active people recur, their HMACs need not. */
  private readonly hashes = new BoundedCache<string, string>(200_000);
  private read = 0;
  /** Documents marked by opt-outs, counted when first asked after new slots were read. */
  private optOuts: number | null = null;
  private refreshedAt = 0;
  private refreshing: Promise<void> | null = null;
  private refreshingBegan = 0;
  /** A read to begin once the one under way ends (see refresh). */
  private following: Promise<void> | null = null;
  private readonly process = randomBytes(6).toString('hex');
  /** Marks waiting for the next slot this process writes. */
  private readonly adding: Array<{ entry: MarkEntry; resolve: () => void; reject: (error: unknown) => void }> = [];

  /** `salt`: DMP_PRIVACY_SALT when set; else the store's own, read when the first tombstone is. */
  constructor(
    private readonly store: Store,
    private readonly configuredSalt?: string,
  ) {
    this.slots = store.db.collection<MarkSlot>(PRIVACY_MARK_COLLECTIONS.marks);
    this.late = store.db.collection<LateEventsDoc>(PRIVACY_MARK_COLLECTIONS.lateEvents);
    this.rewrites = new SharedRewrites(store);
  }

  /**
   * Reads the slots written since the last read (if the last began more than a second ago, or when
   * forced): one under way is shared only while it began recently enough to see what the caller must.
   */
  refresh(force = false): Promise<void> {
    const now = Date.now();
    if (!force && now - this.refreshedAt < MARKS_REFRESH_MS) return Promise.resolve();
    if (!this.refreshing) return this.readNewSlots();
    if (!force && now - this.refreshingBegan < MARKS_REFRESH_MS) return this.refreshing;
    // The next read, begun once this one ends, is shared by every caller that comes meanwhile.
    this.following ??= this.refreshing
      .catch(() => undefined)
      .then(() => {
        this.following = null;
        return this.refreshing ?? this.readNewSlots();
      });
    return this.following;
  }

  private readNewSlots(): Promise<void> {
    this.refreshing = (async () => {
      // Dated from its start: a slot inserted while the reads ran may have been missed by them.
      const began = (this.refreshingBegan = Date.now());
      try {
        for (;;) {
          const slot = await this.slots.findOne({ _id: slotId(this.read + 1) });
          if (!slot) break;
          for (const entry of entriesOf(slot)) {
            for (const id of entry.documents) this.documents.set(id, entry.requestId);
            if (entry.tombstones?.length) for (const id of entry.documents) this.erasedDocuments.add(id);
            for (const tombstone of entry.tombstones ?? []) this.tombstones.set(tombstone, entry.requestId);
            if (entry.tombstones?.length) this.salt ??= this.configuredSalt ?? (await new PrivacyStore(this.store).salt());
          }
          this.read++;
          this.optOuts = null;
        }
        this.refreshedAt = began;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** How many mark slots this process has read: more after a refresh than before means marks arrived meanwhile. */
  get slotsRead(): number {
    return this.read;
  }

  /** Whether a subject — a document and those it was split from, or a person's documents — is opted out (as of the last refresh). */
  optedOut(subject: Parameters<typeof documentIdsOf>[0]): boolean {
    if (this.documents.size === 0) return false;
    return documentIdsOf(subject).some((id) => this.documents.has(id));
  }

  /** Whether anyone has opted out (as of the last refresh): documents marked by an opt-out, not by an erasure. */
  get anyOptedOut(): boolean {
    this.optOuts ??= [...this.documents.keys()].filter((id) => !this.erasedDocuments.has(id)).length;
    return this.optOuts > 0;
  }

  /** The opt-out request that marked this subject, or null (as of the last refresh; an erasure's documents are gone, not marked). */
  optOutOf(subject: Parameters<typeof documentIdsOf>[0]): string | null {
    if (this.documents.size === 0) return null;
    for (const id of documentIdsOf(subject)) {
      const requestId = this.documents.get(id);
      if (requestId && !this.erasedDocuments.has(id)) return requestId;
    }
    return null;
  }

  /** Whether an erasure marked this document (as of the last refresh): nothing may be recorded about it. */
  erased(profileId: string): boolean {
    return this.erasedDocuments.has(profileId);
  }

  /**
   * The erasure request whose tombstone one of these identities hits (as of the last refresh), or
   * null. Costs nothing while no one has been erased; else a cached HMAC per identity.
   */
  erasedBy(identities: readonly Identity[]): string | null {
    return this.tombstones.size === 0 ? null : this.erasedByKeys(identities.map(identityKey));
  }

  /** As `erasedBy`, for identity keys (`<type>:<value>`). */
  erasedByKeys(keys: readonly string[]): string | null {
    if (this.tombstones.size === 0 || this.salt === null) return null;
    for (const key of keys) {
      let hash = this.hashes.get(key);
      if (hash === undefined) this.hashes.set(key, (hash = subjectHash(this.salt, key)));
      const requestId = this.tombstones.get(hash);
      if (requestId) return requestId;
    }
    return null;
  }

  /**
   * Records an opt-out of these documents (with an erasure's tombstones). Requests of this process
   * that arrive meanwhile share the next slot: one insert for them all, where each on its own would
   * wait for the one before it. A retry of the same request adds the same again: a set.
   */
  add(requestId: string, documents: string[], tombstones?: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.adding.push({ entry: { requestId, documents, ...(tombstones && { tombstones }) }, resolve, reject });
      if (this.adding.length === 1) void this.writeAdded();
    });
  }

  private async writeAdded(): Promise<void> {
    while (this.adding.length > 0) {
      const batch = this.adding.slice(0, SLOT_ENTRIES);
      try {
        const entries = batch.map((added) => added.entry);
        // The slot after the last read is free unless another process wrote meanwhile: tried first, then looked for.
        for (let n = this.read + 1; ; n = await firstAbsent(async (k) => (await this.slots.findOne({ _id: slotId(k) }, { projection: { _id: 1 } })) !== null, this.read + 1)) {
          if ((await insertKeyed(this.slots, [{ _id: slotId(n), at: new Date(), entries, requestIds: [...new Set(entries.map((entry) => entry.requestId))] }])).size === 0) break;
        }
        await this.refresh(true);
        for (const added of batch) added.resolve();
      } catch (error) {
        for (const added of batch) added.reject(error);
      }
      this.adding.splice(0, batch.length);
    }
  }

  /**
   * Empties a request's documents in the slots holding its mark (an erasure's, once they are gone):
   * processes that read them keep them, harmlessly; the tombstones stay. Requests sharing a slot
   * empty their entries at once, on other workers too: each rewrite is made only over the slot as
   * the last one left it (store/sharedRewrites), never from an older read that would bring another
   * request's documents back.
   */
  async forgetDocumentsOf(requestId: string): Promise<number> {
    const slots = await this.slots.find({ requestIds: requestId }, { projection: { _id: 1 } }).toArray();
    for (const { _id } of slots) {
      await this.rewrites.rewrite(this.slots, _id, ({ _id: _, erasures: __, ...slot }) => {
        if (!slot.entries?.some((entry) => entry.requestId === requestId && entry.documents.length > 0)) return null;
        return { doc: { ...slot, entries: slot.entries.map((entry) => (entry.requestId === requestId ? { ...entry, documents: [] } : entry)) }, result: true };
      });
    }
    return slots.length;
  }

  /**
   * Counts events of an erased subject that were dropped (sent to the API), in this process's own
   * document per request. Requests and drains of the process count at once: their writes go in turn, as an
   * increment on FerretDB is a read and a write back, and two first upserts would collide.
   */
  async countLate(counts: Map<string, number>): Promise<void> {
    for (const [requestId, events] of counts) {
      const _id = `${requestId}:${this.process}`;
      await oneAtATime(`${this.late.dbName}/${this.late.collectionName}/${_id}`, async () => {
        await this.late.updateOne({ _id }, { $inc: { events }, $setOnInsert: { requestId } }, { upsert: true });
      });
    }
  }

  /**
   * Counts late events found in a part of the log that may be read again (a retried drain turn, a
   * retried import step): once per request and `part` (a chunk's id, a staged chunk's), in a
   * document of their own, so a second reading counts nothing.
   */
  async countLateOnce(part: string, counts: Map<string, number>): Promise<void> {
    await insertKeyed(this.late, [...counts].map(([requestId, events]) => ({ _id: `${requestId}:${part}`, requestId, events })));
  }

  /** Late events dropped for a request, over every process (a scan of a collection that holds a few documents per erasure). */
  async lateEventsOf(requestId: string): Promise<number> {
    return (await this.late.find({ requestId }).toArray()).reduce((sum, doc) => sum + doc.events, 0);
  }
}
