import type { StoredEvent } from './event';
import { identityKey, type Identity } from './identity';
import type { RetiredMarker } from './identitySplit';
import type { ChangeSet } from './segmentChanges';

/**
 * What an erasure removes, as pure rewrites of the documents that hold a subject beside other
 * people: shared event chunks, routed batches, snapshot chunks, change records and samples. The
 * store module applies them by `_id`; other people's data comes out unchanged.
 */

/** The subject as the store names it: identity keys (`<type>:<value>`) and profile document ids. */
export interface ErasedSubject {
  keys: ReadonlySet<string>;
  documents: ReadonlySet<string>;
  /**
   * Documents an unlink split that held the subject beside other people: each side's share now lives
   * in a part of its own, and the other people's parts still descend from it. Never removed whole:
   * only the subject's share of them goes (their keys, the links made through those, their events).
   */
  splitFrom?: ReadonlySet<string>;
}

/** The marker of a document an unlink split (not one that expired into a successor), or null. */
export function splitMarker(version: { retired?: RetiredMarker } | null | undefined): RetiredMarker | null {
  return version?.retired && !version.retired.expired ? version.retired : null;
}

/**
 * The document a split document's identity key went to: part after part, as a part may have been
 * split again (`markers`, by document, of those known to be split), to one not split since; null
 * when a split on the way did not hold the key.
 */
export function keyHolderAfterSplits(marker: RetiredMarker, key: string, markers: ReadonlyMap<string, RetiredMarker>): string | null {
  const seen = new Set<RetiredMarker>();
  for (let at: RetiredMarker | undefined = marker; at && !seen.has(at); ) {
    seen.add(at);
    const side = at.keys[key];
    if (side === undefined) return null;
    const part = at.parts[String(side)];
    if (!markers.has(part)) return part;
    at = markers.get(part);
  }
  return null;
}

/** Whether any of these identities is the subject's. */
export function namesSubject(identities: readonly Identity[] | undefined, subject: ErasedSubject): boolean {
  return (identities ?? []).some((identity) => subject.keys.has(identityKey(identity)));
}

/** A routed or moved event: the subject's when it went to their document or names one of their identities. */
export function isSubjectEvent(event: Pick<StoredEvent, 'identities'> & { profileId?: string; evidence?: Identity[] }, subject: ErasedSubject): boolean {
  return (event.profileId !== undefined && subject.documents.has(event.profileId)) || namesSubject(event.identities, subject) || namesSubject(event.evidence, subject);
}

/**
 * Where an erased event stood in a raw chunk: the chunk keeps its length, so its seal's duplicate
 * indexes still point at the right events, and a drain skips it. Only its times remain.
 */
export function erasedPlaceholder(event: Pick<StoredEvent, 'timestamp' | 'receivedAt'>): StoredEvent {
  return { id: '', type: '', timestamp: event.receivedAt, receivedAt: event.receivedAt, identities: [], erased: true };
}

/** A raw chunk's events with the subject's replaced by placeholders; null when none is theirs. Returns the erased events' ids. */
export function eraseFromChunk(events: StoredEvent[], subject: ErasedSubject): { events: StoredEvent[]; erased: string[] } | null {
  const erased: string[] = [];
  const kept = events.map((event) => {
    if (event.erased || !namesSubject(event.identities, subject)) return event;
    erased.push(event.id);
    return erasedPlaceholder(event);
  });
  return erased.length > 0 ? { events: kept, erased } : null;
}

/**
 * A staged upload chunk's rows to append: without the placeholders an erasure left there, nor rows
 * naming a subject erased since (`erasedBy` gives their request, and `late` counts them per request).
 */
export function rowsToAppend(staged: StoredEvent[], erasedBy: (identities: Identity[]) => string | null): { events: StoredEvent[]; late: Map<string, number> } {
  const late = new Map<string, number>();
  const events = staged.filter((event) => {
    if (event.erased) return false;
    const requestId = erasedBy(event.identities);
    if (requestId) late.set(requestId, (late.get(requestId) ?? 0) + 1);
    return !requestId;
  });
  return { events, late };
}

/** A routed batch without the subject's events and documents; null when it held none of them. */
export function eraseFromRoutedBatch<E extends Parameters<typeof isSubjectEvent>[0]>(
  batch: { events: E[]; profiles: string[]; linked?: string[]; created?: string[] },
  subject: ErasedSubject,
): { events: E[]; profiles: string[]; linked?: string[]; created?: string[]; erased: E[] } | null {
  const erased = batch.events.filter((event) => isSubjectEvent(event, subject));
  const profiles = batch.profiles.filter((id) => !subject.documents.has(id));
  const linked = batch.linked?.filter((id) => !subject.documents.has(id));
  const created = batch.created?.filter((id) => !subject.documents.has(id));
  if (erased.length === 0 && profiles.length === batch.profiles.length && linked?.length === batch.linked?.length && created?.length === batch.created?.length) return null;
  return { events: batch.events.filter((event) => !isSubjectEvent(event, subject)), profiles, ...(linked && { linked }), ...(created && { created }), erased };
}

/** A snapshot chunk's part that names profiles: ids, one bitmap per segment over them, and the members' export facts. */
export interface ErasableChunk {
  ids: string[];
  bits: Uint8Array[];
  facts?: { consents: string[]; sources: string[]; consentOf: Int32Array; sourcesOf: Int32Array; ids: string[] };
}

/**
 * A snapshot chunk without these profile ids: every bitmap and fact column closes up over the
 * removed positions, exactly as if the run had never seen them. Null when the chunk holds none.
 */
export function eraseFromSnapshotChunk<C extends ErasableChunk>(chunk: C, documents: ReadonlySet<string>): C | null {
  const keep = chunk.ids.map((id, i) => (documents.has(id) ? -1 : i)).filter((i) => i >= 0);
  if (keep.length === chunk.ids.length) return null;
  const bits = chunk.bits.map((bytes) => {
    const out = new Uint8Array(Math.ceil(keep.length / 8));
    keep.forEach((from, to) => {
      if ((bytes[from >> 3] & (1 << (from & 7))) !== 0) out[to >> 3] |= 1 << (to & 7);
    });
    return out;
  });
  const facts = chunk.facts && {
    ...chunk.facts,
    consentOf: Int32Array.from(keep, (i) => chunk.facts!.consentOf[i]),
    sourcesOf: Int32Array.from(keep, (i) => chunk.facts!.sourcesOf[i]),
    ids: keep.map((i) => chunk.facts!.ids[i]),
  };
  return { ...chunk, ids: keep.map((i) => chunk.ids[i]), bits, ...(facts && { facts }) };
}

/** Members per segment of a chunk's bitmaps (the run's index keeps them). */
export function memberCounts(chunk: Pick<ErasableChunk, 'ids' | 'bits'>): number[] {
  return chunk.bits.map((bytes) => chunk.ids.reduce((count, _, i) => count + ((bytes[i >> 3] >> (i & 7)) & 1), 0));
}

/** One fold's real-time changes without the subject's profiles; null when it named none. */
export function eraseFromChanges(doc: { changes: ChangeSet; touched?: string[] }, documents: ReadonlySet<string>): { changes: ChangeSet; touched?: string[] } | null {
  const without = (ids: string[] | undefined) => ids?.filter((id) => !documents.has(id));
  let named = doc.touched?.some((id) => documents.has(id)) ?? false;
  const changes: ChangeSet = {};
  for (const [segment, change] of Object.entries(doc.changes)) {
    const lists = [change.entered, change.exited, change.statedIn ?? [], change.statedOut ?? []];
    if (lists.some((ids) => ids.some((id) => documents.has(id)))) named = true;
    changes[segment] = {
      ...change,
      entered: without(change.entered)!,
      exited: without(change.exited)!,
      ...(change.statedIn && { statedIn: without(change.statedIn) }),
      ...(change.statedOut && { statedOut: without(change.statedOut) }),
    };
  }
  if (!named) return null;
  return { changes, ...(doc.touched && { touched: without(doc.touched) }) };
}
