import type { Collection } from 'mongodb';
import { documentIdsOf } from '../domain/privacy';
import { insertKeyed, type Store } from './db';
import { firstAbsent } from './keyedSequence';

export const PRIVACY_MARK_COLLECTIONS = {
  /** Opt-outs, one slot `<n12>` per request: the profile documents of the subject when it was made. */
  marks: 'privacy_marks',
} as const;

interface MarkSlot {
  _id: string;
  requestId: string;
  at: Date;
  /** Profile document ids (pseudonymous), never identities. */
  documents: string[];
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
  private readonly documents = new Map<string, string>();
  private read = 0;
  private refreshedAt = 0;
  private refreshing: Promise<void> | null = null;

  constructor(store: Store) {
    this.slots = store.db.collection<MarkSlot>(PRIVACY_MARK_COLLECTIONS.marks);
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

  /** Records an opt-out of these documents in a new slot (a retry of the same request adds the same ids again: a set). */
  async add(requestId: string, documents: string[], at: Date): Promise<void> {
    for (;;) {
      const n = await firstAbsent(async (k) => (await this.slots.findOne({ _id: slotId(k) }, { projection: { _id: 1 } })) !== null, this.read + 1);
      if ((await insertKeyed(this.slots, [{ _id: slotId(n), requestId, at, documents }])).size === 0) break;
    }
    await this.refresh(true);
  }
}
