import { combineDocuments, type CombinedProfile } from '../domain/profile';
import type { SubjectNeeds } from '../domain/segmentRules';
import { forEachConcurrently, type Store } from '../store/db';
import { IdentityIndex } from '../store/identities';
import { ProfileGraph, type Component } from '../store/profileGraph';
import { decodeForSegments, ProfileStore, type SegmentFields, type StoredProfile } from '../store/profiles';
import { PrivacyMarks } from '../store/privacyMarks';
import { policiesOf } from '../store/sourcePolicies';
import { SourceStore } from '../store/sources';
import { heartbeat } from './heartbeat';

export interface PeoplePassStores {
  profiles: ProfileStore;
  graph: ProfileGraph;
  identities: IdentityIndex;
  marks: PrivacyMarks;
  sources: SourceStore;
}

/** What a pass reads, over a store: profile documents, the graph that joins them, and its links. */
export function peoplePassStores(store: Store): PeoplePassStores {
  return { profiles: new ProfileStore(store, 0), graph: ProfileGraph.open(store), identities: new IdentityIndex(store, 0), marks: new PrivacyMarks(store), sources: new SourceStore(store) };
}

/** What a pass does with each person; what it returns is kept per person until the pass ends. */
export interface PersonVisitor<T> {
  /**
   * The newest version seen so far of a document that is a whole person on its own (`fields` decoded
   * as `needs` asks). A newer version seen later is visited again and its result replaces this one.
   */
  document(stored: StoredProfile, fields: SegmentFields): T;
  /** A document visited as a whole person turned out split or joined to others: what was done for it is void. */
  dropped?(profileId: string): void;
  /** A person of several documents joined by links, combined (its id is the smallest document id), and the component read for it. */
  person(person: CombinedProfile, component: Component): T;
}

/**
 * Visits every person once, for batch work that reads all profiles (segment runs, audience reports).
 * Streams every profile document once (the store serves one cursor; ranges and sorts by `_id` would
 * each scan the table again) and visits the newest version of each. Documents joined to others by
 * links are set aside and visited as their whole person after the pass, each component read once.
 * Returns each person's result by person id.
 */
export async function passPeople<T>(
  stores: PeoplePassStores,
  needs: SubjectNeeds,
  visitor: PersonVisitor<T>,
  options: { skipOptedOut?: boolean; skipRefused?: boolean } = {},
): Promise<{ people: Map<string, T>; documentsScanned: number }> {
  // Models built from people (recommendations, lookalikes) leave out those who opted out of profiling,
  // and those whose consent refuses it under their sources' policies (consent and sources are read then).
  await stores.marks.refresh(true);
  const skipped = (subject: Parameters<PrivacyMarks['optedOut']>[0]) => options.skipOptedOut === true && stores.marks.optedOut(subject);
  const policies = options.skipRefused ? policiesOf(await stores.sources.list()) : null;
  const refused = (subject: SegmentFields | CombinedProfile) => policies?.refuses(subject) === true;
  if (policies) needs = { ...needs, consent: true };
  const linked = new Set<string>();
  for await (const link of stores.identities.links.find({}, { projection: { profiles: 1 } })) for (const id of link.profiles) linked.add(id);
  heartbeat({ phase: 'links', links: linked.size });

  const results = new Map<string, { version: number; kind: 'single' | 'linked' | 'retired' | 'skipped'; result: T | null }>();
  let documentsScanned = 0;
  await stores.profiles.scan((batch) => {
    for (const stored of batch) {
      const seen = results.get(stored.profileId);
      if (seen && seen.version >= stored.version) continue;
      const fields = decodeForSegments(stored, needs);
      if (fields.retired || fields.linked || fields.ancestors?.length || linked.has(stored.profileId)) {
        results.set(stored.profileId, { version: stored.version, kind: fields.retired ? 'retired' : 'linked', result: null });
        if (seen?.kind === 'single') visitor.dropped?.(stored.profileId);
      } else if (skipped({ profileId: stored.profileId }) || refused(fields)) {
        results.set(stored.profileId, { version: stored.version, kind: 'skipped', result: null });
        if (seen?.kind === 'single') visitor.dropped?.(stored.profileId);
      } else {
        results.set(stored.profileId, { version: stored.version, kind: 'single', result: visitor.document(stored, fields) });
      }
    }
    documentsScanned += batch.length;
    heartbeat({ phase: 'scan', documentsScanned });
  });

  const people = new Map<string, T>();
  const done = new Set<string>();
  const pending = [...results].filter(([, seen]) => seen.kind === 'linked').map(([id]) => id).sort();
  await forEachConcurrently(pending, 8, async (id) => {
    if (done.has(id)) return;
    const component = await stores.graph.component(id);
    for (const member of component.ids) done.add(member);
    if (component.docs.length === 0) return;
    const person = combineDocuments(component.docs);
    if (skipped({ profileIds: person.profileIds, ancestors: component.docs.flatMap((doc) => doc.ancestors ?? []) }) || refused(person)) return;
    people.set(person.id, visitor.person(person, component));
  });
  for (const [id, seen] of results) if (seen.kind === 'single' && !done.has(id)) people.set(id, seen.result as T);
  heartbeat({ phase: 'linked', profiles: people.size });
  return { people, documentsScanned };
}
