import { ApplicationFailure } from '@temporalio/activity';
import type { StartGates } from '../store/startGates';

/**
 * Lets a workflow's first effect go ahead only if the API did not give its start up (store/startGates);
 * otherwise stops the workflow for good: the API recorded the work as failed.
 */
export async function beginGated(gates: StartGates, key: string): Promise<void> {
  if (!(await gates.begin(key))) throw ApplicationFailure.nonRetryable(`${key}: the API gave this start up when its call failed, and recorded it as failed`, 'StartAbandoned');
}
