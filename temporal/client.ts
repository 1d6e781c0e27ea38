import { Client, Connection, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { sourceWorkflowId } from '../domain/workflowIds';
import { SA } from '../domain/searchAttributes';
import type { Config } from '../config';
import type { SourceDoc } from '../store/sources';
import { sourceConnection } from '../workflows/sourceConnection';

export async function connectTemporal(config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>): Promise<Client> {
  const connection = await Connection.connect({ address: config.TEMPORAL_ADDRESS });
  return new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
}

/** Starts the source's workflow under its deterministic id; finding it already running is success. */
export async function ensureSourceWorkflow(
  client: Client,
  source: Pick<SourceDoc, '_id' | 'kind' | 'party'>,
  config: Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_DRAIN_BATCH_EVENTS'>,
): Promise<void> {
  try {
    await client.workflow.start(sourceConnection, {
      workflowId: sourceWorkflowId(source._id),
      taskQueue: config.DMP_TASK_QUEUE,
      args: [{ sourceId: source._id, drainBatchEvents: config.DMP_DRAIN_BATCH_EVENTS }],
      typedSearchAttributes: [
        { key: SA.sourceId, value: source._id },
        { key: SA.sourceKind, value: source.kind },
        { key: SA.party, value: source.party },
        { key: SA.state, value: 'active' },
        { key: SA.eventsProcessed, value: 0 },
      ],
      memo: { sourceId: source._id, kind: source.kind, party: source.party },
    });
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
  }
}
