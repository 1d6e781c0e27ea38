import fc from 'fast-check';
import type { StoredEvent } from '../../domain/event';
import { identityKey, type Identity } from '../../domain/identity';
import { linkId, resolveIdentities } from '../../domain/identityResolution';
import {
  evidenceOf,
  linksFromEvidence,
  planSplit,
  redirectLinkEnd,
  redirectLateEvent,
  relinkToParts,
  severedIn,
  splitDocument,
  UnionFind,
  type HeldEvent,
  type RetiredMarker,
  type Severance,
} from '../../domain/identitySplit';
import { DEFAULT_CONSENT_POLICY } from '../../domain/schemas';
import { applyEvent, combineProfiles, hasApplied, newProfile, nextVersion, type ProfileDoc, type ProfileLink } from '../../domain/profile';

/**
 * Links and unlinks in random order against a reference. A model of the platform built from the
 * domain functions it runs — drains resolve identities with routers' caches that never learn of
 * splits, partition writers fold and redirect late events, unlinks plan, split each document and
 * relink the parts — is compared after every step with (1) a reference union-find over every
 * event's identities minus the co-occurrences unlinks severed, and (2) each profile's content folded
 * from scratch from the events that belong to it.
 */

const PARTITIONS = 4;
const TYPES: Identity['type'][] = ['cookie_id', 'email_sha256', 'crm_id'];
const identityArb = fc.record({ type: fc.constantFrom(...TYPES), value: fc.constantFrom('1', '2', '3', '4') });
const eventArb = fc.record({
  identities: fc.uniqueArray(identityArb, { minLength: 1, maxLength: 3, selector: identityKey }),
  type: fc.constantFrom('page_view', 'purchase'),
  plan: fc.option(fc.constantFrom('free', 'pro'), { nil: undefined }),
});
const stepArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ link: fc.array(eventArb, { minLength: 1, maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ unlink: fc.array(fc.nat(), { minLength: 2, maxLength: 3 }) }) },
  // The writers catch up with the drains: until then routed events wait, and unlinks plan and split around them.
  { weight: 2, arbitrary: fc.constant({ fold: true as const }) },
);

class Platform {
  readonly claimed = new Map<string, string>();
  /** What drains remember: owners as first read or claimed, never updated by splits. */
  readonly routerCache = new Map<string, string>();
  readonly docs = new Map<string, ProfileDoc>();
  readonly history = new Map<string, HeldEvent[]>();
  readonly links = new Map<string, ProfileLink>();
  readonly severances: Severance[] = [];
  /** Routed, not folded yet. */
  pending: HeldEvent[] = [];
  private unlinks = 0;

  route(events: StoredEvent[]): void {
    const known = new Map<string, string>();
    for (const key of events.flatMap((event) => event.identities.map(identityKey))) {
      const owner = this.routerCache.get(key) ?? this.claimed.get(key);
      if (owner) known.set(key, owner);
    }
    const resolution = resolveIdentities(events, known, (event, key) => (key === undefined ? `p${event.id}` : `p${event.id}_${key}`));
    for (const claim of resolution.claims) {
      this.claimed.set(claim.key, claim.profileId);
      this.routerCache.set(claim.key, claim.profileId);
    }
    for (const link of resolution.links) this.links.set(linkId(link.profiles, link.via), { ...link, sourceId: 'src', createdAt: new Date(0) });
    events.forEach((event, index) => this.pending.push({ ...event, profileId: resolution.targets[index] as string, sourceId: 'src', party: 'first', seq: Number(event.id.slice(1)) }));
  }

  /** Routed events not folded yet that are on their way to one of `ids`, as it will hold them (store/documentEvents). */
  waitingFor(ids: ReadonlySet<string>): HeldEvent[] {
    // Keys the markers would learn from the events before: on copies.
    const markers = new Map<string, RetiredMarker>();
    const markerOf = (id: string) => {
      const retired = this.docs.get(id)?.retired;
      if (retired && !markers.has(id)) markers.set(id, { ...retired, keys: { ...retired.keys } });
      return markers.get(id);
    };
    return this.pending.flatMap((routed) => {
      let event = routed;
      let at = routed.profileId;
      for (let marker = markerOf(at); marker && !ids.has(at); marker = markerOf(at)) {
        const redirected = redirectLateEvent(marker, event, severedIn(event.id, this.severances));
        Object.assign(marker.keys, redirected.learned);
        if (redirected.identities.length < event.identities.length) event = { ...event, identities: redirected.identities, evidence: evidenceOf(routed) };
        at = redirected.target;
      }
      return ids.has(at) ? [{ ...event, profileId: at }] : [];
    });
  }

  foldPending(): void {
    for (const event of this.pending.splice(0)) this.fold(event);
  }

  /** A partition writer folding one event: a split document sends it on to its part, with the identities it takes there. */
  private fold(routed: HeldEvent): void {
    let target = routed.profileId;
    let event = routed;
    for (let marker = this.docs.get(target)?.retired; marker; marker = this.docs.get(target)?.retired) {
      const from = target;
      const redirected = redirectLateEvent(marker, event, severedIn(event.id, this.severances));
      if (redirected.identities.length < event.identities.length) event = { ...event, identities: redirected.identities, evidence: evidenceOf(routed) };
      target = redirected.target;
      if (Object.keys(redirected.learned).length > 0) {
        const next = nextVersion(this.docs.get(from) as ProfileDoc);
        Object.assign((next.retired as RetiredMarker).keys, redirected.learned);
        this.docs.set(from, next);
      }
      for (const { part, via } of redirected.joins) {
        const profiles = [target, part].sort() as [string, string];
        this.links.set(linkId(profiles, via), { profiles, via, eventId: event.id, sourceId: 'src', createdAt: new Date(0) });
      }
      for (const key of Object.keys(redirected.learned)) if (this.claimed.get(key) === from) this.claimed.set(key, target);
    }
    const current = this.docs.get(target);
    if (current && hasApplied(current.applied, 'src', event.seq)) return;
    const doc = current ? nextVersion(current) : newProfile(target, new Date(0), event.timestamp);
    applyEvent(doc, event, { sourceId: 'src', party: 'first', seq: event.seq });
    this.docs.set(target, doc);
    this.history.set(target, [...(this.history.get(target) ?? []), { ...event, profileId: target }]);
  }

  live(id: string, via: string): string {
    for (let marker = this.docs.get(id)?.retired; marker; marker = this.docs.get(id)?.retired) id = redirectLinkEnd(marker, via);
    return id;
  }

  component(start: string): string[] {
    const seen = new Set([start]);
    const frontier = [start];
    while (frontier.length > 0) {
      const id = frontier.pop() as string;
      const names = [id, ...(this.docs.get(id)?.ancestors ?? [])];
      for (const link of this.links.values()) {
        // A link to an ancestor counts when its end there leads to this document.
        if (!link.profiles.some((end) => names.includes(end) && this.live(end, link.via) === id)) continue;
        for (const end of link.profiles) {
          const other = this.live(end, link.via);
          if (!seen.has(other)) {
            seen.add(other);
            frontier.push(other);
          }
        }
      }
    }
    // Documents not written yet (their events not folded) are in it too.
    return [...seen].filter((id) => !this.docs.get(id)?.retired).sort();
  }

  ownerOf(key: string): string | undefined {
    const owner = this.claimed.get(key);
    return owner && this.live(owner, key);
  }

  /** An unlink of 2–3 identities: every pair among them is severed. */
  unlink(unlinked: string[]): void {
    const start = this.ownerOf(unlinked[0]);
    if (!start || new Set(unlinked).size < unlinked.length) return;
    const component = this.component(start);
    if (!unlinked.every((key) => component.includes(this.ownerOf(key) as string))) return;
    // Documents not written yet hold no events and are not split.
    const ids = component.filter((id) => this.docs.has(id));
    const unlinkId = `ul${++this.unlinks}`;
    // Routed events not folded yet count too, as the plan reads them.
    const all = [...ids.flatMap((id) => this.history.get(id) ?? []), ...this.waitingFor(new Set(ids))];
    for (let i = 0; i < unlinked.length; i++) {
      for (let j = i + 1; j < unlinked.length; j++) {
        const keys = [unlinked[i], unlinked[j]].sort() as [string, string];
        const eventIds = [...new Set(all.filter((event) => keys.every((key) => evidenceOf(event).some((identity) => identityKey(identity) === key))).map((event) => event.id))];
        if (eventIds.length > 0) this.severances.push({ keys, eventIds });
      }
    }
    const docIdentities = new Map(ids.map((id) => [id, (this.docs.get(id) as ProfileDoc).identities.map(identityKey)]));
    // As the store is asked: the severances touching a key the events show (evidence included) or the documents hold.
    const shown = new Set([...all.flatMap((event) => evidenceOf(event).map(identityKey)), ...[...docIdentities.values()].flat()]);
    const plan = planSplit(all, docIdentities, this.severances.filter((severance) => severance.keys.some((key) => shown.has(key))));
    if (plan.sides < 2) return;
    const plannedLinks = new Set([...this.links].filter(([, link]) => link.profiles.some((end) => ids.includes(end))).map(([id]) => id));

    // Each partition's writer splits its documents.
    const markers = new Map<string, RetiredMarker>();
    for (const id of ids) {
      const doc = this.docs.get(id) as ProfileDoc;
      const held = (this.history.get(id) ?? []).filter((event) => hasApplied(doc.applied, event.sourceId, event.seq));
      const waiting = this.waitingFor(new Set([id]));
      const split = splitDocument(doc, held, plan, unlinkId, PARTITIONS, new Date(0), { policyOf: () => DEFAULT_CONSENT_POLICY, optedOut: false }, waiting);
      for (const part of split.parts) this.docs.set(part.profileId, part);
      for (const [part, moved] of split.moved) this.history.set(part, moved);
      this.docs.set(id, split.retired);
      markers.set(id, split.retired.retired as RetiredMarker);
    }
    // Relink: identities move to their parts, links come from the parts' evidence, old ones go.
    const partOnSide = (side: number) => [...markers.keys()].sort().map((id) => markers.get(id)!.parts[String(side)]).find((part) => part !== undefined);
    for (const [key, owner] of this.claimed) {
      const marker = markers.get(owner);
      if (marker) this.claimed.set(key, Object.hasOwn(marker.keys, key) ? redirectLinkEnd(marker, key) : (marker.parts[String(plan.sideOf[key])] ?? partOnSide(plan.sideOf[key]) ?? marker.fallback));
    }
    const parts = [...markers.values()].flatMap((marker) => Object.values(marker.parts));
    // Events still waiting for their writer show their links as they will be held once redirected.
    const late = this.waitingFor(new Set(markers.keys())).map((event) => {
      const placed = redirectLateEvent(markers.get(event.profileId)!, event, severedIn(event.id, this.severances));
      return { ...event, profileId: placed.target, identities: placed.identities, evidence: evidenceOf(event) };
    });
    const fresh = linksFromEvidence([...parts.flatMap((part) => this.history.get(part) ?? []), ...late], (key) => this.claimed.get(key), (key) => plan.sideOf[key], new Date(0));
    // Every link of a split document is replaced: between split documents by the evidence, else moved to the parts through an identity they know.
    for (const [id, link] of [...this.links]) {
      const ends = link.profiles.filter((end) => markers.has(end));
      if (ends.length === 0) continue;
      this.links.delete(id);
      if (plannedLinks.has(id) && ends.length === 2) continue;
      if (!ends.every((end) => Object.hasOwn(markers.get(end)!.keys, link.via))) continue;
      const moved = relinkToParts(link, markers);
      if (moved) this.links.set(moved._id, moved);
    }
    for (const link of fresh) this.links.set(link._id, link);
  }
}

const comparable = (view: ReturnType<typeof combineProfiles>) => ({
  identities: view.identities.map(({ type, value }) => `${type}:${value}`),
  traits: view.traits,
  counters: Object.fromEntries(Object.entries(view.counters).map(([type, counter]) => [type, { count: counter.count, days: counter.days }])),
});

describe('the identity graph under links and unlinks, against a reference', () => {
  it('forms the components a reference union-find gives, and each profile equals a fold of its own events', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 12 }).map((steps) => [...steps, { fold: true as const }]), (steps) => {
        const platform = new Platform();
        const events: StoredEvent[] = [];
        const severed = new Set<string>();
        for (const step of steps) {
          if ('fold' in step) platform.foldPending();
          else if ('link' in step) {
            const batch = step.link.map((raw) => ({
              id: `e${events.length + step.link.indexOf(raw)}`,
              type: raw.type,
              timestamp: new Date(Date.UTC(2026, 0, 1) + (events.length + step.link.indexOf(raw)) * 3_600_000),
              receivedAt: new Date(Date.UTC(2026, 6, 1)),
              identities: raw.identities,
              ...(raw.plan && { traits: { plan: raw.plan } }),
            }));
            events.push(...batch);
            platform.route(batch);
          } else {
            const keys = [...new Set(events.flatMap((event) => event.identities.map(identityKey)))].sort();
            if (keys.length < 2) continue;
            platform.unlink(step.unlink.map((n) => keys[n % keys.length]));
            // The reference severs the same co-occurrences: those of events seen so far that the unlink reached.
            for (const severance of platform.severances) for (const id of severance.eventIds) severed.add(`${id}|${severance.keys.join('|')}`);
          }

          // Checked once every routed event is folded: until then a drain that did not know of a split has
          // not linked what a waiting event shows (its writer does, redirecting it).
          if (platform.pending.length > 0) continue;

          // (1) Components.
          const reference = new UnionFind();
          for (const event of events) {
            const eventKeys = event.identities.map(identityKey);
            eventKeys.forEach((key, i) => {
              reference.find(key);
              for (const other of eventKeys.slice(i + 1)) if (!severed.has(`${event.id}|${[key, other].sort().join('|')}`)) reference.union(key, other);
            });
          }
          const keys = [...new Set(events.flatMap((event) => event.identities.map(identityKey)))];
          const componentOf = new Map(keys.map((key) => [key, platform.component(platform.ownerOf(key) as string).join(',')]));
          const groups = (label: (key: string) => string) => {
            const byLabel = new Map<string, string[]>();
            for (const key of keys.sort()) byLabel.set(label(key), [...(byLabel.get(label(key)) ?? []), key]);
            return [...byLabel.values()].map((group) => group.join(' ')).sort();
          };
          expect(groups((key) => componentOf.get(key) as string)).toEqual(groups((key) => reference.find(key)));

          // (2) Contents: an event belongs to its highest-priority identity's component, with that component's identities only.
          for (const component of new Set(componentOf.values())) {
            const docs = component.split(',').map((id) => platform.docs.get(id) as ProfileDoc);
            const own = keys.filter((key) => componentOf.get(key) === component);
            const mine = events.filter((event) => {
              const sorted = event.identities.map(identityKey).sort((x, y) => ['crm_id', 'email_sha256', 'cookie_id'].indexOf(x.split(':')[0]) - ['crm_id', 'email_sha256', 'cookie_id'].indexOf(y.split(':')[0]) || (x < y ? -1 : 1));
              return own.includes(sorted[0]);
            });
            const rebuilt = newProfile('rebuilt', new Date(0), new Date(0));
            for (const event of mine) applyEvent(rebuilt, { ...event, identities: [] }, { sourceId: 'src', party: 'first', seq: 0 });
            // Every identity of the component is on it, even one whose only event went to another side.
            expect(comparable(combineProfiles(docs))).toEqual({ ...comparable(combineProfiles([rebuilt])), identities: [...own].sort() });
          }
        }
      }),
      { numRuns: 1500 },
    );
  });
});
