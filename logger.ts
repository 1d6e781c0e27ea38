import pino from 'pino';

/** JSON-lines logger; callers bind `sourceId` and `workflowId` with `.child()` for lines about a source. */
export const logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { service: process.env.DMP_SERVICE_NAME ?? 'dmp' },
  timestamp: pino.stdTimeFunctions.isoTime,
});
export type Logger = typeof logger;
