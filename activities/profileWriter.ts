import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Context } from '@temporalio/activity';
import type { Config } from '../config';
import { factsChanged } from '../domain/destinations';
import { gatedSources, type ConsentPolicies } from '../domain/consentGate';
import { cappedTypes } from '../domain/identityCaps';
import { identityKey, type StoredIdentityType } from '../domain/identity';
import { linkId } from '../domain/identityResolution';
import { redirectLateEvent, severedIn, splitDocument, type HeldEvent, type RetiredMarker, type Severance } from '../domain/identitySplit';
import { partitionOf } from '../domain/partition';
import { foldEvent, foldOrder, hasApplied, newProfile, nextVersion, type CombinedProfile, type ProfileDoc, type ProfileEvent } from '../domain/profile';
import { withOptOut } from '../domain/privacy';
import { DEFAULT_ITEM_EVENT_TYPES, itemsOf, type ItemChange } from '../domain/recommendations';
import { foldChanges, withVersions } from '../domain/segmentChanges';
import { EvaluationTime, SegmentEvaluator, type SegmentDefinition } from '../domain/segmentRules';
import { forEachConcurrently, type Store } from '../store/db';
import { IdentityCapStore } from '../store/identityCaps';
import { IdentityIndex, type IdentityLinkDoc } from '../store/identities';
import { ItemModelStore } from '../store/itemModel';
import { UnlinkStore } from '../store/identityUnlinks';
import { ProfileEventLog, type WriteGroupCounts, type PartitionPosition, type RoutedBatch, type RoutedEvent } from '../store/profileEvents';
import { PrivacyMarks } from '../store/privacyMarks';
import { ProfileGraph } from '../store/profileGraph';
import { ProfileStore, type StoredVersion } from '../store/profiles';
import { SegmentRunStore } from '../store/segmentRuns';
import { definitionsOf, SegmentStore } from '../store/segments';
import { DocumentEvents } from '../store/documentEvents';
import { ExpiredProfiles } from '../store/expiredProfiles';
import { SourcePolicies } from '../store/sourcePolicies';
import { SourceStore } from '../store/sources';
import { DEFAULT_CONSENT_POLICY, type ConsentPolicy } from '../domain/schemas';
import { ProfileExpiries } from '../store/profileExpiries';
import { withHeartbeats, heartbeat } from './heartbeat';
import { claimForSuccessors, createExpiryStep, type LateArrival } from './profileExpiry';

export interface FoldInput {
  partition: number;
  /** Sources with routed events waiting. */
  sourceIds: string[];
  /** Also look at every source this partition has folded before (after a restart). */
  includeKnown: boolean;
  maxEvents: number;
  /** The process that last wrote this partition's profiles (see FoldResult.writer); null when unknown. */
  lastWriter: string | null;
  /** Unlinks whose planned splits of this partition's documents are to be made first (see identityUnlink). */
  splits?: string[];
  /** Expiries of inactive people whose planned documents of this partition are due (see activities/profileExpiry). */
  expiries?: string[];
}

export interface FoldResult {
  /** This process: the last writer of the partition once this fold has succeeded. */
  writer: string;
  /** Sources that may have more routed events ready (the fold stopped at its size limit). */
  sourcesWithMore: string[];
  events: number;
  applied: number;
  /** Events an earlier, interrupted attempt had already folded into their documents. */
  alreadyApplied: number;
  /** Events of people who opted out: only their consent signals were applied. */
  eventsOptedOut: number;
  /** Of `applied`: events whose document's consent, once their own signal was in, refuses profiling under their source's policy (a withdrawal recorded earlier), held back — their ids and consent signals kept, nothing else of them applied (domain/profile foldEvent). */
  eventsWithoutConsent: number;
  /** Events of an erased subject routed before the erasure: dropped, never folded. */
  eventsErased: number;
  /** Repeats of events their documents had already folded (see ProfileDoc.recentEventIds): dropped. */
  duplicates: number;
  profilesWritten: number;
  /** Documents split by unlinks, and events that arrived at a split document and went on to its part. */
  documentsSplit: number;
  eventsRedirected: number;
  /** Compaction: versions deleted with their groups, and newest versions first carried out of them. */
  versionsRemoved: number;
  versionsCarried: number;
  /** Write groups are due for compaction, which waits until the partition has nothing to fold (see compactPartition). */
  compactionDue?: boolean;
  /** Documents of inactive people expired, and the expiries with planned documents left. */
  profilesExpired?: number;
  expiriesWithMore?: string[];
}

export interface CompactInput {
  partition: number;
  /** As in FoldInput. */
  lastWriter: string | null;
  /** Most write groups one call compacts, so a fold waiting behind it waits little. */
  maxGroups: number;
}

export interface CompactResult {
  writer: string;
  groups: number;
  versionsRemoved: number;
  versionsCarried: number;
  /** More groups are due. */
  more: boolean;
}

/** Whether this is known to be an activity's first attempt (never outside one). */
function firstAttempt(): boolean {
  try {
    return Context.current().info.attempt <= 1;
  } catch {
    return false;
  }
}

/** Named points inside a fold where tests may interrupt it, to prove a retry converges. */
export type FoldStep = 'expiries-asked' | 'events-read' | 'versions-writing' | 'profiles-partly-written' | 'group-carried' | 'group-dropped' | 'split-parts-written' | 'versions-written' | 'position-saved';

export interface ProfileWriterDeps {
  store: Store;
  config: Pick<Config, 'DMP_PROFILE_PARTITIONS' | 'DMP_IDENTITY_CAPS' | 'DMP_PRIVACY_SALT' | 'DMP_EVENT_HISTORY_DAYS'> & Partial<Pick<Config, 'DMP_ITEM_EVENT_TYPES'>>;
  now?: () => Date;
  /** Profiles per insert; a fold touching more is written in several. */
  profileWriteBatch?: number;
  /** A write group is compacted once this share of its versions has been superseded. */
  compactAtSupersededShare?: number;
  /**
   * Due groups are compacted once their superseded versions reach this share of the partition's
   * live versions: while the partition is idle at `compactWhenIdleAtShare` (a compaction then
   * handles several groups, so the writer's workflow rarely runs one), by the fold itself at
   * `compactInFoldAtShare` (a partition that never idles stays bounded).
   */
  compactWhenIdleAtShare?: number;
  compactInFoldAtShare?: number;
  /**
   * Write groups a partition keeps (GROUPS_KEPT): past them its smallest are merged, however few of
   * their versions are superseded.
   */
  groupsKept?: number;
  /** Told each step of a fold or compaction and the write group it writes under (tests fail it there). */
  onFoldStep?: (step: FoldStep, group: string) => void | Promise<void>;
}

/** Write groups a partition's position names before its smallest are merged (a position is one document). */
export const GROUPS_KEPT = 1000;
/** Groups merged at once while a partition holds too many: a fold that merges them waits for few versions. */
const CROWDED_GROUPS_MERGED = 16;

/** How long a writer keeps a source's consent policy before reading it again. */
const POLICY_KEPT_MS = 30_000;

/** How long a document linked before its first version waits for it, and how many wait per partition (a position is one document). */
const LINKED_AHEAD_KEPT_MS = 86_400_000;
const LINKED_AHEAD_MAX = 10_000;

/** Drops the notes of documents linked before their first version past their day or erased since, then the oldest past the bound. */
function pruneLinkedAhead(position: PartitionPosition, at: Date, erased: (profileId: string) => boolean): void {
  if (!position.linkedAhead) return;
  const since = new Date(at.getTime() - LINKED_AHEAD_KEPT_MS).toISOString();
  const kept = Object.entries(position.linkedAhead).filter(([id, noted]) => noted >= since && !erased(id));
  kept.sort(([, a], [, b]) => a.localeCompare(b));
  position.linkedAhead = Object.fromEntries(kept.slice(-LINKED_AHEAD_MAX));
  if (kept.length === 0) delete position.linkedAhead;
}

/** A fold's events across its batches in fold order (domain/profile foldOrder). */
function inFoldOrder<B extends { events: ReadonlyArray<Pick<ProfileEvent, 'timestamp' | 'consent' | 'id'>> }>(batches: readonly B[]): Array<{ batch: B; event: B['events'][number] }> {
  return batches
    .flatMap((batch) => batch.events.map((event) => ({ batch, event })))
    .sort((a, b) => foldOrder(a.event, b.event));
}

/** The activities of a partition's writer: folding routed events into the profile documents it owns. */
export function createProfileWriterActivities(deps: ProfileWriterDeps) {
  const now = deps.now ?? (() => new Date());
  const routedEvents = new ProfileEventLog(deps.store);
  const identities = new IdentityIndex(deps.store, 0);
  const unlinks = new UnlinkStore(deps.store);
  const documentEvents = new DocumentEvents(deps.store);
  const caps = new IdentityCapStore(deps.store);
  // One ProfileStore per process: its cache of newest versions serves every fold here.
  const profiles = new ProfileStore(deps.store);
  /** Each partition's position as this process saved it last (see loadPosition). */
  const savedPositions = new Map<number, PartitionPosition>();
  /** Each partition's group this process reserved for its next attempt and no attempt has written to yet (see attemptGroup). */
  const reservedHere = new Map<number, string>();
  /** Per partition, the latest groups whose real-time segment changes this process recorded or looked for (see changesMaybeUnrecorded). */
  const changesSettledHere = new Map<number, Set<string>>();
  const settleChanges = (partition: number, group: string) => {
    const settled = changesSettledHere.get(partition) ?? new Set<string>();
    settled.add(group);
    // A few are enough: only the last fold's group and those an interrupted attempt wrote are ever looked for.
    if (settled.size > 16) settled.delete(settled.values().next().value as string);
    changesSettledHere.set(partition, settled);
  };
  /** Per partition, the cache point (ProfileStore.cachePoint) since which this process's caches of it are current. */
  const trustedSince = new Map<number, number>();
  const profileWriteBatch = deps.profileWriteBatch ?? 500;
  const compactAt = deps.compactAtSupersededShare ?? 0.5;
  const compactWhenIdleAt = deps.compactWhenIdleAtShare ?? 0.25;
  const compactInFoldAt = deps.compactInFoldAtShare ?? 0.5;
  const groupsKept = deps.groupsKept ?? GROUPS_KEPT;
  const writerId = `${hostname()}:${process.pid}:${randomUUID()}`;
  const segmentStore = new SegmentStore(deps.store);
  const segmentRuns = new SegmentRunStore(deps.store);
  const itemModels = new ItemModelStore(deps.store);
  const marks = new PrivacyMarks(deps.store, deps.config.DMP_PRIVACY_SALT);
  const sources = new SourceStore(deps.store);
  /** Sources' consent policies as last read: a change reaches folds within POLICY_KEPT_MS. */
  const policies = new Map<string, { policy: ConsentPolicy; at: number }>();
  async function consentPolicy(sourceId: string): Promise<ConsentPolicy> {
    const kept = policies.get(sourceId);
    if (kept && Date.now() - kept.at < POLICY_KEPT_MS) return kept.policy;
    // A removed source's: the default.
    const policy = (await sources.get(sourceId))?.consent ?? DEFAULT_CONSENT_POLICY;
    policies.set(sourceId, { policy, at: Date.now() });
    return policy;
  }
  const itemTypes = deps.config.DMP_ITEM_EVENT_TYPES ?? DEFAULT_ITEM_EVENT_TYPES;
  const profileGraph = new ProfileGraph(identities, profiles);
  const expiry = createExpiryStep({ profiles, identities, caps, expiries: new ProfileExpiries(deps.store), expired: new ExpiredProfiles(deps.store), partitions: deps.config.DMP_PROFILE_PARTITIONS, now });
  const sourcePolicies = new SourcePolicies(deps.store, POLICY_KEPT_MS);
  let compiled: { key: string; policies: ConsentPolicies; evaluator: SegmentEvaluator } | null = null;
  const evaluatorFor = (definitions: SegmentDefinition[], policies: ConsentPolicies): SegmentEvaluator => {
    const key = JSON.stringify(definitions);
    if (compiled?.key !== key || compiled.policies !== policies) compiled = { key, policies, evaluator: new SegmentEvaluator(definitions, policies) };
    return compiled.evaluator;
  };

  /**
   * Folds the partition's next routed events into its profile documents. Safe to retry: each new
   * version carries, per source, the last chunk it absorbed, so a retry skips what an interrupted
   * attempt wrote; versions are inserted under versioned ids, so a second writer fails rather than
   * overwrites; the position is saved last and replaced by the same values.
   */
  async function fold(input: FoldInput): Promise<FoldResult> {
    await marks.refresh();
    const marksRead = marks.slotsRead;
    const trustSince = trusts(input.partition, input.lastWriter);
    const position = await loadPosition(input.partition, trustSince);
    // Each attempt writes under a group of its own, recorded before its first write (below).
    const { group, recorded } = attemptGroup(input.partition, position, trustSince);
    const unrecorded = changesMaybeUnrecorded(input.partition, position, group);
    await settleInterrupted(position, group);
    for (const earlier of unrecorded) {
      await recordChangesCutShort(earlier);
      settleChanges(input.partition, earlier);
    }
    const saved = structuredClone(position);
    const sourceIds = input.includeKnown ? [...new Set([...input.sourceIds, ...Object.keys(position.cursors)])] : input.sourceIds;
    const result: FoldResult = {
      writer: writerId,
      sourcesWithMore: [],
      events: 0,
      applied: 0,
      alreadyApplied: 0,
      eventsOptedOut: 0,
      eventsWithoutConsent: 0,
      eventsErased: 0,
      duplicates: 0,
      profilesWritten: 0,
      documentsSplit: 0,
      eventsRedirected: 0,
      versionsRemoved: 0,
      versionsCarried: 0,
    };
    const split = await splitDocuments(input.partition, input.splits ?? [], group, trustSince, result);
    const batches: RoutedBatch[] = [];
    for (const sourceId of sourceIds) {
      let from = position.cursors[sourceId] ?? 0;
      for (;;) {
        if (result.events >= input.maxEvents) {
          result.sourcesWithMore.push(sourceId);
          break;
        }
        const batch = await routedEvents.read(input.partition, sourceId, from);
        if (!batch) break;
        batches.push(batch);
        result.events += batch.events.length;
        from = batch.to;
      }
      position.cursors[sourceId] = from;
    }
    heartbeat({ read: result.events });
    if ((input.expiries ?? []).length > 0) await deps.onFoldStep?.('expiries-asked', group);
    // Read again (if a second has passed) once the events are in: an opt-out marks a document of its
    // own a second before claiming the identity its events are routed by (activities/privacy), and
    // keeps its person out of any expiry planned before it.
    await marks.refresh();
    if (batches.length > 0) await deps.onFoldStep?.('events-read', group);
    // A document with events in this fold is active, and one split in it is no longer what was planned: both are left out of any expiry.
    const active = new Set([...batches.flatMap((batch) => [...batch.profiles, ...(batch.linked ?? [])]), ...split.current.keys()]);
    const expiring = await expiry.prepare(input.partition, input.expiries ?? [], active, trustSince, (doc) => marks.optedOut({ profileId: doc.profileId, ancestors: doc.ancestors }));
    result.expiriesWithMore = expiring.more;
    if (batches.length === 0 && split.written.length === 0 && expiring.slices.length === 0) {
      // Nothing to write; expired documents may have come of age to leave since the last write.
      result.compactionDue = dueShare(position, null, true) >= compactWhenIdleAt;
      return result;
    }

    const linkedNow = new Set(batches.flatMap((batch) => batch.linked ?? []));
    const touched = [...new Set([...batches.flatMap((batch) => batch.profiles), ...linkedNow])];
    // When this process wrote the partition last, nobody has changed its documents since: its cache is
    // current. Documents the drain made have no versions yet, unless an earlier attempt wrote some.
    const created = firstAttempt() ? new Set(batches.flatMap((batch) => batch.created ?? [])) : new Set<string>();
    const stored = await profiles.load(touched.filter((id) => !created.has(id)), { trustSince });
    for (const [id, doc] of split.current) stored.set(id, doc);
    for (const [id, doc] of expiring.superseded) stored.set(id, doc);
    heartbeat({ loaded: stored.size });
    const madeRetired = new Set(split.written.filter((doc) => doc.retired).map((doc) => doc.profileId));
    const { targets, narrowed, relearned, relearnedFrom, joined, successors } = await redirectLateEvents(input.partition, batches, stored, madeRetired, trustSince, result);
    for (const id of joined) linkedNow.add(id);
    await spreadOptOuts(linkedNow);

    const changed = new Map<string, ProfileDoc>();
    const duplicatesBySource = new Map<string, number>();
    const policyOf = new Map(await Promise.all([...new Set(batches.map((batch) => batch.sourceId))].map(async (id) => [id, await consentPolicy(id)] as const)));
    for (const { batch, event: routed } of inFoldOrder(batches)) {
      const target = targets.get(routed) ?? routed.profileId;
      const event = narrowed.get(routed) ?? routed;
      // The retry guard compares with what was stored, not with this fold's own progress.
      const current = stored.get(target);
      if (current && hasApplied(current.applied, batch.sourceId, event.seq)) {
        result.alreadyApplied++;
        continue;
      }
      if (marks.erasedBy(event.evidence ? [...event.identities, ...event.evidence] : event.identities)) {
        result.eventsErased++;
        continue;
      }
      let doc = changed.get(target);
      const fresh = !doc;
      if (!doc) {
        doc = current ? nextVersion(current) : newProfile(target, now(), event.timestamp);
        // A successor descends from the expired documents: an opt-out of theirs holds for it.
        if (!current && successors.has(target)) doc.ancestors = successors.get(target);
        changed.set(target, doc);
      }
      // A person who opted out is profiled no more: only consent signals still reach them (a withdrawal must).
      const optedOut = marks.optedOut({ profileId: target, ancestors: doc.ancestors });
      const outcome = foldEvent(doc, event, { sourceId: batch.sourceId, party: batch.party, seq: event.seq }, policyOf.get(batch.sourceId)!, optedOut);
      if (outcome === 'repeat') {
        result.duplicates++;
        duplicatesBySource.set(batch.sourceId, (duplicatesBySource.get(batch.sourceId) ?? 0) + 1);
        if (fresh) changed.delete(target);
        continue;
      }
      if (outcome === 'opted-out') result.eventsOptedOut++;
      if (outcome === 'held') result.eventsWithoutConsent++;
      result.applied++;
    }
    // Consent signals of events that were not profiled are not events applied.
    for (const batch of batches) position.applied[batch.sourceId] = (position.applied[batch.sourceId] ?? 0) + batch.events.filter((event) => !event.consentOnly).length;
    for (const [sourceId, count] of duplicatesBySource) position.duplicates[sourceId] = (position.duplicates[sourceId] ?? 0) + count;

    // Linked before their first version (by another source's batch folded first): linked once they have one.
    for (const id of Object.keys(position.linkedAhead ?? {})) if (changed.has(id) || stored.has(id)) linkedNow.add(id);
    for (const id of linkedNow) {
      const current = stored.get(id);
      const doc = changed.get(id) ?? (current && !current.retired && !current.linked ? nextVersion(current) : undefined);
      if (!doc) {
        if (!current) (position.linkedAhead ??= {})[id] ??= now().toISOString();
        else if (position.linkedAhead) delete position.linkedAhead[id];
        continue;
      }
      doc.linked = true;
      changed.set(id, doc);
      if (position.linkedAhead) delete position.linkedAhead[id];
    }
    pruneLinkedAhead(position, now(), (id) => marks.erased(id));
    // Events redirected here may have reached a document planned to expire: it stays.
    expiry.withhold(expiring, new Set([...changed.keys()].filter((id) => expiring.superseded.has(id))));
    for (const doc of expiring.versions) changed.set(doc.profileId, doc);

    // A split document is retired last: until then its parts must all be in the store.
    const toSave = [...changed.values()];
    for (const doc of split.written) if (!changed.has(doc.profileId) && !doc.retired) toSave.unshift(doc);
    // Documents this fold took for new without reading them (`created`) must not have been made meanwhile, by another
    // source's batch folded first: their first version, superseded and compacted away, would not stop this one.
    const bornBefore = await profiles.recordBirths([...toSave, ...split.written].filter((doc) => doc.version === 0).map((doc) => doc.profileId));
    if ([...created].some((id) => bornBefore.has(id))) throw new Error(`partition ${input.partition}: a document a batch made had been folded before: the retry reads it`);
    // Marked before the versions are written: a retry that finds them written would not mark again.
    // A part a split makes here is new, and has no marker yet, whatever `stored` holds for it (itself).
    const newParts = new Set(split.written.filter((doc) => !doc.retired).map((doc) => doc.profileId));
    await markCaps([...toSave, ...split.written], newParts, split.replaced, stored);
    // The expired documents' empty versions this fold writes, counted on its group (see `purgeable`).
    const expiredMark = expiring.versions.length > 0 ? { expired: expiring.versions.length, expiredAt: now() } : {};
    // The group is recorded before anything is written to it: an attempt interrupted mid-write
    // leaves a group compaction knows of (its versions are superseded by the retry's), never a leak.
    if (recorded) reservedHere.delete(input.partition);
    else {
      const recording = { ...saved, groups: { ...saved.groups, [group]: { written: toSave.length + split.written.length, superseded: 0, ...expiredMark } }, writing: [group] };
      await savePosition(input.partition, recording);
      position.token = recording.token;
    }
    await deps.onFoldStep?.('versions-writing', group);
    await saveInGroup(toSave, group);
    if (split.written.length > 0) await deps.onFoldStep?.('split-parts-written', group);
    const retired = [...split.written.filter((doc) => doc.retired && !relearned.some((next) => next.profileId === doc.profileId)), ...relearned];
    await saveInGroup(retired, group);
    toSave.push(...retired);
    position.groups[group] = { written: toSave.length, superseded: 0, ...expiredMark };
    for (const doc of toSave) {
      const previous = split.replaced.get(doc.profileId) ?? relearnedFrom.get(doc.profileId) ?? stored.get(doc.profileId);
      const counts = previous && Object.hasOwn(position.groups, previous.group) ? position.groups[previous.group] : undefined;
      // A version under this attempt's own group that is not the one written is a part this fold made and then changed: never stored.
      if (counts && previous?._id !== doc._id && previous?.group !== group) counts.superseded++;
    }
    await deps.onFoldStep?.('versions-written', group);
    // Every save from here on names this fold's group as one whose changes may be unrecorded (a compaction's too).
    position.changesPending = group;
    await withoutErasedSince(marksRead, input.partition, toSave);
    result.profilesWritten = toSave.length;
    // Compaction is off the way from an event to its segments: left until nothing waits to be folded, unless overdue.
    if (dueShare(position, group, false, 2 * groupsKept) >= compactInFoldAt) {
      // The fold's counts are saved first, with the group the compaction carries into: it deletes only
      // groups that saved counts make due, so one interrupted leaves no count standing for versions it deleted.
      delete position.nextGroup;
      const carriedTo = await recordGroup(input.partition, position);
      await compact(position, carriedTo, trustSince, result, Infinity, false, group, 2 * groupsKept);
      if (position.groups[carriedTo].written === 0) delete position.groups[carriedTo];
    }
    result.compactionDue = dueShare(position, group, true) >= compactWhenIdleAt;
    // Saved before the changes are recorded: a fold whose writer was taken over meanwhile (its save
    // refused) records nothing, so the writer that took over is the only one to record them — for
    // this one too, should it stop before it has (`changesPending`, set above).
    await savePosition(input.partition, reserveNextGroup(input.partition, position));
    await deps.onFoldStep?.('position-saved', group);
    // After the save: a writer taken over stops at it and leaves the plan to the one that took over.
    // An erasure may have run to its end since the marks were last read: they are read again first.
    if (expiring.slices.length > 0) await marks.refresh(true);
    result.profilesExpired = await expiry.release(expiring, (id, keys) => marks.erased(id) || marks.erasedByKeys(keys) !== null);
    // An erasure that began while this fold ran (marks read since by withoutErasedSince) may have scrubbed
    // the records before these are written: they name none of its documents.
    const kept = new Map([...changed].filter(([id]) => !marks.erased(id)));
    // After the versions are in: a segment created meanwhile is either read here, or its backfill run reads these versions.
    await recordSegmentChanges(group, kept, stored, [...linkedNow].filter((id) => !marks.erased(id) && (stored.has(id) || kept.has(id))));
    await recordItemChanges(group, kept, stored);
    // Settled once both are recorded: a retry in this process after either failed looks for them again.
    settleChanges(input.partition, group);
    return result;
  }

  /**
   * Groups an earlier attempt may have written versions to without recording their real-time
   * segment changes: those settleInterrupted settles, and the last fold's (`changesPending`) unless
   * this process recorded them.
   */
  function changesMaybeUnrecorded(partition: number, position: PartitionPosition, own: string): string[] {
    const groups = new Set(position.writing ?? []);
    if (position.nextGroup && position.nextGroup !== own) groups.add(position.nextGroup);
    if (position.changesPending) groups.add(position.changesPending);
    const settled = changesSettledHere.get(partition);
    return [...groups].filter((group) => Object.hasOwn(position.groups, group) && !settled?.has(group));
  }

  /**
   * Records the real-time segment changes, and the item model's, of a group whose fold stopped after
   * writing its versions and before recording them (its retry finds the events applied, and would record none): each
   * version in it against the one before, as the fold would have — an expired document's exit too,
   * and nothing for an unlink's split (its parts, and the document retired for them). Segment
   * changes only when there are segments and none are recorded, nor for a segment whose snapshot
   * began after the write (the snapshot holds it, and its run counted it); item changes only as
   * `ItemModelStore.neverApplied` allows. Recorded as of now: no fold of the
   * partition has come between. A version whose predecessor compaction removed is left to the next
   * batch run.
   */
  async function recordChangesCutShort(group: string): Promise<void> {
    const segments = await segmentStore.definitions();
    const segmentsOwed = segments.length > 0 && !(await segmentRuns.hasChanges(group));
    // Before any build the first one counts everyone afresh: no change record is owed to it.
    const itemModel = await itemModels.head();
    const itemsOwed = itemModel !== null && !(await itemModels.hasChanges(group));
    if (!segmentsOwed && !itemsOwed) return;
    const members = await profiles.groupMembers(group);
    if (members.length === 0) return;
    const pairs: Array<{ written: StoredVersion; previous?: StoredVersion }> = [];
    await forEachConcurrently([...new Set(members.map((member) => member.profileId))], 16, async (profileId) => {
      if (marks.erased(profileId)) return;
      const versions = await profiles.versions(profileId);
      const written = versions.filter((version) => version.group === group).reduce<StoredVersion | null>((newest, version) => (!newest || version.version > newest.version ? version : newest), null);
      if (!written) return;
      const previous = versions.find((version) => version.version === written.version - 1);
      if (written.version > 0 && !previous) return;
      pairs.push({ written, previous });
    });
    const splitApart = new Set(pairs.filter(({ written }) => written.retired && !written.retired.expired).map(({ written }) => written.profileId));
    const changed = new Map<string, ProfileDoc>();
    const stored = new Map<string, StoredVersion>();
    let writtenAt = 0;
    for (const { written, previous } of pairs) {
      if (splitApart.has(written.profileId) || written.ancestors?.some((id) => splitApart.has(id))) continue;
      changed.set(written.profileId, written as ProfileDoc);
      if (previous) stored.set(written.profileId, previous);
      writtenAt = Math.max(writtenAt, written.updatedAt.getTime());
    }
    if (changed.size === 0) return;
    if (itemsOwed && (await itemModels.neverApplied(itemModel, group, new Date(writtenAt)))) await recordItemChanges(group, changed, stored);
    if (!segmentsOwed) return;
    const snapshotAfter = new Set(segments.filter((segment) => segment.current && segment.current.startedAt.getTime() > writtenAt).map((segment) => segment._id));
    await recordSegmentChanges(group, changed, stored, [], (segmentId) => !snapshotAfter.has(segmentId));
  }

  /**
   * A fold reads its events, stalls (its worker paused), and writes their versions after a whole
   * erasure of their subject ran meanwhile: the erasure's check, done by then, found none of them.
   * So the writer looks after writing: when marks arrived since the fold began and name a document
   * it wrote — by id, or by its identities' tombstones once the erasure has forgotten the ids —
   * every version of those documents goes, and the fold fails before its position is saved. Its
   * retry knows the tombstones from the start and folds without the subject's events. One read of
   * the next mark slot per fold; nothing more while no mark arrives.
   */
  async function withoutErasedSince(marksRead: number, partition: number, written: ProfileDoc[]): Promise<void> {
    await marks.refresh(true);
    if (marks.slotsRead === marksRead) return;
    const erased = written.filter((doc) => marks.erased(doc.profileId) || marks.erasedBy(doc.identities) !== null).map((doc) => doc.profileId);
    if (erased.length === 0) return;
    await profiles.removeDocuments(erased);
    throw new Error(`partition ${partition}: an erasure began while this fold ran, and ${erased.length} of the documents it wrote are its subject's: they are removed, and the retry folds without them`);
  }

  /**
   * The write group an attempt writes under, and whether the saved position records it already. A
   * writer's saves reserve a group for its next attempt (reserveNextGroup), which then writes without
   * a save first — one store call fewer on the way from an event to its profile. A retry here, or
   * another writer, cannot tell whether an attempt wrote there already: it takes a group of its own.
   */
  function attemptGroup(partition: number, position: PartitionPosition, trustSince: number | undefined): { group: string; recorded: boolean } {
    const reserved = position.nextGroup;
    if (trustSince !== undefined && reserved && Object.hasOwn(position.groups, reserved) && reservedHere.get(partition) === reserved) return { group: reserved, recorded: true };
    return { group: newGroupId(partition), recorded: false };
  }

  const newGroupId = (partition: number) => `p${partition}-${randomUUID()}`;

  /**
   * Records a new, empty group in the position and saves it, before anything is written to it; the
   * save marks it `writing`, so an attempt interrupted before its next save is settled by the next.
   */
  async function recordGroup(partition: number, position: PartitionPosition): Promise<string> {
    const group = newGroupId(partition);
    position.groups[group] = { written: 0, superseded: 0 };
    position.writing = [group];
    await savePosition(partition, position);
    delete position.writing;
    return group;
  }

  /**
   * Settles the write groups an interrupted attempt may have written to without saving their counts —
   * the group reserved for the next attempt (unless this one, `own`, is it) and those recorded as
   * `writing` — from what the store holds (ProfileStore.tally): their versions, and the versions
   * those replaced, counted superseded in their groups. Unsettled, a replaced version would count as
   * live for ever and its group never fall due. A group found empty stays, written 0: compaction
   * takes it (and reads what a stalled writer may still write into it).
   */
  async function settleInterrupted(position: PartitionPosition, own: string): Promise<void> {
    const interrupted = new Set(position.writing ?? []);
    if (position.nextGroup && position.nextGroup !== own) interrupted.add(position.nextGroup);
    const tallies = [];
    for (const group of interrupted) if (Object.hasOwn(position.groups, group)) tallies.push({ group, tally: await profiles.tally(group) });
    for (const { group, tally } of tallies) {
      position.groups[group] = { written: tally.written, superseded: 0, ...(tally.expired > 0 && { expired: tally.expired, expiredAt: tally.expiredAt }) };
    }
    for (const { tally } of tallies) countReplaced(position, tally.replaced);
    if (position.nextGroup !== own) delete position.nextGroup;
    delete position.writing;
  }

  /** Counts versions replaced (ProfileStore.tally) superseded in their groups. */
  function countReplaced(position: PartitionPosition, replaced: Map<string, number>): void {
    for (const [group, count] of replaced) if (Object.hasOwn(position.groups, group)) position.groups[group].superseded += count;
  }

  /** Records a new, empty group for the writer's next attempt in the position about to be saved. */
  function reserveNextGroup(partition: number, position: PartitionPosition): PartitionPosition {
    const group = newGroupId(partition);
    position.groups[group] = { written: 0, superseded: 0 };
    position.nextGroup = group;
    reservedHere.set(partition, group);
    return position;
  }

  /**
   * Whether an expired document may leave whole: the history window has passed since it expired,
   * so its events are gone, and no process routes to it any more from what it cached
   * (IdentityIndex keeps owners for hours; the window is a day at least). Only an idle partition's
   * compaction (`purge`) removes them: its writer has folded what was routed to it by then.
   */
  const purgeable = (expiredAt: Date | undefined) => expiredAt !== undefined && expiredAt.getTime() <= now().getTime() - deps.config.DMP_EVENT_HISTORY_DAYS * 86_400_000;

  /** A group's versions that compaction would remove: those superseded, and, when it purges, the expired documents' that may leave. */
  const removable = (counts: WriteGroupCounts, purge: boolean) => counts.superseded + (purge && purgeable(counts.expiredAt) ? (counts.expired ?? 0) : 0);

  /** The groups a compaction may take: all but the one it writes into, the one reserved for the next fold, and a fold's own (`spare`). */
  const othersThan = (position: PartitionPosition, current: string | null, spare?: string) =>
    Object.entries(position.groups).filter(([group]) => group !== current && group !== position.nextGroup && group !== spare);

  /**
   * The write groups other than `current` most of whose versions have been superseded (or may leave);
   * and, while the partition holds more than `crowded` (see dueShare), the CROWDED_GROUPS_MERGED of fewest live
   * versions besides. Every fold of new visitors adds a group few versions of which are ever replaced,
   * and the position, one document, names them all: merged smallest first, a version is carried again
   * only when its group is among the smallest, so each is carried a few times at most.
   */
  function dueGroups(position: PartitionPosition, current: string | null, purge: boolean, spare?: string, crowded = groupsKept): string[] {
    const others = othersThan(position, current, spare);
    const due = others.filter(([, counts]) => removable(counts, purge) >= counts.written * compactAt).map(([group]) => group);
    if (others.length <= crowded) return due;
    const isDue = new Set(due);
    const smallest = others
      .filter(([group]) => !isDue.has(group))
      .sort(([, a], [, b]) => a.written - a.superseded - (b.written - b.superseded))
      .slice(0, CROWDED_GROUPS_MERGED)
      .map(([group]) => group);
    return [...due, ...smallest];
  }

  /**
   * The due groups' removable versions as a share of the partition's live ones (0 when none are due),
   * unbounded while it holds more than `crowded` groups: past `groupsKept` an idle partition merges
   * them, and a fold only past twice as many (merging is kept off the way from an event to its
   * segments, but a partition that never idles stays bounded).
   */
  function dueShare(position: PartitionPosition, current: string | null, purge: boolean, crowded = groupsKept): number {
    if (othersThan(position, current).length > crowded) return Infinity;
    const waiting = dueGroups(position, current, purge, undefined, crowded).reduce((sum, group) => sum + removable(position.groups[group], purge), 0);
    if (waiting === 0) return 0;
    const live = Object.values(position.groups).reduce((sum, group) => sum + group.written - group.superseded, 0);
    return live > 0 ? waiting / live : Infinity;
  }

  /**
   * Compacts up to `maxGroups` due write groups of an idle partition. Its survivors are carried into
   * a write group of its own, recorded before anything is written to it (as a fold's). Safe to
   * retry for the reasons `compact` gives.
   */
  async function compactPartition(input: CompactInput): Promise<CompactResult> {
    const trustSince = trusts(input.partition, input.lastWriter);
    const position = await loadPosition(input.partition, trustSince);
    const result: CompactResult = { writer: writerId, groups: 0, versionsRemoved: 0, versionsCarried: 0, more: false };
    const reserved = attemptGroup(input.partition, position, trustSince);
    await settleInterrupted(position, reserved.group);
    if (dueGroups(position, null, true).length === 0) return result;
    if (reserved.recorded) reservedHere.delete(input.partition);
    const group = reserved.recorded ? reserved.group : await recordGroup(input.partition, position);
    result.groups = await compact(position, group, trustSince, result, input.maxGroups, true);
    result.more = dueShare(position, group, true) >= compactWhenIdleAt;
    if (position.groups[group].written === 0) delete position.groups[group];
    await savePosition(input.partition, reserveNextGroup(input.partition, position));
    return result;
  }

  /**
   * A partition's position: as this process last saved it when it wrote the partition last (the
   * profile cache's rule: only a partition's writer saves its position), else from the store.
   */
  async function loadPosition(partition: number, trustSince: number | undefined): Promise<PartitionPosition> {
    const saved = savedPositions.get(partition);
    return trustSince !== undefined && saved ? structuredClone(saved) : routedEvents.loadPosition(partition);
  }

  /**
   * Whether this process's caches of a partition — its position, its documents' newest versions —
   * are current, and since when: it wrote the partition last (the workflow says so) and no other
   * writer has saved the position since (a save here would have been refused). Else it takes the
   * partition over (or back) now: what its caches knew from before may have changed since.
   */
  function trusts(partition: number, lastWriter: string | null): number | undefined {
    const since = trustedSince.get(partition);
    if (lastWriter === writerId && since !== undefined) return since;
    trustedSince.set(partition, profiles.cachePoint());
    savedPositions.delete(partition);
    return undefined;
  }

  /**
   * Saves the position if it is still the one this attempt loaded; else this attempt was overtaken
   * by another writer (it took over while this one stalled) and fails: a retry reads the store.
   * Forgotten first: a save that fails may still have reached the store, and the store then holds what is known.
   */
  async function savePosition(partition: number, position: PartitionPosition): Promise<void> {
    savedPositions.delete(partition);
    const token = await routedEvents.savePosition(partition, position);
    if (token === null) {
      trustedSince.delete(partition);
      throw new Error(`partition ${partition}: another writer saved its position since this fold loaded it`);
    }
    position.token = token;
    savedPositions.set(partition, structuredClone(position));
  }

  /**
   * Makes the splits unlinks planned for this partition's documents: each document is folded apart
   * into parts from the events it holds (domain/identitySplit) and retired pointing at them. Returns
   * the versions to write — parts before the retired documents — and, as `current`, the newest state
   * of every document involved, which later events in this fold build on. Safe to retry: the writer
   * is single, a document already retired is left alone, and a part an interrupted attempt wrote is
   * taken as it is.
   */
  async function splitDocuments(partition: number, unlinkIds: string[], group: string, trustSince: number | undefined, result: FoldResult) {
    const written: ProfileDoc[] = [];
    const current = new Map<string, StoredVersion>();
    const replaced = new Map<string, StoredVersion>();
    for (const unlinkId of unlinkIds) {
      const plan = (await unlinks.get(unlinkId))?.plan;
      if (!plan) continue;
      const sideOf = Object.fromEntries(plan.sideOf.map(({ key, side }) => [key, side]));
      for (const { profileId } of plan.docs.filter((doc) => doc.partition === partition)) {
        const doc = current.get(profileId) ?? (await profiles.get(profileId, { trustSince }));
        if (!doc || doc.retired) continue;
        const { held, waiting } = (await documentEvents.read([doc])).get(profileId)!;
        const policies = new Map(await Promise.all([...new Set(held.map((event) => event.sourceId))].map(async (id) => [id, await consentPolicy(id)] as const)));
        const rule = { policyOf: (sourceId: string) => policies.get(sourceId) ?? DEFAULT_CONSENT_POLICY, optedOut: marks.optedOut({ profileId, ancestors: doc.ancestors }) };
        const made = splitDocument(doc, held, { sideOf, sides: plan.sides }, unlinkId, deps.config.DMP_PROFILE_PARTITIONS, now(), rule, waiting);
        await routedEvents.writeMoved(partition, `${unlinkId}:${profileId}`, [...made.moved.values()].flat());
        const existing = await profiles.load(made.parts.map((part) => part.profileId), { trustSince });
        for (const part of made.parts) {
          const stored = existing.get(part.profileId);
          if (stored) current.set(part.profileId, stored);
          else {
            written.push(part);
            current.set(part.profileId, { ...part, group });
          }
        }
        written.push(made.retired);
        replaced.set(profileId, doc);
        current.set(profileId, { ...made.retired, group });
        result.documentsSplit++;
      }
    }
    return { written, current, replaced };
  }

  /**
   * Events routed to a document that an unlink has since split go on to the part of their side.
   * They are kept as moved to it (the part's history), identities claimed for the split document
   * after it was planned follow them, and an event that shows the document's sides together again
   * links them (new evidence, which the drain could not see: to it they were one document). Events
   * routed to an expired document go on to its successor, which claims their identities afresh
   * (claimForSuccessors). Returns each redirected event's new document, and the documents joined to others.
   */
  async function redirectLateEvents(partition: number, batches: RoutedBatch[], stored: Map<string, StoredVersion>, madeRetired: Set<string>, trustSince: number | undefined, result: FoldResult) {
    const targets = new Map<RoutedEvent, string>();
    const moves = new Map<string, { key: string; from: string; to: string }>();
    const links = new Map<string, IdentityLinkDoc>();
    const relearned = new Map<string, ProfileDoc>();
    /** Per retired document that learned keys, the stored version its new one replaces. */
    const relearnedFrom = new Map<string, StoredVersion>();
    /** Per redirected event, every retired document it went through (split or expired). */
    const passed = new Map<RoutedEvent, string[]>();
    /** Redirected events that take fewer identities than they carry: severed from their side, the others stay with theirs. */
    const narrowed = new Map<RoutedEvent, RoutedEvent>();
    const severances = new Map<string, Severance[]>();
    const severancesOf = async (keys: string[]) => {
      const unread = keys.filter((key) => !severances.has(key));
      if (unread.length > 0) {
        const found = await unlinks.severancesOf(unread);
        for (const key of unread) severances.set(key, found.filter((severance) => severance.keys.includes(key)));
      }
      return keys.flatMap((key) => severances.get(key) ?? []);
    };
    for (let hop = 0; ; hop++) {
      const missing = new Set<string>();
      for (const batch of batches) {
        for (const event of batch.events) {
          const at = targets.get(event) ?? event.profileId;
          const marker = stored.get(at)?.retired;
          if (!marker) continue;
          passed.set(event, [...(passed.get(event) ?? []), at]);
          if (marker.expired) {
            targets.set(event, marker.fallback);
            if (!stored.has(marker.fallback)) missing.add(marker.fallback);
            continue;
          }
          // An event showing several of the document's sides may have been counted by the plan, which severed some of its co-occurrences.
          const current = narrowed.get(event) ?? event;
          const sides = new Set(current.identities.map(identityKey).filter((key) => Object.hasOwn(marker.keys, key)).map((key) => marker.keys[key]));
          const severed = sides.size > 1 ? severedIn(event.id, await severancesOf(current.identities.map(identityKey))) : undefined;
          const { target: to, identities: kept, joins, learned } = redirectLateEvent(marker, current, severed);
          if (kept.length < current.identities.length) narrowed.set(event, { ...current, identities: kept, evidence: event.evidence ?? event.identities });
          targets.set(event, to);
          if (!stored.has(to)) missing.add(to);
          if (Object.keys(learned).length > 0) {
            let next = relearned.get(at);
            if (!next) {
              const base = stored.get(at) as StoredVersion;
              next = nextVersion(base);
              // A document split in this fold is not stored yet: its retired version takes the keys, under its own number.
              if (madeRetired.has(at)) Object.assign(next, { version: base.version, _id: base._id });
              else relearnedFrom.set(at, base);
            }
            Object.assign((next.retired as RetiredMarker).keys, learned);
            relearned.set(at, next);
            stored.set(at, { ...next, group: stored.get(at)?.group ?? '' });
            for (const key of Object.keys(learned)) moves.set(key, { key, from: at, to });
          }
          for (const { part, via } of joins) {
            const profiles = [to, part].sort() as [string, string];
            links.set(linkId(profiles, via), { _id: linkId(profiles, via), profiles, via, eventId: event.id, sourceId: batch.sourceId, createdAt: now() });
          }
        }
      }
      if (missing.size === 0) break;
      if (hop > 64) throw new Error('split documents point at each other');
      for (const [id, doc] of await profiles.load([...missing], { trustSince })) stored.set(id, doc);
    }
    if (targets.size === 0) return { targets, narrowed, relearned: [], relearnedFrom, joined: [], successors: new Map<string, string[]>() };
    const arrivals: LateArrival[] = [];
    const successors = new Map<string, string[]>();
    for (const batch of batches) {
      for (const event of batch.events) {
        const through = passed.get(event) ?? [];
        const last = [...through].reverse().find((id) => stored.get(id)?.retired?.expired);
        if (!last) continue;
        const successor = targets.get(event)!;
        const identities = (narrowed.get(event) ?? event).identities.map((identity) => ({ key: identityKey(identity), type: identity.type }));
        arrivals.push({ successor, passed: through, eventId: event.id, sourceId: batch.sourceId, identities });
        successors.set(successor, [last, ...(stored.get(last)?.ancestors ?? [])]);
      }
    }
    // Claimed before the split's moves are made: a key the drain claimed for a document it went through moves to where it landed.
    const claimed = await claimForSuccessors(identities, arrivals, now());
    for (const move of claimed.moves) moves.set(move.key, move);
    for (const link of claimed.links) links.set(link._id, link);
    for (const batch of batches) {
      const moved: HeldEvent[] = batch.events.flatMap((event) => {
        const to = targets.get(event);
        return to ? [{ ...(narrowed.get(event) ?? event), profileId: to, sourceId: batch.sourceId, party: batch.party }] : [];
      });
      await routedEvents.writeMoved(partition, `late:${batch._id}`, moved);
    }
    await identities.reassign([...moves.values()]);
    await identities.addLinks([...links.values()]);
    result.eventsRedirected += targets.size;
    const joined = claimed.links.flatMap((link) => link.profiles.filter((id) => partitionOf(id, deps.config.DMP_PROFILE_PARTITIONS) === partition));
    return { targets, narrowed, relearned: [...relearned.values()], relearnedFrom, joined, successors };
  }

  /**
   * A document newly linked to a person who opted out is marked with them, before this fold's events
   * reach it: its events are theirs (a new device they signed in on). One component read per newly
   * linked document, and only while anyone has opted out.
   */
  async function spreadOptOuts(linkedNow: ReadonlySet<string>): Promise<void> {
    if (linkedNow.size === 0 || !marks.anyOptedOut) return;
    const walked = new Set<string>();
    const adding = new Map<string, string[]>();
    for (const id of linkedNow) {
      if (walked.has(id)) continue;
      const component = await profileGraph.component(id);
      for (const member of component.ids) walked.add(member);
      const subjects = component.ids.map((member) => ({ profileId: member, ancestors: component.docs.find((doc) => doc.profileId === member)?.ancestors }));
      const requestId = subjects.map((subject) => marks.optOutOf(subject)).find((found) => found !== null);
      if (!requestId) continue;
      const unmarked = subjects.filter((subject) => !marks.optedOut(subject)).map((subject) => subject.profileId);
      if (unmarked.length > 0) adding.set(requestId, [...(adding.get(requestId) ?? []), ...unmarked]);
    }
    if (adding.size === 0) return;
    for (const [requestId, documents] of adding) await marks.add(requestId, documents);
    await marks.refresh(true);
  }

  /**
   * The real-time path of segmentation (domain/segmentChanges): the profiles this fold changed are
   * evaluated before and after with the same evaluator as batch runs, and the changes recorded
   * under the attempt's write group. Runs after the fold's versions are written, so the components
   * read here hold them, and a retry compares with what an interrupted attempt wrote: nothing is
   * counted twice. An attempt interrupted between writing its versions and this record leaves them
   * to the next fold of the partition (recordChangesCutShort).
   */
  async function recordSegmentChanges(
    group: string,
    changed: Map<string, ProfileDoc>,
    stored: Map<string, StoredVersion>,
    relinked: string[],
    among: (segmentId: string) => boolean = () => true,
  ): Promise<void> {
    const segments = await segmentStore.definitions();
    if (segments.length === 0 || (changed.size === 0 && relinked.length === 0)) return;
    const definitions = definitionsOf(segments);
    const versions = new Map(segments.map((doc) => [doc._id, doc.version]));
    const evaluator = evaluatorFor(definitions, await sourcePolicies.read(gatedSources(changed.values())));
    const at = new EvaluationTime(now());
    const components = new Map<string, ProfileDoc[]>();
    const linked = [...changed.values()].filter((doc) => !doc.retired && (doc.linked || doc.ancestors?.length)).map((doc) => doc.profileId);
    for (const id of [...linked, ...relinked]) {
      if (components.has(id)) continue;
      const component = await profileGraph.component(id);
      for (const member of component.ids) components.set(member, component.docs);
    }
    // Parts an unlink split from an opted-out document, and successors of one, are opted out with it:
    // a combined subject's documents name their ancestors.
    const markedSubject = (subject: ProfileDoc | CombinedProfile) =>
      'profileIds' in subject
        ? { profileIds: subject.profileIds, ancestors: subject.profileIds.flatMap((id) => (changed.get(id) ?? components.get(id)?.find((doc) => doc.profileId === id))?.ancestors ?? []) }
        : { profileId: subject.profileId, ancestors: subject.ancestors };
    const changes = foldChanges({
      segments: evaluator.ids,
      evaluate: (subject) => evaluator.evaluate(withOptOut(subject, marks.optedOut(markedSubject(subject))), at),
      changed,
      previousOf: (id) => stored.get(id) ?? null,
      components,
      relinked,
    });
    for (const segmentId of Object.keys(changes)) if (!among(segmentId)) delete changes[segmentId];
    const personOf = (id: string) => components.get(id)?.reduce((min, doc) => (doc.profileId < min ? doc.profileId : min), id) ?? id;
    const touched = [...new Set([...changed.values()].filter((doc) => !doc.retired && factsChanged(stored.get(doc.profileId) ?? null, doc)).map((doc) => personOf(doc.profileId)))];
    if (Object.keys(changes).length === 0 && touched.length === 0) return;
    await segmentRuns.recordChanges({ _id: group, at: at.now, changes: withVersions(changes, versions), ...(touched.length > 0 && { touched }) });
  }

  /**
   * The incremental path of the item model (activities/itemModel): each person whose items this
   * fold changed, with their items before and after, recorded under the attempt's write group (a
   * retry writes the same record). Documents joined to others are left to the next full build: their
   * person's items are the component's. A person whose consent refuses profiling counts no items, so
   * a withdrawal takes theirs out and a newer consent puts them back.
   */
  async function recordItemChanges(group: string, changed: Map<string, ProfileDoc>, stored: Map<string, StoredVersion>): Promise<void> {
    const single = (doc: Readonly<ProfileDoc> | undefined) => !!doc && !doc.retired && !doc.linked && !doc.ancestors?.length;
    const policies = await sourcePolicies.read(gatedSources(changed.values()));
    // An opted-out person's items left with their opt-out (activities/privacy markOptOut).
    const counted = (doc: Readonly<ProfileDoc>) => (policies.refuses(doc) || marks.optedOut({ profileId: doc.profileId, ancestors: doc.ancestors }) ? [] : itemsOf(doc, itemTypes));
    const people: ItemChange[] = [];
    for (const doc of changed.values()) {
      const previous = stored.get(doc.profileId);
      if (!single(doc) || (previous && !single(previous))) continue;
      const before = previous ? counted(previous) : [];
      const after = counted(doc);
      if (before.join('\u0000') !== after.join('\u0000')) people.push({ personId: doc.profileId, before, after });
    }
    if (people.length > 0) await itemModels.recordChanges({ _id: group, at: now(), people });
  }

  /**
   * Marks documents that reached a cap of some identity type in this fold, so drains stop joining to
   * them. A document joined to others is one profile with them, and the cap is the profile's: when a
   * fold links a document or adds identities to a linked one, the profile's identities are counted
   * over all its written documents, and each one not yet marked for a type the profile holds its cap
   * of is marked (one walk of the profile, and the markers as drains read them). Profiles holding a
   * part of an unlink's split or an expiry's successor are left to their documents' own caps: until
   * the unlink's relink, a walk from a part reaches documents that still hold both sides, and a
   * marker, which only gains types, would keep both people refusing joins for good. `unmarked`:
   * documents made in this fold (a split's parts), marked for every type they hold their cap of.
   */
  async function markCaps(saved: ProfileDoc[], unmarked: ReadonlySet<string>, ...before: Array<Map<string, StoredVersion>>): Promise<void> {
    const limits = deps.config.DMP_IDENTITY_CAPS;
    const reached = new Map<string, Set<StoredIdentityType>>();
    const reach = (profileId: string, types: Iterable<StoredIdentityType>) => reached.set(profileId, new Set([...(reached.get(profileId) ?? []), ...types]));
    // A document saved twice (a part a split wrote, then changed by this fold's events) is its later version.
    const latest = new Map<string, ProfileDoc>();
    for (const doc of saved) if ((latest.get(doc.profileId)?.version ?? -1) < doc.version) latest.set(doc.profileId, doc);
    const walked = new Set<string>();
    for (const doc of latest.values()) {
      if (doc.retired) continue;
      const types = cappedTypes(doc, limits);
      const previous = unmarked.has(doc.profileId) ? undefined : before.map((versions) => versions.get(doc.profileId)).find(Boolean);
      if (types.length > (previous ? cappedTypes(previous, limits).length : 0)) reach(doc.profileId, types);
      const grew = !previous || doc.identities.length > previous.identities.length || (doc.linked && !previous.linked);
      if (!doc.linked || doc.ancestors?.length || !grew || walked.has(doc.profileId)) continue;
      const component = await profileGraph.component(doc.profileId);
      for (const id of component.ids) walked.add(id);
      // The profile as this fold leaves it: its versions in place of the stored ones, without those it retires or an erasure took.
      const docs = new Map<string, ProfileDoc | StoredVersion>(component.docs.map((member) => [member.profileId, latest.get(member.profileId) ?? member]));
      const members = [...docs.values()].filter((member) => !member.retired && !marks.erased(member.profileId));
      if (members.length < 2 || members.some((member) => member.ancestors?.length)) continue;
      const profileTypes = cappedTypes({ identities: members.flatMap((member) => member.identities) }, limits);
      if (profileTypes.length === 0) continue;
      const marked = await caps.capped(members.map((member) => member.profileId));
      for (const { profileId } of members) {
        const missing = profileTypes.filter((type) => !marked.get(profileId)?.has(type));
        if (missing.length > 0) reach(profileId, missing);
      }
    }
    if (reached.size > 0) await caps.mark([...reached].map(([profileId, types]) => ({ profileId, types: [...types].sort() })), now());
  }

  async function saveInGroup(docs: ProfileDoc[], group: string): Promise<void> {
    const updatedAt = now();
    for (let start = 0; start < docs.length; start += profileWriteBatch) {
      const slice = docs.slice(start, start + profileWriteBatch);
      for (const doc of slice) doc.updatedAt = updatedAt;
      await profiles.saveVersions(slice, group);
      heartbeat({ saved: start + slice.length });
      if (start + slice.length < docs.length) await deps.onFoldStep?.('profiles-partly-written', group);
    }
  }

  /**
   * Removes superseded profile versions a write group at a time. A group most of whose versions have
   * been replaced is read back; the versions in it that are still the newest of their document are
   * carried forward (inserted again, unchanged, as the next version, in `current`), and then the
   * versions it listed are deleted with one indexed delete. Safe to interrupt anywhere: a version is
   * only ever deleted once a newer one of its document exists, and whether it is newest is read, not
   * taken from the counts. Only the partition's writer runs it; a fold of the writer it took over
   * from that is still running (a stalled worker's) may still write into a group of the position,
   * and what it writes is carried when it is read, and left alone when it comes later.
   */
  async function compact(
    position: PartitionPosition,
    current: string,
    trustSince: number | undefined,
    result: Pick<FoldResult, 'versionsRemoved' | 'versionsCarried'>,
    maxGroups: number,
    purge: boolean,
    /** A group left alone as well: a fold's own, just written. */
    spare?: string,
    /** Groups past which the smallest are merged too (see dueShare). */
    crowded = groupsKept,
  ): Promise<number> {
    const groups = dueGroups(position, current, purge, spare, crowded).slice(0, maxGroups);
    for (const group of groups) {
      const members = await profiles.groupMembers(group);
      const newest = await profiles.load([...new Set(members.map((member) => member.profileId))], { trustSince });
      // A member newer than the cache knows of was written by a fold this writer took over from, which
      // went on running (a stalled worker's local activity): the store knows better.
      const beyondCache = members.filter((member) => isNewer(member, newest));
      for (const [id, doc] of await profiles.load([...new Set(beyondCache.map((member) => member.profileId))])) newest.set(id, doc);
      // Still newer than the store: its write has not landed (or never will). It is neither carried nor deleted.
      const settled = members.filter((member) => !isNewer(member, newest));
      // Those that landed replaced versions nobody counted (that fold's save was refused): they are counted now.
      const landed = beyondCache.filter((member) => !isNewer(member, newest));
      if (landed.length > 0) countReplaced(position, (await profiles.tally(group, landed)).replaced);
      // A slice may name a version its write never made (the write was interrupted), which a later
      // attempt then made under a group of its own: the version is that group's, not this one's.
      const live = settled.flatMap((member) => {
        const current = newest.get(member.profileId);
        return current?._id === member._id && current.group === group ? [current] : [];
      });
      // An expired document past the history window leaves whole — every version, wherever it is,
      // and its birth record — unless a link still names it (it leads to its successor): then it is carried.
      const ofAge = purge ? live.filter((current) => purgeable(current.retired?.expired?.at)) : [];
      const leaving = new Set((await unlinked(ofAge)).map((doc) => doc.profileId));
      const keptLinked = new Set(ofAge.map((doc) => doc.profileId).filter((id) => !leaving.has(id)));
      if (leaving.size > 0) result.versionsRemoved += await profiles.purgeDocuments([...leaving]);
      const carried = live.filter((current) => !leaving.has(current.profileId)).map((current) => nextVersion(current));
      await saveInGroup(carried, current);
      await deps.onFoldStep?.('group-carried', current);
      result.versionsCarried += carried.length;
      result.versionsRemoved += await profiles.dropGroup(group, settled.map((member) => member._id));
      await deps.onFoldStep?.('group-dropped', current);
      const counts = position.groups[current];
      counts.written += carried.length;
      // Expired documents carried along stay marked: their group may go once the last of them may. One
      // kept past its time (a link names it) is looked at again a window from now, not at once.
      for (const doc of carried) {
        const expiredAt = keptLinked.has(doc.profileId) ? now() : doc.retired?.expired?.at;
        if (!expiredAt) continue;
        counts.expired = (counts.expired ?? 0) + 1;
        if (!counts.expiredAt || counts.expiredAt < expiredAt) counts.expiredAt = expiredAt;
      }
      delete position.groups[group];
      heartbeat({ compacted: group });
    }
    position.versionsRemoved += result.versionsRemoved;
    return groups.length;
  }

  /**
   * The documents no identity link names, neither them nor a document they descend from (a link to
   * a split parent reaches its successors through them): one indexed read per id.
   */
  async function unlinked(docs: StoredVersion[]): Promise<StoredVersion[]> {
    const named = new Set<string>();
    await forEachConcurrently(docs, 16, async (doc) => {
      for (const id of [doc.profileId, ...(doc.ancestors ?? [])]) {
        if ((await identities.linksOf(id)).length > 0) return void named.add(doc.profileId);
      }
    });
    return docs.filter((doc) => !named.has(doc.profileId));
  }

  /** Whether a group member is newer than the newest version known of its document. */
  function isNewer(member: Pick<StoredVersion, 'profileId' | 'version'>, newest: Map<string, StoredVersion>): boolean {
    return member.version > (newest.get(member.profileId)?.version ?? -1);
  }

  return {
    /** See fold. */
    foldPartitionBatch(input: FoldInput): Promise<FoldResult> {
      return withHeartbeats(() => fold(input));
    },

    /** See compactPartition. */
    compactPartition(input: CompactInput): Promise<CompactResult> {
      return withHeartbeats(() => compactPartition(input));
    },
  };
}

export type ProfileWriterActivities = ReturnType<typeof createProfileWriterActivities>;
