import { combineDocuments, type CombinedProfile, type ProfileDoc } from './profile';

/** Per segment: who entered and exited (counted in history), and who is stated in or out without being counted. */
export interface SegmentChange {
  entered: string[];
  exited: string[];
  /** States made when a link reshapes a profile: its earlier membership is unknown here, so the new one is stated whole. */
  statedIn?: string[];
  statedOut?: string[];
  /** The segment version the changes were evaluated with: a snapshot of another version ignores them. */
  version?: number;
}
export type ChangeSet = Record<string, SegmentChange>;

export interface FoldChangesInput {
  /** Every segment id: a stated membership names the segments a profile is out of too. */
  segments: string[];
  /** The segments a profile (one document, or documents combined) is a member of, at one time for the whole fold. */
  evaluate: (subject: ProfileDoc | CombinedProfile) => string[];
  /** The documents this fold writes, by id. */
  changed: Map<string, ProfileDoc>;
  /** A changed document's version before this fold, null when it is new. */
  previousOf: (profileId: string) => ProfileDoc | null;
  /** For documents linked to others: every live document of their profile (any version). Absent for a document alone. */
  components: Map<string, ProfileDoc[]>;
  /** Documents a link joined to another in this fold, changed or not: their profile took a new shape. */
  relinked: string[];
}

/**
 * The membership changes a partition fold makes — the real-time path of segmentation. A document
 * alone is its own profile: its segments before and after are compared. A linked document's profile
 * is its component combined (with this fold's versions of its documents), evaluated once per fold;
 * when a link is new in this fold, the profile's earlier membership is not known here (it was split
 * over several ids), so its membership is stated whole, and every other id of the profile is out.
 */
export function foldChanges(input: FoldChangesInput): ChangeSet {
  const changes: ChangeSet = {};
  const entry = (segment: string) => (changes[segment] ??= { entered: [], exited: [] });
  const note = (person: string, before: string[], after: string[]) => {
    for (const id of after) if (!before.includes(id)) entry(id).entered.push(person);
    for (const id of before) if (!after.includes(id)) entry(id).exited.push(person);
  };
  const state = (person: string, after: string[]) => {
    for (const id of input.segments) {
      const change = entry(id);
      if (after.includes(id)) (change.statedIn ??= []).push(person);
      else (change.statedOut ??= []).push(person);
    }
  };
  const done = new Set<string>();
  const beforeFold = (doc: ProfileDoc) => (input.changed.has(doc.profileId) ? input.previousOf(doc.profileId) : doc);
  const relinked = new Set(input.relinked);
  const docs = [...input.changed.values()];
  for (const id of relinked) {
    const doc = input.changed.get(id) ?? input.components.get(id)?.find((d) => d.profileId === id);
    if (doc && !input.changed.has(id)) docs.push(doc);
  }
  for (const doc of docs) {
    if (done.has(doc.profileId)) continue;
    if (doc.retired) {
      // A person of one document who expired leaves what they were in; a split document's parts say where its people went,
      // and an expired person of several documents leaves with the next batch run.
      const was = input.previousOf(doc.profileId);
      if (doc.retired.expired && was && !was.retired && !was.linked && !was.ancestors?.length) note(doc.profileId, input.evaluate(was), []);
      continue;
    }
    const previous = input.previousOf(doc.profileId);
    const component = input.components.get(doc.profileId);
    if (!component) {
      note(doc.profileId, previous && !previous.retired ? input.evaluate(previous) : [], input.evaluate(doc));
      continue;
    }
    const members = component.some((d) => d.profileId === doc.profileId) ? component : [...component, doc];
    const after = combineDocuments(members.map((d) => input.changed.get(d.profileId) ?? d).filter((d) => !d.retired));
    for (const id of after.profileIds) done.add(id);
    const before = members.map(beforeFold);
    const reshaped = members.some((d) => relinked.has(d.profileId)) || before.some((d) => !d || d.retired || !d.linked);
    if (!reshaped) {
      const was = combineDocuments(before as ProfileDoc[]);
      if (was.id === after.id) note(after.id, input.evaluate(was), input.evaluate(after));
      else {
        note(was.id, input.evaluate(was), []);
        state(after.id, input.evaluate(after));
      }
      continue;
    }
    state(after.id, input.evaluate(after));
    // Every other id of the profile is no profile now: a document that was one on its own until
    // this fold exits what it was in; whatever else was recorded under the others' ids is stated out.
    for (const member of members) {
      if (member.profileId === after.id) continue;
      const was = input.changed.has(member.profileId) ? input.previousOf(member.profileId) : null;
      if (was && !was.retired && !was.linked) note(member.profileId, input.evaluate(was), []);
      else state(member.profileId, []);
    }
  }
  return changes;
}

/** Stamps each segment's changes with the version of the rule they were evaluated with. */
export function withVersions(changes: ChangeSet, versions: ReadonlyMap<string, number>): ChangeSet {
  for (const [segment, change] of Object.entries(changes)) change.version = versions.get(segment);
  return changes;
}
