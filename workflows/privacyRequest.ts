import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, continueAsNew, executeChild, patched, proxyActivities, sleep, workflowInfo } from '@temporalio/workflow';
import type { PrivacyActivities } from '../activities/privacy';
import type { PrivacyRequestType, PrivacyResult } from '../domain/privacy';
import { privacyRemovalWorkflowId } from '../domain/workflowIds';
import { destinationExport } from './destinationExport';

const {
  resolvePrivacySubject,
  collectAccessExport,
  markOptOut,
  prepareErasure,
  eraseSubject,
  findRemovals,
  recordRemoval,
  removalPending,
  removalStanding,
  completePrivacyRequest,
  failPrivacyRequest,
} = proxyActivities<PrivacyActivities>({
  startToCloseTimeout: '30 minutes',
  // Long steps heartbeat every 2 s: a worker that dies mid-step is noticed, and the step retried elsewhere, within 20 s.
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '5 seconds', maximumInterval: '5 minutes' },
});

export interface PrivacyRequestInput {
  requestId: string;
  type: PrivacyRequestType;
  /** The store's database: the removal exports name their segmentation runs with it. */
  databaseName: string;
  /** Rounds a removal at one destination makes per workflow run (DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN; absent: 40). */
  removalRoundsPerRun?: number;
}

/**
 * How long after tombstones are written before the store is scrubbed: every drain and fold reads
 * new tombstones within a second, and this lets a batch that began before them end.
 */
const TOMBSTONE_SETTLE = '5 seconds';
/** Erasure passes before the request fails: each pass only follows what the last one found. */
const MAX_ERASE_PASSES = 10;
/**
 * Passes that only waited for segment runs under way (30 s apart), not counted as passes: a batch
 * run at 1M profiles takes minutes, and one whose worker died is failed by the hourly retention run.
 */
const MAX_RUN_WAITS = 240;
const WAITS_UNCOUNTED = 'erasure-waits-for-runs-uncounted';

/** Seconds before a failed removal is sent again: 15 s, doubling, at most an hour. */
const retryAfter = (round: number) => Math.min(3600, 15 * 2 ** (round - 1));

/** The failure an activity or a child workflow failed with, through the layers that carry it. */
function rootFailure(error: unknown): unknown {
  let failure = error;
  while ((failure instanceof ActivityFailure || failure instanceof ChildWorkflowFailure) && failure.cause) failure = failure.cause;
  return failure;
}

const reason = (error: unknown) => {
  const root = rootFailure(error);
  return root instanceof Error ? root.message : String(root);
};

/** A removal is decided by the partner's confirmed state even when its export failed (see removeAt). */
const REMOVAL_DECIDED_BY_STATE = 'removal-decided-by-partner-state';

/**
 * One destination's removal of the subject: an export of the destination (the subject withheld, so
 * its delta removes them) per round, until the partner's confirmed state no longer holds them. The
 * ledger line says where it stands. Rounds from `round` on; with `roundsLeft`, it stops after that
 * many and says so (`false`) instead of going on.
 */
async function removalRounds(removal: PrivacyRemovalInput, roundsLeft = Infinity): Promise<boolean> {
  const { request: input, destinationId } = removal;
  for (let round = removal.round; roundsLeft > 0; round++, roundsLeft--) {
    await recordRemoval({ requestId: input.requestId, destinationId, state: 'sent', round, exportId: null, error: null });
    let exportId: string | null = null;
    let error: string | null = null;
    try {
      const exported = await executeChild(destinationExport, {
        workflowId: `${removal.requestWorkflowId}:${destinationId}:r${round}`,
        args: [{ destinationId, trigger: 'privacy', databaseName: input.databaseName }],
      });
      exportId = exported.exportId;
      if (exported.state !== 'completed') error = `export ${exported.exportId} ended ${exported.state}`;
    } catch (failure) {
      error = reason(failure);
    }
    if (patched(REMOVAL_DECIDED_BY_STATE)) {
      // Whatever else the export met — a batch of other people refused, the destination deleted — the partner's
      // confirmed state says whether the subject is still held there.
      const standing = await removalStanding({ requestId: input.requestId, destinationId });
      if (standing !== 'held') {
        const deleted = standing === 'destination_deleted';
        await recordRemoval({ requestId: input.requestId, destinationId, state: standing, round, exportId, error: deleted ? 'the destination was deleted: its partner was not told' : null });
        return true;
      }
    } else if (!error && !(await removalPending({ requestId: input.requestId, destinationId }))) {
      await recordRemoval({ requestId: input.requestId, destinationId, state: 'acknowledged', round, exportId, error: null });
      return true;
    }
    await recordRemoval({ requestId: input.requestId, destinationId, state: 'failed_retrying', round, exportId, error: error ?? 'the partner has not confirmed the removal' });
    await sleep(retryAfter(round) * 1000);
  }
  return false;
}

export interface PrivacyRemovalInput {
  request: PrivacyRequestInput;
  /** The request's workflow: each round's export is named after it, whichever run of the removal starts it. */
  requestWorkflowId: string;
  destinationId: string;
  /** The round this run starts at (a removal that went on as new counts on). */
  round: number;
}

/** Rounds of one run of a removal: each is ~25 history events, and a partner down for days retries hourly. */
const ROUNDS_PER_RUN = 40;

/**
 * One destination's removal, as a workflow of its own (visible per destination in the Temporal UI):
 * a partner refusing for weeks would otherwise grow the request's history past its limit, so every
 * `removalRoundsPerRun` rounds it goes on as new, counting its rounds on.
 */
export async function privacyRemoval(removal: PrivacyRemovalInput): Promise<void> {
  const rounds = removal.request.removalRoundsPerRun ?? ROUNDS_PER_RUN;
  if (await removalRounds(removal, rounds)) return;
  await continueAsNew<typeof privacyRemoval>({ ...removal, round: removal.round + rounds });
}

const REMOVALS_AS_WORKFLOWS = 'privacy-removals-as-workflows';

/** The subject's removal at one destination: a child workflow, or (a request started before those) in the request's own history. */
async function removeAt(input: PrivacyRequestInput, destinationId: string): Promise<void> {
  const removal: PrivacyRemovalInput = { request: input, requestWorkflowId: workflowInfo().workflowId, destinationId, round: 1 };
  if (!patched(REMOVALS_AS_WORKFLOWS)) {
    await removalRounds(removal);
    return;
  }
  await executeChild(privacyRemoval, { workflowId: privacyRemovalWorkflowId(removal.requestWorkflowId, destinationId), args: [removal] });
}

/**
 * Erasure: tombstone the subject's identities (late events are then dropped), let batches already
 * under way end, scrub every collection, and verify — again with whatever the check still finds
 * (a fold that began before the tombstones, a key it added) until nothing is left. Partners are
 * told meanwhile, each until it confirms.
 */
async function erase(input: PrivacyRequestInput): Promise<PrivacyResult> {
  let removals: Promise<void[]> | null = null;
  let prepared: { found: boolean; holders: string[] } | null = null;
  let events = 0;
  let searched = 0;
  let waited = 0;
  for (let pass = 1; ; pass++) {
    prepared = await prepareErasure(input);
    if (!removals) {
      removals = Promise.all(prepared.holders.map((destinationId) => removeAt(input, destinationId)));
      // Awaited once the scrub is done, which may wait hours for segment runs: a removal failing meanwhile must not
      // reject unheard (the workflow task would fail on every replay), only when it is awaited.
      removals.catch(() => undefined);
    }
    await sleep(TOMBSTONE_SETTLE);
    const erased = await eraseSubject(input);
    events += erased.events;
    if (erased.clean) break;
    // A segment run under way is waited for: its snapshot is rewritten when it ends.
    const waiting = erased.waiting > 0 && !erased.grew;
    if (patched(WAITS_UNCOUNTED)) {
      if (waiting ? ++waited > MAX_RUN_WAITS : ++searched === MAX_ERASE_PASSES) {
        throw ApplicationFailure.nonRetryable(waiting ? `segment runs were still under way after ${MAX_RUN_WAITS} waits` : `the subject was still found after ${searched} erasure passes`);
      }
    } else if (pass === MAX_ERASE_PASSES) throw ApplicationFailure.nonRetryable(`the subject was still found after ${pass} erasure passes`);
    if (waiting) await sleep('30 seconds');
  }
  await removals;
  return { found: prepared.found, profiles: 0, identities: 0, events, segments: 0, destinations: prepared.holders.length, exportUrl: null };
}

/**
 * A data subject's privacy request: find their profile through the identity graph, carry out the
 * request, and close it with its result. Every step is recorded on the request with an audit entry.
 * - access: everything held about them, written as the request's download;
 * - erase: removed from every store and every partner, a salted tombstone kept against late events;
 * - opt_out: their documents marked (no more profiling, segments or exports), then a removal at every
 *   partner that held them, each tracked on the ledger until the partner confirms it.
 */
export async function privacyRequest(input: PrivacyRequestInput): Promise<void> {
  try {
    let result: PrivacyResult;
    if (input.type === 'erase') {
      result = await erase(input);
    } else {
      const resolved = await resolvePrivacySubject(input);
      if (input.type === 'access') {
        result = await collectAccessExport(input);
      } else {
        const marked = await markOptOut(input);
        const holders = await findRemovals(input);
        await Promise.all(holders.map((destinationId) => removeAt(input, destinationId)));
        result = { found: resolved.found, profiles: marked.profiles, identities: 0, events: 0, segments: marked.segments, destinations: holders.length, exportUrl: null };
      }
    }
    await completePrivacyRequest({ requestId: input.requestId, result });
  } catch (error) {
    await failPrivacyRequest({ requestId: input.requestId, error: reason(error) });
    throw error;
  }
}
