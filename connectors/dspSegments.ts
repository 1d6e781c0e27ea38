import type { ZodOpenAPIMetadata } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { defineConnector, HeaderToken } from './connector';
import { partnerOfIdType } from '../domain/destinations';
import { isRecord } from '../domain/records';

const SEGMENT_CODE_KEY = /^[^.$][^.]*$/;

const Config = z
  .object({
    url: z.string().url(),
    token: HeaderToken,
    advertiserId: z.string().min(1).max(64),
    /** The partner's code for each of our segment ids; a segment without one is sent under its id. */
    // Keyed by segment id; a key the store refuses (a `.`, a leading `$`) names no segment.
    segmentCodes: z
      .record(z.string().regex(SEGMENT_CODE_KEY, 'must be a segment id (no `.`, no leading `$`)'), z.string().min(1).max(128))
      // The generator states no key schema of a record: JSON Schema's `propertyNames` says it.
      .openapi({ propertyNames: { pattern: SEGMENT_CODE_KEY.source } } as Partial<ZodOpenAPIMetadata>)
      .default({}),
    ttlMinutes: z.number().int().min(1).max(259_200).default(43_200),
    batchSize: z.number().int().min(1).max(10_000).default(5_000),
    requestsPerSecond: z.number().positive().max(100).default(10),
    concurrency: z.number().int().min(1).max(8).default(2),
  })
  .strict();

/** The item key the format gives each id type: TDID for cookie ids (best the DSP's own, `partner:<id>` from cookie syncs), DAID for device ids. */
const ID_KEYS = { cookie_id: 'TDID', maid: 'DAID' } as const;

/**
 * A DSP segment-data API modelled on The Trade Desk's Data API (`POST /data/advertiser`): items of
 * one id each carry the segments it holds with a TTL in minutes; a TTL of 0 takes the id out of the
 * segment. Bearer auth; the partner's rate limit is `requestsPerSecond` (429 with Retry-After past
 * it). Ids it cannot take come back as `FailedLines` in a 200, each naming its id as the item did:
 * they count as rejected, and the next export sends them again.
 */
export const dspSegments = defineConnector({
  name: 'dsp_segments',
  config: Config,
  secrets: ['token'],
  idTypes: ['cookie_id', 'maid'],
  // The DSP's own cookie ids, learnt by cookie sync, are what its TDID means.
  partnerIds: true,
  limits: (config) => ({ batchSize: config.batchSize, requestsPerSecond: config.requestsPerSecond, concurrency: config.concurrency }),
  urls: (config) => [config.url],
  // The DSP drops an id from a segment when its TTL runs out: members held for longer are added again half way.
  renewAfterMs: (config) => (config.ttlMinutes * 60_000) / 2,
  audienceOf: (config, segmentId) => config.segmentCodes[segmentId] ?? segmentId,
  async deliver(batch, config, { http }) {
    const key = partnerOfIdType(batch.idType) !== null ? ID_KEYS.cookie_id : ID_KEYS[batch.idType as keyof typeof ID_KEYS];
    const name = config.segmentCodes[batch.segment.id] ?? batch.segment.id;
    const item = (id: string, ttl: number) => ({ [key]: id, Data: [{ Name: name, TTLInMinutes: ttl }] });
    const body = JSON.stringify({
      AdvertiserId: config.advertiserId,
      Items: [...batch.adds.map((id) => item(id, config.ttlMinutes)), ...batch.removes.map((id) => item(id, 0))],
    });
    const { answer, complete } = await http.send(config.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${config.token}`, 'idempotency-key': batch.batchId },
      body,
    });
    if (!complete) return { rejected: 0, unread: true };
    const failed = (answer as { FailedLines?: unknown } | null)?.FailedLines;
    if (!Array.isArray(failed)) return { rejected: 0 };
    // A failed line names its id as the item did (TDID or DAID); one that names none leaves the batch's every id in doubt.
    const refused = failed.flatMap((line) => {
      const id = isRecord(line) ? line[key] : undefined;
      return typeof id === 'string' ? [id] : [];
    });
    return { rejected: failed.length, ...(refused.length === failed.length && { refused }) };
  },
});
