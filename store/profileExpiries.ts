import type { Collection } from 'mongodb';
import { rangesBySize, storedStringBytes } from '../domain/bySize';
import { insertKeyed, type Store } from './db';

export const PROFILE_EXPIRY_COLLECTION = 'profile_expiries';

/** One partition's share of an expiry, advanced only by the partition's writer. */
export interface ExpiryPartDoc {
  _id: string;
  expiryId: string;
  partition: number;
  cutoff: Date;
  /** The planned documents, in order; `next` is the first not yet looked at. */
  docs: string[];
  /** Each planned document's version when planned (same order). */
  versions?: number[];
  next: number;
  /** Documents expired, documents found active again (or gone) when their turn came, and claims released. */
  expired: number;
  skipped: number;
  identities: number;
  /**
   * The slice being expired: its documents and their identity keys, written before its retired
   * versions so that a retry after them still knows which claims to release. Emptied once they are.
   */
  releasing?: Array<{ profileId: string; key: string }>;
  /** Documents of the slice that hold no identity (so `releasing` cannot name them). */
  keyless?: string[];
  done: boolean;
}

/** An expiry's plan: the partitions it asks, and how many chunks hold the links between its documents (removed once both ends expired). */
export interface ExpiryDoc {
  _id: string;
  cutoff: Date;
  plannedAt: Date;
  people: number;
  partitions: number[];
  /** Absent from plans written before links were chunked: those hold their links in `links`. */
  linkChunks?: number;
  links?: string[];
}

/** A slice of an expiry's links, up to LINK_CHUNK_BYTES of their ids: a plan may name a link per planned document, 20,000 a partition. */
interface ExpiryLinksDoc {
  _id: string;
  expiryId: string;
  links: string[];
}

const LINK_CHUNK_BYTES = 4 * 1024 * 1024;

export const expiryPartId = (expiryId: string, partition: number) => `${expiryId}:${partition}`;
const linkChunkId = (expiryId: string, n: number) => `${expiryId}:links:${n}`;

/** The plans of inactive-profile expiries (domain/profileExpiry): a handful of documents per retention run. */
export class ProfileExpiries {
  private readonly docs: Collection<ExpiryDoc | ExpiryPartDoc | ExpiryLinksDoc>;

  constructor(
    store: Store,
    private readonly linkChunkBytes = LINK_CHUNK_BYTES,
  ) {
    this.docs = store.db.collection(PROFILE_EXPIRY_COLLECTION);
  }

  /**
   * Writes a plan: the expiry first, so a planning cut short leaves what `discard` finds, and its
   * parts last, so a plan whose parts are all there is whole.
   */
  async plan(expiry: Omit<ExpiryDoc, 'linkChunks' | 'links'>, parts: ExpiryPartDoc[], links: string[]): Promise<ExpiryDoc> {
    const chunks = links.length === 0 ? [] : rangesBySize(links, storedStringBytes, this.linkChunkBytes).map(([from, to], n) => ({ _id: linkChunkId(expiry._id, n), expiryId: expiry._id, links: links.slice(from, to) }));
    const planned: ExpiryDoc = { ...expiry, linkChunks: chunks.length };
    await insertKeyed(this.docs as Collection<ExpiryDoc>, [planned]);
    await insertKeyed(this.docs as Collection<ExpiryLinksDoc>, chunks);
    await insertKeyed(this.docs as Collection<ExpiryPartDoc>, parts);
    return planned;
  }

  /** The links a plan names, a chunk at a time. */
  async *links(expiry: ExpiryDoc): AsyncGenerator<string[]> {
    if (expiry.links?.length) yield expiry.links;
    for (let n = 0; n < (expiry.linkChunks ?? 0); n++) {
      const chunk = (await this.docs.findOne({ _id: linkChunkId(expiry._id, n) })) as ExpiryLinksDoc | null;
      if (chunk) yield chunk.links;
    }
  }

  /** Removes a plan whatever its state (one written half way, before any partition was asked). */
  async discard(expiry: ExpiryDoc): Promise<void> {
    for (const partition of expiry.partitions) await this.docs.deleteOne({ _id: expiryPartId(expiry._id, partition) });
    await this.dropLinks(expiry);
    await this.docs.deleteOne({ _id: expiry._id });
  }

  private async dropLinks(expiry: ExpiryDoc): Promise<void> {
    for (let n = 0; n < (expiry.linkChunks ?? 0); n++) await this.docs.deleteOne({ _id: linkChunkId(expiry._id, n) });
  }

  get(expiryId: string): Promise<ExpiryDoc | null> {
    return this.docs.findOne({ _id: expiryId }) as Promise<ExpiryDoc | null>;
  }

  /** One partition's part; `withoutDocs` leaves out its (long) lists of documents. */
  part(expiryId: string, partition: number, options: { withoutDocs?: boolean } = {}): Promise<ExpiryPartDoc | null> {
    const projection = options.withoutDocs ? { docs: 0, versions: 0, releasing: 0, keyless: 0 } : undefined;
    return this.docs.findOne({ _id: expiryPartId(expiryId, partition) }, { projection }) as Promise<ExpiryPartDoc | null>;
  }

  /** Only the partition's writer saves its part. */
  async savePart(part: ExpiryPartDoc): Promise<void> {
    await this.docs.replaceOne({ _id: part._id }, part);
  }

  /** Every part of an expiry, one read by `_id` each. */
  async parts(expiry: ExpiryDoc, options: { withoutDocs?: boolean } = {}): Promise<ExpiryPartDoc[]> {
    const parts = await Promise.all(expiry.partitions.map((partition) => this.part(expiry._id, partition, options)));
    return parts.filter((part) => part !== null);
  }

  /** Removes an expiry's finished parts, and the expiry once none is left. */
  async forget(expiry: ExpiryDoc): Promise<void> {
    const parts = await this.parts(expiry, { withoutDocs: true });
    for (const part of parts) if (part.done) await this.docs.deleteOne({ _id: part._id });
    if (parts.some((part) => !part.done)) return;
    await this.dropLinks(expiry);
    await this.docs.deleteOne({ _id: expiry._id });
  }

  /** Expiries planned before `before` (few documents: plans leave once their parts are done). */
  async plannedBefore(before: Date): Promise<ExpiryDoc[]> {
    return (await this.docs.find({ plannedAt: { $lt: before } }).toArray()) as ExpiryDoc[];
  }
}
