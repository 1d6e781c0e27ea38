import fc from 'fast-check';
import type { StoredEvent } from '../../domain/event';
import { identityKey, type Identity } from '../../domain/identity';
import { resolveIdentities, type LinkSpec } from '../../domain/identityResolution';
import { applyEvent, combineProfiles, newProfile, type ProfileDoc } from '../../domain/profile';

/**
 * The identity graph against a reference: events over a small universe of identities are resolved
 * in batches — some pairs of batches concurrently, as two source drains would, with the store's
 * first-claim-wins rule — and folded into profile documents. Then (1) the profiles (documents joined
 * by links) are exactly the connected components a reference union-find over co-occurring
 * identities gives, with every identity owned by one document, and (2) each profile's combined
 * content equals folding all of its events into a single document from scratch.
 */

class UnionFind {
  private readonly parent = new Map<string, string>();
  find(x: string): string {
    if (!this.parent.has(x)) this.parent.set(x, x);
    let root = x;
    while (this.parent.get(root) !== root) root = this.parent.get(root) as string;
    this.parent.set(x, root);
    return root;
  }
  union(a: string, b: string): void {
    this.parent.set(this.find(a), this.find(b));
  }
}

const TYPES: Identity['type'][] = ['cookie_id', 'email_sha256', 'crm_id', 'maid'];
const identityArb = fc.record({ type: fc.constantFrom(...TYPES), value: fc.constantFrom('1', '2', '3', '4', '5', '6') });
const eventArb = fc.record({
  identities: fc.uniqueArray(identityArb, { minLength: 1, maxLength: 3, selector: identityKey }),
  type: fc.constantFrom('page_view', 'purchase'),
  day: fc.integer({ min: 0, max: 120 }),
  plan: fc.option(fc.constantFrom('free', 'pro', 'team'), { nil: undefined }),
});

function toEvents(raw: Array<{ identities: Identity[]; type: string; day: number; plan?: string }>): StoredEvent[] {
  return raw.map((r, n) => ({
    id: `e${n}`,
    type: r.type,
    timestamp: new Date(Date.UTC(2026, 0, 1) + r.day * 86_400_000 + n * 1000),
    receivedAt: new Date(Date.UTC(2026, 6, 1)),
    identities: r.identities,
    ...(r.plan && { traits: { plan: r.plan } }),
  }));
}

/** Resolves batches against a shared claim table; `concurrent[i]` runs batch i beside batch i+1. */
function resolveAll(batches: StoredEvent[][], concurrent: boolean[]) {
  const claimed = new Map<string, string>();
  const targets = new Map<string, string>();
  const links: LinkSpec[] = [];
  // As in the drains: a refused identity's own document differs from the event's.
  const newId = (event: StoredEvent, key?: string) => (key === undefined ? `p_${event.id}` : `p_${event.id}_${key}`);
  const claimAll = (resolution: ReturnType<typeof resolveIdentities>) => {
    for (const claim of resolution.claims) if (!claimed.has(claim.key)) claimed.set(claim.key, claim.profileId);
  };
  const finish = (events: StoredEvent[]) => {
    const final = resolveIdentities(events, new Map(claimed), newId);
    expect(final.claims).toEqual([]); // every key is known once the claims are settled
    events.forEach((event, index) => targets.set(event.id, final.targets[index] as string));
    links.push(...final.links);
  };
  for (let i = 0; i < batches.length; i++) {
    if (concurrent[i] && i + 1 < batches.length) {
      // Both resolve against the same snapshot, then claim: the second loses any key the first took.
      const a = resolveIdentities(batches[i], new Map(claimed), newId);
      const b = resolveIdentities(batches[i + 1], new Map(claimed), newId);
      claimAll(a);
      claimAll(b);
      finish(batches[i]);
      finish(batches[i + 1]);
      i++;
    } else {
      claimAll(resolveIdentities(batches[i], new Map(claimed), newId));
      finish(batches[i]);
    }
  }
  return { claimed, targets, links };
}

function fold(id: string, events: StoredEvent[]): ProfileDoc {
  const doc = newProfile(id, new Date(0), events[0].timestamp);
  for (const event of events) applyEvent(doc, event, { sourceId: 'src', party: 'first', seq: 0 });
  return doc;
}

const comparable = (view: ReturnType<typeof combineProfiles>) => ({
  identities: view.identities.map(({ type, value, firstSeen, lastSeen }) => ({ type, value, firstSeen, lastSeen })),
  traits: view.traits,
  counters: view.counters,
  firstSeen: view.firstSeen,
  lastSeen: view.lastSeen,
});

describe('the identity graph, against a reference union-find', () => {
  it('forms the same components and the same profile contents as a rebuild from scratch', () => {
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: 1, maxLength: 40 }), fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 20 }), fc.array(fc.boolean(), { maxLength: 20 }), (raw, sizes, concurrent) => {
        const events = toEvents(raw);
        const batches: StoredEvent[][] = [];
        for (let start = 0, k = 0; start < events.length; k++) {
          const size = sizes[k % sizes.length];
          batches.push(events.slice(start, start + size));
          start += size;
        }
        const { claimed, targets, links } = resolveAll(batches, concurrent);

        // Reference components over identities.
        const reference = new UnionFind();
        for (const event of events) for (const identity of event.identities) reference.union(identityKey(event.identities[0]), identityKey(identity));
        // Components over documents, from the links.
        const graph = new UnionFind();
        for (const doc of new Set(targets.values())) graph.find(doc);
        for (const link of links) graph.union(link.profiles[0], link.profiles[1]);

        // Every identity is owned by exactly one document, and documents share a profile exactly
        // when their identities share a reference component.
        const keys = [...new Set(events.flatMap((event) => event.identities.map(identityKey)))];
        for (const a of keys) for (const b of keys) expect(graph.find(claimed.get(a) as string) === graph.find(claimed.get(b) as string)).toBe(reference.find(a) === reference.find(b));

        // Each profile's combined content equals one fold of all its events.
        const byDoc = new Map<string, StoredEvent[]>();
        for (const event of events) byDoc.set(targets.get(event.id) as string, [...(byDoc.get(targets.get(event.id) as string) ?? []), event]);
        const byProfile = new Map<string, string[]>();
        for (const doc of byDoc.keys()) byProfile.set(graph.find(doc), [...(byProfile.get(graph.find(doc)) ?? []), doc]);
        for (const docs of byProfile.values()) {
          const combined = combineProfiles(docs.map((doc) => fold(doc, byDoc.get(doc) as StoredEvent[])));
          const all = docs.flatMap((doc) => byDoc.get(doc) as StoredEvent[]);
          expect(comparable(combined)).toEqual(comparable(combineProfiles([fold('rebuild', all)])));
        }
      }),
      { numRuns: 300 },
    );
  });
});
