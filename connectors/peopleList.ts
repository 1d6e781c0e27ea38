import { z } from 'zod';
import { defineConnector, HeaderToken } from './connector';
import { urlUnder } from './outbound';

const Config = z
  .object({
    url: z.string().url(),
    token: HeaderToken,
    listId: z.string().regex(/^[A-Za-z0-9_-]{1,128}$/, 'letters, digits, `_` or `-`'),
    /** The platform refuses to serve smaller lists (Meta Custom Audiences: 100; Google Customer Match: 1,000). */
    minAudience: z.number().int().min(1).default(100),
    batchSize: z.number().int().min(1).max(10_000).default(10_000),
    requestsPerSecond: z.number().positive().max(100).default(5),
    concurrency: z.number().int().min(1).max(8).default(2),
  })
  .strict();

/** The platform's schema names; which phone form it hashes is its rule: E.164 (Google) or digits only (Meta, TikTok). */
const SCHEMAS = { email_sha256: 'EMAIL_SHA256', phone_sha256: 'PHONE_SHA256', phone_sha256_digits: 'PHONE_SHA256' } as const;

/**
 * A people-based list (the shape of Meta Custom Audiences and Google Customer Match uploads):
 * SHA-256 hex of the email trimmed and lowercased, or of the phone in E.164 (`phone_sha256`, Google's
 * rule) or as digits without `+` (`phone_sha256_digits`, Meta's) — the hashes collection already
 * keeps — posted to `members:add` / `members:remove` with bearer auth. A segment with fewer
 * matched ids than `minAudience` is not sent at all (counted on the export). A destination sends one
 * segment to its list: one destination per segment.
 */
export const peopleList = defineConnector({
  name: 'people_list',
  config: Config,
  secrets: ['token'],
  idTypes: ['email_sha256', 'phone_sha256', 'phone_sha256_digits'],
  partnerIds: false,
  limits: (config) => ({ batchSize: config.batchSize, requestsPerSecond: config.requestsPerSecond, concurrency: config.concurrency }),
  urls: (config) => [config.url],
  minAudience: (config) => config.minAudience,
  // One list holds one audience: a second segment's removals would take people off the first's.
  maxSegments: 1,
  // Swapping its segment for another, the old one's removals spare whoever the new one adds.
  audienceOf: (config) => config.listId,
  async deliver(batch, config, { http }) {
    const schema = SCHEMAS[batch.idType as keyof typeof SCHEMAS];
    const members = (operation: string) => urlUnder(config.url, `audiences/${config.listId}/members:${operation}`);
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${config.token}`, 'idempotency-key': batch.batchId };
    let rejected = 0;
    const refused: string[] = [];
    for (const [operation, ids] of [['add', batch.adds], ['remove', batch.removes]] as const) {
      if (ids.length === 0) continue;
      const { answer, complete } = await http.send(members(operation), { method: 'POST', headers, body: JSON.stringify({ schema, data: ids }) });
      const invalid = (answer as { invalid?: unknown } | null)?.invalid;
      const count = typeof invalid === 'number' && invalid > 0 ? invalid : 0;
      rejected += count;
      // The platform counts the members it could not take without naming them: that request's every id stays in doubt.
      if (count > 0 || !complete) refused.push(...ids);
    }
    return { rejected, ...(refused.length > 0 && { refused }) };
  },
});
