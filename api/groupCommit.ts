import type { StoredEvent } from '../domain/event';
import { ChunkTooLarge, type AppendResult, type EventLog } from '../store/eventLog';

interface Submission {
  events: StoredEvent[];
  resolve: (duplicates: Set<number>) => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit: requests for one source that arrive while a write is in flight are gathered and
 * written together as the next chunk (or chunks, past `maxChunkEvents`). Under load this turns many
 * small writes into a few large ones; an idle source writes at once, adding no latency.
 */
export class GroupCommitter {
  private readonly queues = new Map<string, Submission[]>();
  private readonly flushing = new Set<string>();

  constructor(
    private readonly log: EventLog,
    private readonly maxChunkEvents: number,
    /** Called after each chunk is sealed (e.g. to wake the source's drain). */
    private readonly onAppended: (sourceId: string) => void = () => {},
  ) {}

  /**
   * Resolves once the events are durably stored, with the indexes (into `events`) that repeat an event
   * stored with them; repeats of earlier chunks are the profile writer's to drop (EventLog.append).
   */
  submit(sourceId: string, events: StoredEvent[]): Promise<Set<number>> {
    return new Promise((resolve, reject) => {
      const queue = this.queues.get(sourceId) ?? [];
      queue.push({ events, resolve, reject });
      this.queues.set(sourceId, queue);
      if (!this.flushing.has(sourceId)) void this.flush(sourceId);
    });
  }

  private async flush(sourceId: string): Promise<void> {
    this.flushing.add(sourceId);
    try {
      for (let queue = this.queues.get(sourceId); queue && queue.length > 0; queue = this.queues.get(sourceId)) {
        const group = this.takeGroup(queue);
        try {
          this.answer(sourceId, group, await this.append(sourceId, group));
        } catch (error) {
          await this.refused(sourceId, group, error);
        }
      }
    } finally {
      this.flushing.delete(sourceId);
      this.queues.delete(sourceId);
    }
  }

  private append(sourceId: string, group: Submission[]): Promise<AppendResult> {
    return this.log.append(sourceId, group.flatMap((s) => s.events), { claimIds: false });
  }

  /** Tells each submission of an appended group which of its events repeat others in the chunk. */
  private answer(sourceId: string, group: Submission[], { duplicateIndexes }: AppendResult): void {
    this.onAppended(sourceId);
    let offset = 0;
    for (const submission of group) {
      const own = new Set<number>();
      submission.events.forEach((_, index) => {
        if (duplicateIndexes.has(offset + index)) own.add(index);
      });
      offset += submission.events.length;
      submission.resolve(own);
    }
  }

  /**
   * A group's append failed. A group too large for one chunk (large events arriving together) is
   * appended in two halves, one after the other; otherwise — a single submission too large alone
   * among them — each submission gets the error.
   */
  private async refused(sourceId: string, group: Submission[], error: unknown): Promise<void> {
    if (!(error instanceof ChunkTooLarge) || group.length === 1) {
      for (const submission of group) submission.reject(error);
      return;
    }
    const half = Math.ceil(group.length / 2);
    for (const part of [group.slice(0, half), group.slice(half)]) {
      try {
        this.answer(sourceId, part, await this.append(sourceId, part));
      } catch (partError) {
        await this.refused(sourceId, part, partError);
      }
    }
  }

  /** Takes submissions from the front of the queue up to the chunk size (always at least one). */
  private takeGroup(queue: Submission[]): Submission[] {
    let size = 0;
    let count = 0;
    while (count < queue.length && (count === 0 || size + queue[count].events.length <= this.maxChunkEvents)) {
      size += queue[count].events.length;
      count++;
    }
    return queue.splice(0, count);
  }
}
