import { hash } from 'node:crypto';

/**
 * Email addresses and phone numbers that arrive outside the fields made for them — a page URL's
 * query string, a `properties.email`, a trait column, a nested `company.phone`, an event's name or
 * id — are never stored: they are replaced by a marker, as Google Analytics' data redaction does.
 * Only the identity fields (and the top-level `email`/`phone` traits, which become identities)
 * carry them, hashed.
 */

/** What stands in for a removed email address or phone number. */
export const REDACTED = '(redacted)';

/** A character of an address's local part (`%` too: a local part inside a URL is percent-encoded). */
const LOCAL_CHAR = /[\p{L}\p{N}._%+'-]/u;
/** Longest local part (RFC 5321). */
const LOCAL_MAX = 64;
/** An `@`, or one percent-encoded (`%40`, as in a URL). */
const AT_SIGN = /@|%40/gi;
/** What follows a local part: the `@`, then a domain, every part bounded, its labels each ending at a dot (sticky, read at an `@`). */
const AT_DOMAIN = /(?:@|%40)(?:[\p{L}\p{N}-]{1,63}\.){1,8}\p{L}{2,24}(?![\p{L}\p{N}])/iuy;
/** What reads as an address but names a file: an image at a pixel density (`logo@2x.png`), a versioned script. */
const FILE_NAME = /\.(?:png|jpe?g|gif|svg|webp|avif|ico|css|js|mjs|json|html?|pdf|woff2?|ttf|mp4|webm)$/i;
/** Words of a field name that hold phone numbers (`phone`, `mobilePhone`, `phone_number`, `workTel`, `fax`, `msisdn`). */
const PHONE_WORDS = new Set(['phone', 'phones', 'telephone', 'tel', 'mobile', 'cell', 'cellphone', 'fax', 'msisdn', 'whatsapp']);
/** A value that is a phone number as written: digits with the usual separators, 7 to 15 digits. */
const PHONE_VALUE = /^\+?[\d\s().\/-]{7,24}$/;
/** Whether a text may hold a parameter named by a phone word: most URLs hold none, and are spared reading each parameter. */
const PHONE_WORD_IN_TEXT = /phone|tel|mobile|cell|fax|msisdn|whatsapp/i;
/** A parameter name that runs a phone word into others (`phonenumber`, `x_phoneno`): field names split on case and separators miss it. */
const PHONE_PARAM_NAME = /^(?:[a-z]{1,32}_)?(?:phone|mobile|msisdn)[a-z_]{0,32}$/i;
/** A URL query parameter and its value (the name read as field names are: `?phone=`, `&mobileNumber=`, `&telephone=`). */
const URL_PARAM = /([?&;#]([A-Za-z][A-Za-z0-9_.-]{0,63})=)([^&;#]*)/g;

type FlatValue = unknown;

/** Field names already read: events repeat the same few, and every event passes here. */
const phoneFields = new Map<string, boolean>();
const PHONE_FIELDS_KEPT = 10_000;

function isPhoneField(name: string): boolean {
  let known = phoneFields.get(name);
  if (known === undefined) {
    known = name
      .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
      .toLowerCase()
      .split(/[^a-z]+/)
      .some((word) => PHONE_WORDS.has(word));
    if (phoneFields.size >= PHONE_FIELDS_KEPT) phoneFields.clear();
    phoneFields.set(name, known);
  }
  return known;
}

function isPhoneNumber(text: string): boolean {
  if (!PHONE_VALUE.test(text)) return false;
  const digits = text.replace(/\D/g, '').length;
  return digits >= 7 && digits <= 15;
}

/**
 * The text with each email address in it (a file name aside) replaced by `replacement`. Found from
 * each `@`: its local part is the run of address characters before it, at most 64 — so an address
 * at the end of a longer run (a form-encoded sentence, a percent-encoded URL nested in a query
 * string) is found too, taking up to 64 characters of what precedes it along. Linear in the text.
 */
function replaceAddresses(text: string, replacement: string): string {
  let out = '';
  let copied = 0;
  AT_SIGN.lastIndex = 0;
  for (let at = AT_SIGN.exec(text); at; at = AT_SIGN.exec(text)) {
    let start = at.index;
    while (start > copied && at.index - start < LOCAL_MAX && LOCAL_CHAR.test(text[start - 1])) start--;
    AT_DOMAIN.lastIndex = at.index;
    const domain = start < at.index ? AT_DOMAIN.exec(text) : null;
    if (!domain) continue;
    const end = at.index + domain[0].length;
    const found = text.slice(start, end);
    out += text.slice(copied, start) + (FILE_NAME.test(found) ? found : replacement);
    copied = end;
    AT_SIGN.lastIndex = end;
  }
  return copied === 0 ? text : out + text.slice(copied);
}

/** A text (a value, a field name, an event's type) with every email address and phone URL parameter in it replaced by `REDACTED`. */
export function redactContactText(text: string): string {
  let result = text;
  if (result.includes('@') || result.includes('%40')) result = replaceAddresses(result, REDACTED);
  if (result.includes('=') && PHONE_WORD_IN_TEXT.test(result)) result = result.replace(URL_PARAM, (match, prefix: string, name: string, value: string) => ((isPhoneField(name) || PHONE_PARAM_NAME.test(name)) && isPhoneNumber(decodeURIComponentSafe(value)) ? `${prefix}${REDACTED}` : match));
  return result;
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return text;
  }
}

function redactValue(value: FlatValue, phoneField: boolean): FlatValue {
  if (typeof value === 'string') return phoneField && isPhoneNumber(value) ? REDACTED : redactContactText(value);
  if (typeof value === 'number') return phoneField && isPhoneNumber(String(value)) ? REDACTED : value;
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
    const name = redactContactText(key);
    const value = redactValue(fields[key], isPhoneField(key));
    if (redacted === undefined && name === key && value === fields[key]) return;
    if (redacted === undefined) {
      redacted = {};
      for (const earlier of keys.slice(0, index)) define(redacted, earlier, fields[earlier]);
    }
    define(redacted, name, value);
  });
  return (redacted ?? fields) as T;
}

/**
 * An event id with every email address in it replaced by a digest of the whole id: ids that differed
 * stay different, a client's retry of the same id is still a repeat, and the digest names no address
 * on its own (a digest of the address would be the start of its hashed-email identity, which an
 * erasure would leave behind in other people's events).
 */
export function redactContactId(id: string): string {
  if (!id.includes('@') && !id.includes('%40')) return id;
  return replaceAddresses(id, `(redacted:${hash('sha256', id, 'hex').slice(0, 16)})`);
}

/** A plain own key, `__proto__` too (an assignment would take it for the prototype). */
function define(record: Record<string, FlatValue>, key: string, value: FlatValue): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}
