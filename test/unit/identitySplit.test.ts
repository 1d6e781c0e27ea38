import { decodeTcf } from '../../domain/consent';
import { splitDocument, type HeldEvent } from '../../domain/identitySplit';
import { foldEvent, newProfile } from '../../domain/profile';
import { DEFAULT_CONSENT_POLICY } from '../../domain/schemas';
import { buildTcString } from './tcfFixture';

const at = (day: number) => new Date(Date.UTC(2026, 0, day));
const cookie = (value: string) => ({ type: 'cookie_id' as const, value });
const tcf = (purposes: number[]) => ({ tcf: decodeTcf(buildTcString({ purposeConsents: purposes })) });

describe('splitDocument', () => {
  it('folds each part as the writers do, in time order: an event held back by a withdrawal stays held in its part', () => {
    const events: HeldEvent[] = [
      { id: 'e1', type: 'login', timestamp: at(1), receivedAt: at(1), identities: [cookie('a'), cookie('b')], consent: tcf([1, 3]) },
      // The withdrawal: not profiled at the door, its consent routed alone.
      { id: 'e2', type: 'page_view', timestamp: at(2), receivedAt: at(2), identities: [cookie('a')], consent: tcf([1]), consentOnly: true as const },
      { id: 'e3', type: 'order', timestamp: at(3), receivedAt: at(3), identities: [cookie('a')] },
    ].map((event, seq) => ({ ...event, profileId: 'p1', sourceId: 'src', party: 'first' as const, seq }));
    const doc = newProfile('p1', at(1), at(1));
    const outcomes = events.map((event) => foldEvent(doc, event, { sourceId: 'src', party: 'first', seq: event.seq }, DEFAULT_CONSENT_POLICY, false));
    expect(outcomes).toEqual(['applied', 'applied', 'held']);

    const rule = { policyOf: () => DEFAULT_CONSENT_POLICY, optedOut: false };
    // Newest first, as the store reads a document's events (ProfileEventLog.heldBy).
    const { parts } = splitDocument(doc, [...events].reverse(), { sideOf: { 'cookie_id:a': 0, 'cookie_id:b': 1 }, sides: 2 }, 'u1', 4, at(9), rule);
    const sideA = parts.find((part) => part.identities.some((identity) => identity.value === 'a'))!;
    expect(Object.keys(sideA.counters)).toEqual(['login']);
    expect(sideA.consent?.tcf?.purposeConsents).toEqual([1]);
    // Unlinked from the login's email, the cookie's part starts with the withdrawal alone: it holds
    // no one yet, but its consent refuses, so the order is held there too.
    const email = { type: 'email_sha256' as const, value: 'b'.repeat(64) };
    const byEmail = events.map((event) => (event.id === 'e1' ? { ...event, identities: [email, cookie('a')] } : event));
    const emailDoc = newProfile('p1', at(1), at(1));
    for (const event of byEmail) foldEvent(emailDoc, event, { sourceId: 'src', party: 'first', seq: event.seq }, DEFAULT_CONSENT_POLICY, false);
    const apart = splitDocument(emailDoc, [...byEmail].reverse(), { sideOf: { [`email_sha256:${email.value}`]: 0, 'cookie_id:a': 1 }, sides: 2 }, 'u3', 4, at(9), rule);
    const cookiePart = apart.parts.find((part) => part.identities.some((identity) => identity.value === 'a'))!;
    expect(cookiePart.counters).toEqual({});
    expect(cookiePart.consent?.tcf?.purposeConsents).toEqual([1]);
    // A person who opted out: the parts get consent signals alone.
    const optedOut = splitDocument(doc, events, { sideOf: { 'cookie_id:a': 0, 'cookie_id:b': 1 }, sides: 2 }, 'u2', 4, at(9), { ...rule, optedOut: true });
    for (const part of optedOut.parts) expect(part.counters).toEqual({});
  });
});
