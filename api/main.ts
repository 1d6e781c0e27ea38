import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../config';
import { logger } from '../logger';
import { connectStore } from '../store/db';
import { connectTemporal } from '../temporal/client';
import { createApp } from './app';

async function serve(adminKey: string): Promise<void> {
  const config = loadConfig();
  const store = await connectStore(config.MONGODB_URI);
  const temporal = await connectTemporal(config);
  const app = createApp({ config: { ...config, DMP_ADMIN_KEY: adminKey }, store, temporal });
  const server = app.listen(config.PORT, () => logger.info({ port: config.PORT, pid: process.pid }, 'api listening'));
  // CRM uploads stream for as long as the file takes (1M rows: under a minute here); Node's default cuts bodies at 5 minutes.
  server.requestTimeout = 3_600_000;
  const stop = () => {
    server.close(() => {
      void Promise.all([store.close(), temporal.connection.close()]).then(() => process.exit(0));
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

/**
 * Several API processes on one port: node:cluster hands connections out among them. Each keeps its
 * own group commits (they take turns at a source's log slots). One that dies is replaced; the
 * others go on answering. Killing this process ends them all (they exit when it goes).
 */
function supervise(processes: number, adminKey: string): void {
  let stopping = false;
  const fork = () => cluster.fork({ DMP_ADMIN_KEY: adminKey });
  for (let n = 0; n < processes; n++) fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    logger.error({ pid: worker.process.pid, code, signal }, 'an api process ended; starting another');
    fork();
  });
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function main(): Promise<void> | void {
  const config = loadConfig();
  if (cluster.isWorker) return serve(config.DMP_ADMIN_KEY as string);
  const adminKey = config.DMP_ADMIN_KEY ?? `adm_${randomBytes(24).toString('base64url')}`;
  if (!config.DMP_ADMIN_KEY) logger.warn({ adminKey }, 'DMP_ADMIN_KEY is not set; generated an admin key for this run');
  if (config.DMP_API_PROCESSES > 1) return supervise(config.DMP_API_PROCESSES, adminKey);
  return serve(adminKey);
}

Promise.resolve()
  .then(main)
  .catch((error) => {
    logger.fatal({ err: error }, 'api failed to start');
    process.exit(1);
  });
