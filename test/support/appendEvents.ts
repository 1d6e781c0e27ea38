import { prepareEvents } from '../../domain/collect';
import type { Store } from '../../store/db';
import { EventLog } from '../../store/eventLog';
import type { GeneratedEvent } from './audience';

/** Appends generated events straight to a source's log, `perChunk` to a chunk, as the API would. */
export async function appendToLog(store: Store, sourceId: string, generated: GeneratedEvent[], perChunk: number): Promise<void> {
  const log = new EventLog(store);
  for (let start = 0; start < generated.length; start += perChunk) {
    const { accepted } = prepareEvents(generated.slice(start, start + perChunk), { now: new Date(), defaultPhoneRegion: 'US' });
    await log.append(sourceId, accepted.map((a) => a.event));
  }
}
