import { redirectLinkEnd } from '../domain/identitySplit';
import type { Store } from './db';
import { IdentityIndex, type IdentityLinkDoc } from './identities';
import { ProfileStore, type StoredVersion } from './profiles';

/** How many split documents in a row a lookup follows: each unlink adds at most one. */
const MAX_HOPS = 64;

export interface Component {
  /** The live documents of the profile (split documents left out: their parts stand in). */
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

  /** The live document standing for `profileId`, reached through identity `via`; null when none is written. */
  async live(profileId: string, via: string): Promise<StoredVersion | null> {
    let id = profileId;
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      const doc = await this.profiles.get(id);
      if (!doc?.retired) return doc;
      id = redirectLinkEnd(doc.retired, via);
    }
    throw new Error(`profile ${profileId} is split more than ${MAX_HOPS} times over`);
  }

  /** The live document holding an identity, or null. */
  async ownerOf(key: string): Promise<StoredVersion | null> {
    const owner = (await this.identities.reload([key])).get(key);
    return owner ? this.live(owner, key) : null;
  }

  /**
   * A document's links, and for a part of a split document also the links made to the documents it
   * descends from (by drains that did not know of the split yet) whose end leads to it.
   */
  private async linksOf(doc: StoredVersion | string): Promise<IdentityLinkDoc[]> {
    if (typeof doc === 'string') return this.identities.linksOf(doc);
    const own = await this.identities.linksOf(doc.profileId);
    const inherited = await Promise.all(
      (doc.ancestors ?? []).map(async (ancestor) => {
        const links = await this.identities.linksOf(ancestor);
        const leads = await Promise.all(links.map(async (link) => (await this.live(ancestor, link.via))?.profileId === doc.profileId));
        return links.filter((_, index) => leads[index]);
      }),
    );
    return [...own, ...inherited.flat()];
  }

  /**
   * Every live document reachable from `start` over links, and the links walked. One indexed read per
   * document. A linked document not written yet (its events are still on their way to its writer) is
   * walked through all the same.
   */
  async component(start: StoredVersion): Promise<Component> {
    const docs = new Map([[start.profileId, start]]);
    const visited = new Set([start.profileId]);
    const links = new Map<string, IdentityLinkDoc>();
    let frontier = [start.profileId];
    while (frontier.length > 0) {
      const found = (await Promise.all(frontier.map((id) => this.linksOf(docs.get(id) ?? id)))).flat();
      frontier = [];
      const ends = found.flatMap((link) => {
        links.set(link._id, link);
        return link.profiles.filter((id) => !visited.has(id)).map((id) => ({ id, via: link.via }));
      });
      for (const end of ends) visited.add(end.id);
      const reached = await Promise.all(ends.map(async (end) => ({ end, doc: await this.live(end.id, end.via) })));
      for (const { end, doc } of reached) {
        const id = doc?.profileId ?? end.id;
        if (doc && !docs.has(id)) docs.set(id, doc);
        if (id === end.id || !visited.has(id)) {
          visited.add(id);
          if (!frontier.includes(id)) frontier.push(id);
        }
      }
    }
    return { docs: [...docs.values()].sort((a, b) => (a.profileId < b.profileId ? -1 : 1)), links: [...links.values()] };
  }
}
