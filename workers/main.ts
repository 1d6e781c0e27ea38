import { loadConfig } from '../config';
import { logger } from '../logger';
import { connectStore } from '../store/db';
import { SegmentStore } from '../store/segments';
import { connectTemporal, ensurePassSchedules, ensureRetentionSchedule } from '../temporal/client';
import { createWorker } from './worker';

async function main(): Promise<void> {
  const config = loadConfig();
  const store = await connectStore(config.MONGODB_URI);
  const temporal = await connectTemporal(config);
  const { worker, connection } = await createWorker({ config, store, temporal });
  await ensureRetentionSchedule(temporal, store.db.databaseName, config);
  await ensurePassSchedules(temporal, store.db.databaseName, config);
  await new SegmentStore(store).indexReferences();
  logger.info({ taskQueue: config.DMP_TASK_QUEUE, temporal: config.TEMPORAL_ADDRESS }, 'worker started');
  await worker.run(); // resolves after SIGINT/SIGTERM, once in-flight tasks are done
  await connection.close();
  await temporal.connection.close();
  await store.close();
}

main().catch((error) => {
  logger.fatal({ err: error }, 'worker failed');
  process.exit(1);
});
