import { performance } from 'node:perf_hooks';
import { BSON, type Document } from 'mongodb';
import { prepareEvents } from '../domain/collect';
import type { Store } from '../store/db';
import { benchEvent } from './loadgen';
import { say } from './support';

/** A measured write rate of the store: documents written, in how long, and their average size. */
export interface Rate {
  docs: number;
  seconds: number;
  eps: number;
  capped: boolean;
  avgBytes: number;
}

export interface BatchSettings {
  /** Documents per batch. */
  batch: number;
  /** Stops early, between two commands, once this many seconds have passed. */
  capSeconds: number;
}

/** Writes `docs` in batches, each sent as commands of `perCommand` documents, until done or capped. */
export async function timedBatches<T>(docs: T[], perCommand: number, settings: BatchSettings, write: (slice: T[]) => Promise<unknown>): Promise<Omit<Rate, 'avgBytes'>> {
  const started = performance.now();
  let done = 0;
  let capped = false;
  outer: for (let batchStart = 0; batchStart < docs.length; batchStart += settings.batch) {
    const batch = docs.slice(batchStart, batchStart + settings.batch);
    for (let start = 0; start < batch.length; start += perCommand) {
      if (performance.now() - started > settings.capSeconds * 1000) {
        capped = true;
        break outer;
      }
      const slice = batch.slice(start, start + perCommand);
      await write(slice);
      done += slice.length;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  return { docs: done, seconds, eps: done / seconds, capped };
}

export function averageBytes(docs: Document[]): number {
  const sample = docs.slice(0, 200);
  return Math.round(sample.reduce((sum, doc) => sum + BSON.calculateObjectSize(doc), 0) / Math.max(1, sample.length));
}

/** Events as a chunk of the source log holds them: validated, normalized, identities hashed. */
export function storedEventDocs(count: number, users: number, batch: number): Document[] {
  const now = new Date();
  const docs: Document[] = [];
  for (let start = 0; start < count; start += batch) {
    const inputs = Array.from({ length: Math.min(batch, count - start) }, (_, i) => benchEvent(start + i, 'store', users));
    const prepared = prepareEvents(inputs, { now, defaultPhoneRegion: 'US' });
    if (prepared.rejected.length > 0) throw new Error(`generated events were rejected: ${JSON.stringify(prepared.rejected[0])}`);
    for (const { event } of prepared.accepted) docs.push({ _id: `bench:${event.id}`, ...event });
  }
  return docs;
}

/** The store's raw insert rate: `insertMany` of `count` stored-event documents into a scratch collection, dropped after. */
export async function rawInsertRate(store: Store, count: number, users: number, settings: BatchSettings): Promise<Rate> {
  const events = storedEventDocs(count, users, settings.batch);
  const scratch = store.db.collection<Document>('bench_scratch_events');
  say(`store baseline: insertMany of ${events.length} stored events, ${settings.batch} per batch`);
  const inserted = await timedBatches(events, settings.batch, settings, (batch) => scratch.insertMany(batch));
  await scratch.drop().catch(() => undefined);
  return { ...inserted, avgBytes: averageBytes(events) };
}
