import { ApplicationFailure, ChildWorkflowFailure, condition, continueAsNew, defineSignal, executeChild, proxyActivities, setHandler, sleep, workflowInfo } from '@temporalio/workflow';
import type { UnlinkActivities } from '../activities/identityUnlink';
import { identityUnlinkWorkflowId } from '../domain/workflowIds';

/** Sent by the API after it recorded an unlink request. */
export const unlinkRequestedSignal = defineSignal<[string]>('unlinkRequested');

const { planUnlink, requestSplits, pendingSplits, relinkUnlink, unfinishedUnlinks, failUnlink } = proxyActivities<UnlinkActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/** How often an unlink asks again for splits its partitions have not made yet (a writer may have restarted). */
const ASK_AGAIN_EVERY = 10;
/** Rounds of waiting for the splits before the unlink fails (about an hour): its history stays bounded. */
const MAX_ROUNDS = 1_200;

/**
 * One unlink: plan how its component splits, have each partition's writer split its documents
 * (only the writer writes them), then move the identities and links to the parts. Every step is an
 * idempotent activity keyed by the unlink id, so a retried or restarted run converges.
 */
export async function identityUnlink(input: { unlinkId: string }): Promise<void> {
  const { unlinkId } = input;
  const plan = await planUnlink(unlinkId);
  if (!plan.split) return;
  let pending = plan.partitions;
  for (let round = 0; pending.length > 0; round++) {
    if (round >= MAX_ROUNDS) throw ApplicationFailure.nonRetryable(`partitions ${pending.join(', ')} did not make their splits within an hour`);
    if (round % ASK_AGAIN_EVERY === 0) await requestSplits({ unlinkId, partitions: pending });
    await sleep(round < ASK_AGAIN_EVERY ? 300 : 3000);
    pending = await pendingSplits(unlinkId);
  }
  await relinkUnlink(unlinkId);
}

const HISTORY_LIMIT = 2_000;

/**
 * The store's unlinks, one at a time: two unlinks splitting one component at once would plan from
 * documents the other retires. Every run first picks up requests left unfinished (one whose signal
 * was lost included); an unlink that fails is recorded as failed and the queue goes on.
 */
export async function identityGraph(input: { databaseName: string; queue?: string[] }): Promise<void> {
  const queue = [...(input.queue ?? [])];
  const enqueue = (id: string) => {
    if (!queue.includes(id)) queue.push(id);
  };
  setHandler(unlinkRequestedSignal, enqueue);
  for (const id of await unfinishedUnlinks()) enqueue(id);
  while (workflowInfo().historyLength < HISTORY_LIMIT && !workflowInfo().continueAsNewSuggested) {
    await condition(() => queue.length > 0);
    const unlinkId = queue[0];
    try {
      await executeChild(identityUnlink, { workflowId: identityUnlinkWorkflowId(input.databaseName, unlinkId), args: [{ unlinkId }] });
    } catch (error) {
      if (!(error instanceof ChildWorkflowFailure)) throw error;
      await failUnlink({ unlinkId, reason: error.cause?.message ?? error.message });
    }
    queue.shift();
  }
  await continueAsNew<typeof identityGraph>({ ...input, queue });
}
