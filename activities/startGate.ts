import { ApplicationFailure } from '@temporalio/activity';
import type { StartGates } from '../store/startGates';

/**
 * Lets a workflow's first effect go ahead only if the API did not give its start up
 * (store/startGates). Otherwise records the work as failed with `fail` (only if still running) — the
 * API does too, but may have stopped between giving the start up and recording it — and stops the
 * workflow for good.
 */
export async function beginGated(gates: StartGates, key: string, fail: () => Promise<unknown>): Promise<void> {
  if (await gates.begin(key)) return;
  await fail();
  throw ApplicationFailure.nonRetryable(`${key}: the API gave this start up when its call failed; recorded as failed`, 'StartAbandoned');
}
