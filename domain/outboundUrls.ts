import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

/**
 * A DNS label starting with a character of `first` (a class without `x`), or with `x` but never
 * `xn--` in any case: a URL parser reads that as punycode, and may refuse it.
 */
function dnsLabel(first: string): string {
  return `(?:${first}[A-Za-z0-9-]{0,62}|[Xx](?:[A-MO-Za-mo-z0-9-][A-Za-z0-9-]{0,61})?|[Xx][Nn](?:[A-Za-z0-9][A-Za-z0-9-]{0,60})?|[Xx][Nn]-(?:[A-Za-z0-9][A-Za-z0-9-]{0,59})?)`;
}

// The last label starts with a letter: one that is a number makes a URL parser read the host as an
// IPv4 address, which must then be one.
const DOMAIN = `(?:${dnsLabel('[A-WYZa-wyz0-9-]')}\\.)*${dnsLabel('[A-WYZa-wyz]')}`;
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const PORT = '(?::(?:6553[0-5]|655[0-2]\\d|65[0-4]\\d\\d|6[0-4]\\d{3}|[1-5]\\d{4}|[1-9]\\d{0,3}|0))?';

export function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * Where the platform may send data or browsers, as a pattern (no anchors) the OpenAPI document
 * states: https to a host name or IPv4 address that a URL parser takes as it is, or plain http to a
 * host in `allowlist` (DMP_DESTINATION_ALLOWLIST), with a port or not, and no credentials.
 */
export function originPattern(allowlist: ReadonlySet<string>): string {
  const allowed = [...allowlist].map((host) => (host.includes(':') ? `\\[${escapeRegex(host)}\\]` : escapeRegex(host)));
  const origins = [`https://(?:${DOMAIN}|${OCTET}(?:\\.${OCTET}){3})`, ...(allowed.length > 0 ? [`http://(?:${allowed.join('|')})`] : [])];
  return `(?:${origins.join('|')})${PORT}`;
}

/**
 * A URL a destination delivers to: an origin `originPattern` takes, then a path, query or fragment
 * without spaces or control characters (a URL parser would drop or encode them).
 */
export function deliveryUrlSchema(allowlist: ReadonlySet<string>) {
  return z
    .string()
    .max(2048)
    .regex(new RegExp(`^${originPattern(allowlist)}(?:[/?#][^\\u0000-\\u0020\\u007f]*)?$`), 'an https URL (http only for hosts in DMP_DESTINATION_ALLOWLIST) to a host name or IPv4 address, without credentials or spaces')
    .openapi({ description: 'https (plain http only for hosts in DMP_DESTINATION_ALLOWLIST); the host must resolve, and to a public address unless allowlisted' });
}
