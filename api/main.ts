import { randomBytes } from 'node:crypto';
import { loadConfig } from '../config';
import { logger } from '../logger';
import { connectStore } from '../store/db';
import { connectTemporal } from '../temporal/client';
import { createApp } from './app';

async function main(): Promise<void> {
  const config = loadConfig();
  const adminKey = config.DMP_ADMIN_KEY ?? `adm_${randomBytes(24).toString('base64url')}`;
  if (!config.DMP_ADMIN_KEY) logger.warn({ adminKey }, 'DMP_ADMIN_KEY is not set; generated an admin key for this run');
  const store = await connectStore(config.MONGODB_URI);
  const temporal = await connectTemporal(config);
  const app = createApp({ config: { ...config, DMP_ADMIN_KEY: adminKey }, store, temporal });
  const server = app.listen(config.PORT, () => logger.info({ port: config.PORT }, 'api listening'));
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

main().catch((error) => {
  logger.fatal({ err: error }, 'api failed to start');
  process.exit(1);
});
