import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { FieldError } from '../domain/collect';
import { redactContactText } from '../domain/contactRedaction';
import { logger } from '../logger';
import { REJECTION_CHANNELS, type ChannelRejectionTotals, type RejectionChannel } from '../domain/schemas';
import { COLLECTIONS, type Store } from './db';

type ChannelCounts = Record<RejectionChannel, number>;

interface RejectionSample {
  channel: RejectionChannel;
  at: Date;
  errors: FieldError[];
}

/** One per source, UTC hour and API process (`<sourceId>:<YYYYMMDDHH>:<process>`): only that process writes it. */
interface RejectionDoc {
  _id: string;
  sourceId: string;
  hour: Date;
  counts: Partial<ChannelCounts>;
  last: RejectionSample;
}

const HOUR_MS = 3600_000;
/** A sample keeps a few field errors; one is usually enough to see what a sender gets wrong. */
const SAMPLE_ERRORS = 5;

function hourOf(at: Date): Date {
  return new Date(Math.floor(at.getTime() / HOUR_MS) * HOUR_MS);
}

function hourKey(hour: Date): string {
  return hour.toISOString().slice(0, 13).replace(/[-T]/g, '');
}

function zeroCounts(): ChannelCounts {
  return { pixel: 0, tag: 0, segment: 0 };
}

/**
 * Rejections per source for channels whose senders never see an error (the pixel always returns its
 * GIF; the tag's beacons are never read; tracking SDKs ignore the answer). Counting is an in-memory increment; every `flushMs` each
 * touched (source, hour) becomes one `$inc` of this process's own document, so a hit never waits on
 * the store and no two processes write the same document. Counts not yet flushed when a process dies
 * are lost: they are operator signals, not acknowledged data.
 */
export class ChannelRejections {
  private readonly docs: Collection<RejectionDoc>;
  private readonly process = randomBytes(6).toString('hex');
  private pending = new Map<string, { sourceId: string; hour: Date; counts: ChannelCounts; last: RejectionSample }>();
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();

  constructor(store: Store, flushMs = 5000) {
    this.docs = store.db.collection<RejectionDoc>(COLLECTIONS.channelRejections);
    this.timer = setInterval(() => void this.flush(), flushMs);
    this.timer.unref();
  }

  count(sourceId: string, channel: RejectionChannel, errors: FieldError[], n = 1, at = new Date()): void {
    const hour = hourOf(at);
    const key = `${sourceId}:${hourKey(hour)}:${this.process}`;
    let entry = this.pending.get(key);
    if (!entry) {
      entry = { sourceId, hour, counts: zeroCounts(), last: { channel, at, errors: [] } };
      this.pending.set(key, entry);
    }
    entry.counts[channel] += n;
    // A sample names what the sender sent: NUL, which the store cannot hold, is shown escaped, and an
    // email address or phone number (a field named by one, a value quoted in a message) is not kept.
    const storable = (text: string) => redactContactText(text.replaceAll('\u0000', '\\0'));
    entry.last = { channel, at, errors: errors.slice(0, SAMPLE_ERRORS).map((error) => ({ ...error, path: storable(error.path), message: storable(error.message) })) };
  }

  /** Writes what was counted since the last flush; counts whose write failed are kept for the next (one whose answer was lost may count twice). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const batch = this.pending;
      this.pending = new Map();
      for (const [key, entry] of batch) {
        const inc = Object.fromEntries(REJECTION_CHANNELS.filter((c) => entry.counts[c] > 0).map((c) => [`counts.${c}`, entry.counts[c]]));
        try {
          await this.docs.updateOne({ _id: key }, { $inc: inc, $set: { last: entry.last }, $setOnInsert: { sourceId: entry.sourceId, hour: entry.hour } }, { upsert: true });
        } catch (error) {
          logger.warn({ err: error, sourceId: entry.sourceId }, 'could not record channel rejections; keeping them for the next flush');
          const again = this.pending.get(key);
          if (again) for (const c of REJECTION_CHANNELS) again.counts[c] += entry.counts[c];
          else this.pending.set(key, entry);
        }
      }
    });
    return this.flushing;
  }

  /** Stops the timer after a last flush. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  /**
   * A source's rejections, from the store. Reads its documents by `sourceId` (an operator's look,
   * not a hot path; there is one document per hour in which a process rejected something).
   */
  async totalsFor(sourceId: string, now = new Date()): Promise<ChannelRejectionTotals> {
    const totals: ChannelRejectionTotals = { total: zeroCounts(), last24Hours: zeroCounts(), last: null };
    const since = hourOf(now).getTime() - 23 * HOUR_MS;
    let last: RejectionSample | null = null;
    for (const doc of await this.docs.find({ sourceId }).toArray()) {
      for (const channel of REJECTION_CHANNELS) {
        const n = doc.counts[channel] ?? 0;
        totals.total[channel] += n;
        if (doc.hour.getTime() >= since) totals.last24Hours[channel] += n;
      }
      if (!last || doc.last.at > last.at) last = doc.last;
    }
    if (last) totals.last = { channel: last.channel, at: last.at.toISOString(), errors: last.errors };
    return totals;
  }
}
