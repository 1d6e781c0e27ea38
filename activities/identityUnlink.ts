import { ApplicationFailure } from '@temporalio/activity';
import { BSON } from 'mongodb';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { gatedSources } from '../domain/consentGate';
import { identityKey } from '../domain/identity';
import { evidenceOf, linksFromEvidence, planSplit, redirectLateEvent, redirectLinkEnd, relinkToParts, severedIn, type HeldEvent, type RetiredMarker, type Severance } from '../domain/identitySplit';
import { combineDocuments, type ProfileDoc } from '../domain/profile';
import { isExpired } from '../domain/profileExpiry';
import { withOptOut } from '../domain/privacy';
import { foldChanges, withVersions } from '../domain/segmentChanges';
import { EvaluationTime, SegmentEvaluator } from '../domain/segmentRules';
import { partitionOf } from '../domain/partition';
import { compareText } from '../domain/text';
import type { Store } from '../store/db';
import { forEachConcurrently } from '../store/db';
import { oversized, UnlinkStore, type UnlinkDoc, type UnlinkResult } from '../store/identityUnlinks';
import { DocumentEvents } from '../store/documentEvents';
import { ProfileEventLog } from '../store/profileEvents';
import { PrivacyMarks } from '../store/privacyMarks';
import { ProfileGraph } from '../store/profileGraph';
import type { StoredVersion } from '../store/profiles';
import { SegmentRunStore } from '../store/segmentRuns';
import { definitionsOf, SegmentStore } from '../store/segments';
import { SourcePolicies } from '../store/sourcePolicies';
import { logger } from '../logger';
import { requestPartitionSplit, type PartitionWorkflowConfig } from '../temporal/client';
import { heartbeat, withHeartbeats } from './heartbeat';

/** The most a split's change record may take before deflating (the store keeps 16 MiB a document). */
const MAX_CHANGE_BYTES = 15 * 1024 * 1024;

/** Named points inside an unlink where tests may interrupt it, to prove a retry converges. */
export type UnlinkStep = 'identities-moved';

export interface UnlinkDeps {
  store: Store;
  temporal: Client;
  config: PartitionWorkflowConfig & Pick<Config, 'DMP_PRIVACY_SALT'>;
  now?: () => Date;
  onUnlinkStep?: (step: UnlinkStep) => void | Promise<void>;
}

export interface PlannedUnlink {
  split: boolean;
  /** Partitions holding documents to split. */
  partitions: number[];
}

/** The activities of an unlink: plan how the component splits, follow the partition writers splitting it, relink the parts. */
export function createUnlinkActivities(deps: UnlinkDeps) {
  const now = deps.now ?? (() => new Date());
  const unlinks = new UnlinkStore(deps.store);
  const graph = ProfileGraph.open(deps.store);
  const events = new ProfileEventLog(deps.store);
  const documentEvents = new DocumentEvents(deps.store);
  const partitions = deps.config.DMP_PROFILE_PARTITIONS;
  const segmentStore = new SegmentStore(deps.store);
  const segmentRuns = new SegmentRunStore(deps.store);
  const sourcePolicies = new SourcePolicies(deps.store, 30_000);
  const marks = new PrivacyMarks(deps.store, deps.config.DMP_PRIVACY_SALT);

  async function load(unlinkId: string): Promise<UnlinkDoc> {
    const doc = await unlinks.get(unlinkId);
    if (!doc) throw ApplicationFailure.nonRetryable(`no unlink ${unlinkId}`);
    return doc;
  }

  async function finish(doc: UnlinkDoc, result: UnlinkResult): Promise<void> {
    await unlinks.save({ ...doc, state: 'completed', result, completedAt: now() });
    await forgetIfErased(doc, result);
  }

  /**
   * An erasure of someone the unlink names, run while it was under way, left it to its workflow
   * (store/subjectErasure): once ended it goes whole, with the severances it recorded naming them.
   */
  async function forgetIfErased(doc: UnlinkDoc, result: UnlinkResult | undefined): Promise<void> {
    await marks.refresh(true);
    const keys = [...new Set([...doc.keys, ...(doc.plan?.sideOf.map((entry) => entry.key) ?? [])])];
    const erasedKeys = keys.filter((key) => marks.erasedByKeys([key]) !== null);
    const documents = [...(doc.plan?.docs.map((planned) => planned.profileId) ?? []), ...(result?.sides.flatMap((side) => side.profileIds) ?? [])];
    if (erasedKeys.length > 0 || documents.some((id) => marks.erased(id))) await unlinks.forget(doc._id, erasedKeys);
  }

  /** The planned documents this unlink has split, as their retired versions. */
  async function splitVersions(doc: UnlinkDoc): Promise<Map<string, StoredVersion & { retired: RetiredMarker }>> {
    const found = new Map<string, StoredVersion & { retired: RetiredMarker }>();
    await forEachConcurrently(doc.plan?.docs ?? [], 16, async ({ profileId }) => {
      const version = await graph.profiles.get(profileId);
      if (version?.retired?.rebuildId === doc._id) found.set(profileId, version as StoredVersion & { retired: RetiredMarker });
    });
    return found;
  }

  /** The planned documents' retired markers (each must be split by now). */
  async function markers(doc: UnlinkDoc): Promise<Map<string, RetiredMarker>> {
    return new Map([...(await splitVersions(doc))].map(([id, version]) => [id, version.retired]));
  }

  /**
   * Events on their way to the split documents that their writers had not folded when they split
   * them (DocumentEvents): each as it will be held once its writer sends it on to a part
   * (redirectLateEvent), so the links it shows are made now, not lost to a relink that ran first.
   */
  async function lateEvents(split: ReadonlyMap<string, StoredVersion & { retired: RetiredMarker }>): Promise<HeldEvent[]> {
    const late = [...(await documentEvents.read([...split.values()])).values()].flatMap((sets) => sets.waiting);
    if (late.length === 0) return [];
    const severances = await unlinks.severancesOf([...new Set(late.flatMap((event) => event.identities.map(identityKey)))]);
    return late.map((event) => {
      const placed = redirectLateEvent(split.get(event.profileId)!.retired, event, severedIn(event.id, severances));
      return { ...event, profileId: placed.target, identities: placed.identities, evidence: evidenceOf(event) };
    });
  }

  /**
   * Fixes how the component holding the identities splits. The identities' co-occurrences are
   * severed (recorded for good), and the sides are what the component's events still join, minus
   * every severance ever made (domain/identitySplit). The first plan stands: a retry returns it.
   */
  async function plan(unlinkId: string): Promise<PlannedUnlink> {
    const doc = await load(unlinkId);
    const summary = () => ({ split: doc.plan !== undefined && doc.plan.sides > 1, partitions: [...new Set(doc.plan?.docs.map((d) => d.partition))].sort((a, b) => a - b) });
    if (doc.plan || doc.state !== 'pending') {
      // A retry after an ended attempt stopped before it looked for an erasure.
      if (doc.state === 'completed' || doc.state === 'failed') await forgetIfErased(doc, doc.result);
      return summary();
    }
    const owners = await Promise.all(doc.keys.map((key) => graph.ownerOf(key)));
    if (owners.some((owner) => !owner)) {
      await finish(doc, { split: false, sides: [], eventsSevered: 0, reason: 'an identity has no profile (any more)' });
      return { split: false, partitions: [] };
    }
    const component = await graph.component(owners[0]!.id);
    if (!owners.every((owner) => component.ids.includes(owner!.id))) {
      await finish(doc, { split: false, sides: [{ profileIds: component.ids }], eventsSevered: 0, reason: 'the identities are not in one profile' });
      return { split: false, partitions: [] };
    }
    // Documents not written yet hold no events and are not split; the relink keeps their identities joined by evidence.
    const ids = component.docs.map((d) => d.profileId);
    heartbeat({ component: ids.length });
    // Events on their way to the documents count too: their links are already in the graph.
    const all = [...(await documentEvents.read(component.docs)).values()].flatMap((sets) => [...sets.held, ...sets.waiting]);
    const severed: Severance[] = [];
    for (let i = 0; i < doc.keys.length; i++) {
      for (let j = i + 1; j < doc.keys.length; j++) {
        const pair = [doc.keys[i], doc.keys[j]].sort() as [string, string];
        const eventIds = [...new Set(all.filter((event) => pair.every((key) => evidenceOf(event).some((identity) => identityKey(identity) === key))).map((event) => event.id))];
        if (eventIds.length > 0) severed.push({ keys: pair, eventIds });
      }
    }
    const docIdentities = new Map(component.docs.map((d) => [d.profileId, d.identities.map(identityKey)]));
    // Every key the events show, evidence included: an earlier unlink may have severed two keys an event moved away from as evidence.
    const keys = [...new Set([...all.flatMap((event) => evidenceOf(event).map(identityKey)), ...[...docIdentities.values()].flat()])];
    const split = planSplit(all, docIdentities, [...(await unlinks.severancesOf(keys)), ...severed]);
    const planned = {
      sides: split.sides,
      sideOf: Object.entries(split.sideOf).map(([key, side]) => ({ key, side })),
      docs: ids.map((profileId) => ({ profileId, partition: partitionOf(profileId, partitions) })),
      links: component.links.map((link) => link._id),
    };
    // Checked before anything is recorded: an unlink too large to store severs nothing.
    const bytes = oversized({ ...doc, plan: planned }, severed);
    if (bytes !== null) {
      const reason = `the profile is too large to unlink: its plan takes ${(bytes / 2 ** 20).toFixed(1)} MiB (${ids.length} documents, ${keys.length} identities, ${all.length} events), over the 15 MiB the store keeps in one document`;
      const result = { split: false, sides: [], eventsSevered: 0, reason };
      await unlinks.save({ ...doc, state: 'failed', result, completedAt: now() });
      await forgetIfErased(doc, result);
      return { split: false, partitions: [] };
    }
    doc.plan = planned;
    const eventsSevered = new Set(severed.flatMap((s) => s.eventIds)).size;
    await unlinks.sever(unlinkId, severed, now());
    if (split.sides > 1) {
      await unlinks.save({ ...doc, state: 'splitting', result: { split: true, sides: [], eventsSevered } });
    } else {
      await finish(doc, { split: false, sides: [{ profileIds: ids }], eventsSevered, reason: 'another path still joins them' });
    }
    return summary();
  }

  /**
   * Once every planned document is split: identities move to the part of their side, links are made
   * again from the evidence the parts hold, and the old links (and any made meanwhile to a split
   * document) are replaced. Safe to repeat: moves and new links are keyed, removals are by `_id`.
   */
  async function relink(unlinkId: string): Promise<UnlinkResult> {
    const doc = await load(unlinkId);
    if (doc.state === 'completed' && doc.result) {
      await forgetIfErased(doc, doc.result);
      return doc.result;
    }
    const split = await splitVersions(doc);
    const retired = new Map([...split].map(([id, version]) => [id, version.retired]));
    const sideOf = new Map((doc.plan?.sideOf ?? []).map(({ key, side }) => [key, side]));
    const owners = await graph.identities.reload([...sideOf.keys()]);
    // A key its owner's marker does not know (claimed for it by a drain, its events elsewhere) goes to a part of its planned side.
    const partOnSide = new Map<number, string>();
    for (const [, marker] of [...retired].sort((a, b) => compareText(a[0], b[0]))) for (const [side, part] of Object.entries(marker.parts)) if (!partOnSide.has(Number(side))) partOnSide.set(Number(side), part);
    const newOwner = (key: string, owner: string) => {
      const marker = retired.get(owner);
      if (!marker) return owner;
      return Object.hasOwn(marker.keys, key) ? redirectLinkEnd(marker, key) : (marker.parts[String(sideOf.get(key))] ?? partOnSide.get(sideOf.get(key)!) ?? marker.fallback);
    };
    const moves = [...owners].flatMap(([key, owner]) => (retired.has(owner) ? [{ key, from: owner, to: newOwner(key, owner) }] : []));
    await graph.identities.reassign(moves);
    heartbeat({ moved: moves.length });
    await deps.onUnlinkStep?.('identities-moved');

    const parts = [...new Set([...retired.values()].flatMap((marker) => Object.values(marker.parts)))];
    const ownerOf = new Map(owners);
    for (const move of moves) ownerOf.set(move.key, move.to);
    const evidence = [...(await events.eventsOf(parts)), ...(await lateEvents(split))];
    const links = new Map(linksFromEvidence(evidence, (key) => ownerOf.get(key), (key) => sideOf.get(key), now()).map((link) => [link._id, link]));
    // Every link of a split document is replaced. Between split documents the parts' evidence has
    // made them again (severed co-occurrences left out); a link to a document not split (not written
    // yet, or made after the plan was taken) keeps its evidence, its split ends moved to the part on
    // the side of the identity it was made through — when that document holds the identity, so the
    // link cannot cross sides.
    const planned = new Set(doc.plan?.links ?? []);
    const stale: string[] = [];
    for (const profileId of retired.keys()) {
      for (const link of await graph.identities.linksOf(profileId)) {
        stale.push(link._id);
        const ends = link.profiles.filter((end) => retired.has(end));
        if (planned.has(link._id) && ends.length === 2) continue;
        if (!ends.every((end) => Object.hasOwn(retired.get(end)!.keys, link.via))) continue;
        const moved = relinkToParts(link, retired);
        if (moved && !links.has(moved._id)) links.set(moved._id, moved);
      }
    }
    await graph.identities.addLinks([...links.values()]);
    await graph.identities.removeLinks([...new Set(stale)]);

    const sides = new Map<string, string[]>();
    for (const marker of retired.values()) for (const [side, part] of Object.entries(marker.parts)) sides.set(side, [...(sides.get(side) ?? []), part]);
    const result: UnlinkResult = {
      split: true,
      sides: [...sides.entries()].sort((a, b) => Number(a[0]) - Number(b[0])).map(([, ids]) => ({ profileIds: [...new Set(ids)].sort() })),
      eventsSevered: doc.result?.eventsSevered ?? 0,
    };
    await recordSplitChanges(unlinkId, [...retired.keys()], parts);
    await finish(doc, result);
    return result;
  }

  /**
   * The real-time segment changes of a split, once its links are made: the person of each side states
   * its membership whole (domain/segmentChanges), and the split documents' ids — one of them was the
   * person's id — are out of every segment. Near-real-time exports hear of the new people at once,
   * not at the next batch run. Keyed by the unlink: a retried relink writes the same record. Dated
   * before the reads, as a fold's are: a fold of a part recorded meanwhile is the newer word. A record
   * too large to store (an over-merged profile in hundreds of segments) is left to the batch runs, so
   * it cannot hold up the unlinks queued behind.
   */
  async function recordSplitChanges(unlinkId: string, splitIds: string[], parts: string[]): Promise<void> {
    const segments = await segmentStore.definitions();
    if (segments.length === 0 || parts.length === 0) return;
    const at = new EvaluationTime(now());
    await marks.refresh();
    const partSet = new Set(parts);
    const components = new Map<string, StoredVersion[]>();
    const changed = new Map<string, ProfileDoc>();
    for (const part of parts) {
      if (components.has(part)) continue;
      const component = await graph.component(part);
      for (const member of component.ids) components.set(member, component.docs as StoredVersion[]);
      // A document erased meanwhile is named in no record: the erasure's scrub may have run already.
      for (const member of component.docs) if (partSet.has(member.profileId) && !marks.erased(member.profileId)) changed.set(member.profileId, member as ProfileDoc);
    }
    const evaluator = new SegmentEvaluator(definitionsOf(segments), await sourcePolicies.read(gatedSources(changed.values())));
    const ancestorsOf = (ids: string[]) => ids.flatMap((id) => components.get(id)?.find((doc) => doc.profileId === id)?.ancestors ?? []);
    const changes = foldChanges({
      segments: evaluator.ids,
      evaluate: (subject) => {
        const ids = 'profileIds' in subject ? subject.profileIds : [subject.profileId];
        return evaluator.evaluate(withOptOut(subject, marks.optedOut({ profileIds: ids, ancestors: ancestorsOf(ids) })), at);
      },
      changed,
      previousOf: () => null,
      components: new Map([...components].map(([id, docs]) => [id, docs as ProfileDoc[]])),
      relinked: [...changed.keys()],
    });
    const gone = splitIds.filter((id) => !marks.erased(id));
    for (const segmentId of evaluator.ids) ((changes[segmentId] ??= { entered: [], exited: [] }).statedOut ??= []).push(...gone);
    const people = [...new Set([...components.values()].filter((docs) => docs.length > 0).map((docs) => combineDocuments(docs).id))].filter((id) => !marks.erased(id));
    const record = { _id: `unlink-${unlinkId}`, at: at.now, changes: withVersions(changes, new Map(segments.map((segment) => [segment._id, segment.version]))), touched: people };
    if (BSON.calculateObjectSize(record) > MAX_CHANGE_BYTES) {
      logger.warn({ unlinkId, people: people.length, segments: segments.length }, 'split too large for a real-time change record: its segments change at their next batch runs');
      return;
    }
    await segmentRuns.recordChanges(record);
  }

  return {
    /** See plan. */
    planUnlink(unlinkId: string): Promise<PlannedUnlink> {
      return withHeartbeats(() => plan(unlinkId));
    },

    /** Asks the partitions' writers to make the unlink's splits (a repeated ask is harmless: a split document is left alone). */
    async requestSplits(input: { unlinkId: string; partitions: number[] }): Promise<void> {
      await Promise.all(input.partitions.map((partition) => requestPartitionSplit(deps.temporal, deps.store.db.databaseName, partition, input.unlinkId, deps.config)));
    },

    /** Read-only. The partitions whose planned documents are not split yet. */
    async pendingSplits(unlinkId: string): Promise<number[]> {
      const doc = await load(unlinkId);
      const done = await markers(doc);
      const left = (doc.plan?.docs ?? []).filter((d) => !done.has(d.profileId));
      // A planned document that expired since (its person inactive) has nothing left to split.
      const expired = await Promise.all(left.map(async (d) => isExpired(await graph.profiles.get(d.profileId))));
      return [...new Set(left.filter((_, n) => !expired[n]).map((d) => d.partition))].sort((a, b) => a - b);
    },

    /** See relink. */
    relinkUnlink(unlinkId: string): Promise<UnlinkResult> {
      return withHeartbeats(() => relink(unlinkId));
    },

    /** Records an unlink that could not be carried out; a document already split stays split (its parts hold everything). */
    async failUnlink(input: { unlinkId: string; reason: string }): Promise<void> {
      const doc = await unlinks.get(input.unlinkId);
      if (!doc || doc.state === 'completed') return;
      const result = { split: false, sides: [], eventsSevered: doc.result?.eventsSevered ?? 0, ...doc.result, reason: input.reason };
      await unlinks.save({ ...doc, state: 'failed', result, completedAt: now() });
      await forgetIfErased(doc, result);
    },

    /** Read-only. Unlink requests not finished yet, oldest first (picked up again after a restart). */
    unfinishedUnlinks(): Promise<string[]> {
      return unlinks.unfinished();
    },
  };
}

export type UnlinkActivities = ReturnType<typeof createUnlinkActivities>;
