import type { StoredConsent } from './consent';
import type { StoredEvent } from './event';
import { decodeFieldName, decodeKeys, encodeFieldName } from './fieldNames';
import { identityKey, type Identity } from './identity';
import type { ProfileView } from './schemas';

export interface EventCounter {
  count: number;
  firstSeen: Date;
  lastSeen: Date;
}

/**
 * One version of an anonymous profile. Versions are never updated, only added: `_id` is
 * `<profileId>@<version>` and the newest is the profile (see store/profiles). Trait names and event
 * types are encoded keys (see fieldNames).
 */
export interface ProfileDoc {
  _id: string;
  profileId: string;
  version: number;
  identities: Identity[];
  traits: Record<string, unknown>;
  /** When each trait was last set, so a late-arriving older event does not overwrite a newer value. */
  traitsAt: Record<string, Date>;
  counters: Record<string, EventCounter>;
  consent: (StoredConsent & { sourceId: string; at: Date }) | null;
  sources: string[];
  linkedProfiles: string[];
  /** Per source, the last log chunk whose events are already in this document: the retry guard. */
  applied: Record<string, number>;
  firstSeen: Date;
  lastSeen: Date;
  createdAt: Date;
  updatedAt: Date;
}

/** The fields of a log event that profile application reads. */
export type ProfileEvent = Pick<StoredEvent, 'id' | 'type' | 'timestamp' | 'identities' | 'traits' | 'consent'>;

/** `seenAt` is the time of the event that creates the profile; `now` is when it is written. */
export function newProfile(id: string, now: Date, seenAt: Date): ProfileDoc {
  return {
    _id: profileVersionId(id, 0),
    profileId: id,
    version: 0,
    identities: [],
    traits: {},
    traitsAt: {},
    counters: {},
    consent: null,
    sources: [],
    linkedProfiles: [],
    applied: {},
    firstSeen: seenAt,
    lastSeen: seenAt,
    createdAt: now,
    updatedAt: now,
  };
}

/** Whether a profile's stored retry guard (`applied`) already covers this chunk of this source. */
export function hasApplied(applied: ProfileDoc['applied'], sourceId: string, chunkSeq: number): boolean {
  const last = applied[sourceId];
  return last !== undefined && chunkSeq <= last;
}

export function addIdentity(profile: ProfileDoc, identity: Identity): void {
  const key = identityKey(identity);
  if (!profile.identities.some((existing) => identityKey(existing) === key)) profile.identities.push(identity);
}

export function profileVersionId(profileId: string, version: number): string {
  return `${profileId}@${version.toString().padStart(8, '0')}`;
}

/** The next version of a profile: the same content under the next `_id`, to be changed and inserted. */
export function nextVersion(profile: ProfileDoc): ProfileDoc {
  const next = structuredClone(profile);
  next.version = profile.version + 1;
  next._id = profileVersionId(profile.profileId, next.version);
  return next;
}

export function addLinkedProfile(profile: ProfileDoc, otherId: string): void {
  if (otherId !== profile.profileId && !profile.linkedProfiles.includes(otherId)) profile.linkedProfiles.push(otherId);
}

/** Folds one event into a profile: identities, counters with first/last seen, traits, consent, sources. */
export function applyEvent(profile: ProfileDoc, event: ProfileEvent, sourceId: string, chunkSeq: number): void {
  for (const identity of event.identities) addIdentity(profile, identity);

  const counterKey = encodeFieldName(event.type);
  // Own properties only: a name like `constructor` must not find Object's built-ins.
  const counter = Object.hasOwn(profile.counters, counterKey) ? profile.counters[counterKey] : undefined;
  if (counter) {
    counter.count += 1;
    if (event.timestamp < counter.firstSeen) counter.firstSeen = event.timestamp;
    if (event.timestamp > counter.lastSeen) counter.lastSeen = event.timestamp;
  } else {
    setOwn(profile.counters, counterKey, { count: 1, firstSeen: event.timestamp, lastSeen: event.timestamp });
  }

  for (const [name, value] of Object.entries(event.traits ?? {})) {
    const setAt = Object.hasOwn(profile.traitsAt, name) ? profile.traitsAt[name] : undefined;
    if (!setAt || event.timestamp >= setAt) {
      setOwn(profile.traits, name, value);
      setOwn(profile.traitsAt, name, event.timestamp);
    }
  }

  if (event.consent && (!profile.consent || event.timestamp >= profile.consent.at)) {
    profile.consent = { ...event.consent, sourceId, at: event.timestamp };
  }

  if (!profile.sources.includes(sourceId)) profile.sources.push(sourceId);
  if (event.timestamp < profile.firstSeen) profile.firstSeen = event.timestamp;
  if (event.timestamp > profile.lastSeen) profile.lastSeen = event.timestamp;
  profile.applied[sourceId] = Math.max(profile.applied[sourceId] ?? -1, chunkSeq);
}

/** Assigns a plain own property even for names such as `__proto__`. */
function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, { value, writable: true, enumerable: true, configurable: true });
}

export function toProfileView(doc: ProfileDoc): ProfileView {
  const counters: ProfileView['counters'] = Object.fromEntries(
    Object.entries(doc.counters).map(([key, counter]) => [
      decodeFieldName(key),
      { count: counter.count, firstSeen: counter.firstSeen.toISOString(), lastSeen: counter.lastSeen.toISOString() },
    ]),
  );
  return {
    id: doc.profileId,
    identities: doc.identities,
    traits: decodeKeys(doc.traits),
    counters,
    consent: doc.consent,
    sources: doc.sources,
    linkedProfiles: doc.linkedProfiles,
    firstSeen: doc.firstSeen.toISOString(),
    lastSeen: doc.lastSeen.toISOString(),
    updatedAt: doc.updatedAt.toISOString(),
  };
}
