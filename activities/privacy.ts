import { ApplicationFailure } from '@temporalio/activity';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../config';
import { cookieIdsAmong, exportFacts, memberIdReader, partnerIdsOf, partnerOfIdType } from '../domain/destinations';
import { matchLimits } from '../domain/partners';
import { documentIdsOf, privacyRequestId, subjectHash, type AccessExport, type PrivacyResult, type PrivacyStepName, type RemovalState } from '../domain/privacy';
import { identityKey, identityTypeOfKey } from '../domain/identity';
import { profileIdForOptOut } from '../domain/ids';
import { combineDocuments } from '../domain/profile';
import { DEFAULT_ITEM_EVENT_TYPES, itemsOf } from '../domain/recommendations';
import { gatedSources } from '../domain/consentGate';
import type { ChangeSet } from '../domain/segmentChanges';
import type { Store } from '../store/db';
import { DestinationStore, type DestinationDoc } from '../store/destinations';
import { ExpiredProfiles } from '../store/expiredProfiles';
import { ItemModelStore } from '../store/itemModel';
import { MatchTableStore } from '../store/matchTables';
import { PrivacyStore, type PrivacyRequestDoc } from '../store/privacy';
import { MARKS_REFRESH_MS, PrivacyMarks } from '../store/privacyMarks';
import { ProfileGraph } from '../store/profileGraph';
import { collectedEvent, ProfileReader } from '../store/profileReader';
import { SegmentMembership } from '../store/segmentMembership';
import { SegmentRunStore } from '../store/segmentRuns';
import { SegmentStore } from '../store/segments';
import { SourcePolicies } from '../store/sourcePolicies';
import { SourceStore } from '../store/sources';
import { SubjectErasure } from '../store/subjectErasure';
import { withHeartbeats } from './heartbeat';

export interface PrivacyDeps {
  store: Store;
  config: Pick<Config, 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP' | 'DMP_PRIVACY_SALT'> & Partial<Pick<Config, 'DMP_ITEM_EVENT_TYPES'>>;
  /** Called once an opt-out's marks are written (tests stop an attempt there). */
  onOptOutMarked?: (requestId: string) => void | Promise<void>;
}

/** Seconds an opt-out waits for an expiring document's claim on the subject's identity to go (its writer saves its fold first). */
const RELEASE_WAITS = 60;

/** The steps of a privacy request: each reads the request, does its part, and records itself done with an audit entry. */
export function createPrivacyActivities(deps: PrivacyDeps) {
  const requests = new PrivacyStore(deps.store);
  const graph = ProfileGraph.open(deps.store);
  const reader = new ProfileReader(deps.store);
  const segments = new SegmentStore(deps.store);
  const destinations = new DestinationStore(deps.store);
  const matches = new MatchTableStore(deps.store, matchLimits(deps.config));
  const marks = new PrivacyMarks(deps.store, deps.config.DMP_PRIVACY_SALT);
  const segmentRuns = new SegmentRunStore(deps.store);
  const erasure = new SubjectErasure(deps.store, matches);
  const sources = new SourceStore(deps.store);
  const expiredProfiles = new ExpiredProfiles(deps.store);
  const itemModels = new ItemModelStore(deps.store);
  const sourcePolicies = new SourcePolicies(deps.store);
  let salt: Promise<string> | null = null;
  const saltOf = () => (salt ??= deps.config.DMP_PRIVACY_SALT ? Promise.resolve(deps.config.DMP_PRIVACY_SALT) : requests.salt());

  const actorOf = (request: PrivacyRequestDoc) => `admin${request.requestedBy ? ` for ${request.requestedBy}` : ''}`;

  async function open(requestId: string): Promise<{ request: PrivacyRequestDoc; keys: string[] }> {
    const request = await requests.get(requestId);
    if (!request) throw ApplicationFailure.nonRetryable(`no privacy request ${requestId}`);
    const keys = await requests.keysOf(requestId);
    if (!keys) throw ApplicationFailure.nonRetryable(`the subject of ${requestId} is no longer held`);
    return { request, keys };
  }

  async function done(request: PrivacyRequestDoc, step: PrivacyStepName, touched: Record<string, number>): Promise<void> {
    await requests.stepDone(request, step, touched, new Date(), actorOf(request));
  }

  /**
   * The partners that hold, or may hold, the subject: per destination, the segments whose confirmed
   * (or unconfirmed) partner state holds one of the subject's ids of the destination's id type, and
   * those ids.
   */
  async function heldBy(facts: ReturnType<typeof exportFacts>): Promise<{ held: AccessExport['destinations']; ids: Record<string, string[]>; read: number }> {
    const held: AccessExport['destinations'] = [];
    const heldIds: Record<string, string[]> = {};
    let read = 0;
    for (const destination of await destinations.list()) {
      const ids = await idsAt(destination, facts);
      if (ids.size === 0) continue;
      const segmentsHeld: AccessExport['destinations'][number]['segments'] = [];
      for (const [segmentId, state] of Object.entries(destination.held ?? {})) {
        const partner = await destinations.readState(destination._id, segmentId, state);
        read += state.chunks;
        const where = partner.held.some((id) => ids.has(id)) ? 'held' : partner.uncertain.some((id) => ids.has(id)) ? 'uncertain' : null;
        if (where) segmentsHeld.push({ segmentId, exportId: state.exportId, state: where });
      }
      if (segmentsHeld.length === 0) continue;
      held.push({ id: destination._id, name: destination.name, connector: destination.connector, idType: destination.idType, segments: segmentsHeld });
      heldIds[destination._id] = [...ids];
    }
    return { held, ids: heldIds, read };
  }

  /** Whether the destination's partner still holds (or may hold) any of these ids, by its state now. */
  async function stillHeld(destination: DestinationDoc, ids: Set<string>): Promise<boolean> {
    for (const [segmentId, state] of Object.entries(destination.held ?? {})) {
      const partner = await destinations.readState(destination._id, segmentId, state);
      if (partner.held.some((id) => ids.has(id)) || partner.uncertain.some((id) => ids.has(id))) return true;
    }
    return false;
  }

  /** The subject's person (their documents combined), or null when no profile holds the identity under any of its keys. */
  async function personOf(keys: string[]) {
    const owner = (await graph.ownerOfFirst(keys))?.owner ?? null;
    const component = owner ? await graph.component(owner.id) : null;
    return component && component.docs.length > 0 ? { component, person: combineDocuments(component.docs) } : null;
  }

  /**
   * Opts out someone no profile holds yet, so that their first events are not profiled either: the
   * document that claimed their identity (a drain routed their events, none is folded yet) is marked;
   * when none has, one of their own is marked and, once every process can have read the mark, claims
   * the identity (stored form, as events name it), so their events go to it. An erased identity is
   * not claimed: its tombstone keeps their events out, and a claim would put the key back in the
   * store. Whether the identity is claimed for the request's own document.
   */
  async function markUnprofiled(request: PrivacyRequestDoc, keys: string[]): Promise<boolean> {
    const [key] = keys;
    const own = profileIdForOptOut(request._id);
    let marked: string | null = null;
    for (let attempt = 1; ; attempt++) {
      const owner = await graph.ownerOf(key);
      if (owner) {
        if (owner.id !== marked) await marks.add(request._id, [(marked = owner.id)]);
        if (owner.id === own) return true;
        // A document expiring for inactivity leads to its successor, but its claim is about to go and the person's
        // next events would make a document of their own, unmarked: the claim is made once it has gone.
        if (attempt >= RELEASE_WAITS || !(await expiring(key))) return false;
        await sleep(1000);
        continue;
      }
      if (attempt > RELEASE_WAITS) return false;
      await marks.refresh(true);
      if (marks.erasedByKeys(keys) !== null) return false;
      if (marked !== own) await marks.add(request._id, [(marked = own)]);
      await sleep(MARKS_REFRESH_MS + 250);
      const { held } = await graph.identities.claim([{ key, type: identityTypeOfKey(key), profileId: own }], new Date());
      // Claimed meanwhile by a drain: that document is marked instead.
      if (held.length > 0) continue;
      // Tombstoned meanwhile by an erasure, whose scrub may have passed the key already: the claim goes again.
      await marks.refresh(true);
      if (marks.erasedByKeys(keys) === null) return true;
      await graph.identities.removeClaims([{ key, profileId: own }]);
      return false;
    }
  }

  /** Whether the identity's claim names a document that expired for inactivity (the claim goes once its writer saves its fold). */
  async function expiring(key: string): Promise<boolean> {
    const claimedBy = (await graph.identities.reload([key])).get(key);
    return claimedBy !== undefined && Boolean((await graph.profiles.get(claimedBy))?.retired?.expired);
  }

  /**
   * Everything of the subject an erasure starts from: the documents of their person (and any that
   * linked or split into them), and every identity key any version of those documents ever held.
   */
  async function closureOf(keys: string[]): Promise<{ keys: string[]; documents: string[]; splitFrom: string[] }> {
    const documents = new Set<string>();
    // From every key the identity may be stored under: an older version's document and a newer one may both hold it.
    for (const key of keys) {
      const owner = await graph.ownerOf(key);
      const component = owner ? await graph.component(owner.id) : null;
      for (const id of [...(component?.ids ?? []), ...(owner ? [owner.id] : [])]) documents.add(id);
      for (const link of component?.links ?? []) for (const end of link.profiles) documents.add(end);
    }
    const subject = { keys: new Set(keys), documents };
    const more = await erasure.remaining(subject, { batches: false });
    // A document an unlink split (a part's ancestor) holds other people too: only the subject's share of it goes, and it is not marked.
    const splitFrom = new Set(more.splitFrom);
    return { keys: [...keys, ...more.keys.filter((key) => !keys.includes(key))], documents: [...documents, ...more.documents].filter((id) => !splitFrom.has(id)), splitFrom: [...splitFrom] };
  }

  /** Access requests made about any of these identity keys (each asked for by id, in order, until one is missing). */
  async function accessRequestsOf(keys: string[]): Promise<PrivacyRequestDoc[]> {
    const secret = await saltOf();
    const found: PrivacyRequestDoc[] = [];
    for (const key of keys) {
      for (let n = 1; ; n++) {
        const request = await requests.get(privacyRequestId('access', subjectHash(secret, key), n));
        if (!request) break;
        found.push(request);
      }
    }
    return found;
  }

  /**
   * The subject's ids as the destination's partner receives them: for partner ids, through the match
   * table and as the identity graph holds them (a sync's `partner_uid` outlives its match entry).
   */
  async function idsAt(destination: DestinationDoc, facts: ReturnType<typeof exportFacts>): Promise<Set<string>> {
    const idOf = memberIdReader(destination.idType);
    const ids = facts.ids.flatMap((key) => idOf(key) ?? []);
    const partner = partnerOfIdType(destination.idType);
    if (partner === null) return new Set(ids);
    return new Set(partnerIdsOf(ids, await matches.partnerIdsOf(partner, cookieIdsAmong(ids))));
  }

  /**
   * The destinations whose partner holds (or may hold) the subject, and those an export is under way
   * to that may add them: each gets a ledger line, pending. Such an export may have planned before
   * the subject was withheld; the removal goes after it (a destination's exports take turns) and
   * finds them held or not by what it confirmed.
   */
  async function findRemovals(requestId: string): Promise<string[]> {
    const { request, keys } = await open(requestId);
    const found = await personOf(keys);
    const facts = found ? exportFacts(found.person) : null;
    // Read before what partners hold: an export that ends in between has saved its holdings by then,
    // and one that takes its turn later reads the marks once it has it.
    const busy = facts ? await exportsUnderWay() : [];
    const { held, ids }: { held: AccessExport['destinations']; ids: Record<string, string[]> } = facts ? await heldBy(facts) : { held: [], ids: {} };
    const lines = held.map(({ id, name }) => ({ id, name }));
    for (const destination of busy) {
      if (ids[destination._id]) continue;
      const at = await idsAt(destination, facts!);
      if (at.size === 0) continue;
      ids[destination._id] = [...at];
      lines.push({ id: destination._id, name: destination.name });
    }
    // A line an earlier attempt opened stays, and so do the ids it found (a match entry may have lapsed since):
    // its export may have ended meanwhile, and its removal is still owed.
    const earlier = (await requests.subjectOf(request._id))?.partnerIds ?? {};
    for (const line of request.destinations ?? []) {
      if (!lines.some(({ id }) => id === line.destinationId)) lines.push({ id: line.destinationId, name: line.name });
    }
    for (const { id } of lines) ids[id] = [...new Set([...(ids[id] ?? []), ...(earlier[id] ?? [])])];
    await requests.setPartnerIds(request._id, ids);
    for (const destination of lines) {
      if (!(request.destinations ?? []).some((line) => line.destinationId === destination.id)) {
        await requests.setRemoval(request._id, { destinationId: destination.id, name: destination.name, state: 'pending', round: 0, exportId: null, lastError: null, updatedAt: new Date() });
      }
    }
    return lines.map((destination) => destination.id);
  }

  /** Destinations with an export holding their turn (one indexed read of each one's turns). */
  async function exportsUnderWay(): Promise<DestinationDoc[]> {
    const all = await destinations.list();
    const holders = await Promise.all(all.map((destination) => destinations.holder(destination._id)));
    return all.filter((_, n) => holders[n] !== null);
  }

  /**
   * Where the subject stands at the destination's partner by what it confirmed: still held, removed
   * (`acknowledged` on the ledger), or out of reach because the destination was deleted. Reads the
   * partner state of every segment the destination exports, so it heartbeats: that takes a while at scale.
   */
  function removalStanding(input: { requestId: string; destinationId: string }): Promise<'held' | 'acknowledged' | 'destination_deleted'> {
    return withHeartbeats(async () => {
      const destination = await destinations.get(input.destinationId);
      // Being deleted (`dropping`: its holdings may be gone already, the partner untold) is deleted.
      if (!destination || destination.dropping) return 'destination_deleted';
      return (await stillHeld(destination, new Set(await requests.partnerIdsOf(input.requestId, input.destinationId)))) ? 'held' : 'acknowledged';
    });
  }

  return {
    /** Finds the profile the subject's identity belongs to (its documents, through the identity graph). */
    async resolvePrivacySubject(input: { requestId: string }): Promise<{ found: boolean; profiles: number }> {
      const { request, keys } = await open(input.requestId);
      const owner = (await graph.ownerOfFirst(keys))?.owner ?? null;
      const component = owner ? await graph.component(owner.id) : null;
      const profiles = component?.docs.length ?? 0;
      await done(request, 'resolve', { identities: 1, profiles, identity_links: component?.links.length ?? 0 });
      return { found: profiles > 0, profiles };
    },

    /**
     * An erasure's first steps, and each later pass's: the subject resolved once to everything the
     * erasure starts from (their documents, any linked to or split from them, every identity key
     * any version held); the keys not tombstoned yet tombstoned — salted hashes in a mark slot that
     * also withholds the documents from segments and exports at once — after recording where each
     * source's drain stands (the events after it may never reach a routed batch); and, the first
     * time, the destinations holding the subject given their ledger lines (kept with the closure).
     */
    async prepareErasure(input: { requestId: string }): Promise<{ found: boolean; holders: string[] }> {
      return withHeartbeats(async () => {
        const { request, keys: subjectKeys } = await open(input.requestId);
        let subject = (await requests.subjectOf(request._id))!;
        const resolving = !subject.documents;
        if (resolving) {
          const closure = await closureOf(subjectKeys);
          subject = { ...subject, ...closure, undrained: {}, findingHolders: true };
          for (const source of await sources.list()) subject.undrained![source._id] = (await sources.loadPosition(source._id))?.cursor ?? 0;
          await requests.saveSubject(subject);
          await done(request, 'resolve', { identities: closure.keys.length, profiles: closure.documents.length, drain_positions: Object.keys(subject.undrained!).length });
        }
        const keys = (subject.keys ?? []).filter((k) => !(subject.tombstoned ?? []).includes(k));
        if (keys.length > 0) {
          const secret = await saltOf();
          await marks.add(request._id, subject.documents ?? [], keys.map((k) => subjectHash(secret, k)));
          await requests.saveSubject({ ...subject, tombstoned: [...(subject.tombstoned ?? []), ...keys] });
        }
        await done(request, 'tombstone', { privacy_marks: keys.length > 0 ? 1 : 0 });
        let holders = subject.holders;
        if (!holders && subject.findingHolders) {
          // Found once the tombstones withhold the subject from exports, while their identities and match
          // entries are still there to map them (the scrub runs only after this returns), and kept: a later
          // attempt or pass reads them here.
          holders = await findRemovals(request._id);
          const { findingHolders: _found, ...found } = (await requests.subjectOf(request._id))!;
          await requests.saveSubject({ ...found, holders });
        }
        // A subject saved before its holders were kept with it has them on the ledger.
        holders ??= (request.destinations ?? []).map((line) => line.destinationId);
        return { found: (subject.documents ?? []).length > 0, holders };
      });
    },

    /**
     * Removes the subject from every collection (store/subjectErasure): their events from the raw
     * log and the routed batches (other people's in the same documents untouched), event ids,
     * identities and links, match-table entries, every profile version, segment snapshots, changes
     * and samples, and access exports made for them. Then checks that nothing of them is left where
     * it is found by key, and finishes the snapshots of runs that were running. Anything new of the
     * subject (a version written by a fold that began before the tombstones, a key it added) grows
     * the closure: the workflow then tombstones and erases again.
     */
    async eraseSubject(input: { requestId: string }): Promise<{ events: number; clean: boolean; grew: boolean; waiting: number }> {
      return withHeartbeats(async () => {
        const { request } = await open(input.requestId);
        const doc = (await requests.subjectOf(request._id))!;
        const subject = { keys: new Set(doc.keys ?? []), documents: new Set(doc.documents ?? []), splitFrom: new Set(doc.splitFrom ?? []) };
        const touched: Record<string, number> = {};
        const events = (await erasure.events(subject, doc.undrained ?? {}, touched)) + (await erasure.stagedRows(subject, touched));
        await erasure.identityGraph(subject, touched);
        await erasure.matchTables(subject, touched);
        await erasure.profiles(subject, touched);
        const running = new Set([...(doc.runsRunning ?? []), ...(await erasure.segments(subject, touched))]);
        await erasure.accessExports(await accessRequestsOf(doc.keys ?? []), touched);
        await done(request, 'erase', touched);

        const verified: Record<string, number> = {};
        const waiting: string[] = [];
        for (const runId of running) if (!(await erasure.endedRun(runId, subject, verified))) waiting.push(runId);
        const left = await erasure.remaining(subject);
        const grew = left.keys.length > 0 || left.documents.length > 0 || left.splitFrom.length > 0;
        const splitFrom = new Set([...subject.splitFrom, ...left.splitFrom]);
        await requests.saveSubject({
          ...doc,
          keys: [...subject.keys, ...left.keys],
          documents: [...subject.documents, ...left.documents].filter((id) => !splitFrom.has(id)),
          ...(splitFrom.size > 0 && { splitFrom: [...splitFrom] }),
          runsRunning: waiting,
          events: (doc.events ?? 0) + events,
        });
        const clean = waiting.length === 0 && !grew && Object.keys(left.found).length === 0;
        if (clean) await done(request, 'verify', verified);
        return { events, clean, grew, waiting: waiting.length };
      });
    },

    /**
     * The access export: the profile as the API shows it (identities with the sources that reported
     * them, traits with theirs, consent), its retained events, its segments now, and the partners
     * holding it — written as the request's download.
     */
    async collectAccessExport(input: { requestId: string }): Promise<PrivacyResult> {
      return withHeartbeats(async () => {
        const { request, keys } = await open(input.requestId);
        let view = null;
        for (const key of keys) if ((view = await reader.byIdentity(key))) break;
        const person = view ? await reader.person(view.id) : null;
        // Documents that expired for inactivity, named by any identity the person holds (as an erasure finds them), not the request's alone.
        const personKeys = [...new Set([...keys, ...(view?.identities ?? []).map((identity) => identityKey({ type: identity.type, value: identity.value }))])];
        const expired = [...new Map((await Promise.all(personKeys.map((key) => expiredProfiles.naming(key)))).flat().map((record) => [record._id, record])).values()];
        const documents = [...(view?.profileIds ?? []), ...expired.map((record) => record._id)];
        // An event redirected from an expired document to its successor is held under both: listed once.
        const events = [...new Map((documents.length > 0 ? await reader.eventsOfDocuments(documents) : []).map((event) => [`${event.sourceId}\n${event.id}`, collectedEvent(event)])).values()];
        const names = new Map((await segments.list()).map((segment) => [segment._id, segment.name]));
        const { held, read } = person ? await heldBy(exportFacts(person)) : { held: [], read: 0 };
        const document: AccessExport = {
          request: { id: request._id, receivedAt: request.receivedAt.toISOString(), subject: request.subject },
          generatedAt: new Date().toISOString(),
          profile: view,
          expired: expired.map((record) => ({ profileId: record._id, expiredAt: record.at.toISOString() })),
          events,
          segments: (view?.segments ?? []).map((id) => ({ id, name: names.get(id) ?? id })),
          destinations: held,
        };
        const parts = await requests.writeExport(request._id, JSON.stringify(document));
        // An erasure of the subject that began meanwhile (its tombstones come first) may have looked for
        // this export before it was counted on the request: it goes, and nothing is held any more.
        await marks.refresh(true);
        if (marks.erasedByKeys(keys) !== null) {
          await requests.dropExport(request._id, parts);
          await done(request, 'collect', { privacy_exports: 0 });
          return { found: false, profiles: 0, identities: 0, events: 0, segments: 0, destinations: 0, exportUrl: null };
        }
        await done(request, 'collect', { profiles: view?.profileIds.length ?? 0, expired_profiles: expired.length, profile_events: events.length, segments: names.size, partner_state: read, privacy_exports: parts });
        return {
          found: view !== null || expired.length > 0,
          profiles: view?.profileIds.length ?? 0,
          identities: view?.identities.length ?? 0,
          events: events.length,
          segments: document.segments.length,
          destinations: held.length,
          exportUrl: `/v1/privacy/requests/${request._id}/export`,
        };
      });
    },

    /**
     * Opts the subject out: their documents (and those they were split from) are marked, so from
     * now on folds apply only their consent signals, rules place them in no segment, and exports
     * withhold them; and they leave every segment they are in at once, as a real-time change.
     */
    markOptOut(input: { requestId: string }): Promise<{ found: boolean; profiles: number; segments: number }> {
      return withHeartbeats(async () => {
        const { request, keys } = await open(input.requestId);
        let found = await personOf(keys);
        if (!found) {
          const claimed = await markUnprofiled(request, keys);
          // Claimed meanwhile by a drain whose document is written by now: opted out as anyone with a profile is.
          found = claimed ? null : await personOf(keys);
          if (!found) {
            await done(request, 'mark', { identities: claimed ? 1 : 0, privacy_marks: 1 });
            return { found: false, profiles: 0, segments: 0 };
          }
        }
        const { component, person } = found;
        const marked = { profileIds: person.profileIds, ancestors: component.docs.flatMap((doc) => doc.ancestors ?? []) };
        // Opted out by another request before: their items left then. Marked by an earlier attempt of this
        // one (or by this one over another's): recorded (again, under the same id) only while no build can
        // have taken that record in — else their items might leave twice.
        await marks.refresh(true);
        const markedBy = marks.optOutOf(marked);
        const removalId = `optout:${person.id}`;
        const owed = async () => {
          if (markedBy === null) return true;
          if (markedBy !== request._id) return false;
          const head = await itemModels.head();
          return (await itemModels.hasChanges(removalId)) || head === null || (await itemModels.neverApplied(head, removalId, request.receivedAt));
        };
        const already = !(await owed());
        await marks.add(request._id, documentIdsOf(marked));
        await deps.onOptOutMarked?.(request._id);
        const all = await segments.list();
        const membership = new SegmentMembership(deps.store);
        const states = await membership.realTime(all.filter((segment) => segment.current));
        // Out of every segment, under whatever version of its rule: a run whose pass read the marks
        // before this one (of a rule edited since, a segment's first, or one the person newly
        // qualifies for) applies it on top of its snapshot once it completes. Where they were a
        // member it is an exit; elsewhere a stated membership.
        const changes: ChangeSet = {};
        let left = 0;
        for (const segment of all) {
          const member = segment.current !== null && (states.get(segment._id)?.get(person.id) ?? (await membership.inSnapshot(segment, person.id)));
          changes[segment._id] = member ? { entered: [], exited: [person.id] } : { entered: [], exited: [], statedOut: [person.id] };
          if (member) left++;
        }
        if (all.length > 0) await segmentRuns.recordChanges({ _id: `privacy:${request._id}`, at: new Date(), changes, touched: [person.id] });
        // Their items leave the item model at its next refresh, as the profile writer records a change (a person of one
        // document; one of several is the next full build's, which leaves them out). Counted only if their consent let them be.
        const single = component.docs.length === 1 && !component.docs[0].ancestors?.length;
        const policies = await sourcePolicies.read(gatedSources([person]));
        const items = single && !already && !policies.refuses(person) ? itemsOf(person, deps.config.DMP_ITEM_EVENT_TYPES ?? DEFAULT_ITEM_EVENT_TYPES) : [];
        if (items.length > 0) await itemModels.recordChanges({ _id: removalId, at: new Date(), people: [{ personId: person.id, before: items, after: [] }] });
        await done(request, 'mark', { profiles: person.profileIds.length, privacy_marks: 1, segment_changes: all.length > 0 ? 1 : 0 });
        return { found: true, profiles: person.profileIds.length, segments: left };
      });
    },

    /** Finds the destinations holding the subject and opens their ledger lines. */
    async findRemovals(input: { requestId: string }): Promise<string[]> {
      return withHeartbeats(() => findRemovals(input.requestId));
    },

    /** Records where one destination's removal stands. */
    async recordRemoval(input: { requestId: string; destinationId: string; state: RemovalState; round: number; exportId: string | null; error: string | null }): Promise<void> {
      const request = await requests.get(input.requestId);
      const line = request?.destinations?.find((entry) => entry.destinationId === input.destinationId);
      if (!request || !line) return;
      await requests.setRemoval(request._id, { ...line, state: input.state, round: input.round, exportId: input.exportId, lastError: input.error, updatedAt: new Date() });
    },

    removalStanding,

    /** Whether the partner still holds the subject: what requests begun before `removalStanding` ask. */
    async removalPending(input: { requestId: string; destinationId: string }): Promise<boolean> {
      return (await removalStanding(input)) === 'held';
    },

    /** Closes a request with its result; the subject's identity key leaves the store with it. */
    async completePrivacyRequest(input: { requestId: string; result: PrivacyResult }): Promise<void> {
      const request = await requests.get(input.requestId);
      if (!request) return;
      // Completed by an attempt cut short before it removed the subject: removed now.
      if (request.state === 'completed') return requests.forgetSubject(request._id);
      let result = input.result;
      const subject = await requests.subjectOf(request._id);
      let marked = 0;
      if (request.type === 'erase' && subject) {
        // The documents are gone: the mark that withheld them while they were erased names them no more.
        marked = await marks.forgetDocumentsOf(request._id);
        result = { ...result, profiles: subject.documents?.length ?? 0, identities: subject.keys?.length ?? 0, events: subject.events ?? 0 };
      }
      // Every removal confirmed (the workflow waited for each): the removal step is done.
      if (request.steps.some((step) => step.name === 'remove' && step.state === 'pending')) {
        await done(request, 'remove', { destinations: request.destinations?.length ?? 0 });
      }
      await done(request, 'complete', { privacy_subjects: 1, privacy_marks: marked });
      await requests.finish(request._id, { state: 'completed', completedAt: new Date(), error: null, result });
    },

    /** Records a request that could not finish, and why. */
    async failPrivacyRequest(input: { requestId: string; error: string }): Promise<void> {
      const request = await requests.get(input.requestId);
      if (request && request.state !== 'completed') await requests.finish(request._id, { state: 'failed', completedAt: new Date(), error: input.error, result: null });
    },
  };
}

export type PrivacyActivities = ReturnType<typeof createPrivacyActivities>;
