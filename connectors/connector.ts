import { z } from 'zod';
import type { IdType } from '../domain/destinations';
import type { Outbound } from './outbound';

/** What a delivery may use: the guarded HTTP client, and the folder root file destinations write under. */
export interface DeliveryContext {
  /** Its requests are abandoned once the delivery's attempt is given up. */
  http: Pick<Outbound, 'send'>;
  exportDir: string;
}

/** One batch of an export: a segment's adds or removes for one partner, under a stable id. */
export interface ExportBatch {
  destinationId: string;
  exportId: string;
  /** Stable across retries: the partner's idempotency key. */
  batchId: string;
  segment: { id: string; name: string };
  idType: IdType;
  adds: string[];
  removes: string[];
}

export interface Limits {
  /** Most ids one batch carries. */
  batchSize: number;
  /** Most requests per second the partner accepts (its documented rate limit). */
  requestsPerSecond: number;
  /** Requests in flight at once. */
  concurrency: number;
}

/**
 * A destination connector: one module with its config schema and its delivery. It never stores
 * anything: the export workflow around it plans batches, paces, retries and keeps receipts.
 */
export interface Connector<C extends Record<string, unknown> = Record<string, unknown>> {
  /** The registry name destinations use in `connector`. */
  name: string;
  config: z.ZodType<C>;
  /** Config fields never echoed by the API. */
  secrets: readonly string[];
  idTypes: readonly IdType[];
  /** Whether it takes a sync partner's own ids (`partner:<id>`, from the cookie-sync match table). */
  partnerIds: boolean;
  limits(config: C): Limits;
  /** Outbound URLs the config names: refused when private unless allowlisted. */
  urls(config: C): string[];
  /** Fewest matched ids a segment must have before the partner may receive it (people-based lists). */
  minAudience?(config: C): number;
  /**
   * How long after an id was added the partner must be sent it again, when its adds expire (a DSP's
   * TTL): every id of a segment is sent again once this long has passed since they last all were.
   */
  renewAfterMs?(config: C): number;
  /**
   * The partner's audience a segment fills (default: one of its own). Segments that share one (a
   * list, one code for two segments) keep each other's ids: one no longer sent removes none the
   * other still sends.
   */
  audienceOf?(config: C, segmentId: string): string;
  /** The most segments one destination may send, when its partner keeps one audience per destination (a people-based list). */
  maxSegments?: number;
  /** Delivers one batch; resolves when the partner confirmed it, with the ids it refused inside it. Throws DeliveryError. */
  deliver(batch: ExportBatch, config: C, context: DeliveryContext): Promise<Delivered>;
}

/**
 * What a partner's confirmation of a batch says. Ids it refused inside the batch are not applied:
 * the export counts them rejected and leaves them uncertain in the partner's state, so the next
 * export sends each again as its target then says (a refused removal is sent again). When the
 * partner does not name every id it refused, or its answer could not be read, every id of the batch is.
 */
export interface Delivered {
  /** Ids the partner refused inside the batch. */
  rejected: number;
  /** Those ids, when the partner named them; or the ids of a request it counted refusals in without naming them (or gave no answer to read). */
  refused?: readonly string[];
  /** The partner's answer could not be read whole: what it refused is unknown. */
  unread?: boolean;
}

/**
 * The lines of a batch (its adds, then its removes, by position) the partner confirmed without
 * applying: those it named as refused, or every line when it refused ids it did not name (or named
 * ids the batch does not hold), or its answer could not be read.
 */
export function linesNotApplied(batch: Pick<ExportBatch, 'adds' | 'removes'>, delivered: Delivered): number[] {
  const lines = [...batch.adds, ...batch.removes];
  const every = () => lines.map((_, line) => line);
  if (delivered.unread) return every();
  const refused = new Set(delivered.refused ?? []);
  if (delivered.rejected === 0 && refused.size === 0) return [];
  const named = lines.flatMap((id, line) => (refused.has(id) ? [line] : []));
  return delivered.refused !== undefined && refused.size >= delivered.rejected && named.length >= refused.size ? named : every();
}

/** Identity for typing a connector module while keeping its config type. */
export function defineConnector<C extends Record<string, unknown>>(connector: Connector<C>): Connector<C> {
  return connector;
}

/** A bearer token: printable ASCII without spaces, so it can only ever be a header value (never split one). */
export const HeaderToken = z.string().regex(/^[\x21-\x7e]{1,4096}$/, 'printable ASCII without spaces, at most 4096 characters');
