import { sha256Hex } from '../../domain/identity';
import type { SourceClient } from './sourceClient';

/** A synthetic audience: every event of user `u` carries cookie `c-u`; some also carry the user's email. */
export const EVENT_TYPES = ['page_view', 'add_to_cart', 'purchase'] as const;

export interface GeneratedEvent {
  id: string;
  type: string;
  timestamp: string;
  identities: Record<string, string>;
  traits?: Record<string, unknown>;
  properties?: Record<string, unknown>;
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

/**
 * The events of an erasure race, round by round: 200 of 40 everyday users, and 5 page views of the
 * subject — from round `emailFrom` on also naming an email the erasure cannot know of.
 */
export function erasureRounds(prefix: string, subject: string, options: { emailFrom?: number } = {}) {
  const others = (round: number) => Array.from({ length: 200 }, (_, n) => userEvent(n % 40, round * 10 + Math.floor(n / 40), `ev-${prefix}`));
  const subjectEvents = (round: number): GeneratedEvent[] =>
    Array.from({ length: 5 }, (_, n) => ({
      id: `subject-${round}-${n}`,
      type: 'page_view',
      timestamp: new Date(Date.UTC(2026, 10, 1, round, n)).toISOString(),
      identities: { cookie_id: subject, ...(options.emailFrom !== undefined && round >= options.emailFrom && { email: `${subject}@example.com` }) },
    }));
  /** Sends round 0 and waits until it is folded; the subject's one document. */
  async function firstRound(source: SourceClient): Promise<string[]> {
    const sent = await source.send([...others(0), ...subjectEvents(0)]);
    if (sent.body.accepted !== 205) throw new Error(`round 0: ${JSON.stringify(sent.body)}`);
    await source.folded(205);
    const documents: string[] = (await source.lookup('cookie_id', subject)).body.profileIds;
    if (documents.length !== 1) throw new Error(`the subject has ${documents.length} documents, not one`);
    return documents;
  }
  return { others, subjectEvents, firstRound };
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
