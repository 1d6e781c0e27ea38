import type { DrainPosition } from './schemas';

/** Where a new source's drain starts. Its own module: workflow code imports it, and must not pull in zod or node:crypto. */
export const INITIAL_DRAIN_POSITION: DrainPosition = {
  cursor: 0,
  eventsProcessed: 0,
  eventsRefused: 0,
  eventsNonProfiling: {},
  duplicatesSkipped: 0,
  batchesApplied: 0,
  lastDrainAt: null,
};
