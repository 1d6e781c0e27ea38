import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

/**
 * A record whose document states its keys too (OpenAPI 3.1 `propertyNames`): the generator shows
 * only the values' schema, which let a request the document allowed (an empty column name) be refused.
 */
export function keyedRecord<V extends z.ZodType>(key: z.ZodString, value: V) {
  const { $schema: _, ...propertyNames } = z.toJSONSchema(key);
  // `propertyNames` is OpenAPI 3.1; the metadata type knows 3.0's fields only.
  return z.record(key, value).openapi({ ...({ propertyNames } as object) });
}
