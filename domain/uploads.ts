import { z } from 'zod';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { INPUT_IDENTITY_TYPES } from './identity';

extendZodWithOpenApi(z);

const ColumnName = z.string().min(1).max(128);
const TraitName = z.string().min(1).max(128);

/**
 * How a CRM source's CSV uploads become events: which columns hold identities (raw emails and
 * phones are hashed at the edge, as they stream in), which become traits, and what the row's event
 * is called. One mapping per source, so every upload of a customer file means the same thing.
 */
export const CrmMappingSchema = z
  .object({
    identities: z
      .partialRecord(z.enum(INPUT_IDENTITY_TYPES), ColumnName)
      .refine((columns) => Object.keys(columns).length > 0, 'map at least one identity column')
      .openapi({ description: 'Identity type → column, e.g. `{"crm_id": "customer_id", "email": "Email"}`', example: { crm_id: 'customer_id', email: 'email' } }),
    traits: z
      .record(ColumnName, TraitName)
      .default({})
      .openapi({ description: 'Column → trait name, e.g. `{"Tier": "loyalty_tier"}`; other columns are ignored' }),
    eventType: z.string().min(1).max(128).default('crm_record').openapi({ description: 'The event type each row is recorded as' }),
    delimiter: z.enum([',', ';', '\t', '|']).default(','),
  })
  .strict()
  .openapi('CrmMapping');
export type CrmMapping = z.infer<typeof CrmMappingSchema>;
