import { redirectLinkEnd } from '../domain/identitySplit';
import type { Store } from './db';
import { IdentityIndex, type IdentityLinkDoc } from './identities';
import { ProfileStore, type StoredVersion } from './profiles';

/** How many split documents in a row a lookup follows: each unlink adds at most one. */
const MAX_HOPS = 64;

export interface Component {
  /** Every live document id of the profile, written or not yet. */
  ids: string[];
  /** The written live documents of the profile (split documents left out: their parts stand in). */
  docs: StoredVersion[];
  links: IdentityLinkDoc[];
}

/**
 * Walks the identity graph over live profile documents. A document split by an unlink is empty and
 * points at its parts; a walk that meets one (through an identity that still names it, or a link
 * made before the split was known) goes on to the part on the side of the identity it came through.
 */
export class ProfileGraph {
  constructor(
    readonly identities: IdentityIndex,
    readonly profiles: ProfileStore,
  ) {}

  static open(store: Store): ProfileGraph {
    // No caches: readers are not the writers, so only the store knows the newest versions.
    return new ProfileGraph(new IdentityIndex(store, 0), new ProfileStore(store, 0));
  }

  /**
   * The live document standing for `profileId`, reached through identity `via`: its id, and its
   * newest version — null when it is not written yet (its events are still on their way to its
   * writer, or it only owns identities a concurrent drain claimed first for it).
   */
  async live(profileId: string, via: string): Promise<{ id: string; doc: StoredVersion | null }> {
    let id = profileId;
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      const doc = await this.profiles.get(id);
      if (!doc?.retired) return { id, doc };
      id = redirectLinkEnd(doc.retired, via);
    }
    throw new Error(`profile ${profileId} is split more than ${MAX_HOPS} times over`);
  }

  /** The first of `keys` a document holds, with that document (see identityKeysOf: the keys one identity may be stored under). */
  async ownerOfFirst(keys: readonly string[]): Promise<{ key: string; owner: { id: string; doc: StoredVersion | null } } | null> {
    for (const key of keys) {
      const owner = await this.ownerOf(key);
      if (owner) return { key, owner };
    }
    return null;
  }

  /** The live document holding an identity (see `live`), or null when no document holds it. */
  async ownerOf(key: string): Promise<{ id: string; doc: StoredVersion | null } | null> {
    const owner = (await this.identities.reload([key])).get(key);
    return owner ? this.live(owner, key) : null;
  }

  /**
   * A document's links, and for a part of a split document also the links made to the documents it
   * descends from (by drains that did not know of the split yet) whose end leads to it.
   */
  private async linksOf(id: string, doc: StoredVersion | undefined, read?: IdentityLinkDoc[]): Promise<IdentityLinkDoc[]> {
    const own = read ?? (await this.identities.linksOf(id));
    const inherited = await Promise.all(
      (doc?.ancestors ?? []).map(async (ancestor) => {
        const links = await this.identities.linksOf(ancestor);
        const leads = await Promise.all(links.map(async (link) => (await this.live(ancestor, link.via)).id === id));
        return links.filter((_, index) => leads[index]);
      }),
    );
    return [...own, ...inherited.flat()];
  }

  /**
   * Every live document reachable from the live document `start` over links, and the links walked.
   * One indexed read per document (a split one: per identity it is reached through). A document not
   * written yet is walked through all the same.
   */
  async component(start: string): Promise<Component> {
    const docs = new Map<string, StoredVersion>();
    // The start's document and its links are read together: a profile read is these two reads when nothing joins it.
    const [first, startLinks] = await Promise.all([this.profiles.get(start), this.identities.linksOf(start)]);
    if (first && !first.retired) docs.set(start, first);
    // A split document leads to the part of the identity a link reaches it through: each (end, identity)
    // pair is followed once, or the walk would depend on which link met it first.
    const seenEnds = new Set<string>();
    const endKey = (end: { id: string; via: string }) => `${end.id}\0${end.via}`;
    const live = new Set([start]);
    const links = new Map<string, IdentityLinkDoc>();
    let frontier = [start];
    while (frontier.length > 0) {
      const found = (await Promise.all(frontier.map((id) => this.linksOf(id, docs.get(id), id === start ? startLinks : undefined)))).flat();
      frontier = [];
      const ends: Array<{ id: string; via: string }> = [];
      for (const link of found) {
        links.set(link._id, link);
        for (const end of link.profiles.map((id) => ({ id, via: link.via }))) {
          if (live.has(end.id) || seenEnds.has(endKey(end))) continue;
          seenEnds.add(endKey(end));
          ends.push(end);
        }
      }
      // One read per end; a second identity leads elsewhere only from a split document.
      const byEnd = new Map<string, string[]>();
      for (const end of ends) byEnd.set(end.id, [...(byEnd.get(end.id) ?? []), end.via]);
      const reachedAll = await Promise.all(
        [...byEnd].map(async ([id, vias]) => {
          const first = await this.live(id, vias[0]);
          return first.id === id ? [first] : [first, ...(await Promise.all(vias.slice(1).map((via) => this.live(id, via))))];
        }),
      );
      for (const reached of reachedAll.flat()) {
        if (live.has(reached.id)) continue;
        live.add(reached.id);
        if (reached.doc) docs.set(reached.id, reached.doc);
        frontier.push(reached.id);
      }
    }
    return { ids: [...live].sort(), docs: [...docs.values()].sort((a, b) => (a.profileId < b.profileId ? -1 : 1)), links: [...links.values()] };
  }
}
