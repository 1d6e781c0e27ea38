import { linkId } from '../domain/identityResolution';
import { expiredVersion, expiresBy, keysOf } from '../domain/profileExpiry';
import type { ProfileDoc } from '../domain/profile';
import type { StoredIdentityType } from '../domain/identity';
import type { IdentityCapStore } from '../store/identityCaps';
import type { IdentityIndex, IdentityLinkDoc } from '../store/identities';
import type { ExpiredProfiles } from '../store/expiredProfiles';
import type { ExpiryPartDoc, ProfileExpiries } from '../store/profileExpiries';
import type { ProfileStore, StoredVersion } from '../store/profiles';

/** Documents one fold expires at most per expiry: a fold waiting behind it waits little. */
export const EXPIRE_AT_ONCE = 1000;

/** One expiry's slice in one fold: its part, and the planned documents it expires now. */
interface ExpirySlice {
  part: ExpiryPartDoc;
  /** Documents looked at (the window of the plan from `part.next`). */
  window: number;
  /** Those that expire: their newest live version, and whether an interrupted attempt already wrote the retired one. */
  expiring: Array<{ live: StoredVersion | null; id: string; written: boolean }>;
}

export interface ExpiryWork {
  slices: ExpirySlice[];
  /** The retired versions to write. */
  versions: ProfileDoc[];
  /** The live versions they supersede (for the write groups' counts). */
  superseded: Map<string, StoredVersion>;
  /** Expiries with planned documents left after this fold. */
  more: string[];
}

interface ExpiryDeps {
  profiles: ProfileStore;
  identities: IdentityIndex;
  caps: IdentityCapStore;
  expiries: ProfileExpiries;
  expired: ExpiredProfiles;
  partitions: number;
  now: () => Date;
}

/**
 * A partition writer's part in expiring inactive people (domain/profileExpiry). For each expiry
 * asked of it, a slice of its planned documents at a time: `prepare` picks those still inactive and
 * not in this fold's events and records their identity keys in the plan, the fold writes their
 * retired versions with its own, then `release` takes back the claims (each only while it still
 * names the document), cap markers and refusals, and advances the plan. Safe to retry anywhere: a
 * retry reads the recorded slice, and only documents whose retired version is written release keys.
 */
export function createExpiryStep(deps: ExpiryDeps) {
  /**
   * The identity keys of a document whose retired version an attempt wrote without its keys in the
   * plan (a stalled writer's save of the plan overwrote them): those of the version it superseded.
   */
  async function keysBefore(id: string, retired: StoredVersion): Promise<string[]> {
    const previous = (await deps.profiles.versions(id)).filter((version) => version.version < retired.version).sort((a, b) => b.version - a.version)[0];
    return previous ? keysOf(previous) : [];
  }

  /**
   * `kept`: documents that must not expire whatever the plan says — those of a person who opted out
   * since it was made (their mark names their documents; one made afresh once the claims went would not carry it).
   */
  async function prepare(partition: number, expiryIds: string[], active: ReadonlySet<string>, trustSince: number | undefined, kept: (doc: StoredVersion) => boolean): Promise<ExpiryWork> {
    const work: ExpiryWork = { slices: [], versions: [], superseded: new Map(), more: [] };
    for (const expiryId of expiryIds) {
      const part = await deps.expiries.part(expiryId, partition);
      if (!part || part.done) continue;
      const window = part.docs.slice(part.next, part.next + EXPIRE_AT_ONCE);
      // The version each document had when planned: one changed since (joined to someone active, say) is kept.
      const planned = new Map(window.map((id, n) => [id, part.versions?.[part.next + n]]));
      // A retry looks again only at what the interrupted attempt chose: its keys are recorded.
      const chosen = part.releasing ? [...new Set([...part.releasing.map((entry) => entry.profileId), ...(part.keyless ?? [])])] : window;
      const newest = await deps.profiles.load(chosen, { trustSince });
      const slice: ExpirySlice = { part, window: window.length, expiring: [] };
      const recovered: Array<{ profileId: string; key: string }> = [];
      for (const id of chosen) {
        const doc = newest.get(id);
        if (doc?.retired?.expired?.expiryId === expiryId) {
          slice.expiring.push({ id, live: null, written: true });
          if (!part.releasing) for (const key of await keysBefore(id, doc)) recovered.push({ profileId: id, key });
        } else if (doc && expiresBy(doc, part.cutoff) && !active.has(id) && (planned.get(id) ?? doc.version) === doc.version && !kept(doc)) {
          slice.expiring.push({ id, live: doc, written: false });
        }
      }
      if (!part.releasing) {
        const live = slice.expiring.flatMap((entry) => (entry.live ? [entry.live] : []));
        part.releasing = [...recovered, ...live.flatMap((doc) => keysOf(doc).map((key) => ({ profileId: doc.profileId, key })))];
        part.keyless = slice.expiring.map((entry) => entry.id).filter((id) => !part.releasing!.some((entry) => entry.profileId === id));
        // Recorded before any retired version is written: the keys leave the store with the versions.
        await deps.expiries.savePart(part);
      }
      for (const entry of slice.expiring) {
        if (entry.written || !entry.live) continue;
        work.versions.push(expiredVersion(entry.live, expiryId, deps.partitions, deps.now()));
        work.superseded.set(entry.id, entry.live);
      }
      work.slices.push(slice);
      if (part.next + window.length < part.docs.length) work.more.push(expiryId);
    }
    return work;
  }

  /**
   * Takes documents back out of this fold's expiry: events reached them after `prepare` (redirected
   * to them from a document split or expired before). Their keys stay claimed; the plan counts them kept.
   */
  function withhold(work: ExpiryWork, ids: ReadonlySet<string>): void {
    work.versions = work.versions.filter((doc) => !ids.has(doc.profileId));
    for (const id of ids) work.superseded.delete(id);
    for (const slice of work.slices) slice.expiring = slice.expiring.filter((entry) => entry.written || !ids.has(entry.id));
  }

  /**
   * After the retired versions are written: each expired document's keys are recorded (their events
   * stay for the history window, and a privacy request finds them by these) unless `erased` says an
   * erasure took it, then the claims, cap markers and refusals go, and each plan moves on.
   */
  async function release(work: ExpiryWork, erased: (profileId: string, keys: string[]) => boolean): Promise<number> {
    let expired = 0;
    for (const { part, window, expiring } of work.slices) {
      const ids = new Set(expiring.map((entry) => entry.id));
      const claims = (part.releasing ?? []).filter((entry) => ids.has(entry.profileId));
      const keysOfDocument = new Map<string, string[]>();
      for (const { profileId, key } of claims) {
        const keys = keysOfDocument.get(profileId);
        if (keys) keys.push(key);
        else keysOfDocument.set(profileId, [key]);
      }
      const at = deps.now();
      // A document whose erasure ran meanwhile (it found the claims still there) is recorded nowhere.
      const records = [...keysOfDocument].filter(([id, keys]) => !erased(id, keys));
      await deps.expired.record(records.map(([id, keys]) => ({ _id: id, keys, expiryId: part.expiryId, at })));
      const released = await deps.identities.removeClaims(claims.map(({ key, profileId }) => ({ key, profileId })));
      await deps.caps.forget([...ids]);
      part.next += window;
      part.expired += ids.size;
      part.skipped += window - ids.size;
      part.identities += released;
      part.done = part.next >= part.docs.length;
      delete part.releasing;
      delete part.keyless;
      await deps.expiries.savePart(part);
      expired += ids.size;
    }
    return expired;
  }

  return { prepare, withhold, release };
}

/** An event that arrived at an expired document, bound for its successor. */
export interface LateArrival {
  successor: string;
  /** The retired documents it went through on its way (expired, or split). */
  passed: string[];
  eventId: string;
  sourceId: string;
  identities: Array<{ key: string; type: StoredIdentityType }>;
}

/**
 * Claims the identities of events that arrived at expired documents for their successors. A key a
 * drain claimed for a document the event went through (its owner was cached) moves to the successor; a
 * key someone else holds now joins the successor to them, as a lost claim at a drain does. Returns
 * the moves and links to make.
 */
export async function claimForSuccessors(identities: IdentityIndex, arrivals: LateArrival[], at: Date) {
  const wanted = new Map<string, { type: StoredIdentityType; arrival: LateArrival }>();
  for (const arrival of arrivals) for (const { key, type } of arrival.identities) if (!wanted.has(key)) wanted.set(key, { type, arrival });
  const outcome = await identities.claim(
    [...wanted].map(([key, { type, arrival }]) => ({ key, type, profileId: arrival.successor })),
    at,
  );
  const owners = await identities.reload(outcome.held);
  const moves: Array<{ key: string; from: string; to: string }> = [];
  const links: IdentityLinkDoc[] = [];
  for (const key of outcome.held) {
    const owner = owners.get(key);
    const { arrival } = wanted.get(key)!;
    if (!owner || owner === arrival.successor) continue;
    if (arrival.passed.includes(owner)) moves.push({ key, from: owner, to: arrival.successor });
    else {
      const profiles = [arrival.successor, owner].sort() as [string, string];
      links.push({ _id: linkId(profiles, key), profiles, via: key, eventId: arrival.eventId, sourceId: arrival.sourceId, createdAt: at });
    }
  }
  return { moves, links };
}
