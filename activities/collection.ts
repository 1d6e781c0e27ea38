import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { identityKey, IDENTITY_PRIORITY, type Identity } from '../domain/identity';
import { profileIdForEvent } from '../domain/ids';
import { profileWriterLockWorkflowId } from '../domain/workflowIds';
import { addLinkedProfile, applyEvent, hasApplied, newProfile, nextVersion, type ProfileDoc } from '../domain/profile';
import type { Store } from '../store/db';
import type { StoredEvent } from '../domain/event';
import type { DrainPosition, SourceState } from '../domain/schemas';
import { SourceStore } from '../store/sources';
import { EventLog } from '../store/eventLog';
import { IdentityIndex, type IdentityDoc, type IdentityLinkDoc } from '../store/identities';
import { ProfileStore } from '../store/profiles';
import { acquireProfileWriterSignal, profileWriterLock, type LockRequest } from '../workflows/profileWriterLock';

export interface DrainInput {
  sourceId: string;
  /** Where the drain stands before this batch; saved, advanced, once the batch is applied. */
  position: DrainPosition;
  maxEvents: number;
  /** The process that last wrote profiles (see profileWriterLock); null when unknown. */
  lastWriter: string | null;
}

export interface DrainResult {
  /** Where the drain stands after this batch (as saved in the store). */
  position: DrainPosition;
  chunks: number;
  applied: number;
  duplicates: number;
  /** Events a previous, interrupted attempt had already folded into their profiles. */
  alreadyApplied: number;
  profilesWritten: number;
  /** True when the batch stopped at its size limit, so more is ready now. */
  more: boolean;
  /** This process: the last writer of profiles once this drain has succeeded. */
  writer: string;
}

/** Named points inside a drain where tests may interrupt it, to prove a retry converges. */
export type DrainStep = 'identities-written' | 'profiles-partly-written';

export interface CollectionDeps {
  store: Store;
  temporal: Client;
  taskQueue: string;
  now?: () => Date;
  /** How long a chunk may stay pending (its writer mid-append) before the drain treats it as abandoned. */
  pendingGraceMs?: number;
  /** Profiles per bulk write; a batch touching more profiles is written in several. */
  profileWriteBatch?: number;
  onDrainStep?: (step: DrainStep) => void | Promise<void>;
}

interface Assignment {
  seq: number;
  event: StoredEvent;
  profileId: string;
  linkedTo: string[];
}

function heartbeat(details?: unknown): void {
  // Outside an activity (unit use) there is nobody to heartbeat to.
  try {
    Context.current().heartbeat(details);
  } catch {
    /* not running as an activity */
  }
}

/** Heartbeats on a timer while `work` runs: long store reads in between give no natural point to. */
async function withHeartbeats<T>(work: () => Promise<T>, everyMs = 2000): Promise<T> {
  const timer = setInterval(() => heartbeat(), everyMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

export function createCollectionActivities(deps: CollectionDeps) {
  const now = deps.now ?? (() => new Date());
  const log = new EventLog(deps.store, { now: () => now().getTime() });
  const identityIndex = new IdentityIndex(deps.store);
  // One ProfileStore per worker process: its cache of newest versions serves every drain here.
  const profiles = new ProfileStore(deps.store);
  const sources = new SourceStore(deps.store);
  const pendingGraceMs = deps.pendingGraceMs ?? 60_000;
  const profileWriteBatch = deps.profileWriteBatch ?? 500;
  const writerId = `${hostname()}:${process.pid}:${randomUUID()}`;

  /** Picks each event's profile: the one its highest-priority known identity points at, else a new one. */
  function assignProfiles(sourceId: string, batch: Array<{ seq: number; event: StoredEvent }>, known: Map<string, string>) {
    const newIdentities: IdentityDoc[] = [];
    const links: IdentityLinkDoc[] = [];
    const assignments: Assignment[] = [];
    const createdAt = now();
    for (const { seq, event } of batch) {
      const byPriority = [...event.identities].sort((a, b) => IDENTITY_PRIORITY.indexOf(a.type) - IDENTITY_PRIORITY.indexOf(b.type));
      const owners = byPriority.map((identity) => known.get(identityKey(identity)));
      const profileId = owners.find((owner) => owner !== undefined) ?? profileIdForEvent(sourceId, event.id);
      const linkedTo = new Set<string>();
      byPriority.forEach((identity: Identity, index) => {
        const owner = owners[index];
        if (owner === undefined) {
          known.set(identityKey(identity), profileId);
          newIdentities.push({ _id: identityKey(identity), type: identity.type, profileId, createdAt });
        } else if (owner !== profileId && !linkedTo.has(owner)) {
          linkedTo.add(owner);
          const pair = [profileId, owner].sort() as [string, string];
          links.push({ _id: pair.join('|'), profiles: pair, via: identityKey(identity), sourceId, eventId: event.id, createdAt });
        }
      });
      assignments.push({ seq, event, profileId, linkedTo: [...linkedTo] });
    }
    return { assignments, newIdentities, links };
  }

  /**
   * Folds the next chunks of a source's log into profiles. Safe to retry: identity and link writes
   * are keyed inserts, new profile ids derive from the event, and each profile version carries the
   * last chunk it absorbed per source, written in the same insert as the changes themselves.
   * Runs only while the caller holds the profile-writer lock, so no one else writes profiles.
   */
  async function drainBatch(input: DrainInput): Promise<DrainResult> {
    const { sourceId } = input;
    const batch: Array<{ seq: number; event: StoredEvent }> = [];
    let seq = input.position.cursor;
    let duplicates = 0;
    let chunks = 0;
    let more = false;
    for (;;) {
      if (batch.length >= input.maxEvents) {
        more = (await log.readiness(sourceId, seq, pendingGraceMs)).ready;
        break;
      }
      const chunk = await log.read(sourceId, seq);
      if (!chunk) break;
      let skip: Set<number>;
      if (chunk.state === 'sealed') skip = new Set(chunk.duplicates ?? []);
      else if (now().getTime() - chunk.createdAt.getTime() >= pendingGraceMs) skip = await log.unclaimedIndexes(chunk);
      else break;
      chunk.events.forEach((event, index) => {
        if (skip.has(index)) duplicates++;
        else batch.push({ seq, event });
      });
      seq++;
      chunks++;
      heartbeat({ seq });
    }
    const result: DrainResult = { position: input.position, chunks, applied: 0, duplicates, alreadyApplied: 0, profilesWritten: 0, more, writer: writerId };
    if (chunks === 0) return result;
    if (batch.length > 0) await applyToProfiles(sourceId, batch, input.lastWriter, result);
    result.position = {
      cursor: seq,
      eventsProcessed: input.position.eventsProcessed + result.applied + result.alreadyApplied,
      duplicatesSkipped: input.position.duplicatesSkipped + duplicates,
      batchesApplied: input.position.batchesApplied + 1,
      lastDrainAt: now().toISOString(),
    };
    // Saved last: a drain interrupted before this point is redone, and the profiles' retry guards skip what it had applied.
    await sources.savePosition(sourceId, result.position);
    return result;
  }

  async function applyToProfiles(sourceId: string, batch: Array<{ seq: number; event: StoredEvent }>, lastWriter: string | null, result: DrainResult): Promise<void> {
    const keys = [...new Set(batch.flatMap(({ event }) => event.identities.map(identityKey)))];
    const known = await identityIndex.resolve(keys);
    heartbeat({ resolved: keys.length });
    const { assignments, newIdentities, links } = assignProfiles(sourceId, batch, known);

    const touchedIds = [...new Set(assignments.flatMap((a) => [a.profileId, ...a.linkedTo]))];
    // When this process wrote profiles last, nobody has changed them since: its cache is current.
    const stored = await profiles.load(touchedIds, { trustCache: lastWriter === writerId });
    heartbeat({ loaded: stored.size });
    const changed = new Map<string, ProfileDoc>();
    const writable = (id: string, seenAt: Date): ProfileDoc => {
      let doc = changed.get(id);
      if (!doc) {
        const current = stored.get(id);
        doc = current ? nextVersion(current) : newProfile(id, now(), seenAt);
        changed.set(id, doc);
      }
      return doc;
    };
    for (const { seq: chunkSeq, event, profileId, linkedTo } of assignments) {
      // The retry guard compares with what was stored, not with this batch's own progress.
      const current = stored.get(profileId);
      if (current && hasApplied(current.applied, sourceId, chunkSeq)) {
        result.alreadyApplied++;
        continue;
      }
      const profile = writable(profileId, event.timestamp);
      applyEvent(profile, event, sourceId, chunkSeq);
      for (const other of linkedTo) {
        addLinkedProfile(profile, other);
        addLinkedProfile(writable(other, event.timestamp), profileId);
      }
      result.applied++;
    }

    // Identities before profiles: a profile is never saved that its identities cannot find.
    await identityIndex.addIdentities(newIdentities);
    await identityIndex.addLinks(links);
    await deps.onDrainStep?.('identities-written');
    const updatedAt = now();
    const toSave = [...changed.values()];
    for (let start = 0; start < toSave.length; start += profileWriteBatch) {
      const slice = toSave.slice(start, start + profileWriteBatch);
      for (const doc of slice) doc.updatedAt = updatedAt;
      await profiles.saveVersions(slice);
      heartbeat({ saved: start + slice.length });
      if (start + slice.length < toSave.length) await deps.onDrainStep?.('profiles-partly-written');
    }
    result.profilesWritten = toSave.length;
  }

  return {
    /** Read-only; safe to retry. Where the source's drain stands, as saved, and whether it is paused. */
    async loadDrainPosition(sourceId: string): Promise<{ position: DrainPosition; state: SourceState }> {
      const [position, source] = await Promise.all([sources.loadPosition(sourceId), sources.get(sourceId)]);
      return {
        position: position ?? { cursor: 0, eventsProcessed: 0, duplicatesSkipped: 0, batchesApplied: 0, lastDrainAt: null },
        state: source?.state ?? 'active',
      };
    },

    /** Read-only; safe to retry. Whether the chunk at `cursor` can be drained now, or when to look again. */
    checkSourceLog(input: { sourceId: string; cursor: number }): Promise<{ ready: boolean; retryInMs: number | null }> {
      return log.readiness(input.sourceId, input.cursor, pendingGraceMs);
    },

    /**
     * Queues for the lock of this store's profiles and returns the lock's workflow id. Safe to retry:
     * the lock ignores a ticket it already has.
     */
    async requestProfileWriterLock(request: LockRequest): Promise<string> {
      const workflowId = profileWriterLockWorkflowId(deps.store.db.databaseName);
      await deps.temporal.workflow.signalWithStart(profileWriterLock, {
        workflowId,
        taskQueue: deps.taskQueue,
        args: [{ queue: [], lastWriter: null }],
        signal: acquireProfileWriterSignal,
        signalArgs: [request],
      });
      return workflowId;
    },

    /** See drainBatch. */
    drainSourceBatch(input: DrainInput): Promise<DrainResult> {
      return withHeartbeats(() => drainBatch(input));
    },
  };
}

export type CollectionActivities = ReturnType<typeof createCollectionActivities>;
