/**
 * Client-chosen names (trait names, event types, property names) become document keys. MongoDB and
 * FerretDB refuse `.`, a leading `$` and NUL in keys, so those characters (and `%`, the escape
 * itself) are percent-encoded on the way in and decoded on the way out.
 */
const RESERVED = String.raw`[%.$\u0000]`;
/** Without the global flag: `test` then keeps no state between calls. */
const HAS_RESERVED = new RegExp(RESERVED);
const EVERY_RESERVED = new RegExp(RESERVED, 'g');

export function encodeFieldName(name: string): string {
  // Most names need nothing: a test costs far less than a replace that calls back for each match.
  if (!HAS_RESERVED.test(name)) return name;
  return name.replace(EVERY_RESERVED, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

export function decodeFieldName(key: string): string {
  return key.replace(/%(25|2E|24|00)/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

/**
 * A copy of the record under renamed keys, each a plain own key — `__proto__` too, which an
 * assignment would take for the prototype. A loop of assignments: a third of the time that
 * `Object.fromEntries` over mapped entries took (every event passes here twice).
 */
function renameKeys<T>(record: Record<string, T>, rename: (key: string) => string): Record<string, T> {
  const renamed: Record<string, T> = {};
  for (const key of Object.keys(record)) setOwn(renamed, rename(key), record[key]);
  return renamed;
}

/**
 * Assigns a plain own property even for the name `__proto__`, the one accessor plain objects inherit
 * (any other name assigns an own property; defining each was several times slower).
 */
export function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(record, key, { value, writable: true, enumerable: true, configurable: true });
  else record[key] = value;
}

export function encodeKeys<T>(record: Record<string, T>): Record<string, T> {
  return renameKeys(record, encodeFieldName);
}

export function decodeKeys<T>(record: Record<string, T>): Record<string, T> {
  return renameKeys(record, decodeFieldName);
}
