import type { StoredEvent } from '../domain/event';
import { identityKey, type StoredIdentityType } from '../domain/identity';
import type { IdentityCaps } from '../domain/identityCaps';
import { linkId, resolveIdentities, type CappedCheck, type IdentityClaim, type LinkSpec, type Resolution } from '../domain/identityResolution';
import type { Severance } from '../domain/identitySplit';
import { profileIdForEvent } from '../domain/ids';
import type { IdentityCapStore } from '../store/identityCaps';
import type { IdentityIndex, IdentityLinkDoc } from '../store/identities';

/** The store-bound steps of a resolution, as a caller timing them sees them. */
export type ResolveStep = 'lookup' | 'caps' | 'resolve' | 'claim' | 'reload';

/**
 * How often a key missing from this process's cache turns out to be in the store (found by a read,
 * or refused to a claim), over roughly the last `horizon` such keys. It starts without evidence,
 * which counts as "often": after a restart most misses are in the store.
 *
 * Measured on FerretDB 1.24 / PostgreSQL, leaving misses to the claims is faster even when many are
 * held (a read by `_id` costs ~1 ms a key; a held key makes its 100-document slice of the claim's
 * insert ~40 ms slower). `rare` is low for the graph's sake: the event of a claim that loses has
 * its other new identities claimed for a document of its own, linked to the owner, so the profile
 * is the same but spread over one more document.
 *
 * Without evidence, a batch with more than four times `sample` misses reads a sample of them first,
 * and the rest only when the sample finds one held: a new process's first batch of new people
 * (a new source, the ingest bench) reads 64 keys instead of thousands — 3,000 took 1.4–2.6 s on a quiet
 * store — while after a restart, when most misses are held, the sample finds them and all are read.
 */
export class MissEstimate {
  private held = 0;
  private seen = 0;
  private readonly limits: Required<MissLimits>;

  constructor(limits: MissLimits = { horizon: 5000, evidence: 1000, rare: 0.005 }) {
    this.limits = { sample: 64, ...limits };
  }

  observe(held: number, seen: number): void {
    const keep = (1 - 1 / this.limits.horizon) ** seen;
    this.held = this.held * keep + held;
    this.seen = this.seen * keep + seen;
  }

  /** Whether misses have lately been almost never in the store. */
  get rare(): boolean {
    return this.seen >= this.limits.evidence && this.held <= this.limits.rare * this.seen;
  }

  /** Which of a batch's misses to read first: none when rare, a sample spread over them when there is no evidence and they are many, else all. */
  firstReads(missing: string[]): string[] {
    if (this.rare) return [];
    const { sample } = this.limits;
    if (this.seen >= this.limits.evidence || missing.length <= sample * 4) return missing;
    return Array.from({ length: sample }, (_, n) => missing[Math.floor((n * missing.length) / sample)]);
  }
}

export interface MissLimits {
  horizon: number;
  evidence: number;
  rare: number;
  /** Keys read to judge a batch's misses while there is no evidence (see MissEstimate). */
  sample?: number;
}

export interface IdentityResolverDeps {
  identities: IdentityIndex;
  capStore: IdentityCapStore;
  caps: IdentityCaps;
  blocked: (key: string) => boolean;
  now: () => Date;
  /** Runs each step; the identity benchmark times them with it. */
  step?: <T>(step: ResolveStep, work: () => Promise<T>) => Promise<T>;
  /** Tests pass one with small limits. */
  misses?: MissEstimate;
  /** The co-occurrences unlinks severed, as `severedLinkKey`s (a few seconds old at most): a repeat of a severed event joins nothing again. */
  severed?: () => Promise<ReadonlySet<string>>;
}

export interface BatchResolution extends Resolution {
  /** Profile documents the batch created: its claims that held. */
  newProfiles: number;
  /** Documents this batch made: no identity of theirs was owned before it. Nothing has been written to them yet (see RoutedBatch.created). */
  created: string[];
  /** The claims this batch inserted: the keys it was the first to see, with their owners. */
  claimed: IdentityClaim[];
  /** Claims someone else had made first, settled by reading their owners back. */
  lostClaims: number;
  /** Cache misses not read from the store, left to the claims to find (see MissEstimate). */
  unread: number;
}

/** A resolution's links as stored: keyed by the documents and the identity, so a retried write finds them written. */
export function linkDocs(links: LinkSpec[], sourceId: string, createdAt: Date): IdentityLinkDoc[] {
  return links.map((link) => ({ _id: linkId(link.profiles, link.via), ...link, sourceId, createdAt }));
}

/**
 * Resolves a source's batches against the identity graph, claiming the identities it is the first
 * to see. One per process: its estimate of cache misses is the process's experience.
 */
export function createIdentityResolver(deps: IdentityResolverDeps) {
  const { identities, capStore, caps: limits, blocked, now } = deps;
  const step = deps.step ?? (<T>(_: ResolveStep, work: () => Promise<T>) => work());
  const misses = deps.misses ?? new MissEstimate();

  /**
   * Resolves the batch's identities against the graph and claims the unknown ones. Keys the cache
   * misses are read from the store, unless lately such keys were almost never there: a read by
   * `_id` per key then costs far more than the claims, which find those few anyway. A claim that
   * loses (another drain claimed the key first, or it was in the store unread) is read back and
   * the batch resolved again with every key known, so the second pass claims nothing and agrees
   * with the store.
   */
  async function resolve(sourceId: string, events: StoredEvent[]): Promise<BatchResolution> {
    const keys = [...new Set(events.flatMap((event) => event.identities.map(identityKey)))];
    const { owners: known, missing: uncached } = identities.cached(keys);
    // Readings of an id of unknown type are always read: one the graph holds unread would never be
    // found, since only a reading that none is known beside gets claimed.
    const readings = new Set<string>();
    for (const event of events) for (const identity of event.identities) if (identity.previous) readings.add(identityKey(identity));
    const missing = readings.size === 0 ? uncached : uncached.filter((key) => !readings.has(key));
    if (missing.length < uncached.length) {
      for (const [key, owner] of await step('lookup', () => identities.reload(uncached.filter((key) => readings.has(key))))) known.set(key, owner);
    }
    let read = misses.firstReads(missing);
    const found = read.length > 0 ? await step('lookup', () => identities.reload(read)) : new Map<string, string>();
    if (read.length < missing.length && found.size > 0) {
      // The sample found held keys: this batch's misses are read after all.
      const sampled = new Set(read);
      for (const [key, owner] of await step('lookup', () => identities.reload(missing.filter((key) => !sampled.has(key))))) found.set(key, owner);
      read = missing;
    }
    for (const [key, owner] of found) known.set(key, owner);
    const newProfileId = (event: StoredEvent, key?: string) => profileIdForEvent(sourceId, key === undefined ? event.id : `${event.id}\u0000${key}`);

    // Caps are read only for existing documents this batch would add to (most batches add to none), and once each.
    const caps = new Map<string, Set<StoredIdentityType>>();
    const checked = new Set<string>();
    const capped: CappedCheck = (profileId, type) => caps.get(profileId)?.has(type) ?? false;
    const pass = async (owners: Map<string, string>, existing: Set<string>) => {
      const resolve = () => step('resolve', async () => resolveIdentities(events, new Map(owners), newProfileId, blocked, capped, limits));
      const resolution = await resolve();
      const joined = [...resolution.claims.map((claim) => claim.profileId), ...resolution.links.flatMap((link) => link.profiles)];
      const unchecked = [...new Set(joined)].filter((profileId) => existing.has(profileId) && !checked.has(profileId));
      if (unchecked.length === 0) return resolution;
      for (const profileId of unchecked) checked.add(profileId);
      const marked = await step('caps', () => capStore.capped(unchecked));
      if (marked.size === 0) return resolution;
      for (const [profileId, types] of marked) capAlso(profileId, types);
      return resolve();
    };
    const capAlso = (profileId: string, types: Iterable<StoredIdentityType>) => caps.set(profileId, new Set([...(caps.get(profileId) ?? []), ...types]));

    let resolution = await pass(known, new Set(known.values()));
    if (resolution.capsHit.length > 0) {
      // Marked before the claims go in: a retry finds the claims made and counts none, and the marker
      // is what still refuses a refused identity that a later event of the batch brings again.
      await step('caps', () => capStore.mark(resolution.capsHit, now()));
      for (const { profileId, types } of resolution.capsHit) capAlso(profileId, types);
    }
    const claimed = await step('claim', () => identities.claim(resolution.claims, now()));
    // Keys judged: those read when all were, else those the claims tried (a sample's absent keys among them).
    misses.observe(found.size + claimed.refused, read.length > 0 && read.length === missing.length ? read.length : claimed.sent);
    const lost = new Set(claimed.held);
    const inserted = resolution.claims.filter((claim) => !lost.has(claim.key));
    /** Owners of the keys this batch's claims lost, once read back. */
    const lostTo = new Map<string, string>();
    const held = new Set(inserted.map((claim) => claim.profileId));
    const newProfiles = held.size;
    if (lost.size > 0) {
      // Keys a claim of this process won meanwhile are cached; the rest are read from the store.
      const { owners: holders, missing: unsettled } = identities.cached(claimed.held);
      for (const [key, owner] of await step('reload', () => identities.reload(unsettled))) holders.set(key, owner);
      for (const [key, owner] of holders) lostTo.set(key, owner);
      const settled = new Map(known);
      for (const claim of resolution.claims) settled.set(claim.key, holders.get(claim.key) ?? claim.profileId);
      // The owners read back may be documents this batch had not seen: their caps are read before joining them.
      resolution = await pass(settled, new Set([...known.values(), ...holders.values()]));
      if (resolution.claims.length > 0) throw new Error('identity resolution did not settle'); // cannot happen: every key is known
    }
    const owned = new Set([...known.values(), ...lostTo.values()]);
    const created = [...held].filter((profileId) => !owned.has(profileId));
    return { ...resolution, links: await unsevered(resolution.links), newProfiles, created, claimed: inserted, lostClaims: lost.size, unread: missing.length - read.length };
  }

  /**
   * Links but those an unlink severed: an event sent again under its id after the unlink split its
   * person (a lost answer, an offline queue) would join the two sides again, though its writer drops it as a repeat.
   */
  async function unsevered(links: LinkSpec[]): Promise<LinkSpec[]> {
    if (links.length === 0 || !deps.severed) return links;
    const severed = await deps.severed();
    return severed.size === 0 ? links : links.filter((link) => !severed.has(severedLinkKey(link.via, link.eventId)));
  }

  return { resolve };
}

export type IdentityResolver = ReturnType<typeof createIdentityResolver>;

/** An identity and an event whose co-occurrence with another identity an unlink severed. */
export function severedLinkKey(key: string, eventId: string): string {
  return `${key}\u0000${eventId}`;
}

/** The `severedLinkKey`s of severances: each of their keys with each event they name. */
export function severedLinkKeys(severances: readonly Severance[]): Set<string> {
  return new Set(severances.flatMap((severance) => severance.keys.flatMap((key) => severance.eventIds.map((eventId) => severedLinkKey(key, eventId)))));
}
