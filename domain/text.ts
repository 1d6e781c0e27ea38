import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

/**
 * Text the store can hold: FerretDB keeps documents in PostgreSQL as JSON text, which has no NUL
 * character, so a string holding one can be neither stored nor looked up.
 */
const STORABLE_CHAR = '[^\\u0000]';
export const STORABLE_TEXT = new RegExp(`^${STORABLE_CHAR}*$`);
export const NUL_MESSAGE = 'must not hold the NUL character';

/**
 * What JavaScript's `trim()` removes (ECMAScript WhiteSpace and LineTerminator), spelled out: the
 * document's patterns are read by other regex engines too, whose `\s` means other characters.
 */
export const TRIMMED_CHARS = '\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff';

/** Code-unit order, as `Array.prototype.sort` gives and `<` compares: not `localeCompare`, so no result depends on the server's locale. */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The longest text a trait or property value holds. */
export const FLAT_TEXT_MAX = 1024;
/** The most values a list trait or property holds. */
export const FLAT_LIST_MAX = 100;

/** Any text the store can hold, up to `max` characters. */
export function storableText(max: number) {
  return z.string().max(max, { abort: true }).regex(STORABLE_TEXT, NUL_MESSAGE);
}

/**
 * A name: up to `max` characters as sent (so the document states the limit exactly), not blank,
 * storable; kept trimmed.
 */
export function nameText(max: number) {
  return (
    z
      .string()
      // Too long ends the checks: the pattern is not run over a body-sized string.
      .max(max, { abort: true })
      // Blanks, the first other character, then the rest: runs of disjoint classes, linear in the
      // length (and no lookahead, which some engines reading the document lack). Two runs of the same
      // class around that character backtracked quadratically on text ending in a NUL (minutes at 500 KB).
      .regex(new RegExp(`^[${TRIMMED_CHARS}]*[^\\u0000${TRIMMED_CHARS}]${STORABLE_CHAR}*$`), `must not be blank, and ${NUL_MESSAGE}`)
      .trim()
  );
}

/** `[a-b]`, or the digit itself when they are the same. */
function digitRange(a: number, b: number): string {
  return a === b ? String(a) : `[${a}-${b}]`;
}

/** Alternatives matching the numbers from `low` to `high`, both written with the same count of digits. */
function sameWidth(low: string, high: string): string[] {
  if (low.length === 1) return [digitRange(Number(low), Number(high))];
  const [lowFirst, highFirst] = [Number(low[0]), Number(high[0])];
  const [lowRest, highRest] = [low.slice(1), high.slice(1)];
  if (lowFirst === highFirst) return sameWidth(lowRest, highRest).map((rest) => `${lowFirst}${rest}`);
  const width = lowRest.length;
  const [zeros, nines] = ['0'.repeat(width), '9'.repeat(width)];
  const parts: string[] = [];
  // Whole runs of first digits take any rest; the first and last digits take what the bounds leave.
  const from = lowRest === zeros ? lowFirst : lowFirst + 1;
  const to = highRest === nines ? highFirst : highFirst - 1;
  if (lowRest !== zeros) parts.push(...sameWidth(lowRest, nines).map((rest) => `${lowFirst}${rest}`));
  if (from <= to) parts.push(`${digitRange(from, to)}\\d{${width}}`);
  if (highRest !== nines) parts.push(...sameWidth(zeros, highRest).map((rest) => `${highFirst}${rest}`));
  return parts;
}

/**
 * A regex (no anchors) for the whole numbers from `min` to `max` in decimal, written with at most
 * `width` digits (leading zeros allowed), or without leading zeros when `width` is not given:
 * a numeric bound the document can state as a pattern.
 */
export function numberPattern(min: number, max: number, width?: number): string {
  const alternatives: string[] = [];
  for (let digits = String(min).length; digits <= String(max).length; digits++) {
    const low = Math.max(min, digits === 1 ? 0 : 10 ** (digits - 1));
    const high = Math.min(max, 10 ** digits - 1);
    if (low > high) continue;
    const padding = width === undefined || width === digits ? '' : `0{0,${width - digits}}`;
    alternatives.push(...sameWidth(String(low), String(high)).map((number) => `${padding}${number}`));
  }
  return `(?:${alternatives.join('|')})`;
}
