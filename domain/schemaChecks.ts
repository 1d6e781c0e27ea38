import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

/**
 * Checks zod states only in code, each paired with the JSON Schema keyword that states it in the
 * OpenAPI document, so the document and the handler cannot tell different stories.
 */

/** A list whose items appear once each (`uniqueItems`); `keyOf` tells items apart as JSON values compare. */
export function listedOnce<T extends z.ZodType>(list: z.ZodArray<T>, keyOf: (item: z.infer<T>) => string, message: string) {
  return list.refine((items) => new Set(items.map(keyOf)).size === items.length, message).openapi({ uniqueItems: true });
}

/** A change that changes something (`minProperties`). */
export function nonEmptyChange<T extends z.ZodObject>(change: T) {
  return change.refine((fields) => Object.keys(fields).length > 0, 'nothing to change').openapi({ minProperties: 1 });
}

/** An object that needs at least one of `keys` (`anyOf` their `required`). */
export function oneOfRequired<T extends z.ZodObject>(object: T, keys: string[]) {
  return object
    .refine((fields) => keys.some((key) => (fields as Record<string, unknown>)[key] !== undefined), `needs ${keys.map((key) => `\`${key}\``).join(' or ')}`)
    .openapi({ anyOf: keys.map((key) => ({ required: [key] })) });
}

/** An object that has exactly one of `keys` (`oneOf` their `required`). */
export function exactlyOneOf<T extends z.ZodObject>(object: T, keys: string[]) {
  return object
    .refine((fields) => keys.filter((key) => (fields as Record<string, unknown>)[key] !== undefined).length === 1, `needs exactly one of ${keys.map((key) => `\`${key}\``).join(' and ')}`)
    .openapi({ oneOf: keys.map((key) => ({ required: [key] })) });
}
