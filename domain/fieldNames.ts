/**
 * Client-chosen names (trait names, event types, property names) become document keys. MongoDB and
 * FerretDB refuse `.`, a leading `$` and NUL in keys, so those characters (and `%`, the escape
 * itself) are percent-encoded on the way in and decoded on the way out.
 */
const ENCODED = /[%.$\u0000]/;

export function encodeFieldName(name: string): string {
  // Most names need nothing: a test costs far less than a replace that calls back for each match.
  if (!ENCODED.test(name)) return name;
  return name.replace(/[%.$\u0000]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

export function decodeFieldName(key: string): string {
  return key.replace(/%(25|2E|24|00)/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

// Object.fromEntries makes plain own keys even of names such as `__proto__`.
export function encodeKeys<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [encodeFieldName(key), value]));
}

export function decodeKeys<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [decodeFieldName(key), value]));
}
