import type { StoredEvent } from './event';
import { byTypePriority, identityKey, type Identity } from './identity';
import type { IdentityCaps } from './identityCaps';

/** An identity to be claimed for a profile document: the first claim of a key wins, for ever. */
export interface IdentityClaim {
  key: string;
  type: Identity['type'];
  profileId: string;
}

/**
 * A link's key: the two documents and the identity that joined them. One per identity, not one per
 * pair: if an unlink later splits one of the documents, each identity leads to its own side.
 */
export function linkId(profiles: readonly [string, string], via: string): string {
  return `${profiles[0]}|${profiles[1]}|${via}`;
}

/** Two profile documents an event showed to be one person, and what showed it. */
export interface LinkSpec {
  profiles: [string, string];
  via: string;
  eventId: string;
}

/** A join the caps refused: `key` would have joined `profileId`, which already holds its cap of `key`'s type. */
export interface Refusal {
  profileId: string;
  key: string;
  type: Identity['type'];
  /** Index of the event (in the batch) that showed them together. */
  event: number;
  eventId: string;
}

export interface Resolution {
  /** Per event (same order): the profile document it is folded into; null when it has no usable identity. */
  targets: Array<string | null>;
  claims: IdentityClaim[];
  links: LinkSpec[];
  refusals: Refusal[];
  /**
   * Documents that refused joins of some types (sorted) because this batch's own claims had brought
   * them to the cap: no marker says so yet, so the drain writes one before its claims.
   */
  capsHit: Array<{ profileId: string; types: Array<Identity['type']> }>;
  /** Readings of an id of unknown type (`Identity.previous`) that join nothing: left off their events, never claimed. */
  unmatched: Array<{ event: number; key: string }>;
}

/** Whether a profile document holds its cap of identities of a type (see domain/identityCaps). */
export type CappedCheck = (profileId: string, type: Identity['type']) => boolean;

const byPriority = (a: Identity, b: Identity) => byTypePriority(a.type, b.type);

/**
 * Picks each event's profile document and what the identity graph learns from it. An event goes to
 * the document that owns its highest-priority known identity, or to a new document whose id derives
 * from the event; its unknown identities are claimed for that document; every other document that
 * owns one of its identities is linked to it, once per such identity (a merge: the profile is the connected component).
 * `newProfileId(event)` names the document an event makes, `newProfileId(event, key)` the document
 * of its own a refused identity gets: each distinct from the other and from every other event's.
 * `known` maps identity keys to owning documents and is extended with this batch's claims, so later
 * events in the batch see them. Over-merge protection: an identity that would join a document
 * `capped` for its type is refused — an unknown one is claimed for a document of its own (derived
 * from the event and the identity) and left off the event, a known one is not linked. With `caps`,
 * a document whose claims and links in this batch reach a cap is capped for the rest of the batch too: a
 * burst of one junk id's cookies, or of known people's emails beside one shared customer id, cannot all
 * land before the document's writer marks it. A known identity
 * owned by the document of its own this very event would give it was refused before (by an
 * earlier attempt at the batch), and is refused again. Of the readings of an id of unknown type,
 * those the graph knows join; the rest are `unmatched` — all of them, unless none is known: then
 * the event's first is taken as an identity like any other. Pure: the same input gives the same
 * output, which makes retries safe.
 */
export function resolveIdentities(
  events: StoredEvent[],
  known: Map<string, string>,
  newProfileId: (event: StoredEvent, key?: string) => string,
  blocked: (key: string) => boolean = () => false,
  capped: CappedCheck = () => false,
  caps?: IdentityCaps,
): Resolution {
  const targets: Array<string | null> = [];
  const claims: IdentityClaim[] = [];
  const links = new Map<string, LinkSpec>();
  const refusals: Refusal[] = [];
  const unmatched: Resolution['unmatched'] = [];
  const claimedHere = new Map<string, Map<Identity['type'], number>>();
  const reached = new Map<string, Set<Identity['type']>>();
  const hit = new Map<string, Set<Identity['type']>>();
  const isCapped: CappedCheck = (profileId, type) => capped(profileId, type) || (reached.get(profileId)?.has(type) ?? false);
  const add = (sets: Map<string, Set<Identity['type']>>, profileId: string, type: Identity['type']) => sets.set(profileId, (sets.get(profileId) ?? new Set()).add(type));
  const refuse = (profileId: string, key: string, type: Identity['type'], event: number, eventId: string) => {
    refusals.push({ profileId, key, type, event, eventId });
    if (!capped(profileId, type) && reached.get(profileId)?.has(type)) add(hit, profileId, type);
  };
  /** Counts an identity a document gains in this batch, claimed or linked to: at the cap, it is capped for the rest of the batch. */
  const gains = (profileId: string, type: Identity['type']) => {
    if (!caps) return;
    const counts = claimedHere.get(profileId) ?? new Map<Identity['type'], number>();
    const count = (counts.get(type) ?? 0) + 1;
    claimedHere.set(profileId, counts.set(type, count));
    if (count >= caps[type]) add(reached, profileId, type);
  };
  const claim = (key: string, type: Identity['type'], profileId: string) => {
    known.set(key, profileId);
    claims.push({ key, type, profileId });
    gains(profileId, type);
  };
  events.forEach((event, eventIndex) => {
    // Junk values (all-zero ad ids, shared test emails) would join strangers into one profile: they join nothing.
    const identities = event.identities.filter((identity) => !blocked(identityKey(identity))).sort(byPriority);
    if (identities.length === 0) {
      targets.push(null);
      return;
    }
    const owners = identities.map((identity) => known.get(identityKey(identity)));
    // Not a document of its own an earlier resolution of this event gave an identity it refused: the
    // event stays where it went (and the identity refused), whatever that identity's priority. Such a
    // document differs from another owner of the event, so most events need no id worked out here.
    const disagree = owners.some((owner) => owner !== undefined && owner !== owners.find((first) => first !== undefined));
    const target = owners.find((owner, index) => owner !== undefined && !(disagree && owner === newProfileId(event, identityKey(identities[index])))) ?? newProfileId(event);
    const readingKnown = identities.some((identity, index) => identity.previous && owners[index] !== undefined);
    const kept = readingKnown ? undefined : event.identities.find((identity) => identity.previous && !blocked(identityKey(identity)));
    identities.forEach((identity, index) => {
      const owner = owners[index];
      const key = identityKey(identity);
      if (identity.previous && owner === undefined && identity !== kept) {
        unmatched.push({ event: eventIndex, key });
      } else if (owner === undefined && isCapped(target, identity.type)) {
        claim(key, identity.type, newProfileId(event, key));
        refuse(target, key, identity.type, eventIndex, event.id);
      } else if (owner === undefined) {
        claim(key, identity.type, target);
      } else if (owner !== target && (isCapped(target, identity.type) || isCapped(owner, identity.type))) {
        refuse(isCapped(target, identity.type) ? target : owner, key, identity.type, eventIndex, event.id);
      } else if (owner !== target && owner === newProfileId(event, key)) {
        refusals.push({ profileId: target, key, type: identity.type, event: eventIndex, eventId: event.id });
      } else if (owner !== target) {
        const pair = [target, owner].sort() as [string, string];
        const id = linkId(pair, key);
        if (links.has(id)) return;
        links.set(id, { profiles: pair, via: key, eventId: event.id });
        // The target folds the identity in with the event: a shared id linking to many known people stops at the cap too.
        gains(target, identity.type);
      }
    });
    targets.push(target);
  });
  const capsHit = [...hit].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([profileId, types]) => ({ profileId, types: [...types].sort() }));
  return { targets, claims, links: [...links.values()], refusals, capsHit, unmatched };
}
