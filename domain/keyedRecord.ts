import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

const PROTO = '__proto__';

/**
 * A record of client-chosen names, parsed as zod parses a record, except that a key named
 * `__proto__` is kept (checked like any other, as a plain own key): zod leaves it out, which
 * dropped such a trait from an accepted event without a word.
 *
 * Its document states its keys too (OpenAPI 3.1 `propertyNames`): the generator shows only the
 * values' schema, which let a request the document allowed (an empty column name) be refused.
 */
export function keyedRecord<K extends z.ZodString, V extends z.ZodType>(key: K, value: V) {
  const record = z.record(key, value);
  const { $schema: _, ...propertyNames } = z.toJSONSchema(key);
  const { $schema: __, ...values } = z.toJSONSchema(value, { io: 'input', unrepresentable: 'any' });
  // A record's checked `__proto__` entry, from the step that takes it out to the step that puts it
  // back once zod has parsed the others. Keyed by the parse's list of issues, which zod hands from
  // each step of a pipe to the next: one record's parse, whatever else is parsed in between.
  const carried = new WeakMap<object, z.output<V>>();
  return z
    .unknown()
    .transform((input, ctx) => {
      // Most records hold no such key: passed on as they are, at the cost of one test.
      if (typeof input !== 'object' || input === null || !Object.hasOwn(input, PROTO)) return input;
      const rest: Record<string, unknown> = {};
      for (const name of Object.keys(input)) if (name !== PROTO) rest[name] = (input as Record<string, unknown>)[name];
      const name = key.safeParse(PROTO);
      // As zod's record does, a value is checked only under a key it takes.
      const kept = name.success ? value.safeParse((input as Record<string, unknown>)[PROTO]) : null;
      if (kept?.success) {
        carried.set(ctx.issues, kept.data);
        return rest;
      }
      // Any issue here stops the pipe before the other entries are checked: they are checked here, so every issue is told.
      const raise = (issues: readonly z.core.$ZodIssue[], under: PropertyKey[] = []) => ctx.issues.push(...issues.map((issue) => ({ ...issue, path: [...under, ...issue.path] }) as z.core.$ZodRawIssue));
      const others = record.safeParse(rest);
      if (!others.success) raise(others.error.issues);
      if (!name.success) ctx.issues.push({ code: 'invalid_key', origin: 'record', issues: name.error.issues, path: [PROTO], input: PROTO, message: 'Invalid key in record' });
      if (kept && !kept.success) raise(kept.error.issues, [PROTO]);
      return z.NEVER;
    })
    .pipe(record)
    .transform((parsed, ctx) => {
      if (carried.has(ctx.issues)) Object.defineProperty(parsed, PROTO, { value: carried.get(ctx.issues), enumerable: true, writable: true, configurable: true });
      return parsed;
    })
    .openapi({ type: 'object', ...({ additionalProperties: values, propertyNames } as object) });
}
