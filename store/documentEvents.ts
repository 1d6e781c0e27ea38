import { identityKey } from '../domain/identity';
import { evidenceOf, redirectLateEvent, severedIn, type HeldEvent, type Severance } from '../domain/identitySplit';
import { hasApplied, type ProfileDoc } from '../domain/profile';
import type { Store } from './db';
import { UnlinkStore } from './identityUnlinks';
import { ProfileEventLog } from './profileEvents';
import { ProfileStore, type StoredVersion } from './profiles';

/** How many retired documents in a row an event is followed through: each unlink or expiry adds at most one. */
const MAX_HOPS = 64;

export type EventHolder = Pick<ProfileDoc, 'profileId' | 'applied' | 'ancestors'>;

/** A document's events: those it holds, and those on their way to it. */
export interface DocumentEventSets {
  /** Routed or moved to it and folded (covered by its retry guard). */
  held: HeldEvent[];
  /**
   * Not folded yet: routed to it, or to a document it descends from (by a drain that did not know of
   * the split or expiry) whose writer will send them on to it — as it will hold them, with only the
   * identities they take there (redirectLateEvent). An unlink counts them as the document's own, in
   * its plan, split and relink: else it plans without their co-occurrences and loses their links.
   */
  waiting: HeldEvent[];
}

/** The events of profile documents, held and waiting (see DocumentEventSets). */
export class DocumentEvents {
  private readonly events: ProfileEventLog;
  private readonly profiles: ProfileStore;
  private readonly unlinks: UnlinkStore;

  constructor(store: Store) {
    this.events = new ProfileEventLog(store);
    // No cache: retired documents learn keys, and only the store knows their newest markers.
    this.profiles = new ProfileStore(store, 0);
    this.unlinks = new UnlinkStore(store);
  }

  /**
   * Reads every routed and moved event of the documents and of their ancestors (one indexed read
   * each), each ancestor's version, and — when any event waits at an ancestor — the severances of
   * those events' identities (one indexed read per identity).
   */
  async read(docs: ReadonlyArray<EventHolder>): Promise<Map<string, DocumentEventSets>> {
    const byId = new Map(docs.map((doc) => [doc.profileId, doc]));
    const sets = new Map<string, DocumentEventSets>(docs.map((doc) => [doc.profileId, { held: [], waiting: [] }]));
    const ancestors = [...new Set(docs.flatMap((doc) => doc.ancestors ?? []))].filter((id) => !byId.has(id));
    const versions = new Map<string, StoredVersion | null>();
    const versionOf = async (id: string) => {
      if (!versions.has(id)) versions.set(id, await this.profiles.get(id));
      return versions.get(id) ?? null;
    };
    // An ancestor's own events, folded before it was retired, are history its parts hold already.
    const routed: HeldEvent[] = [];
    for (const event of await this.events.eventsOf([...byId.keys(), ...ancestors])) {
      const ancestor = byId.has(event.profileId) ? null : await versionOf(event.profileId);
      if (!ancestor || !hasApplied(ancestor.applied, event.sourceId, event.seq)) routed.push(event);
    }
    let severances: Severance[] | undefined;
    // In about the order the writers redirect them: an event that teaches a marker a key (`learned`)
    // changes where a later one carrying that key goes.
    for (const event of routed.reverse().sort((a, b) => a.seq - b.seq)) {
      let at = event.profileId;
      let placed: HeldEvent = event;
      for (let hop = 0; !byId.has(at) && hop < MAX_HOPS; hop++) {
        const marker = (await versionOf(at))?.retired;
        if (!marker) break;
        if (marker.expired) {
          at = marker.fallback;
          continue;
        }
        severances ??= await this.unlinks.severancesOf([...new Set(routed.filter((other) => !byId.has(other.profileId)).flatMap((other) => other.identities.map(identityKey)))]);
        const redirected = redirectLateEvent(marker, placed, severedIn(event.id, severances));
        // Learned on this read's copy of the marker only: the writer records it when it redirects the event.
        Object.assign(marker.keys, redirected.learned);
        at = redirected.target;
        if (redirected.identities.length < placed.identities.length) placed = { ...placed, identities: redirected.identities, evidence: evidenceOf(event) };
      }
      const doc = byId.get(at);
      if (!doc) continue;
      const routedHere = at === event.profileId;
      if (hasApplied(doc.applied, event.sourceId, event.seq)) {
        // What a document holds was routed or moved to it; an ancestor's copy is its history, already moved.
        if (routedHere) sets.get(at)!.held.push(event);
        continue;
      }
      const waiting = sets.get(at)!.waiting;
      if (!waiting.some((other) => other.id === event.id && other.sourceId === event.sourceId)) waiting.push({ ...placed, profileId: at });
    }
    return sets;
  }
}
