import type { ApiConfig } from './app';
import { prepareEvents } from '../domain/collect';
import type { CollectResponse } from '../domain/schemas';
import { sourceWorkflowId } from '../domain/workflowIds';
import { logger } from '../logger';
import { AckDeadlineExceeded, CHUNK_STORED_BYTES_MAX, ChunkTooLarge } from '../store/eventLog';
import type { PrivacyMarks } from '../store/privacyMarks';
import type { SourceDoc } from '../store/sources';
import type { GroupCommitter } from './groupCommit';
import { ProblemError } from './problem';

/**
 * The one way into the source log for every channel (server API, tracking API, tag, pixel, uploads):
 * each event is validated, hashed and consent-checked on its own, then the valid ones are durably
 * appended before the caller answers.
 */
export class Collector {
  constructor(
    private readonly committer: GroupCommitter,
    private readonly config: Pick<ApiConfig, 'DMP_DEFAULT_PHONE_REGION'>,
    private readonly marks: PrivacyMarks,
  ) {}

  /**
   * Appends what is valid; a 503 ProblemError when the store is too slow to acknowledge in time.
   * Events naming an erased subject are counted and dropped here, never stored — and answered as
   * accepted, so the answer does not tell a sender who was erased.
   */
  async collect(source: SourceDoc, events: unknown[], now = new Date(), sentAt?: string): Promise<CollectResponse> {
    const prepared = prepareEvents(events, {
      now,
      defaultPhoneRegion: this.config.DMP_DEFAULT_PHONE_REGION,
      consentPolicy: source.consent,
      ...(sentAt !== undefined && { sentAt: new Date(sentAt) }),
    });
    await this.marks.refresh();
    const late = new Map<string, number>();
    const erased = new Set<number>();
    prepared.accepted.forEach((accepted, index) => {
      const requestId = this.marks.erasedBy(accepted.event.identities);
      if (requestId) {
        erased.add(index);
        late.set(requestId, (late.get(requestId) ?? 0) + 1);
      }
    });
    if (erased.size > 0) {
      await this.marks.countLate(late);
      const kept = prepared.accepted.filter((_, index) => !erased.has(index));
      const result = await this.append(source, { ...prepared, accepted: kept });
      return { ...result, accepted: result.accepted + erased.size };
    }
    return this.append(source, prepared);
  }

  /** Whether any of these identity keys names an erased subject: what a channel would record of them apart from events is dropped too. */
  async namesErased(keys: string[]): Promise<boolean> {
    await this.marks.refresh();
    return this.marks.erasedByKeys(keys) !== null;
  }

  private async append(source: SourceDoc, prepared: ReturnType<typeof prepareEvents>): Promise<CollectResponse> {
    let duplicates = new Set<number>();
    if (prepared.accepted.length > 0) {
      try {
        duplicates = await this.committer.submit(source._id, prepared.accepted.map((a) => a.event));
      } catch (error) {
        if (error instanceof AckDeadlineExceeded) {
          logger.warn({ sourceId: source._id, workflowId: sourceWorkflowId(source._id), err: error }, 'append missed its deadline; not acknowledged');
          throw new ProblemError(503, 'unavailable', 'The store is too slow right now; retry later');
        }
        // Stored together or not at all: one request is one chunk, never a half-written one.
        if (error instanceof ChunkTooLarge) {
          throw new ProblemError(413, 'body-too-large', 'The events are too large to store together', [
            { path: '(body)', message: `its ${prepared.accepted.length} events take more than a stored chunk holds (${CHUNK_STORED_BYTES_MAX / 1024 / 1024} MB deflated): send fewer in one request` },
          ]);
        }
        throw error;
      }
    }
    const nonProfiling = prepared.accepted.filter((a, index) => a.event.nonProfiling && !duplicates.has(index)).length;
    return { accepted: prepared.accepted.length - duplicates.size, duplicates: duplicates.size, nonProfiling, rejected: prepared.rejected };
  }
}
