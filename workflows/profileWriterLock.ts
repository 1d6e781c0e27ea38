import {
  condition,
  continueAsNew,
  defineSignal,
  getExternalWorkflowHandle,
  log,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';

/**
 * Profiles have one writer at a time. FerretDB applies an update by reading the document, changing it
 * in Go and writing it back with nothing held in between, so two drains touching one profile at once
 * could lose a change; this workflow hands out the right to write profiles, one holder at a time.
 */
export interface LockRequest {
  holder: string;
  ticket: string;
}

export const acquireProfileWriterSignal = defineSignal<[LockRequest]>('acquire');
/**
 * `writer` names the process that last wrote profiles under this grant, or null when that is not
 * known (a drain failed part-way). The next holder learns it: a process that was itself the last
 * writer may trust what it cached of the profiles it wrote.
 */
export const releaseProfileWriterSignal = defineSignal<[{ ticket: string; writer: string | null }]>('release');
export const profileWriterGrantedSignal = defineSignal<[{ ticket: string; lockWorkflowId: string; lastWriter: string | null }]>('profileWriterGranted');

export interface ProfileWriterLockState {
  queue: LockRequest[];
  lastWriter: string | null;
}

/** Longer than a holder may keep the lock (it releases after a bounded drain), so expiry means the holder is gone. */
const LEASE = '30 minutes';
const GRANTS_PER_RUN = 500;

export async function profileWriterLock(state: ProfileWriterLockState = { queue: [], lastWriter: null }): Promise<void> {
  const queue = [...state.queue];
  let current: LockRequest | null = null;
  let lastWriter = state.lastWriter ?? null;

  setHandler(acquireProfileWriterSignal, (request) => {
    if (current?.ticket === request.ticket || queue.some((queued) => queued.ticket === request.ticket)) return;
    queue.push(request);
  });
  setHandler(releaseProfileWriterSignal, ({ ticket, writer }) => {
    if (current?.ticket === ticket) {
      current = null;
      lastWriter = writer;
    } else {
      const index = queue.findIndex((queued) => queued.ticket === ticket);
      if (index >= 0) queue.splice(index, 1);
    }
  });

  for (let grants = 0; grants < GRANTS_PER_RUN && !workflowInfo().continueAsNewSuggested; grants++) {
    await condition(() => queue.length > 0);
    const holder = queue.shift() as LockRequest;
    current = holder;
    try {
      await getExternalWorkflowHandle(holder.holder).signal(profileWriterGrantedSignal, {
        ticket: holder.ticket,
        lockWorkflowId: workflowInfo().workflowId,
        lastWriter,
      });
    } catch (error) {
      log.warn('lock holder is gone; skipping it', { holder: holder.holder, error: String(error) });
      current = null;
      continue;
    }
    if (!(await condition(() => current === null, LEASE))) {
      log.warn('lock lease expired without a release', { holder: holder.holder, ticket: holder.ticket });
      current = null;
      lastWriter = null;
    }
  }
  await continueAsNew<typeof profileWriterLock>({ queue, lastWriter });
}
