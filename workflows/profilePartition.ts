import type { RetryPolicy } from '@temporalio/common';
import { condition, continueAsNew, defineQuery, defineSignal, patched, proxyActivities, proxyLocalActivities, setHandler, upsertMemo, workflowInfo } from '@temporalio/workflow';
import type { CompactResult, FoldResult, ProfileWriterActivities } from '../activities/profileWriter';

/** Sent by a source's drain after it routed events of `sourceId` to this partition. */
export const eventsRoutedSignal = defineSignal<[string]>('eventsRouted');
/** Sent by an unlink whose plan splits documents of this partition (see identityUnlink). */
export const splitRequestedSignal = defineSignal<[string]>('splitRequested');
/** Sent by a retention run that planned expiries of inactive people with documents in this partition. */
export const expiryRequestedSignal = defineSignal<[string]>('expiryRequested');

export interface PartitionStatus {
  partition: number;
  eventsFolded: number;
  profilesWritten: number;
  versionsRemoved: number;
  folds: number;
  documentsSplit: number;
  profilesExpired?: number;
  pendingSources: number;
}
export const partitionStatusQuery = defineQuery<PartitionStatus>('status');

export interface ProfilePartitionInput {
  partition: number;
  foldBatchEvents: number;
  /** Carried across continue-as-new. */
  pendingSources?: string[];
  pendingSplits?: string[];
  pendingExpiries?: string[];
  compactionDue?: boolean;
  status?: PartitionStatus;
}

const writerRetry: RetryPolicy = { initialInterval: '1 second', maximumInterval: '10 seconds' };
/** How runs from before LOCAL_WRITES folded: as activities through the Temporal server. */
const remote = proxyActivities<ProfileWriterActivities>({ startToCloseTimeout: '5 minutes', heartbeatTimeout: '20 seconds', retry: writerRetry });
/**
 * Folds and compactions run as local activities, in the worker that runs this workflow: a fold
 * comes several times a second per partition under steady load, and as a task the Temporal server
 * hands out it cost the server more than the fold cost the store. A worker that dies mid-fold
 * leaves its workflow task to time out; the next worker folds again, which a fold is safe to.
 */
const local = proxyLocalActivities<ProfileWriterActivities>({ startToCloseTimeout: '5 minutes', retry: writerRetry });
const LOCAL_WRITES = 'local-writes';
const EXPIRIES = 'expiries';

const HISTORY_LIMIT = 4_000;
/** Write groups one compaction compacts at most: a fold that comes meanwhile waits for no more. */
const COMPACT_GROUPS_AT_ONCE = 8;

/**
 * The single writer of one partition of the profiles: wait until a source's drain routes events
 * here (or an unlink asks for documents to be split, or a retention run for inactive ones to expire), fold them into the partition's documents,
 * repeat; compact superseded versions while nothing waits to be folded; continue as new when the
 * history grows long. One fold or compaction runs at a time, so no two writers touch a document at
 * once — the reason this workflow exists, since the store's updates are not atomic against
 * concurrent writers. A fresh run first looks at every source the partition has seen: a wake-up
 * may have come while none ran.
 */
export async function profilePartition(input: ProfilePartitionInput): Promise<void> {
  const pending = new Set(input.pendingSources ?? []);
  const splits = new Set(input.pendingSplits ?? []);
  const expiries = new Set(input.pendingExpiries ?? []);
  const status: PartitionStatus = input.status ?? { partition: input.partition, eventsFolded: 0, profilesWritten: 0, versionsRemoved: 0, folds: 0, documentsSplit: 0, pendingSources: 0 };
  let lookEverywhere = true;
  let lastWriter: string | null = null;
  /** The last fold or compaction left write groups due for compaction (histories from before it never set this). */
  let compactionDue = input.compactionDue ?? false;

  setHandler(eventsRoutedSignal, (sourceId) => {
    pending.add(sourceId);
  });
  setHandler(splitRequestedSignal, (unlinkId) => {
    splits.add(unlinkId);
  });
  // A run begun before expiries existed replays without their requests; it hears them once continued as new.
  if (patched(EXPIRIES)) {
    setHandler(expiryRequestedSignal, (expiryId) => {
      expiries.add(expiryId);
    });
  }
  setHandler(partitionStatusQuery, () => ({ ...status, pendingSources: pending.size }));

  while (workflowInfo().historyLength < HISTORY_LIMIT && !workflowInfo().continueAsNewSuggested) {
    if (!lookEverywhere) await condition(() => pending.size > 0 || splits.size > 0 || expiries.size > 0 || compactionDue);
    if (!lookEverywhere && pending.size === 0 && splits.size === 0 && expiries.size === 0) {
      const compacted: CompactResult = await (patched(LOCAL_WRITES) ? local : remote).compactPartition({ partition: input.partition, lastWriter, maxGroups: COMPACT_GROUPS_AT_ONCE });
      lastWriter = compacted.writer;
      compactionDue = compacted.more;
      status.versionsRemoved += compacted.versionsRemoved;
      if (compacted.groups > 0) upsertMemo({ status });
      continue;
    }
    const sourceIds = [...pending];
    const splitsNow = [...splits];
    const expiriesNow = [...expiries];
    const includeKnown = lookEverywhere;
    lookEverywhere = false;
    pending.clear();
    splits.clear();
    expiries.clear();
    const result: FoldResult = await (patched(LOCAL_WRITES) ? local : remote).foldPartitionBatch({
      partition: input.partition,
      sourceIds,
      includeKnown,
      maxEvents: input.foldBatchEvents,
      lastWriter,
      splits: splitsNow,
      expiries: expiriesNow,
    });
    lastWriter = result.writer;
    compactionDue = result.compactionDue ?? false;
    for (const sourceId of result.sourcesWithMore) pending.add(sourceId);
    for (const expiryId of result.expiriesWithMore ?? []) expiries.add(expiryId);
    status.eventsFolded += result.applied + result.alreadyApplied;
    status.profilesWritten += result.profilesWritten;
    status.versionsRemoved += result.versionsRemoved;
    status.documentsSplit = (status.documentsSplit ?? 0) + (result.documentsSplit ?? 0);
    status.profilesExpired = (status.profilesExpired ?? 0) + (result.profilesExpired ?? 0);
    status.folds += 1;
    if (result.events > 0 || result.documentsSplit > 0 || (result.profilesExpired ?? 0) > 0) upsertMemo({ status });
  }
  await continueAsNew<typeof profilePartition>({ ...input, pendingSources: [...pending], pendingSplits: [...splits], pendingExpiries: [...expiries], compactionDue, status });
}
