import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { applyEvent, hasApplied, newProfile, nextVersion, type ProfileDoc } from '../domain/profile';
import type { Store } from '../store/db';
import { ProfileEventLog, type RoutedBatch } from '../store/profileEvents';
import { ProfileStore } from '../store/profiles';
import { withHeartbeats, heartbeat } from './heartbeat';

export interface FoldInput {
  partition: number;
  /** Sources with routed events waiting. */
  sourceIds: string[];
  /** Also look at every source this partition has folded before (after a restart). */
  includeKnown: boolean;
  maxEvents: number;
  /** The process that last wrote this partition's profiles (see FoldResult.writer); null when unknown. */
  lastWriter: string | null;
}

export interface FoldResult {
  /** This process: the last writer of the partition once this fold has succeeded. */
  writer: string;
  /** Sources that may have more routed events ready (the fold stopped at its size limit). */
  sourcesWithMore: string[];
  events: number;
  applied: number;
  /** Events an earlier, interrupted attempt had already folded into their documents. */
  alreadyApplied: number;
  profilesWritten: number;
}

/** Named points inside a fold where tests may interrupt it, to prove a retry converges. */
export type FoldStep = 'profiles-partly-written';

export interface ProfileWriterDeps {
  store: Store;
  now?: () => Date;
  /** Profiles per insert; a fold touching more is written in several. */
  profileWriteBatch?: number;
  onFoldStep?: (step: FoldStep) => void | Promise<void>;
}

/** The activities of a partition's writer: folding routed events into the profile documents it owns. */
export function createProfileWriterActivities(deps: ProfileWriterDeps) {
  const now = deps.now ?? (() => new Date());
  const routedEvents = new ProfileEventLog(deps.store);
  // One ProfileStore per process: its cache of newest versions serves every fold here.
  const profiles = new ProfileStore(deps.store);
  const profileWriteBatch = deps.profileWriteBatch ?? 500;
  const writerId = `${hostname()}:${process.pid}:${randomUUID()}`;

  /**
   * Folds the partition's next routed events into its profile documents. Safe to retry: each new
   * version carries, per source, the last chunk it absorbed, so a retry skips what an interrupted
   * attempt wrote; versions are inserted under versioned ids, so a second writer fails rather than
   * overwrites; the position is saved last and replaced by the same values.
   */
  async function fold(input: FoldInput): Promise<FoldResult> {
    const position = await routedEvents.loadPosition(input.partition);
    const sourceIds = input.includeKnown ? [...new Set([...input.sourceIds, ...Object.keys(position.cursors)])] : input.sourceIds;
    const result: FoldResult = { writer: writerId, sourcesWithMore: [], events: 0, applied: 0, alreadyApplied: 0, profilesWritten: 0 };
    const batches: RoutedBatch[] = [];
    for (const sourceId of sourceIds) {
      let from = position.cursors[sourceId] ?? 0;
      for (;;) {
        if (result.events >= input.maxEvents) {
          result.sourcesWithMore.push(sourceId);
          break;
        }
        const batch = await routedEvents.read(input.partition, sourceId, from);
        if (!batch) break;
        batches.push(batch);
        result.events += batch.events.length;
        from = batch.to;
      }
      position.cursors[sourceId] = from;
    }
    heartbeat({ read: result.events });
    if (batches.length === 0) return result;

    const touched = [...new Set(batches.flatMap((batch) => batch.profiles))];
    // When this process wrote the partition last, nobody has changed its documents since: its cache is current.
    const stored = await profiles.load(touched, { trustCache: input.lastWriter === writerId });
    heartbeat({ loaded: stored.size });
    const changed = new Map<string, ProfileDoc>();
    for (const batch of batches) {
      for (const event of batch.events) {
        // The retry guard compares with what was stored, not with this fold's own progress.
        const current = stored.get(event.profileId);
        if (current && hasApplied(current.applied, batch.sourceId, event.seq)) {
          result.alreadyApplied++;
          continue;
        }
        let doc = changed.get(event.profileId);
        if (!doc) {
          doc = current ? nextVersion(current) : newProfile(event.profileId, now(), event.timestamp);
          changed.set(event.profileId, doc);
        }
        applyEvent(doc, event, { sourceId: batch.sourceId, party: batch.party, seq: event.seq });
        result.applied++;
      }
      position.applied[batch.sourceId] = (position.applied[batch.sourceId] ?? 0) + batch.events.length;
    }

    const updatedAt = now();
    const toSave = [...changed.values()];
    for (let start = 0; start < toSave.length; start += profileWriteBatch) {
      const slice = toSave.slice(start, start + profileWriteBatch);
      for (const doc of slice) doc.updatedAt = updatedAt;
      await profiles.saveVersions(slice);
      heartbeat({ saved: start + slice.length });
      if (start + slice.length < toSave.length) await deps.onFoldStep?.('profiles-partly-written');
    }
    result.profilesWritten = toSave.length;
    await routedEvents.savePosition(input.partition, position);
    return result;
  }

  return {
    /** See fold. */
    foldPartitionBatch(input: FoldInput): Promise<FoldResult> {
      return withHeartbeats(() => fold(input));
    },
  };
}

export type ProfileWriterActivities = ReturnType<typeof createProfileWriterActivities>;
