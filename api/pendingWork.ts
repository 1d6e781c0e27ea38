import type { SourceStatus } from '../domain/schemas';
import type { EventLog } from '../store/eventLog';

/** How far collection is ahead of the drain; events are counted from the seals of up to `maxChunks` chunks. */
export async function pendingWork(log: EventLog, sourceId: string, cursor: number, maxChunks = 100): Promise<SourceStatus['pending']> {
  const head = await log.findHead(sourceId, cursor);
  let events = 0;
  let oldest: Date | null = null;
  for (let seq = cursor; seq < Math.min(head, cursor + maxChunks); seq++) {
    const seal = await log.readSeal(sourceId, seq);
    if (!seal) continue; // pending: its writer has not finished
    events += seal.accepted;
    oldest ??= seal.chunkCreatedAt;
  }
  return { chunks: head - cursor, events, lagSeconds: oldest ? (Date.now() - oldest.getTime()) / 1000 : null };
}
