/**
 * A deep copy of stored data — plain objects (also those without a prototype), arrays, dates and
 * primitives — for documents copied on every fold: about twice as fast as `structuredClone` on a
 * profile of a few hundred fields. Anything else (typed arrays, class instances) is copied by
 * `structuredClone`, so the copy is the same as its.
 */
export function cloneData<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(cloneData) as T;
  if (value instanceof Date) return new Date(value.getTime()) as T;
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return structuredClone(value);
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const inner = cloneData((value as Record<string, unknown>)[key]);
    // A field named `__proto__` stays a field, as `structuredClone` keeps it.
    if (key === '__proto__') Object.defineProperty(copy, key, { value: inner, writable: true, enumerable: true, configurable: true });
    else copy[key] = inner;
  }
  return copy as T;
}
