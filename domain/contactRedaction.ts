/**
 * Email addresses and phone numbers that arrive outside the fields made for them — a page URL's
 * query string, a `properties.email`, a trait column or a nested `company.phone` — are never stored:
 * they are replaced by a marker, as Google Analytics' data redaction does. Only the identity fields
 * (and the top-level `email`/`phone` traits, which become identities) carry them, hashed.
 */

/** What stands in for a removed email address or phone number. */
export const REDACTED = '(redacted)';

/**
 * An email address anywhere in a text, its `@` also percent-encoded (`%40`, as in a URL). The domain's
 * labels each end at a dot, so the match never backtracks between them.
 */
const EMAIL_IN_TEXT = /[\p{L}\p{N}._%+'-]+(?:@|%40)(?:[\p{L}\p{N}-]+\.)+\p{L}{2,}/giu;
/** Field names that hold phone numbers: `phone`, `mobilePhone`, `phone_number`, `mobile`, `tel`, `fax`, `msisdn`. */
const PHONE_FIELD = /phone|mobile|(?:^|[^a-z])(?:tel|fax|msisdn)(?:[^a-z]|$)/i;
/** As many digits as the shortest national numbers hold: fewer read as a flag, a count or a version. */
const PHONE_DIGITS = /(?:\d\D{0,3}){7}/;

type FlatValue = unknown;

function withoutEmails(text: string): string {
  if (!text.includes('@') && !text.includes('%40')) return text;
  return text.replace(EMAIL_IN_TEXT, REDACTED);
}

function redactValue(value: FlatValue, phoneField: boolean): FlatValue {
  if (typeof value === 'string') return phoneField && PHONE_DIGITS.test(value) ? REDACTED : withoutEmails(value);
  if (typeof value === 'number') return phoneField && PHONE_DIGITS.test(String(value)) ? REDACTED : value;
  if (Array.isArray(value)) {
    const redacted = value.map((item) => redactValue(item, phoneField));
    return redacted.some((item, i) => item !== value[i]) ? redacted : value;
  }
  return value;
}

/**
 * Traits or properties (flat: scalars and lists of scalars) with every email address and every
 * phone number under a phone-named field replaced by `REDACTED` — names too, since a record keyed
 * by address holds it there. The same record when nothing was found: most events pass unchanged.
 */
export function redactContactData<T extends Record<string, FlatValue>>(fields: T): T {
  let redacted: Record<string, FlatValue> | undefined;
  const keys = Object.keys(fields);
  keys.forEach((key, index) => {
    const name = withoutEmails(key);
    const value = redactValue(fields[key], PHONE_FIELD.test(key));
    if (redacted === undefined && name === key && value === fields[key]) return;
    if (redacted === undefined) {
      redacted = {};
      for (const earlier of keys.slice(0, index)) define(redacted, earlier, fields[earlier]);
    }
    define(redacted, name, value);
  });
  return (redacted ?? fields) as T;
}

/** A plain own key, `__proto__` too (an assignment would take it for the prototype). */
function define(record: Record<string, FlatValue>, key: string, value: FlatValue): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}
