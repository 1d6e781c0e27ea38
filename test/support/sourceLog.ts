import type { Store } from '../../store/db';
import { EventLog } from '../../store/eventLog';

/**
 * The ids of the events a source's log holds for good, as its drain applies them: a sealed chunk's
 * events less its duplicates, and of a chunk whose writer died before sealing it, the events whose
 * ids it claimed. An event appended twice would be listed twice.
 */
export async function sourceLogEventIds(store: Store, sourceId: string): Promise<string[]> {
  const log = new EventLog(store);
  const ids: string[] = [];
  for (let seq = 0; ; seq++) {
    const chunk = await log.read(sourceId, seq);
    if (!chunk) return ids;
    const skip = chunk.state === 'sealed' ? new Set(chunk.duplicates) : await log.unclaimedIndexes(chunk);
    chunk.events.forEach((event, index) => {
      if (!skip.has(index)) ids.push(event.id);
    });
  }
}
