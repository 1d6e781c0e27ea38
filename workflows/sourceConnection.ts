import {
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  sleep,
  TemporalFailure,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { CollectionActivities } from '../activities/collection';
import { INITIAL_DRAIN_POSITION } from '../domain/drainPosition';
import { emptyHealth, recordTurn } from '../domain/sourceHealth';
import type { Party, SourceProgress } from '../domain/schemas';
import { stableHash } from '../domain/partition';
import { SA } from '../domain/searchAttributes';

export const pauseSourceSignal = defineSignal('pause');
export const resumeSourceSignal = defineSignal('resume');
/** Sent by the API after it seals a chunk of this source's log: there is something to drain. */
export const sourceLogGrewSignal = defineSignal('logGrew');
export const sourceStatusQuery = defineQuery<SourceProgress>('status');

export interface SourceConnectionInput {
  sourceId: string;
  party: Party;
  drainBatchEvents: number;
  /** How long an idle source sleeps before looking at its log without being woken (a safety net). */
  idlePollMs: number;
  /** Carried across continue-as-new; a fresh start reads the position saved in the store. */
  progress?: SourceProgress;
}

const lookOptions = { startToCloseTimeout: '1 minute', retry: { initialInterval: '1 second', maximumInterval: '30 seconds' } } as const;
const routeOptions = { startToCloseTimeout: '5 minutes', retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 5 } } as const;
/** How runs from before LOCAL_DRAIN looked and routed: as activities through the Temporal server. */
const remoteLook = proxyActivities<CollectionActivities>(lookOptions);
const remoteRoute = proxyActivities<CollectionActivities>({ ...routeOptions, heartbeatTimeout: '10 seconds' });
/**
 * Looks and routing turns run as local activities, in the worker that runs this workflow's task:
 * a busy source routes several times a second and an idle one looks at its log now and then, and
 * as tasks the Temporal server hands out, each cost the server more than the work. A worker that
 * dies mid-turn leaves its workflow task to time out; the next worker routes the same range again,
 * which routing is safe to.
 */
const localLook = proxyLocalActivities<CollectionActivities>(lookOptions);
const localRoute = proxyLocalActivities<CollectionActivities>(routeOptions);
const LOCAL_DRAIN = 'local-drain';

/** How long one drain turn may last before the workflow reports progress and looks at signals again. */
const MAX_TURN_MS = 60_000;
const HISTORY_LIMIT = 4_000;
/** Histories from before it looked at the log before every drain turn; see the loop. */
const ROUTE_ON_WAKE = 'route-on-wake';
/** Histories from before a paused source looked at its saved state at each idle look. */
const RECHECK_PAUSE = 'recheck-pause';
/** Histories from before an active source looked at its saved state once an idle poll had passed. */
const RECHECK_STATE = 'recheck-state';
/** Histories from before a failed turn was tried again after its pause, rather than at the next wake-up or idle look. */
const RETRY_FAILED_TURN = 'retry-failed-turn';
/** The pause after a turn failed (its activity's own retries spent) before it is tried again. */
const FAILED_TURN_PAUSE = '30 seconds';

/**
 * One durable workflow per source connection: sleep until the API says the log grew (or the idle
 * poll comes round), route the new chunks to the partitions that own their profiles (resolving
 * identities on the way), report progress; continue as new when the history grows long. Events never
 * pass through here — only the log cursor does, and the drain saves it in the store, so a restarted
 * workflow resumes where it was. Sources need no lock: each partition's own writer folds the events.
 */
export async function sourceConnection(input: SourceConnectionInput): Promise<void> {
  const { sourceId } = input;
  const progress: SourceProgress = input.progress ?? { state: 'active', ...INITIAL_DRAIN_POSITION, lastError: null, health: emptyHealth() };
  // Progress carried from before health was kept starts an empty window.
  progress.health ??= emptyHealth();
  const health = progress.health;
  /** Look at the log at once after a (re)start: a wake-up may have come while nothing listened. */
  let woken = true;
  // The first idle look comes at a phase of its own, so many sources started together do not poll together.
  let nextLookMs = 1 + (stableHash(sourceId) % input.idlePollMs);

  setHandler(sourceStatusQuery, () => progress);
  setHandler(sourceLogGrewSignal, () => {
    woken = true;
  });
  /** Pause and resume signals heard: a saved state read while one came in is older than it. */
  let stateSignals = 0;
  /** When an active source last read its saved state (workflow time). */
  let stateReadAt = Date.now();
  setHandler(pauseSourceSignal, () => {
    stateSignals++;
    progress.state = 'paused';
    reportProgress();
  });
  setHandler(resumeSourceSignal, () => {
    stateSignals++;
    progress.state = 'active';
    woken = true;
    reportProgress();
  });

  function reportProgress(): void {
    upsertSearchAttributes([
      { key: SA.state, value: progress.state },
      { key: SA.eventsProcessed, value: progress.eventsProcessed },
    ]);
    upsertMemo({ progress });
  }

  /** Routes while more is ready; returns whether more was still ready, and when to look again if it stopped at a pending chunk. */
  async function drainWhileReady(): Promise<{ more: boolean; retryInMs: number | null }> {
    const started = Date.now(); // workflow time: deterministic
    for (;;) {
      const { state, lastError, health: _, ...position } = progress;
      const result = await (patched(LOCAL_DRAIN) ? localRoute : remoteRoute).routeSourceBatch({ sourceId, party: input.party, position, maxEvents: input.drainBatchEvents });
      // A wake-up whose chunks an earlier turn routed finds none: no turn for the source's health.
      if (result.chunks > 0) recordTurn(health, Date.now(), { events: result.position.eventsProcessed - position.eventsProcessed });
      Object.assign(progress, result.position, { lastError: null });
      if (!result.more || progress.state !== 'active' || Date.now() - started > MAX_TURN_MS) return { more: result.more, retryInMs: result.retryInMs ?? null };
    }
  }

  if (!input.progress) {
    const saved = await (patched(LOCAL_DRAIN) ? localLook : remoteLook).loadDrainPosition(sourceId);
    Object.assign(progress, saved.position, { state: saved.state });
  }
  reportProgress();
  while (workflowInfo().historyLength < HISTORY_LIMIT && !workflowInfo().continueAsNewSuggested) {
    if (progress.state === 'paused') {
      if (!patched(RECHECK_PAUSE)) await condition(() => progress.state === 'active');
      else if (!(await condition(() => progress.state === 'active', input.idlePollMs))) {
        // A resume saved whose signal never came (its API stopped in between) is found at the idle look.
        const heard = stateSignals;
        const saved = await (patched(LOCAL_DRAIN) ? localLook : remoteLook).loadDrainPosition(sourceId);
        if (saved.state === 'active' && stateSignals === heard) {
          progress.state = 'active';
          woken = true;
          reportProgress();
        }
      }
      continue;
    }
    if (!woken) await condition(() => woken || progress.state !== 'active', nextLookMs);
    const toldLogGrew = woken;
    woken = false;
    if (progress.state !== 'active') continue;
    // A pause saved whose signal never came (its API stopped in between) is found within an idle
    // poll, busy or not: a busy source's turns follow its wake-ups and never reach the idle look.
    if (Date.now() - stateReadAt >= input.idlePollMs && patched(RECHECK_STATE)) {
      stateReadAt = Date.now();
      const heard = stateSignals;
      const saved = await (patched(LOCAL_DRAIN) ? localLook : remoteLook).loadSourceState(sourceId);
      if (saved === 'paused' && stateSignals === heard) {
        progress.state = 'paused';
        reportProgress();
        continue;
      }
    }
    // Told that the log grew, the drain routes at once: a look first would cost every event a round
    // trip on its way to a profile. The idle safety net looks first, as a look costs less than a
    // route that finds nothing. A seal made while the drain routes sends its own wake-up.
    const routeAtOnce = toldLogGrew && patched(ROUTE_ON_WAKE);
    nextLookMs = input.idlePollMs;
    if (!routeAtOnce) {
      const log = await (patched(LOCAL_DRAIN) ? localLook : remoteLook).checkSourceLog({ sourceId, cursor: progress.cursor });
      // A pending chunk (its writer mid-append) is looked at again when it would count as abandoned.
      nextLookMs = log.retryInMs ?? input.idlePollMs;
      if (!log.ready) continue;
    }
    try {
      const stopped = await drainWhileReady();
      if (stopped.retryInMs !== null) nextLookMs = stopped.retryInMs;
      // A turn that ended at its time limit goes on after reporting progress. (Histories from before
      // ROUTE_ON_WAKE looked once more here whatever happened.)
      if (stopped.more || !routeAtOnce) woken = true;
    } catch (error) {
      // A local activity's spent retries surface as its own failure (an ApplicationFailure, say), not
      // wrapped in an ActivityFailure as a remote one's are: either is a failed turn, not a failed source.
      if (!(error instanceof TemporalFailure)) throw error;
      progress.lastError = error.cause?.message ?? error.message;
      recordTurn(health, Date.now(), { failed: true });
      reportProgress();
      await sleep(FAILED_TURN_PAUSE);
      // The chunks it failed on are still there: a quiet source would otherwise leave them until its idle look.
      if (patched(RETRY_FAILED_TURN)) woken = true;
    }
    reportProgress();
  }
  await continueAsNew<typeof sourceConnection>({ ...input, progress });
}
