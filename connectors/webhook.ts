import { createHmac } from 'node:crypto';
import { z } from 'zod';
import { ID_TYPES } from '../domain/destinations';
import { defineConnector } from './connector';

const Config = z
  .object({
    url: z.string().url(),
    secret: z.string().min(16, 'at least 16 characters').max(512),
    batchSize: z.number().int().min(1).max(50_000).default(10_000),
    requestsPerSecond: z.number().positive().max(1000).default(50),
    concurrency: z.number().int().min(1).max(16).default(4),
  })
  .strict();

export function signature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

/**
 * Generic signed webhook: each batch is one JSON POST, signed with HMAC-SHA256 of the raw body
 * (`X-DMP-Signature`) and keyed by its batch id (`Idempotency-Key`); a 2xx means applied. A CRM
 * receives segments back this way.
 */
export const webhook = defineConnector({
  name: 'webhook',
  config: Config,
  secrets: ['secret'],
  idTypes: ID_TYPES,
  partnerIds: true,
  limits: (config) => ({ batchSize: config.batchSize, requestsPerSecond: config.requestsPerSecond, concurrency: config.concurrency }),
  urls: (config) => [config.url],
  async deliver(batch, config, { http }) {
    const body = JSON.stringify({
      destinationId: batch.destinationId,
      exportId: batch.exportId,
      batchId: batch.batchId,
      segment: batch.segment,
      idType: batch.idType,
      adds: batch.adds,
      removes: batch.removes,
    });
    await http.send(config.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': batch.batchId, 'x-dmp-signature': signature(config.secret, body) },
      body,
    });
    return { rejected: 0 };
  },
});
