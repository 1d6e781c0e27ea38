/**
 * What the platform never shows of a partner's credentials: secret config fields, the query values of
 * its URLs (a signed URL's signature, an API key), and either of them quoted back in an error text.
 */

/** What the API shows in place of a secret it keeps. */
export const SECRET_SET = '(set)';

/** A URL's query and what follows it, when it has one. */
const QUERY = /^([^?#]*)\?([^#]*)(#.*)?$/;

/**
 * A URL as the API shows it: each value of its query reads `(set)`, since a signed URL's signature
 * or an API key there is a credential (names, path and fragment shown as they are).
 */
export function urlShown(url: string): string {
  const parts = QUERY.exec(url);
  if (!parts) return url;
  const [, base, query, fragment = ''] = parts;
  const pairs = query.split('&').map((pair) => {
    const equals = pair.indexOf('=');
    if (equals < 0) return pair === '' ? pair : SECRET_SET;
    return equals === pair.length - 1 ? pair : `${pair.slice(0, equals + 1)}${SECRET_SET}`;
  });
  return `${base}?${pairs.join('&')}${fragment}`;
}

/** Whether a URL holds a query value hidden as the API shows it, as written or percent-encoded (sent back, it would be taken as the value). */
export function holdsHiddenQuery(url: string): boolean {
  const query = QUERY.exec(url)?.[2] ?? '';
  return query.split('&').some((pair) => {
    const value = decoded(pair.includes('=') ? pair.slice(pair.indexOf('=') + 1) : pair);
    return value === SECRET_SET;
  });
}

/** A query value decoded, or as written when it does not decode. */
function decoded(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

/** A credential shorter than this is none: query values this long or longer are kept out of error texts. */
const QUERY_SECRET_MIN = 8;

/** The values of a URL's query that may be credentials, as written and decoded (see withoutSecrets). */
export function querySecrets(url: string): string[] {
  const query = QUERY.exec(url)?.[2] ?? '';
  const values = query.split('&').map((pair) => (pair.includes('=') ? pair.slice(pair.indexOf('=') + 1) : pair));
  return [...new Set([...values, ...values.map(decoded)])].filter((value) => value.length >= QUERY_SECRET_MIN);
}

/** Of a secret cut short at the end of a text, this much or more is masked (less tells next to nothing). */
const SECRET_PREFIX_MASKED = 4;

/**
 * A text without the given secrets (a partner or a library may quote a header back, as it is or
 * escaped in JSON or a URL), nor the start of one where the text was cut short (a partner's answer is kept to its first 300 characters).
 */
export function withoutSecrets(text: string, secrets: readonly string[]): string {
  let result = text;
  // As quoted back in JSON or in a URL, too: a secret may hold `"`, `\` or `%`.
  const forms = secrets.flatMap((secret) => [secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret)]);
  for (const secret of new Set(forms)) {
    if (secret.length === 0) continue;
    result = result.split(secret).join('(secret)');
    for (let length = Math.min(secret.length - 1, result.length); length >= SECRET_PREFIX_MASKED; length--) {
      if (result.endsWith(secret.slice(0, length))) {
        result = `${result.slice(0, -length)}(secret)`;
        break;
      }
    }
  }
  return result;
}
