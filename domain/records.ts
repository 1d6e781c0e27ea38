/** Whether unvalidated JSON is an object with fields (not null, not a list): what reads it by name may. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
