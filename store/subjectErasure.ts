import { Binary, BSON, type Collection } from 'mongodb';
import { namesSubject, eraseFromChanges, eraseFromChunk, eraseFromRoutedBatch, eraseFromSnapshotChunk, keyHolderAfterSplits, memberCounts, splitMarker, type ErasedSubject } from '../domain/erasure';
import type { RetiredMarker } from '../domain/identitySplit';
import type { StoredEvent } from '../domain/event';
import type { SegmentSubject } from '../domain/profile';
import { identityKey } from '../domain/identity';
import { sampleRank } from '../domain/segments';
import { COLLECTIONS, forEachConcurrently, type Store } from './db';
import { decodeEvents, encodeEvents } from './deflatedBson';
import { EVENT_ID_FENCES, EventIdGenerations } from './eventIds';
import { EXPIRED_PROFILES_COLLECTION, ExpiredProfiles } from './expiredProfiles';
import { chunkId, eventIdKey, type StoredChunk } from './eventLog';
import { ITEM_MODEL_COLLECTIONS, itemChangesDoc, storedItemChanges, type StoredItemChanges } from './itemModel';
import type { MatchTableStore } from './matchTables';
import { PartnerStore } from './partners';
import { PRIVACY_COLLECTIONS } from './privacy';
import { ProfileStore, type StoredVersion } from './profiles';
import { ProfileEventLog, type RoutedBatchDoc, type RoutedEvent } from './profileEvents';
import { decodeSnapshotChunk, encodeSnapshotChunk, SEGMENT_COLLECTIONS, SegmentRunStore, changeDoc, runOfStored, storedChange, storedRun, type StoredChange, type StoredRun, type RunChunk, type RunDoc } from './segmentRuns';
import { SegmentStore } from './segments';
import { SharedRewrites } from './sharedRewrites';
import { stagedChunkId } from './uploads';
import type { UnlinkDoc } from './identityUnlinks';

/** Per collection, the documents an erasure step deleted or rewrote (counts for the audit, never values). */
export type Touched = Record<string, number>;

/**
 * The profile ids under which segment data (snapshots, changes, samples, item changes) may hold the
 * subject: their documents, and those an unlink split — a run made before the split holds such a
 * document whole, every side's identity keys among its export facts; it names no one now.
 */
function segmentRows(subject: ErasedSubject): Set<string> {
  return new Set([...subject.documents, ...(subject.splitFrom ?? [])]);
}

/** Concurrent deletes and rewrites: each is one statement by `_id` or by an indexed field. */
const IN_FLIGHT = 16;
function add(touched: Touched, collection: string, n: number): void {
  if (n > 0) touched[collection] = (touched[collection] ?? 0) + n;
}

/**
 * Removes one subject from every collection that names them, each by `_id` or an indexed field
 * (the closure gives the keys: their documents, identities and events). Every write is a delete or
 * a replace by `_id` without upsert, so a repeat — a retried activity, another pass of the
 * verification loop — finds less and leaves the same state; documents shared with other people are
 * rewritten without the subject and nothing else about them changes.
 */
export class SubjectErasure {
  private readonly db: Store['db'];
  /** Documents shared with other people, which other erasures (here or in other processes) rewrite too. */
  private readonly shared: SharedRewrites;
  private readonly routed: ProfileEventLog;
  private readonly expired: ExpiredProfiles;

  constructor(
    private readonly store: Store,
    private readonly matches: MatchTableStore,
  ) {
    this.db = store.db;
    this.shared = new SharedRewrites(store);
    this.routed = new ProfileEventLog(store);
    this.expired = new ExpiredProfiles(store);
  }

  private collection<T extends { _id: string }>(name: string): Collection<T> {
    return this.db.collection<T>(name);
  }

  /**
   * The subject's events, wherever they are kept: each routed batch holding some (one indexed read
   * per document) is rewritten without them only after the raw chunks its events came from are
   * rewritten and their ids forgotten — so an interrupted pass, repeated, finds the way to them
   * again. Then every raw chunk from `undrained` (each source's drain cursor before the tombstones)
   * to the head: events a drain dropped, or has not reached, are in no routed batch.
   */
  async events(subject: ErasedSubject, undrained: Record<string, number>, touched: Touched): Promise<number> {
    let events = 0;
    const batches = this.collection<RoutedBatchDoc>(COLLECTIONS.profileEvents);
    const generations = await EventIdGenerations.live(this.db);
    const done = new Set<string>();
    const seen = new Set<string>();
    // A split document's batches hold its other sides' events too: only the subject's go (by their identities).
    for (const documentId of [...subject.documents, ...(subject.splitFrom ?? [])]) {
      for (const doc of await batches.find({ profiles: documentId }).toArray()) {
        if (seen.has(doc._id)) continue;
        seen.add(doc._id);
        const erased = eraseFromRoutedBatch({ events: decodeEvents<RoutedEvent>(doc.events), profiles: doc.profiles, linked: doc.linked, created: doc.created }, subject);
        if (!erased) continue;
        const ids = new Set<string>();
        events += erased.erased.length;
        for (const event of erased.erased) {
          const sourceId = event.sourceId ?? doc.sourceId;
          const chunk = chunkId(sourceId, event.seq);
          if (!done.has(chunk)) await this.rawChunk(chunk, subject, generations, touched);
          done.add(chunk);
          if (event.id) ids.add(eventIdKey(sourceId, event.id));
        }
        // The raw chunk may be gone already (retention), its ids still held for the dedupe window.
        await this.forgetIds(ids, generations, touched);
        const rewritten = await this.routed.eraseSubject(doc._id, subject, doc);
        if (rewritten) add(touched, COLLECTIONS.profileEvents, 1);
      }
    }
    for (const [sourceId, from] of Object.entries(undrained)) {
      for (let seq = from; ; seq++) {
        const chunk = chunkId(sourceId, seq);
        if (done.has(chunk)) continue;
        const found = await this.rawChunk(chunk, subject, generations, touched);
        if (found === null) break;
        events += found;
      }
    }
    return events;
  }

  /**
   * Rows of uploads importing, staged until their import appends them: the subject's become
   * placeholders, which the import drops as erased. An upload still receiving may drop and stage its
   * chunks again (a feed's file refused part way), so its rows are left to the import, which drops the
   * subject's too (it reads the marks); those of ended uploads left with their chunks. One scan of
   * the uploads, then one read by `_id` per staged chunk. How many rows were the subject's.
   */
  async stagedRows(subject: ErasedSubject, touched: Touched): Promise<number> {
    const uploads = this.collection<{ _id: string; state: string; chunks: number }>(COLLECTIONS.uploads);
    const rows = this.collection<{ _id: string; uploadId: string; events: Binary }>(COLLECTIONS.uploadRows);
    let erased = 0;
    for (const upload of await uploads.find({ state: 'importing' }, { projection: { _id: 1 } }).toArray()) {
      // Staged one after the other from 0, final, and all dropped together once the import ends.
      for (let n = 0; ; n++) {
        const doc = await rows.findOne({ _id: stagedChunkId(upload._id, n) });
        if (!doc) break;
        const found = eraseFromChunk(decodeEvents<StoredEvent>(doc.events), subject);
        if (!found) continue;
        erased += found.erased.length;
        if (await this.rewriteEvents(rows, doc, found, subject)) add(touched, COLLECTIONS.uploadRows, 1);
      }
    }
    return erased;
  }

  /**
   * One raw chunk rewritten with the subject's events as placeholders, after their ids left the
   * dedupe generations. How many were the subject's; null when the chunk does not exist.
   */
  private async rawChunk(id: string, subject: ErasedSubject, generations: string[], touched: Touched): Promise<number | null> {
    const chunks = this.collection<StoredChunk & { erasures?: number }>(COLLECTIONS.events);
    const doc = await chunks.findOne({ _id: id });
    if (!doc) return null;
    const erased = eraseFromChunk(decodeEvents<StoredEvent>(doc.events), subject);
    if (!erased) return 0;
    await this.forgetIds(new Set(erased.erased.map((eventId) => eventIdKey(doc.sourceId, eventId))), generations, touched);
    if (await this.rewriteEvents(chunks, doc, erased, subject)) add(touched, COLLECTIONS.events, 1);
    return erased.erased.length;
  }

  /** A document of events (a raw or a staged chunk) rewritten as `erased` has it, or as found again if another rewrite came first; whether it was written. */
  private async rewriteEvents<T extends { _id: string; events: Binary }>(collection: Collection<T>, doc: T, erased: { events: StoredEvent[]; erased: string[] }, subject: ErasedSubject): Promise<boolean> {
    const rewritten = await this.shared.rewrite(
      collection,
      doc._id,
      (current) => {
        const again = current === doc ? erased : eraseFromChunk(decodeEvents<StoredEvent>(current.events), subject);
        return again && { doc: { ...current, events: encodeEvents(again.events) }, result: again.erased.length };
      },
      doc,
    );
    return Boolean(rewritten);
  }

  /** Event ids out of every live dedupe generation (a late repeat is then dropped as erased, not kept as a duplicate). */
  private async forgetIds(ids: Set<string>, generations: string[], touched: Touched): Promise<void> {
    for (const name of generations) {
      const collection = this.collection<{ _id: string }>(name);
      await forEachConcurrently([...ids], IN_FLIGHT, async (id) => add(touched, 'event_ids', (await collection.deleteOne({ _id: id })).deletedCount));
    }
    add(touched, EVENT_ID_FENCES, await EventIdGenerations.forgetFenced(this.db, [...ids]));
  }

  /** Identities, links, cap markers, refusals, severances and expired-document records of the subject. */
  async identityGraph(subject: ErasedSubject, touched: Touched): Promise<void> {
    const identities = this.collection<{ _id: string }>(COLLECTIONS.identities);
    const links = this.collection<{ _id: string; profiles: string[]; via: string }>(COLLECTIONS.identityLinks);
    const caps = this.collection<{ _id: string }>(COLLECTIONS.identityCaps);
    const refusals = this.collection<{ _id: string; profileId: string; key: string }>(COLLECTIONS.identityRefusals);
    const severances = this.collection<{ _id: string; keys: string[] }>(COLLECTIONS.identitySeverances);
    await forEachConcurrently([...subject.keys], IN_FLIGHT, async (key) => {
      add(touched, COLLECTIONS.identities, (await identities.deleteOne({ _id: key })).deletedCount);
      // A join of the subject's identity refused under someone else's capped profile names it there.
      for (const refusal of await refusals.find({ key }, { projection: { _id: 1 } }).toArray()) {
        add(touched, COLLECTIONS.identityRefusals, (await refusals.deleteOne({ _id: refusal._id })).deletedCount);
      }
      for (const severance of await severances.find({ keys: key }, { projection: { _id: 1 } }).toArray()) {
        add(touched, COLLECTIONS.identitySeverances, (await severances.deleteOne({ _id: severance._id })).deletedCount);
      }
    });
    await forEachConcurrently([...subject.documents], IN_FLIGHT, async (documentId) => {
      for (const link of await links.find({ profiles: documentId }, { projection: { _id: 1 } }).toArray()) {
        add(touched, COLLECTIONS.identityLinks, (await links.deleteOne({ _id: link._id })).deletedCount);
      }
      for (const refusal of await refusals.find({ profileId: documentId }, { projection: { _id: 1 } }).toArray()) {
        add(touched, COLLECTIONS.identityRefusals, (await refusals.deleteOne({ _id: refusal._id })).deletedCount);
      }
      add(touched, COLLECTIONS.identityCaps, (await caps.deleteOne({ _id: documentId })).deletedCount);
    });
    // A split document's links made through the subject's keys go; those through its other sides' stay theirs.
    await forEachConcurrently([...(subject.splitFrom ?? [])], IN_FLIGHT, async (documentId) => {
      for (const link of await links.find({ profiles: documentId }).toArray()) {
        if (subject.keys.has(link.via)) add(touched, COLLECTIONS.identityLinks, (await links.deleteOne({ _id: link._id })).deletedCount);
      }
    });
    add(touched, EXPIRED_PROFILES_COLLECTION, await this.expired.forget([...subject.documents]));
    // Ended unlink requests that name the subject (its identities, its documents) go whole. Read in
    // full: unlinks are operator actions, few. One still running is its workflow's to finish.
    const unlinks = this.collection<UnlinkDoc>(COLLECTIONS.identityUnlinks);
    for (const unlink of await unlinks.find({ state: { $in: ['completed', 'failed'] } }).toArray()) {
      const named = [...unlink.keys, ...(unlink.plan?.sideOf.map((entry) => entry.key) ?? [])].some((key) => subject.keys.has(key));
      const holds = [...(unlink.plan?.docs.map((doc) => doc.profileId) ?? []), ...(unlink.result?.sides.flatMap((side) => side.profileIds) ?? [])].some((id) => subject.documents.has(id));
      if (named || holds) add(touched, COLLECTIONS.identityUnlinks, (await unlinks.deleteOne({ _id: unlink._id })).deletedCount);
    }
  }

  /** The subject's cookie ids and partner user ids out of the cookie-sync match tables, on both sides. */
  async matchTables(subject: ErasedSubject, touched: Touched): Promise<void> {
    const valuesOf = (type: string) => [...subject.keys].filter((key) => key.startsWith(`${type}:`)).map((key) => key.slice(type.length + 1));
    const cookies = valuesOf('cookie_id');
    const partnerUsers = valuesOf('partner_uid');
    const changes = [
      cookies.length > 0 ? await this.matches.forget(cookies, await new PartnerStore(this.store).everyId()) : null,
      partnerUsers.length > 0 ? await this.matches.forgetPartnerUsers(partnerUsers) : null,
    ];
    for (const changed of changes) {
      if (!changed) continue;
      add(touched, COLLECTIONS.matchByCookie, changed.byCookie);
      add(touched, COLLECTIONS.matchByPartnerId, changed.byPartnerId);
    }
  }

  /** Every version of the subject's profile documents (one indexed delete per document), and their names in the write groups' slices. */
  async profiles(subject: ErasedSubject, touched: Touched): Promise<void> {
    const profiles = new ProfileStore(this.store, 1);
    add(touched, COLLECTIONS.profiles, await profiles.removeDocuments([...subject.documents], IN_FLIGHT));
    await forEachConcurrently([...(subject.splitFrom ?? [])], IN_FLIGHT, async (documentId) => add(touched, COLLECTIONS.profiles, await profiles.eraseKeysFromSplit(documentId, subject.keys)));
  }

  /**
   * Segment membership: the snapshot chunks of ended runs that hold the subject (found through each
   * run's index) rewritten without them, and the run's index and counts with them; real-time
   * changes, the estimate's sample and pending item-model changes likewise. Returns the runs still
   * running, whose chunks are done once they end.
   */
  async segments(subject: ErasedSubject, touched: Touched): Promise<string[]> {
    const runs = new SegmentRunStore(this.store);
    const running: string[] = [];
    const held = segmentRows(subject);
    const ids = [...held].sort();
    for (const run of await runs.runs.find({}, { projection: { _id: 1, state: 1, chunks: 1, segments: 1, members: 1, passStartedAt: 1 } }).toArray()) {
      // A run under way keeps what its pass read in memory until it ends, the subject's documents
      // too if it read them before they went: one whose pass has begun is waited for, chunks or none
      // yet. (One whose pass has not begun reads the profiles after their scrub, just done.)
      if (run.state === 'running' && run.passStartedAt) {
        running.push(run._id);
        continue;
      }
      if (run.chunks.length === 0) continue;
      if (await this.snapshot(runs, runOfStored(run) as RunDoc, ids)) add(touched, SEGMENT_COLLECTIONS.runs, 1);
    }
    const changes = this.collection<StoredChange & { erasures?: number }>(SEGMENT_COLLECTIONS.changes);
    for (const { _id } of await changes.find({}, { projection: { _id: 1 } }).toArray()) {
      const rewritten = await this.shared.rewrite(changes, _id, (stored) => {
        const change = changeDoc(stored);
        const erased = eraseFromChanges(change, held);
        return erased && { doc: storedChange({ ...change, ...erased }), result: true };
      });
      if (rewritten) add(touched, SEGMENT_COLLECTIONS.changes, 1);
    }
    await this.sample(subject, touched);
    const itemChanges = this.collection<StoredItemChanges & { erasures?: number }>(ITEM_MODEL_COLLECTIONS.changes);
    for (const { _id } of await itemChanges.find({}, { projection: { _id: 1 } }).toArray()) {
      const rewritten = await this.shared.rewrite(itemChanges, _id, (stored) => {
        const doc = itemChangesDoc(stored);
        const people = doc.people.filter((person) => !held.has(person.personId));
        return people.length === doc.people.length ? null : { doc: storedItemChanges({ ...doc, people }), result: true };
      });
      if (rewritten) add(touched, ITEM_MODEL_COLLECTIONS.changes, 1);
    }
    return running;
  }

  /** The estimate's sample: its parts rewritten without the subject (they hold sampled identities). */
  private async sample(subject: ErasedSubject, touched: Touched): Promise<void> {
    const samples = this.collection<{ _id: string; runId: string; population: number; body?: Binary; maxRank?: number; erasures?: number }>(SEGMENT_COLLECTIONS.samples);
    // The sample keeps the profiles of lowest rank: one whose every document ranks above the highest kept is not in it.
    const header = await samples.findOne({ _id: 'latest' });
    const maybeSampled = header?.maxRank === undefined || [...segmentRows(subject)].some((id) => sampleRank(id) <= header.maxRank!);
    const parts = maybeSampled ? await samples.find({ body: { $exists: true } }, { projection: { _id: 1 } }).toArray() : [];
    for (const { _id } of parts) {
      const rewritten = await this.shared.rewrite(samples, _id, (part) => {
        // Sampled subjects keep no profile id: their identities name them.
        const subjects = (BSON.deserialize(part.body!.buffer) as { subjects: SegmentSubject[] }).subjects;
        const kept = subjects.filter((sampled) => !namesSubject(sampled.identities, subject));
        return kept.length === subjects.length ? null : { doc: { ...part, body: new Binary(BSON.serialize({ subjects: kept })) }, result: true };
      });
      if (rewritten) add(touched, SEGMENT_COLLECTIONS.samples, 1);
    }
  }

  /** The snapshot of one run that was running during the erasure, once it has ended; false while it runs. */
  async endedRun(runId: string, subject: ErasedSubject, touched: Touched): Promise<boolean> {
    const runs = new SegmentRunStore(this.store);
    const run = await runs.getRun(runId);
    if (run?.state === 'running') return false;
    if (run && run.chunks.length > 0 && (await this.snapshot(runs, run, [...segmentRows(subject)].sort()))) add(touched, SEGMENT_COLLECTIONS.runs, 1);
    // Its sample was written at its end, from profiles it may have read before they were erased.
    await this.sample(subject, touched);
    return true;
  }

  /**
   * What is still held of the subject where it is found by key (read only): versions of their
   * documents, identities, links, routed batches naming them, records of their expired documents
   * (which name the keys those held). Returns what was found, and anything
   * of the subject not yet in the closure (keys of versions written since, owners of their keys,
   * documents linked to theirs) — the closure grows by it and the erasure goes round again.
   */
  async remaining(subject: ErasedSubject, options: { batches: boolean } = { batches: true }): Promise<{ found: Touched; keys: string[]; documents: string[]; splitFrom: string[] }> {
    const found: Touched = {};
    const keys = new Set<string>();
    const documents = new Set<string>();
    /** Documents found split by an unlink, the subject's among others: their share is erased, the rest stays (see ErasedSubject.splitFrom). */
    const splitFrom = new Set<string>();
    const profiles = new ProfileStore(this.store, 1);
    const identities = this.collection<{ _id: string; profileId: string }>(COLLECTIONS.identities);
    const links = this.collection<{ _id: string; profiles: string[]; via: string }>(COLLECTIONS.identityLinks);
    const batches = this.collection<{ _id: string }>(COLLECTIONS.profileEvents);
    const inClosure = (id: string) => subject.documents.has(id) || subject.splitFrom?.has(id) === true || splitFrom.has(id);
    const read = new Map<string, StoredVersion[]>();
    await forEachConcurrently([...subject.documents, ...(subject.splitFrom ?? [])], IN_FLIGHT, async (documentId) => void read.set(documentId, await profiles.versions(documentId)));
    const newestOf = (versions: StoredVersion[]) => versions.reduce<StoredVersion | null>((a, b) => (a && a.version > b.version ? a : b), null);
    const markers = new Map<string, RetiredMarker>();
    for (const [documentId, versions] of read) {
      const marker = splitMarker(newestOf(versions));
      if (marker) markers.set(documentId, marker);
    }
    await forEachConcurrently([...read.keys()], IN_FLIGHT, async (documentId) => {
      const versions = read.get(documentId) as StoredVersion[];
      const newest = newestOf(versions);
      const marker = markers.get(documentId);
      if (marker) {
        // Its versions hold every side's identities: only the keys that went (part after part) to the subject's documents are theirs.
        if (subject.documents.has(documentId)) splitFrom.add(documentId);
        const ours = (key: string) => subject.keys.has(key) || subject.documents.has(keyHolderAfterSplits(marker, key, markers) ?? '');
        for (const version of versions) {
          if (version !== newest || Object.keys(marker.keys).some((key) => subject.keys.has(key))) add(found, COLLECTIONS.profiles, 1);
          for (const ancestor of version.ancestors ?? []) documents.add(ancestor);
        }
        for (const key of Object.keys(marker.keys)) if (ours(key)) keys.add(key);
        for (const link of await links.find({ profiles: documentId }).toArray()) {
          if (!ours(link.via)) continue;
          add(found, COLLECTIONS.identityLinks, 1);
          for (const end of link.profiles) documents.add(end);
        }
      } else {
        for (const version of versions) {
          add(found, COLLECTIONS.profiles, 1);
          for (const entry of version.identities) keys.add(identityKey(entry));
          for (const key of Object.keys(version.retired?.keys ?? {})) keys.add(key);
          for (const ancestor of version.ancestors ?? []) documents.add(ancestor);
        }
        for (const link of await links.find({ profiles: documentId }).toArray()) {
          add(found, COLLECTIONS.identityLinks, 1);
          for (const end of link.profiles) documents.add(end);
        }
        // A batch is read whole even for its `_id` (the store projects after reading): only asked for once the subject should be gone from them.
        // (A split document's batches keep its other sides' events: the subject's leave them by key.)
        if (options.batches && (await batches.findOne({ profiles: documentId }, { projection: { _id: 1 } }))) add(found, COLLECTIONS.profileEvents, 1);
      }
    });
    const expired = (records: Iterable<{ _id: string; keys: string[] }>) => {
      for (const record of records) {
        add(found, EXPIRED_PROFILES_COLLECTION, 1);
        documents.add(record._id);
        for (const key of record.keys) keys.add(key);
      }
    };
    expired((await this.expired.of([...subject.documents])).values());
    await forEachConcurrently([...subject.keys], IN_FLIGHT, async (key) => {
      // An expired document's keys left the identity graph; its record still names them.
      expired(await this.expired.naming(key));
      const identity = await identities.findOne({ _id: key });
      if (!identity) return;
      add(found, COLLECTIONS.identities, 1);
      documents.add(identity.profileId);
    });
    // Documents found now are told apart before the closure takes them: one split apart goes with splitFrom, not to be removed (or marked) whole.
    const fresh = [...documents].filter((id) => !inClosure(id));
    await forEachConcurrently(fresh, IN_FLIGHT, async (id) => {
      if (splitMarker(await profiles.get(id))) splitFrom.add(id);
    });
    return {
      found,
      keys: [...keys].filter((key) => !subject.keys.has(key)),
      documents: [...documents].filter((id) => !inClosure(id)),
      splitFrom: [...splitFrom].filter((id) => !subject.splitFrom?.has(id)),
    };
  }

  /**
   * Rewrites a run's snapshot chunks that hold any of `ids` (sorted), then its index from what each
   * chunk holds now — so erasures rewriting the same run in any order agree — and the size of the
   * segments reading it. Whether any chunk changed.
   */
  private async snapshot(runs: SegmentRunStore, run: RunDoc, ids: string[]): Promise<boolean> {
    const documents = new Set(ids);
    const numbers = [...new Set(ids.map((id) => run.chunks.findIndex((chunk) => chunk.last >= id)).filter((n) => n >= 0))];
    const chunks = this.collection<{ _id: string; runId: string; body: Binary; erasures?: number }>(SEGMENT_COLLECTIONS.snapshots);
    const rewritten = new Map<number, RunChunk>();
    for (const n of numbers) {
      const chunk = await this.shared.rewrite(chunks, `${run._id}:${n}`, (stored) => {
        const erased = eraseFromSnapshotChunk(decodeSnapshotChunk(stored.body), documents);
        return erased && { doc: { ...stored, body: encodeSnapshotChunk(erased) }, result: erased };
      });
      if (!chunk) continue;
      // An emptied chunk keeps its place in the index under its neighbour's boundary, naming no one.
      const boundary = chunk.ids.length > 0 ? null : (run.chunks[n - 1]?.last ?? '');
      rewritten.set(n, { first: chunk.ids[0] ?? boundary!, last: chunk.ids[chunk.ids.length - 1] ?? boundary!, counts: memberCounts(chunk) });
    }
    if (rewritten.size === 0) return false;
    const index = await this.shared.rewrite(runs.runs as Collection<StoredRun & { erasures?: number }>, run._id, (stored) => {
      const current = runOfStored(stored);
      if (current.chunks.length !== run.chunks.length) return null; // its chunks were let go meanwhile
      const next = current.chunks.map((chunk, n) => rewritten.get(n) ?? chunk);
      const members = Object.fromEntries(current.segments.map((segment, i) => [segment.id, next.reduce((sum, chunk) => sum + (chunk.counts[i] ?? 0), 0)]));
      const changed = Object.fromEntries(Object.entries(members).filter(([id, size]) => current.members[id] !== size));
      return { doc: storedRun({ ...current, chunks: next, members }), result: changed };
    });
    // Segments reading this run count its members without the subject: the size its run state holds
    // (and, for segments stored before run states were kept apart, their own record of it).
    const segments = new SegmentStore(this.store);
    for (const [id, size] of Object.entries(index ?? {})) await segments.lowerRunSize(id, run._id, size);
    return true;
  }

  /** Access exports made for the subject (`requests`: ids of their access requests). */
  async accessExports(requests: Array<{ _id: string; exportParts?: number }>, touched: Touched): Promise<void> {
    const exports = this.collection<{ _id: string }>(PRIVACY_COLLECTIONS.exports);
    for (const request of requests) {
      for (let n = 0; n < (request.exportParts ?? 0); n++) add(touched, PRIVACY_COLLECTIONS.exports, (await exports.deleteOne({ _id: `${request._id}:${n}` })).deletedCount);
    }
  }
}
