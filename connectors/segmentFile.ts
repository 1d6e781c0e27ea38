import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { ID_TYPES } from '../domain/destinations';
import { exactlyOneOf } from '../domain/schemaChecks';
import { defineConnector, HeaderToken, type ExportBatch } from './connector';
import { urlUnder } from './outbound';

const Config = exactlyOneOf(
  z.object({
    format: z.enum(['ndjson', 'csv']).default('ndjson'),
    folder: z
      .string()
      .regex(/^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9._/-]{1,200}$/, 'a relative folder under DMP_EXPORT_DIR, without `.` or `..` parts')
      .optional(),
    url: z.string().url().optional(),
    token: HeaderToken.optional(),
    batchSize: z.number().int().min(1).max(100_000).default(50_000),
    requestsPerSecond: z.number().positive().max(100).default(10),
    concurrency: z.number().int().min(1).max(8).default(2),
  })
  .strict(),
  ['folder', 'url'],
);

/** One line per id: the partner id, the segment id, and whether it is added or removed. */
export function fileContent(batch: ExportBatch, format: 'ndjson' | 'csv'): string {
  const rows = [...batch.adds.map((id) => [id, 'add'] as const), ...batch.removes.map((id) => [id, 'remove'] as const)];
  if (format === 'ndjson') return rows.map(([id, action]) => `${JSON.stringify({ id, idType: batch.idType, segment: batch.segment.id, action })}\n`).join('');
  const cell = (text: string) => (/[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text);
  return `id,id_type,segment,action\n${rows.map(([id, action]) => `${cell(id)},${batch.idType},${cell(batch.segment.id)},${action}\n`).join('')}`;
}

/**
 * An exchange/SSP segment file: each batch becomes one file `<batchId>.<format>` of partner ids and
 * segment ids, written into a folder (atomically: a reader never sees half a file, and a retry
 * rewrites the same name) or PUT over HTTP(S).
 */
export const segmentFile = defineConnector({
  name: 'segment_file',
  config: Config,
  secrets: ['token'],
  idTypes: ID_TYPES,
  partnerIds: true,
  limits: (config) => ({ batchSize: config.batchSize, requestsPerSecond: config.requestsPerSecond, concurrency: config.concurrency }),
  urls: (config) => (config.url ? [config.url] : []),
  async deliver(batch, config, { http, exportDir }) {
    const name = `${batch.batchId}.${config.format}`;
    const content = fileContent(batch, config.format);
    if (config.folder !== undefined) {
      // The root is the operator's (DMP_EXPORT_DIR); a destination only names a folder inside it.
      const folder = join(resolve(exportDir), config.folder);
      await mkdir(folder, { recursive: true });
      await writeFile(join(folder, `.${name}.partial`), content);
      await rename(join(folder, `.${name}.partial`), join(folder, name));
      return { rejected: 0 };
    }
    const headers: Record<string, string> = { 'content-type': config.format === 'csv' ? 'text/csv' : 'application/x-ndjson', 'idempotency-key': batch.batchId };
    if (config.token) headers.authorization = `Bearer ${config.token}`;
    await http.send(urlUnder(config.url as string, encodeURIComponent(name)), { method: 'PUT', headers, body: content });
    return { rejected: 0 };
  },
});
