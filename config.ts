import { z } from 'zod';
import { blocklistKeys } from './domain/identityBlocklist';
import { parseIdentityCaps } from './domain/identityCaps';

/** Every setting the platform reads, with its documented default; parsed once at start. */
export const ConfigSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  DMP_ADMIN_KEY: z.string().min(16).optional(),
  /**
   * API processes sharing the port (node:cluster): preparing events is CPU work, so collection
   * scales with cores. 1 runs the API in the starting process itself.
   */
  DMP_API_PROCESSES: z.coerce.number().int().min(1).max(64).default(1),
  TEMPORAL_ADDRESS: z.string().default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  DMP_TASK_QUEUE: z.string().default('dmp'),
  MONGODB_URI: z.string().default('mongodb://127.0.0.1:27017/dmp'),
  /** Largest accepted request body, in bytes. */
  DMP_MAX_BODY_BYTES: z.coerce.number().int().positive().default(1_048_576),
  /** Most events one collect request may carry. */
  DMP_MAX_BATCH_EVENTS: z.coerce.number().int().positive().default(1000),
  /** Most events one stored chunk may hold (a group commit writes one chunk per source). */
  DMP_CHUNK_MAX_EVENTS: z.coerce.number().int().positive().default(2000),
  /**
   * Most events one drain activity routes per range, and one partition fold applies to profiles. A
   * fold writes each document it touches once, so under a backlog larger folds write fewer versions
   * per event (bench:ingest: 20,000 drained ~1.3× as fast as 5,000); a quiet source's folds stay small.
   */
  DMP_DRAIN_BATCH_EVENTS: z.coerce.number().int().positive().default(20_000),
  /** Consecutive ranges of a source's log one drain activity routes at once (each read while the one before resolves). */
  DMP_DRAIN_CONCURRENCY: z.coerce.number().int().min(1).max(8).default(4),
  /**
   * Partitions of the profiles, each with one writer at a time: as many workers as partitions can
   * fold at once. Fixed for a store's lifetime (a profile's partition derives from its id).
   */
  DMP_PROFILE_PARTITIONS: z.coerce.number().int().min(1).max(1024).default(8),
  /**
   * Identities (`<type>:<value>`; emails and phones raw or as SHA-256 hex, each blocked as written and
   * normalized as at collection) that never join profiles, beside the built-in junk values: comma-separated, or a JSON
   * array of strings for keys that hold commas (a partner's user ids may).
   */
  DMP_IDENTITY_BLOCKLIST: z
    .string()
    .default('')
    .transform((list, ctx) => {
      const keys = list.trim().startsWith('[') ? z.array(z.string().min(1)).safeParse(parseJsonOrNull(list)) : { success: true as const, data: list.split(',').map((key) => key.trim()).filter(Boolean) };
      if (!keys.success) {
        ctx.addIssue({ code: 'custom', message: 'a JSON array of identity keys (strings), or keys separated by commas' });
        return z.NEVER;
      }
      // An entry naming no identity type blocks nothing: a typo the operator should hear of at once.
      for (const entry of keys.data) {
        try {
          blocklistKeys(entry, 'US');
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: `${entry}: ${(error as Error).message}` });
        }
      }
      return keys.data;
    }),
  /**
   * Most identities of a type one profile document takes (`type=n,…`; unnamed types keep their
   * default, see domain/identityCaps): past it, joins are refused and recorded.
   */
  DMP_IDENTITY_CAPS: z
    .string()
    .default('')
    .transform((text, ctx) => {
      try {
        return parseIdentityCaps(text);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: (error as Error).message });
        return z.NEVER;
      }
    }),
  /** How long an event id stays a duplicate: ids leave a whole generation at a time, so between this and twice this. */
  DMP_DEDUPE_WINDOW_HOURS: z.coerce.number().int().min(1).default(168),
  /** How long a source's raw log chunks are kept once drained (the routed copies serve history and rebuilds). */
  DMP_RAW_EVENT_TTL_HOURS: z.coerce.number().min(0).default(24),
  /** How long routed events are kept for profile histories and unlink rebuilds. */
  DMP_EVENT_HISTORY_DAYS: z.coerce.number().min(1).default(395),
  /** How long the record of an ended segment run is kept (its counts stay in the segment's history). */
  DMP_SEGMENT_RUN_DAYS: z.coerce.number().min(0).default(30),
  /** Most segments a run of every segment evaluates: more are evaluated in several runs, one after the other (see runGroups). */
  DMP_SEGMENTS_PER_RUN: z.coerce.number().int().min(1).default(4000),
  /** How long the record of an ended export (and its batches' receipts) is kept. */
  DMP_EXPORT_HISTORY_DAYS: z.coerce.number().min(0).default(90),
  /** How long the record of an ended feed pull or upload is kept (a feed's last pull and a source's newest ended upload stay). */
  DMP_SOURCE_HISTORY_DAYS: z.coerce.number().min(0).default(90),
  /**
   * People last seen more than this many days ago leave the store at the next retention run: their
   * profile documents, identity claims and links (domain/profileExpiry). 0 keeps everyone.
   */
  DMP_INACTIVE_PROFILE_DAYS: z.coerce.number().min(0).default(0),
  /** How often the retention run looks for what may leave the store. */
  DMP_RETENTION_EVERY_MINUTES: z.coerce.number().min(1).default(60),
  /** Event types whose `properties.item` are interactions the item model (recommendations) learns from. */
  DMP_ITEM_EVENT_TYPES: z
    .string()
    .default('product_view,add_to_cart,purchase')
    .transform((list) => list.split(',').map((type) => type.trim()).filter(Boolean)),
  /** How often the item model is rebuilt by a pass over every person (between, refreshes apply what folds recorded). */
  DMP_ITEM_MODEL_EVERY_MINUTES: z.coerce.number().min(1).default(1440),
  /** How often the item model takes in the interactions folded since its last update. */
  DMP_ITEM_MODEL_REFRESH_MINUTES: z.coerce.number().min(1).default(5),
  /** How long an insight waits for an audience report it started before answering with what there is. */
  DMP_REPORT_WAIT_SECONDS: z.coerce.number().min(0).max(300).default(25),
  /** How long an idle source waits for a wake-up from the API before looking at its log anyway. */
  DMP_SOURCE_IDLE_POLL_SECONDS: z.coerce.number().positive().default(300),
  /** The salt of privacy requests' subject hashes; without it, one is made for the store and kept there. */
  DMP_PRIVACY_SALT: z.string().min(16).optional(),
  /** Region assumed for phone numbers written without a country code. */
  DMP_DEFAULT_PHONE_REGION: z.string().length(2).default('US'),
  /** Rounds a privacy request's removal at one destination retries in one workflow run before it goes on as new (its history stays short). */
  DMP_PRIVACY_REMOVAL_ROUNDS_PER_RUN: z.coerce.number().int().min(1).default(40),
  /** Partner hosts (exact names or addresses) exports may reach even though they resolve to private or loopback addresses. */
  DMP_DESTINATION_ALLOWLIST: z
    .string()
    .default('')
    .transform((list) => list.split(',').map((host) => host.trim().toLowerCase()).filter(Boolean)),
  /** How long a partner may take to answer one batch before the delivery is abandoned and retried. */
  DMP_DESTINATION_TIMEOUT_SECONDS: z.coerce.number().positive().default(30),
  /** Where `segment_file` destinations with a `folder` write their files. */
  DMP_EXPORT_DIR: z.string().default('.data/exports'),
  /** The root of feed sources' drop folders (`feed.folder` is a folder under it). */
  DMP_FEED_DIR: z.string().default('.data/feeds'),
  /**
   * A drop folder's file is read once unmodified this long: one modified since may be one whose
   * writer paused mid-row. Writers that move a finished file in (or name it `.part` until done) are never read half-written.
   */
  DMP_FEED_SETTLE_SECONDS: z.coerce.number().min(0).max(300).default(30),
  /** Domain attribute of the platform's own cookie (set by the pixel and cookie syncs); host-only when empty. */
  DMP_COOKIE_DOMAIN: z.string().default(''),
  /** How long a cookie-sync match (partner id ↔ our cookie id) lives without being seen again. */
  DMP_MATCH_TTL_DAYS: z.coerce.number().positive().default(90),
  /** Most partner ids kept per cookie id and per partner (and cookie ids per partner id): the newest win. */
  DMP_MATCH_CAP: z.coerce.number().int().min(1).default(5),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type Config = z.infer<typeof ConfigSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return ConfigSchema.parse(env);
}

function parseJsonOrNull(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
