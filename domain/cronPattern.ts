import { numberPattern } from './text';

/**
 * The cron expressions schedules take, as one pattern the OpenAPI document states and the API
 * checks: five fields (minute hour day-of-month month day-of-week) separated by single spaces; the
 * minute is one value (a schedule runs at most hourly: real-time evaluation keeps segments current,
 * and a run or pull every minute would only load the store); the other fields are each `*`, `*\/step`, a value, `value/step`, a range `a-b` with a ≤ b (and a step), or a list of
 * values in rising order (of two values, in the fields of more than 12); months and weekdays also by
 * name (`JAN`, `mon-fri`). Every expression it matches is one the scheduler's parser takes
 * (test/unit/cronPattern.test.ts): the parser refuses repeated values in a field, a range running
 * backwards, and a smallest day of month that never comes in the months named.
 */

interface Field {
  min: number;
  max: number;
  /** Names by value (`names[0]` is the name of `min`), for months and weekdays. */
  names?: readonly string[];
  /** The last value lists may hold: the day of week 7 is Sunday again, a repeat of 0 in a list. */
  listMax?: number;
}

const MINUTE: Field = { min: 0, max: 59 };
const HOUR: Field = { min: 0, max: 23 };
const DAY_OF_MONTH: Field = { min: 1, max: 31 };
const MONTH: Field = { min: 1, max: 12, names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'] };
const DAY_OF_WEEK: Field = { min: 0, max: 7, names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], listMax: 6 };

/** A name in either case, as the parser reads it (`Mon`, `MON`, `mon`). */
function anyCase(name: string): string {
  return [...name].map((letter) => `[${letter.toUpperCase()}${letter}]`).join('');
}

/** The value `value` of a field: its number, or its name. */
function valueAt(field: Field, value: number): string {
  const name = field.names?.[value - field.min];
  return name ? `(?:${value}|${anyCase(name)})` : String(value);
}

/** Values from `from` to the field's maximum, numbers or names (a range keeps to one or the other). */
function valuesFrom(field: Field, from: number, asName: boolean): string {
  if (!asName) return numberPattern(from, field.max);
  return `(?:${(field.names ?? []).slice(from - field.min).map(anyCase).join('|')})`;
}

/** Single items of a field whose first value is in `firsts`: a value, `value/step`, or a range `a-b` (with a step). */
function items(field: Field, firsts: number[]): string {
  const step = `(?:/${numberPattern(1, field.max)})?`;
  const alternatives = firsts.flatMap((first) => {
    const number = `${first}(?:-${valuesFrom(field, first, false)})?`;
    const name = field.names?.[first - field.min];
    return name ? [number, `${anyCase(name)}(?:-${valuesFrom(field, first, true)})?`] : [number];
  });
  return `(?:${alternatives.join('|')})${step}`;
}

/** Fields with more values than this take lists of two values: longer rising lists would make the pattern huge. */
const FULL_LISTS_UP_TO = 12;

/** Lists of values in rising order (each value once), the first in `firsts`: alternatives. */
function lists(field: Field, firsts: number[]): string[] {
  const last = field.listMax ?? field.max;
  return firsts
    .filter((first) => first < last)
    .map((first) => {
      if (last - field.min + 1 > FULL_LISTS_UP_TO) return `${first},${numberPattern(first + 1, last)}`;
      // Any later values may follow, in order: a subsequence of first+1 … last.
      const rest = Array.from({ length: last - first }, (_, index) => `(?:,${valueAt(field, first + 1 + index)})?`).join('');
      return `${valueAt(field, first)}${rest}`;
    });
}

/** A whole field, or only those of its forms whose smallest value is in `firsts` (all of them when not given). */
function fieldPattern(field: Field, { firsts }: { firsts?: number[] } = {}): string {
  const all = Array.from({ length: field.max - field.min + 1 }, (_, index) => field.min + index);
  const wildcard = firsts === undefined || firsts.includes(field.min) ? [`\\*(?:/${numberPattern(1, field.max)})?`] : [];
  return `(?:${[...wildcard, ...lists(field, firsts ?? all), items(field, firsts ?? all)].join('|')})`;
}

/** The minute field: one value, so a schedule runs at most hourly, as `every` (hours and days) does too. */
export const MINUTE_FIELD = numberPattern(MINUTE.min, MINUTE.max);

export function cronPattern(): RegExp {
  // The smallest day of month comes in every month: a day the months named may lack (30, 31) can
  // come later in a list or range, but not first.
  const dayOfMonth = fieldPattern(DAY_OF_MONTH, { firsts: Array.from({ length: 29 }, (_, index) => index + 1) });
  return new RegExp(`^${MINUTE_FIELD} ${fieldPattern(HOUR)} ${dayOfMonth} ${fieldPattern(MONTH)} ${fieldPattern(DAY_OF_WEEK)}$`);
}
