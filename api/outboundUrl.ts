import { urlRefusal } from '../connectors/outbound';
import { ProblemError } from './problem';

/**
 * Refuses an outbound URL (a destination's, a feed's) as the API answers it, naming `path`: a host
 * that does not resolve is not found (404), one outbound calls may not reach is forbidden (403),
 * and a URL that is not an http(s) one is malformed (400).
 */
export async function checkOutboundUrl(url: string, allowlist: Set<string>, path: string): Promise<void> {
  const refusal = await urlRefusal(url, allowlist);
  if (refusal === null) return;
  const errors = [{ path, message: refusal.message }];
  if (refusal.kind === 'unresolved') throw new ProblemError(404, 'host-not-found', 'The host does not resolve', errors);
  if (refusal.kind === 'forbidden') throw new ProblemError(403, 'address-not-allowed', 'Outbound calls may not reach this address', errors);
  throw new ProblemError(400, 'validation', 'Invalid URL', errors);
}
