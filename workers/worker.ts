import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import { createActivities } from '../activities';
import type { ActivityDeps } from '../activities';
import type { Config } from '../config';
import type { Store } from '../store/db';

export interface WorkerParts {
  config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE' | 'DMP_TASK_QUEUE' | 'DMP_DRAIN_BATCH_EVENTS' | 'DMP_PROFILE_PARTITIONS' | 'DMP_IDENTITY_BLOCKLIST' | 'DMP_IDENTITY_CAPS' | 'DMP_DEDUPE_WINDOW_HOURS' | 'DMP_DRAIN_CONCURRENCY' | 'DMP_RAW_EVENT_TTL_HOURS' | 'DMP_EVENT_HISTORY_DAYS' | 'DMP_SEGMENT_RUN_DAYS' | 'DMP_EXPORT_HISTORY_DAYS' | 'DMP_SOURCE_HISTORY_DAYS' | 'DMP_INACTIVE_PROFILE_DAYS' | 'DMP_DESTINATION_ALLOWLIST' | 'DMP_DESTINATION_TIMEOUT_SECONDS' | 'DMP_EXPORT_DIR' | 'DMP_SOURCE_IDLE_POLL_SECONDS' | 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP' | 'DMP_SEGMENTS_PER_RUN' | 'DMP_FEED_DIR' | 'DMP_FEED_SETTLE_SECONDS' | 'DMP_CHUNK_MAX_EVENTS' | 'DMP_DEFAULT_PHONE_REGION' | 'DMP_ITEM_EVENT_TYPES' | 'DMP_ITEM_MODEL_EVERY_MINUTES' | 'DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN'>;
  store: Store;
  temporal: Client;
  /** Test seams: same activities, other dependencies. */
  activityOverrides?: Partial<ActivityDeps>;
  workerOptions?: Partial<WorkerOptions>;
}

/** Wires the task queue to the workflows and to activities built over real dependencies. */
export async function createWorker(parts: WorkerParts): Promise<{ worker: Worker; connection: NativeConnection }> {
  const connection = await NativeConnection.connect({ address: parts.config.TEMPORAL_ADDRESS });
  const worker = await Worker.create({
    connection,
    namespace: parts.config.TEMPORAL_NAMESPACE,
    taskQueue: parts.config.DMP_TASK_QUEUE,
    workflowsPath: require.resolve('../workflows'),
    activities: createActivities({
      store: parts.store,
      temporal: parts.temporal,
      config: parts.config,
      ...parts.activityOverrides,
    }),
    ...parts.workerOptions,
  });
  return { worker, connection };
}
