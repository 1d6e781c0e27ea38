import { sha256Hex } from '../../domain/identity';

/** A synthetic audience: every event of user `u` carries cookie `c-u`; some also carry the user's email. */
export const EVENT_TYPES = ['page_view', 'add_to_cart', 'purchase'] as const;

export interface GeneratedEvent {
  id: string;
  type: string;
  timestamp: string;
  identities: Record<string, string>;
  traits?: Record<string, unknown>;
}

export interface ExpectedProfile {
  cookie: string;
  emailSha256?: string;
  counters: Record<string, { count: number; firstSeen: string; lastSeen: string }>;
}

const BASE_TIME = Date.parse('2026-01-01T00:00:00.000Z');

export function userEvent(user: number, n: number, prefix = 'ev'): GeneratedEvent {
  const type = EVENT_TYPES[(user + n) % EVENT_TYPES.length];
  const identities: Record<string, string> = { cookie_id: `c-${user}` };
  if (user % 2 === 0 && n % 3 === 0) identities.email = `  User${user}@Example.COM `;
  return {
    id: `${prefix}-${user}-${n}`,
    type,
    timestamp: new Date(BASE_TIME + user * 1000 + ((n * 7919) % 5000) * 60_000).toISOString(),
    identities,
    traits: { 'plan.tier': ['free', 'pro'][user % 2], visits: n },
  };
}

/** What the profiles must hold after every unique event is applied exactly once. */
export function expectedProfiles(events: GeneratedEvent[]): Map<string, ExpectedProfile> {
  const profiles = new Map<string, ExpectedProfile>();
  const seen = new Set<string>();
  for (const event of events) {
    if (seen.has(event.id)) continue;
    seen.add(event.id);
    const cookie = event.identities.cookie_id;
    const profile = profiles.get(cookie) ?? { cookie, counters: {} };
    if (event.identities.email) profile.emailSha256 = sha256Hex(event.identities.email.trim().toLowerCase());
    const counter = profile.counters[event.type];
    if (!counter) profile.counters[event.type] = { count: 1, firstSeen: event.timestamp, lastSeen: event.timestamp };
    else {
      counter.count++;
      if (event.timestamp < counter.firstSeen) counter.firstSeen = event.timestamp;
      if (event.timestamp > counter.lastSeen) counter.lastSeen = event.timestamp;
    }
    profiles.set(cookie, profile);
  }
  return profiles;
}
