import { Binary, BSON, type Collection } from 'mongodb';
import { namesSubject, eraseFromChanges, eraseFromChunk, eraseFromRoutedBatch, eraseFromSnapshotChunk, memberCounts, type ErasedSubject } from '../domain/erasure';
import type { StoredEvent } from '../domain/event';
import { documentIdsOf } from '../domain/privacy';
import type { SegmentSubject } from '../domain/profile';
import type { ItemChange } from '../domain/recommendations';
import { identityKey } from '../domain/identity';
import { COLLECTIONS, forEachConcurrently, type Store } from './db';
import { decodeEvents, encodeEvents } from './eventCodec';
import { EventIdGenerations } from './eventIds';
import { chunkId, eventIdKey, type StoredChunk } from './eventLog';
import { ITEM_MODEL_COLLECTIONS } from './itemModel';
import { PartnerStore } from './partners';
import { PRIVACY_COLLECTIONS } from './privacy';
import { ProfileStore } from './profiles';
import type { RoutedEvent } from './profileEvents';
import { SEGMENT_COLLECTIONS, SegmentRunStore, type RunDoc } from './segmentRuns';

/** Per collection, the documents an erasure step deleted or rewrote (counts for the audit, never values). */
export type Touched = Record<string, number>;

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

  constructor(private readonly store: Store) {
    this.db = store.db;
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
    const batches = this.collection<{ _id: string; sourceId: string; events: Binary; profiles: string[]; linked?: string[] }>(COLLECTIONS.profileEvents);
    const generations = await EventIdGenerations.live(this.db);
    const done = new Set<string>();
    const seen = new Set<string>();
    for (const documentId of subject.documents) {
      for (const doc of await batches.find({ profiles: documentId }).toArray()) {
        if (seen.has(doc._id)) continue;
        seen.add(doc._id);
        const erased = eraseFromRoutedBatch({ events: decodeEvents<RoutedEvent>(doc.events), profiles: doc.profiles, linked: doc.linked }, subject);
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
        const { erased: _, ...kept } = erased;
        await batches.replaceOne({ _id: doc._id }, { ...doc, ...kept, events: encodeEvents(kept.events) });
        add(touched, COLLECTIONS.profileEvents, 1);
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
   * One raw chunk rewritten with the subject's events as placeholders, after their ids left the
   * dedupe generations. How many were the subject's; null when the chunk does not exist.
   */
  private async rawChunk(id: string, subject: ErasedSubject, generations: string[], touched: Touched): Promise<number | null> {
    const chunks = this.collection<StoredChunk>(COLLECTIONS.events);
    const doc = await chunks.findOne({ _id: id });
    if (!doc) return null;
    const erased = eraseFromChunk(decodeEvents<StoredEvent>(doc.events), subject);
    if (!erased) return 0;
    await this.forgetIds(new Set(erased.erased.map((eventId) => eventIdKey(doc.sourceId, eventId))), generations, touched);
    // No upsert: a chunk that retention removed meanwhile stays removed, and the log stays gap-free.
    await chunks.replaceOne({ _id: doc._id }, { ...doc, events: encodeEvents(erased.events) });
    add(touched, COLLECTIONS.events, 1);
    return erased.erased.length;
  }

  /** Event ids out of every live dedupe generation (a late repeat is then dropped as erased, not kept as a duplicate). */
  private async forgetIds(ids: Set<string>, generations: string[], touched: Touched): Promise<void> {
    for (const name of generations) {
      const collection = this.collection<{ _id: string }>(name);
      await forEachConcurrently([...ids], IN_FLIGHT, async (id) => add(touched, 'event_ids', (await collection.deleteOne({ _id: id })).deletedCount));
    }
  }

  /** Identities, links, cap markers, refusals and severances of the subject. */
  async identityGraph(subject: ErasedSubject, touched: Touched): Promise<void> {
    const identities = this.collection<{ _id: string }>(COLLECTIONS.identities);
    const links = this.collection<{ _id: string; profiles: string[] }>(COLLECTIONS.identityLinks);
    const caps = this.collection<{ _id: string }>(COLLECTIONS.identityCaps);
    const refusals = this.collection<{ _id: string; profileId: string }>(COLLECTIONS.identityRefusals);
    const severances = this.collection<{ _id: string; keys: string[] }>(COLLECTIONS.identitySeverances);
    await forEachConcurrently([...subject.keys], IN_FLIGHT, async (key) => {
      add(touched, COLLECTIONS.identities, (await identities.deleteOne({ _id: key })).deletedCount);
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
  }

  /**
   * The subject's cookie ids out of the cookie-sync match tables, on both sides: their own entries,
   * and their place among the cookies a partner id was seen with (written by version, like a sync).
   */
  async matchTables(subject: ErasedSubject, touched: Touched): Promise<void> {
    const cookies = [...subject.keys].filter((key) => key.startsWith('cookie_id:')).map((key) => key.slice('cookie_id:'.length));
    if (cookies.length === 0) return;
    type MatchDoc = { _id: string; v: number; entries: Array<{ id: string; lastSeen: Date }> };
    const byCookie = this.collection<MatchDoc>(COLLECTIONS.matchByCookie);
    const byPartnerId = this.collection<MatchDoc>(COLLECTIONS.matchByPartnerId);
    const partners = (await new PartnerStore(this.store).list()).map((partner) => partner._id);
    const gone = new Set(cookies);
    for (const cookie of cookies) {
      for (const partner of partners) {
        const doc = await byCookie.findOne({ _id: `${cookie}:${partner}` });
        if (!doc) continue;
        for (const entry of doc.entries) {
          for (let attempt = 0; attempt < 8; attempt++) {
            const other = await byPartnerId.findOne({ _id: `${partner}:${entry.id}` });
            if (!other) break;
            const entries = other.entries.filter((e) => !gone.has(e.id));
            const written = entries.length === 0 ? await byPartnerId.deleteOne({ _id: other._id, v: other.v }) : await byPartnerId.replaceOne({ _id: other._id, v: other.v }, { v: other.v + 1, entries });
            if (('deletedCount' in written ? written.deletedCount : written.matchedCount) === 1) {
              add(touched, COLLECTIONS.matchByPartnerId, 1);
              break;
            }
          }
        }
        add(touched, COLLECTIONS.matchByCookie, (await byCookie.deleteOne({ _id: doc._id })).deletedCount);
      }
    }
  }

  /** Every version of the subject's profile documents (one indexed delete per document). */
  async profiles(subject: ErasedSubject, touched: Touched): Promise<void> {
    const profiles = this.collection<{ _id: string; profileId: string }>(COLLECTIONS.profiles);
    await forEachConcurrently([...subject.documents], IN_FLIGHT, async (profileId) => add(touched, COLLECTIONS.profiles, (await profiles.deleteMany({ profileId })).deletedCount));
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
    const ids = [...subject.documents].sort();
    for (const run of await runs.runs.find({}, { projection: { _id: 1, state: 1, chunks: 1, segments: 1, members: 1 } }).toArray()) {
      if (run.chunks.length === 0) continue;
      if (run.state === 'running') {
        running.push(run._id);
        continue;
      }
      if (await this.snapshot(runs, run as RunDoc, ids)) add(touched, SEGMENT_COLLECTIONS.runs, 1);
    }
    for (const doc of await runs.changes.find({}).toArray()) {
      const erased = eraseFromChanges(doc, subject.documents);
      if (!erased) continue;
      await runs.changes.replaceOne({ _id: doc._id }, { ...doc, ...erased });
      add(touched, SEGMENT_COLLECTIONS.changes, 1);
    }
    const samples = this.collection<{ _id: string; runId: string; population: number; body?: Binary }>(SEGMENT_COLLECTIONS.samples);
    for (const part of await samples.find({ body: { $exists: true } }).toArray()) {
      // A sampled subject is a document (`profileId`) or a person combined from documents (`id`, `profileIds`).
      const subjects = (BSON.deserialize(part.body!.buffer) as { subjects: Array<SegmentSubject & { id?: string; profileId?: string; profileIds?: string[] }> }).subjects;
      const kept = subjects.filter((s) => !documentIdsOf(s).some((id) => subject.documents.has(id)) && !(s.id && subject.documents.has(s.id)) && !namesSubject(s.identities, subject));
      if (kept.length === subjects.length) continue;
      await samples.replaceOne({ _id: part._id }, { ...part, body: new Binary(BSON.serialize({ subjects: kept })) });
      add(touched, SEGMENT_COLLECTIONS.samples, 1);
    }
    const itemChanges = this.collection<{ _id: string; people: ItemChange[] }>(ITEM_MODEL_COLLECTIONS.changes);
    for (const doc of await itemChanges.find({}).toArray()) {
      const people = doc.people.filter((person) => !subject.documents.has(person.personId));
      if (people.length === doc.people.length) continue;
      await itemChanges.replaceOne({ _id: doc._id }, { ...doc, people });
      add(touched, ITEM_MODEL_COLLECTIONS.changes, 1);
    }
    return running;
  }

  /** The snapshot of one run that was running during the erasure, once it has ended; false while it runs. */
  async endedRun(runId: string, subject: ErasedSubject, touched: Touched): Promise<boolean> {
    const runs = new SegmentRunStore(this.store);
    const run = await runs.getRun(runId);
    if (run?.state === 'running') return false;
    if (run && run.chunks.length > 0 && (await this.snapshot(runs, run, [...subject.documents].sort()))) add(touched, SEGMENT_COLLECTIONS.runs, 1);
    return true;
  }

  /**
   * What is still held of the subject where it is found by key (read only): versions of their
   * documents, identities, links, routed batches naming them. Returns what was found, and anything
   * of the subject not yet in the closure (keys of versions written since, owners of their keys,
   * documents linked to theirs) — the closure grows by it and the erasure goes round again.
   */
  async remaining(subject: ErasedSubject): Promise<{ found: Touched; keys: string[]; documents: string[] }> {
    const found: Touched = {};
    const keys = new Set<string>();
    const documents = new Set<string>();
    const profiles = new ProfileStore(this.store, 1);
    const identities = this.collection<{ _id: string; profileId: string }>(COLLECTIONS.identities);
    const links = this.collection<{ _id: string; profiles: string[] }>(COLLECTIONS.identityLinks);
    const batches = this.collection<{ _id: string }>(COLLECTIONS.profileEvents);
    await forEachConcurrently([...subject.documents], IN_FLIGHT, async (documentId) => {
      for (const version of await profiles.versions(documentId)) {
        add(found, COLLECTIONS.profiles, 1);
        for (const entry of version.identities) keys.add(identityKey(entry));
        for (const key of Object.keys(version.retired?.keys ?? {})) keys.add(key);
        for (const ancestor of version.ancestors ?? []) documents.add(ancestor);
      }
      for (const link of await links.find({ profiles: documentId }).toArray()) {
        add(found, COLLECTIONS.identityLinks, 1);
        for (const end of link.profiles) documents.add(end);
      }
      if (await batches.findOne({ profiles: documentId }, { projection: { _id: 1 } })) add(found, COLLECTIONS.profileEvents, 1);
    });
    await forEachConcurrently([...subject.keys], IN_FLIGHT, async (key) => {
      const identity = await identities.findOne({ _id: key });
      if (!identity) return;
      add(found, COLLECTIONS.identities, 1);
      documents.add(identity.profileId);
    });
    return { found, keys: [...keys].filter((key) => !subject.keys.has(key)), documents: [...documents].filter((id) => !subject.documents.has(id)) };
  }

  /** Rewrites a run's chunks that hold any of `ids` (sorted), then its index; whether it changed. */
  private async snapshot(runs: SegmentRunStore, run: RunDoc, ids: string[]): Promise<boolean> {
    const chunks = [...run.chunks];
    const members = { ...run.members };
    let changed = false;
    const numbers = new Set(ids.map((id) => chunks.findIndex((chunk) => chunk.last >= id)).filter((n) => n >= 0));
    for (const n of numbers) {
      const chunk = await runs.readChunk(run._id, n);
      const erased = chunk && eraseFromSnapshotChunk(chunk, new Set(ids));
      if (!erased) continue;
      await runs.writeChunk(run._id, n, erased);
      const counts = memberCounts(erased);
      chunks[n].counts.forEach((before, i) => {
        const segment = run.segments[i]?.id;
        if (segment && members[segment] !== undefined) members[segment] -= before - counts[i];
      });
      // An emptied chunk keeps its place in the index under its neighbour's boundary, naming no one.
      const boundary = erased.ids.length > 0 ? null : (chunks[n - 1]?.last ?? '');
      chunks[n] = { first: erased.ids[0] ?? boundary!, last: erased.ids[erased.ids.length - 1] ?? boundary!, counts };
      changed = true;
    }
    if (!changed) return false;
    await runs.runs.updateOne({ _id: run._id }, { $set: { chunks, members } });
    // Segments reading this run count its members without the subject (only while they still read it).
    const segments = this.collection<{ _id: string }>(COLLECTIONS.segments);
    for (const { id } of run.segments) {
      const removed = (run.members[id] ?? 0) - (members[id] ?? 0);
      if (removed > 0) await segments.updateOne({ _id: id, 'current.runId': run._id } as never, { $inc: { 'current.size': -removed } });
    }
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
