import { decodeTcf } from '../../domain/consent';
import { planSplit, redirectLateEvent, severedIn, splitDocument, type HeldEvent, type RetiredMarker } from '../../domain/identitySplit';
import { identityKey } from '../../domain/identity';
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
    // Newest first, as the store reads a document's events (ProfileEventLog.eventsOf).
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

describe('planSplit', () => {
  it("sends an identity no retained event shows to the side holding most of its document's events, each by its highest-priority identity", () => {
    // Every event carries the tablet's cookie first and Ben's email; the old cookie's events have expired.
    const email = { type: 'email_sha256' as const, value: 'b'.repeat(64) };
    const events: HeldEvent[] = [1, 2, 3].map((n) => ({ id: `e${n}`, type: 'login', timestamp: at(n), receivedAt: at(n), identities: [cookie('tablet'), email], profileId: 'p1', sourceId: 'src', party: 'first', seq: n }));
    const [tabletKey, emailKey, oldKey] = [identityKey(cookie('tablet')), identityKey(email), identityKey(cookie('old'))];
    const plan = planSplit(events, new Map([['p1', [tabletKey, emailKey, oldKey]]]), [{ keys: [tabletKey, emailKey].sort() as [string, string], eventIds: ['e1', 'e2', 'e3'] }]);
    expect(plan.sides).toBe(2);
    // A split puts each event on the email's side: the old cookie goes there too.
    expect(plan.sideOf[oldKey]).toBe(plan.sideOf[emailKey]);
    expect(plan.sideOf[tabletKey]).not.toBe(plan.sideOf[emailKey]);
  });
});

describe('an event routed to a document before an unlink split it, folded after', () => {
  const crm = (value: string) => ({ type: 'crm_id' as const, value });
  const rule = { policyOf: () => DEFAULT_CONSENT_POLICY, optedOut: false };
  const held: HeldEvent = { id: 'e1', type: 'login', timestamp: at(1), receivedAt: at(1), identities: [crm('kim'), cookie('a')], profileId: 'p1', sourceId: 'src', party: 'first', seq: 0 };
  const doc = newProfile('p1', at(1), at(1));
  foldEvent(doc, held, { sourceId: 'src', party: 'first', seq: 0 }, DEFAULT_CONSENT_POLICY, false);
  // The unlink of cookie b from kim counted e2 (routed, not folded) and severed it; cookie b is on a side of its own.
  const plan = { sideOf: { 'crm_id:kim': 0, 'cookie_id:a': 0, 'cookie_id:b': 1 }, sides: 2 };
  const late = { id: 'e2', identities: [crm('kim'), cookie('b')] };
  const pending: HeldEvent = { ...late, type: 'page_view', timestamp: at(2), receivedAt: at(2), profileId: 'p1', sourceId: 'src', party: 'first', seq: 1 };
  const severances = [{ keys: ['cookie_id:b', 'crm_id:kim'] as [string, string], eventIds: ['e2'] }];

  it('is known to the marker by its planned side, which has a part holding its identities there', () => {
    const without = splitDocument(doc, [held], plan, 'u1', 4, at(9), rule).retired.retired as RetiredMarker;
    expect(Object.keys(without.parts)).toEqual(['0']);
    const split = splitDocument(doc, [held], plan, 'u1', 4, at(9), rule, [pending]);
    const marker = split.retired.retired as RetiredMarker;
    expect(marker.keys['cookie_id:b']).toBe(1);
    expect(Object.keys(marker.parts).sort()).toEqual(['0', '1']);
    const identitiesOf = (side: string) => split.parts.find((part) => part.profileId === marker.parts[side])!.identities.map(({ type, value, firstSeen }) => ({ type, value, firstSeen }));
    expect(identitiesOf('1')).toEqual([{ ...cookie('b'), firstSeen: at(2) }]);
    expect(identitiesOf('0')).toEqual([{ ...crm('kim'), firstSeen: at(1) }, { ...cookie('a'), firstSeen: at(1) }]);
    expect(redirectLateEvent(marker, { identities: [cookie('b')] }).target).toBe(marker.parts['1']);
  });

  it('goes to its side without rejoining the sides when the plan severed its co-occurrence, and rejoins them as new evidence when not', () => {
    const marker = splitDocument(doc, [held], plan, 'u1', 4, at(9), rule, [pending]).retired.retired as RetiredMarker;
    const severed = redirectLateEvent(marker, late, severedIn('e2', severances));
    expect(severed).toEqual({ target: marker.parts['0'], identities: [crm('kim')], joins: [], learned: {} });
    // Another event's severance does not count for this one.
    expect(severedIn('e3', severances).size).toBe(0);
    const seenAgain = redirectLateEvent(marker, late, severedIn('e3', severances));
    expect(seenAgain).toEqual({ target: marker.parts['0'], identities: late.identities, joins: [{ part: marker.parts['1'], via: 'cookie_id:b' }], learned: {} });
  });

  it('keeps the identities of its side together, and leaves an identity the marker does not know to be learned', () => {
    const marker = splitDocument(doc, [held], plan, 'u1', 4, at(9), rule, [pending]).retired.retired as RetiredMarker;
    // Severed in it: kim from a (one side: the plan joined them elsewhere) and from b (another side), and a from b.
    const severed = new Set(['cookie_id:a|crm_id:kim', 'cookie_id:b|crm_id:kim', 'cookie_id:a|cookie_id:b']);
    expect(redirectLateEvent(marker, { identities: [crm('kim'), cookie('a'), cookie('b')] }, severed)).toEqual({ target: marker.parts['0'], identities: [crm('kim'), cookie('a')], joins: [], learned: {} });
    // A cookie it does not know goes with the event's side: a later marker on the event's way, which knows it, decides.
    const unknown = redirectLateEvent(marker, { identities: [crm('kim'), cookie('n')] }, new Set(['cookie_id:n|crm_id:kim']));
    expect(unknown).toEqual({ target: marker.parts['0'], identities: [crm('kim'), cookie('n')], joins: [], learned: { 'cookie_id:n': 0 } });
  });
});
