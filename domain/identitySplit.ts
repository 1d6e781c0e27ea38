import { createHash } from 'node:crypto';
import type { StoredEvent } from './event';
import { byTypePriority, identityKey, identityTypeOfKey } from './identity';
import { linkId } from './identityResolution';
import { partitionOf } from './partition';
import { addIdentityEntry, foldEvent, foldOrder, newProfile, nextVersion, type IdentityEntry, type ProfileDoc, type ProfileLink } from './profile';
import type { ConsentPolicy, Party } from './schemas';

/** An event as a profile document holds it: where it came from, and the document it was folded into. */
export interface HeldEvent extends StoredEvent {
  profileId: string;
  sourceId: string;
  party: Party;
  /** The source log chunk that held it (the documents' retry guard). */
  seq: number;
  /**
   * On an event moved by a split, which keeps only its side's identities: all the identities it was
   * collected with. Later splits read co-occurrences from these, so none is lost.
   */
  evidence?: StoredEvent['identities'];
  /**
   * A copy kept only as evidence, in a part of another side than the event's: never folded, never
   * shown, but a later split of that side still sees which of its identities the event showed together.
   */
  evidenceOnly?: true;
}

/** The identities an event was collected with. */
export const evidenceOf = (event: HeldEvent) => event.evidence ?? event.identities;

/**
 * Co-occurrences an unlink removed: in these events, these two identities no longer count as seen
 * together. Later events that show them together link them again — new evidence.
 */
export interface Severance {
  keys: [string, string];
  eventIds: string[];
}

/** How a component of the identity graph falls apart once severed co-occurrences stop counting. */
export interface SplitPlan {
  /** Identity key → side. Sides are numbered by their smallest key, so the same input gives the same plan. */
  sideOf: Record<string, number>;
  sides: number;
}

/** Union-find over string keys; the smaller key is the root, so results do not depend on the order of unions. */
export class UnionFind {
  private readonly parent = new Map<string, string>();
  find(x: string): string {
    let root = this.parent.get(x) ?? x;
    if (root === x) {
      this.parent.set(x, x);
      return x;
    }
    root = this.find(root);
    this.parent.set(x, root);
    return root;
  }
  union(a: string, b: string): void {
    const [ra, rb] = [this.find(a), this.find(b)];
    if (ra !== rb) this.parent.set(ra < rb ? rb : ra, ra < rb ? ra : rb);
  }
}

const pairKey = (a: string, b: string) => (a < b ? `${a}|${b}` : `${b}|${a}`);

/**
 * The sides of a component: identities joined by the co-occurrences its events show, minus the
 * severed ones. `docIdentities` lists the identities each document holds; one without a retained
 * event (its events have expired) stays with the side holding most of its document's events.
 */
export function planSplit(events: ReadonlyArray<HeldEvent>, docIdentities: ReadonlyMap<string, string[]>, severances: ReadonlyArray<Severance>): SplitPlan {
  const severed = new Map<string, Set<string>>();
  for (const severance of severances) {
    for (const eventId of severance.eventIds) {
      const pairs = severed.get(eventId) ?? new Set<string>();
      pairs.add(pairKey(...severance.keys));
      severed.set(eventId, pairs);
    }
  }
  const graph = new UnionFind();
  const evidenced = new Set<string>();
  for (const event of events) {
    const keys = evidenceOf(event).map(identityKey);
    const cut = severed.get(event.id);
    keys.forEach((key, i) => {
      graph.find(key);
      evidenced.add(key);
      for (let j = i + 1; j < keys.length; j++) if (!cut?.has(pairKey(key, keys[j]))) graph.union(key, keys[j]);
    });
  }
  // Identities without evidence follow their document's bulk — its events, each on the side of its
  // highest-priority identity as a split places it (evidence copies are no events of it); a document
  // with no events at all keeps its identities together.
  for (const [profileId, keys] of docIdentities) {
    const orphans = keys.filter((key) => !evidenced.has(key));
    if (orphans.length === 0) continue;
    const weights = new Map<string, number>();
    for (const event of events) {
      if (event.profileId !== profileId || event.evidenceOnly || evidenceOf(event).length === 0) continue;
      const root = graph.find(evidenceOf(event).map(identityKey).sort(byPriority)[0]);
      weights.set(root, (weights.get(root) ?? 0) + 1);
    }
    const bulk = [...weights].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0] ?? orphans[0];
    for (const key of orphans) graph.union(bulk, key);
  }
  const members = new Map<string, string[]>();
  for (const key of [...new Set([...evidenced, ...[...docIdentities.values()].flat()])].sort()) {
    const root = graph.find(key);
    members.set(root, [...(members.get(root) ?? []), key]);
  }
  const sides = [...members.values()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const sideOf: Record<string, number> = {};
  sides.forEach((keys, side) => keys.forEach((key) => (sideOf[key] = side)));
  return { sideOf, sides: sides.length };
}

const byPriority = (a: string, b: string) => byTypePriority(identityTypeOfKey(a), identityTypeOfKey(b)) || (a < b ? -1 : 1);

/** The side an event belongs to: that of its highest-priority identity the plan knows; undefined when it knows none. */
export function sideOfEvent(event: Pick<StoredEvent, 'identities'>, sideOf: Readonly<Record<string, number>>): number | undefined {
  const known = event.identities.map(identityKey).filter((key) => Object.hasOwn(sideOf, key)).sort(byPriority);
  return known.length > 0 ? sideOf[known[0]] : undefined;
}

/** What a split document leaves behind: where each of its sides went, so late events and old links find them. */
export interface RetiredMarker {
  rebuildId: string;
  /** Side → the part that holds this document's share of it. */
  parts: Record<string, string>;
  /** The document's identity keys → their side. */
  keys: Record<string, number>;
  /** The part taking events whose side the document cannot tell. */
  fallback: string;
  /** Set when the document expired (domain/profileExpiry) rather than was split: its one part is the successor. */
  expired?: { expiryId: string; at: Date };
}

/**
 * The id of a document's part on one side. It stays in the document's partition, so the partition's
 * single writer can create it, and it derives from the rebuild, so a retried split names it again.
 */
export function partId(profileId: string, rebuildId: string, side: number, partitions: number): string {
  // The original document's id stays readable; the digest tells apart parts of two parts of it split together.
  const base = profileId.split('~')[0];
  const of = createHash('sha256').update(profileId).digest('base64url').slice(0, 8);
  const partition = partitionOf(profileId, partitions);
  for (let n = 0; ; n++) {
    const id = `${base}~${rebuildId}.${of}.${side}.${n}`;
    if (partitionOf(id, partitions) === partition) return id;
  }
}

/** How the writers fold, which a split folds its parts by: each source's consent policy, and whether the person opted out. */
export interface FoldRule {
  policyOf: (sourceId: string) => ConsentPolicy;
  optedOut: boolean;
}

export interface DocumentSplit {
  parts: ProfileDoc[];
  /** The next version of the document: empty, marked retired, pointing at its parts. */
  retired: ProfileDoc;
  /** The events each part holds now, identities of other sides removed. */
  moved: Map<string, HeldEvent[]>;
}

/**
 * Splits one profile document by a plan: each of its events goes to the part of its side, without
 * the identities of other sides, and each part is folded from its events alone — so each side holds
 * exactly its own history. Identities without retained events go to the part of their side. So do
 * those of events on their way to the document, not folded yet (`waiting`, which the plan counted;
 * store/documentEvents), as if folded before the split: the marker knows them by their planned side,
 * and each such side has a part, to take the events when they arrive. Pure.
 */
export function splitDocument(
  doc: Readonly<ProfileDoc>,
  held: ReadonlyArray<HeldEvent>,
  plan: SplitPlan,
  rebuildId: string,
  partitions: number,
  now: Date,
  rule: FoldRule,
  waiting: ReadonlyArray<HeldEvent> = [],
): DocumentSplit {
  const counts = new Map<number, number>();
  for (const event of held) {
    const side = sideOfEvent({ identities: evidenceOf(event) }, plan.sideOf);
    if (side !== undefined && !event.evidenceOnly) counts.set(side, (counts.get(side) ?? 0) + 1);
  }
  const firstKnown = doc.identities.map(identityKey).find((key) => Object.hasOwn(plan.sideOf, key));
  const fallbackSide = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]?.[0] ?? (firstKnown ? plan.sideOf[firstKnown] : 0);

  const moved = new Map<number, HeldEvent[]>();
  const move = (side: number, event: HeldEvent) => {
    const events = moved.get(side) ?? [];
    if (!events.some((other) => other.id === event.id && other.sourceId === event.sourceId)) events.push(event);
    moved.set(side, events);
  };
  // Real events first, so an evidence copy never takes the place of the event itself.
  for (const event of [...held].sort((a, b) => Number(a.evidenceOnly ?? false) - Number(b.evidenceOnly ?? false))) {
    const evidence = evidenceOf(event);
    const side = sideOfEvent({ identities: evidence }, plan.sideOf) ?? fallbackSide;
    const identities = event.identities.filter((identity) => (plan.sideOf[identityKey(identity)] ?? side) === side);
    if (!event.evidenceOnly) move(side, { ...event, identities, ...(identities.length < evidence.length && { evidence }) });
    const elsewhere = new Set(evidence.map((identity) => plan.sideOf[identityKey(identity)]).filter((other) => other !== undefined && (other !== side || event.evidenceOnly)));
    for (const other of elsewhere) move(other, { ...event, identities: [], evidence, evidenceOnly: true });
  }
  const keys: Record<string, number> = {};
  for (const entry of doc.identities) {
    const key = identityKey(entry);
    keys[key] = plan.sideOf[key] ?? fallbackSide;
    if (!moved.has(keys[key])) moved.set(keys[key], []);
  }
  const waitingEntries = new Map<string, IdentityEntry>();
  for (const event of waiting) {
    // Its own identities: those it lost on its way here are another side's of an earlier split.
    for (const identity of event.identities) {
      const key = identityKey(identity);
      if (!Object.hasOwn(plan.sideOf, key) || (Object.hasOwn(keys, key) && !waitingEntries.has(key))) continue;
      keys[key] = plan.sideOf[key];
      if (!moved.has(keys[key])) moved.set(keys[key], []);
      const entries = waitingEntries.has(key) ? [waitingEntries.get(key)!] : [];
      addIdentityEntry(entries, { ...identity, firstSeen: event.timestamp, lastSeen: event.timestamp, sourceId: event.sourceId });
      waitingEntries.set(key, entries[0]);
    }
  }
  if (!moved.has(fallbackSide)) moved.set(fallbackSide, []);

  const parts: ProfileDoc[] = [];
  const movedById = new Map<string, HeldEvent[]>();
  const partsBySide: Record<string, string> = {};
  for (const [side, events] of [...moved].sort((a, b) => a[0] - b[0])) {
    const id = partId(doc.profileId, rebuildId, side, partitions);
    const inOrder = [...events].sort(foldOrder);
    const folded = inOrder.filter((event) => !event.evidenceOnly);
    const part = newProfile(id, now, folded[0]?.timestamp ?? doc.firstSeen);
    const relocatedHere: HeldEvent[] = [];
    for (const event of inOrder) {
      const relocated = { ...event, profileId: id };
      if (!event.evidenceOnly) foldEvent(part, relocated, { sourceId: event.sourceId, party: event.party, seq: event.seq }, rule.policyOf(event.sourceId), rule.optedOut);
      relocatedHere.push(relocated);
    }
    movedById.set(id, relocatedHere);
    // Identities whose events have expired still belong to someone: keep them on their side.
    for (const entry of [...doc.identities, ...waitingEntries.values()]) {
      const key = identityKey(entry);
      if (keys[key] === side && !part.identities.some((own) => identityKey(own) === key)) part.identities.push({ ...entry });
    }
    if (folded.length === 0) part.lastSeen = part.identities.reduce((max, entry) => (entry.lastSeen > max ? entry.lastSeen : max), part.firstSeen);
    // The part covers everything its document had folded: the same retry guard.
    part.applied = { ...doc.applied };
    part.ancestors = [doc.profileId, ...(doc.ancestors ?? [])];
    parts.push(part);
    partsBySide[String(side)] = id;
  }

  const retired = emptiedVersion(doc, { rebuildId, parts: partsBySide, keys, fallback: partsBySide[String(fallbackSide)] });
  return { parts, retired, moved: movedById };
}

/** The next version of a document with nothing of its person left, retired by `marker` (split apart, or expired). */
export function emptiedVersion(doc: Readonly<ProfileDoc>, marker: RetiredMarker): ProfileDoc {
  const next = nextVersion(doc);
  Object.assign(next, { identities: [], traits: {}, traitOrigins: {}, counters: {}, consent: null, sources: [], retired: marker });
  delete next.campaigns;
  return next;
}

/** The pairs of identity keys whose co-occurrence in event `eventId` an unlink severed. */
export function severedIn(eventId: string, severances: ReadonlyArray<Severance>): Set<string> {
  return new Set(severances.filter((severance) => severance.eventIds.includes(eventId)).map((severance) => pairKey(...severance.keys)));
}

/** Where a late event goes (redirectLateEvent). */
export interface LatePlacement {
  target: string;
  /** The event's identities the target takes: those it shows together with the target's side. */
  identities: StoredEvent['identities'];
  /** Parts of other sides the event shows together with the target's again (new evidence), and the identity that does. */
  joins: Array<{ part: string; via: string }>;
  /** Identities the document did not know, now known to be on the target's side. */
  learned: Record<string, number>;
}

/**
 * Where an event that arrives at a split document (routed there by a drain that did not know of the
 * split yet) goes: the part of its side. When it also carries identities of the document's other
 * sides it shows them together again — new evidence — so it links its part to theirs, unless an
 * unlink severed that co-occurrence (`severed`, see severedIn: the event was routed before the plan,
 * which counted it). Identities it shows only severed from the target's side are left out of what the
 * target takes, as a split leaves them out. Identities the document did not know (claimed for it by
 * such a drain) join the event's side: `learned`, which the writer adds to the marker so that later
 * events carrying only them go there too.
 */
export function redirectLateEvent(marker: RetiredMarker, event: Pick<StoredEvent, 'identities'>, severed: ReadonlySet<string> = new Set()): LatePlacement {
  const side = sideOfEvent(event, marker.keys);
  const target = (side !== undefined && marker.parts[String(side)]) || marker.fallback;
  const targetSide = Number(Object.keys(marker.parts).find((s) => marker.parts[s] === target));
  const keys = event.identities.map(identityKey);
  const knows = (key: string) => Object.hasOwn(marker.keys, key);
  // What the event shows together: its identities, less the severed pairs between sides this marker
  // tells apart. Keys of one side stay together (the plan joined them); a key the marker does not know
  // joins the rest (a later marker on the event's way, which knows it, decides).
  const together = new UnionFind();
  keys.forEach((key, i) => {
    together.find(key);
    for (const other of keys.slice(i + 1)) {
      const apart = knows(key) && knows(other) && marker.keys[key] !== marker.keys[other] && severed.has(pairKey(key, other));
      if (!apart) together.union(key, other);
    }
  });
  // The identity that chose the target: the highest-priority one the document knows (any, when it knows none).
  const known = keys.filter(knows);
  const anchor = [...(known.length > 0 ? known : keys)].sort(byPriority)[0];
  const joins = new Map<string, string>();
  const learned: Record<string, number> = {};
  const identities = event.identities.filter((_, i) => {
    const key = keys[i];
    if (together.find(key) !== together.find(anchor)) return false;
    if (!knows(key)) learned[key] = targetSide;
    else {
      const part = marker.parts[String(marker.keys[key])] ?? marker.fallback;
      if (part !== target && !joins.has(part)) joins.set(part, key);
    }
    return true;
  });
  return { target, identities, joins: [...joins].map(([part, via]) => ({ part, via })), learned };
}

/** Where a link's end at a retired document goes: the part on the side of the identity the link was made through. */
export function redirectLinkEnd(marker: RetiredMarker, via: string): string {
  const side = Object.hasOwn(marker.keys, via) ? marker.keys[via] : undefined;
  return (side !== undefined && marker.parts[String(side)]) || marker.fallback;
}

/**
 * The links a split's parts need, from the evidence they hold: an event joins the part holding it to
 * the owners of its identities, and — for an event moved with identities of other sides — the owners
 * of each other side's identities among themselves (the event showed those together too). `ownerOf`
 * gives identities' owners after the split, `sideOf` their side in the plan.
 */
export function linksFromEvidence(
  events: ReadonlyArray<HeldEvent>,
  ownerOf: (key: string) => string | undefined,
  sideOf: (key: string) => number | undefined,
  createdAt: Date,
): Array<ProfileLink & { _id: string }> {
  const links = new Map<string, ProfileLink & { _id: string }>();
  const join = (a: string, b: string, via: string, event: HeldEvent) => {
    if (a === b) return;
    const profiles = [a, b].sort() as [string, string];
    const _id = linkId(profiles, via);
    if (!links.has(_id)) links.set(_id, { _id, profiles, via, eventId: event.id, sourceId: event.sourceId, createdAt });
  };
  for (const event of events) {
    const own = new Set(event.identities.map(identityKey));
    const elsewhere = new Map<number | undefined, string[]>();
    for (const key of evidenceOf(event).map(identityKey)) {
      const owner = ownerOf(key);
      if (!owner) continue;
      if (own.has(key)) join(event.profileId, owner, key, event);
      else elsewhere.set(sideOf(key), [...(elsewhere.get(sideOf(key)) ?? []), key]);
    }
    for (const keys of elsewhere.values()) {
      const anchor = ownerOf(keys[0]) as string;
      for (const key of keys.slice(1)) join(anchor, ownerOf(key) as string, key, event);
    }
  }
  return [...links.values()];
}

/** A link made to a split document (before the split was known), with its ends moved to the parts; null when both land on one part. */
export function relinkToParts<T extends ProfileLink>(link: T, markers: ReadonlyMap<string, RetiredMarker>): (T & { _id: string }) | null {
  const profiles = link.profiles.map((end) => {
    const marker = markers.get(end);
    return marker ? redirectLinkEnd(marker, link.via) : end;
  }).sort() as [string, string];
  return profiles[0] === profiles[1] ? null : { ...link, _id: linkId(profiles, link.via), profiles };
}
