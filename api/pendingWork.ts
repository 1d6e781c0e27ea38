import type { SourceStatus } from '../domain/schemas';
import type { EventLog } from '../store/eventLog';

/** How far collection is ahead of the drain; counts events in up to `maxChunks` chunks past the cursor. */
export async function pendingWork(log: EventLog, sourceId: string, cursor: number, maxChunks = 200): Promise<SourceStatus['pending']> {
  const head = await log.findHead(sourceId, cursor);
  let events = 0;
  let oldest: Date | null = null;
  for (let seq = cursor; seq < Math.min(head, cursor + maxChunks); seq++) {
    const chunk = await log.read(sourceId, seq);
    if (!chunk) break;
    events += chunk.events.length - (chunk.duplicates?.length ?? 0);
    oldest ??= chunk.createdAt;
  }
  return { chunks: head - cursor, events, lagSeconds: oldest ? (Date.now() - oldest.getTime()) / 1000 : null };
}
