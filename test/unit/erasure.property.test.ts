import fc from 'fast-check';
import { eraseFromChanges, eraseFromChunk, eraseFromRoutedBatch, eraseFromSnapshotChunk, keyHolderAfterSplits, memberCounts, rowsToAppend, splitMarker, type ErasableChunk, type ErasedSubject } from '../../domain/erasure';
import type { RetiredMarker } from '../../domain/identitySplit';
import type { StoredEvent } from '../../domain/event';

const at = new Date('2026-11-01T10:00:00Z');
const event = (id: string, cookie: string, extra: Partial<StoredEvent> & { profileId?: string } = {}) => ({
  id,
  type: 'page_view',
  timestamp: at,
  receivedAt: at,
  identities: [{ type: 'cookie_id' as const, value: cookie }],
  ...extra,
});
const subject = (keys: string[], documents: string[] = []): ErasedSubject => ({ keys: new Set(keys), documents: new Set(documents) });

/** A snapshot chunk as a run writes it: sorted ids, one bitmap per segment, facts per id. */
const chunkArbitrary = fc
  .record({
    ids: fc.uniqueArray(fc.stringMatching(/^p_[a-f0-9]{6}$/), { minLength: 1, maxLength: 40 }),
    segments: fc.integer({ min: 1, max: 4 }),
    seed: fc.integer(),
  })
  .map(({ ids, segments, seed }) => {
    const sorted = [...ids].sort();
    const member = (s: number, i: number) => ((seed ^ (s * 7919 + i * 104729)) & 3) === 0;
    const bits = Array.from({ length: segments }, (_, s) => {
      const bytes = new Uint8Array(Math.ceil(sorted.length / 8));
      sorted.forEach((_, i) => {
        if (member(s, i)) bytes[i >> 3] |= 1 << (i & 7);
      });
      return bytes;
    });
    const chunk: ErasableChunk = {
      ids: sorted,
      bits,
      facts: { consents: ['{}'], sources: ['[]'], consentOf: Int32Array.from(sorted, (_, i) => i % 2), sourcesOf: Int32Array.from(sorted, (_, i) => (i % 2 === 0 ? 0 : -1)), ids: sorted.map((id) => `cookie_id:${id}`) },
    };
    return { chunk, member };
  });

describe('erasure rewrites', () => {
  it('takes ids out of a snapshot chunk exactly as if the run had never seen them', () => {
    fc.assert(
      fc.property(chunkArbitrary, fc.integer({ min: 0, max: 1 << 30 }), ({ chunk, member }, pick) => {
        const removed = new Set(chunk.ids.filter((_, i) => ((pick >> i % 30) & 1) === 1));
        const erased = eraseFromSnapshotChunk(chunk, removed);
        if (removed.size === 0) return expect(erased).toBeNull();
        const kept = chunk.ids.map((id, i) => ({ id, i })).filter(({ id }) => !removed.has(id));
        expect(erased!.ids).toEqual(kept.map(({ id }) => id));
        erased!.bits.forEach((bytes, s) => {
          kept.forEach(({ i }, j) => expect(((bytes[j >> 3] >> (j & 7)) & 1) === 1).toBe(member(s, i)));
          expect(bytes.length).toBe(Math.ceil(kept.length / 8));
        });
        expect(erased!.facts!.ids).toEqual(kept.map(({ id }) => `cookie_id:${id}`));
        expect([...erased!.facts!.consentOf]).toEqual(kept.map(({ i }) => i % 2));
        expect([...erased!.facts!.sourcesOf]).toEqual(kept.map(({ i }) => (i % 2 === 0 ? 0 : -1)));
        expect(memberCounts(erased!)).toEqual(chunk.bits.map((_, s) => kept.filter(({ i }) => member(s, i)).length));
      }),
    );
  });

  it("replaces the subject's events in a raw chunk by placeholders, keeping length and positions", () => {
    const events = [event('e1', 'ck-a'), event('e2', 'ck-b'), event('e3', 'ck-a'), { ...event('e4', 'ck-c'), identities: [] }];
    const erased = eraseFromChunk(events, subject(['cookie_id:ck-a']));
    expect(erased!.erased).toEqual(['e1', 'e3']);
    expect(erased!.events).toHaveLength(4);
    expect(erased!.events[1]).toBe(events[1]);
    expect(erased!.events[3]).toBe(events[3]);
    for (const placeholder of [erased!.events[0], erased!.events[2]]) {
      expect(placeholder).toEqual({ id: '', type: '', timestamp: at, receivedAt: at, identities: [], erased: true });
    }
    // A second pass finds nothing more: the rewrite is idempotent.
    expect(eraseFromChunk(erased!.events, subject(['cookie_id:ck-a']))).toBeNull();
    expect(eraseFromChunk(events, subject(['cookie_id:ck-z']))).toBeNull();
  });

  it("drops the subject's routed events — theirs by document, by identity or by consent evidence — and their documents, keeping the rest", () => {
    const batch = {
      events: [
        event('e1', 'ck-a', { profileId: 'p_a' }),
        event('e2', 'ck-b', { profileId: 'p_b' }),
        { ...event('e3', 'ck-x', { profileId: 'p_b' }), identities: [], evidence: [{ type: 'cookie_id' as const, value: 'ck-a' }] },
        event('e4', 'ck-new', { profileId: 'p_a' }),
      ],
      profiles: ['p_a', 'p_b'],
      linked: ['p_a'],
      created: ['p_a', 'p_b'],
    };
    const erased = eraseFromRoutedBatch(batch, subject(['cookie_id:ck-a'], ['p_a']));
    expect(erased!.events.map((e) => e.id)).toEqual(['e2']);
    expect(erased!.erased.map((e) => e.id)).toEqual(['e1', 'e3', 'e4']);
    expect(erased!.profiles).toEqual(['p_b']);
    expect(erased!.linked).toEqual([]);
    expect(erased!.created).toEqual(['p_b']);
    expect(eraseFromRoutedBatch({ events: [batch.events[1]], profiles: ['p_b'] }, subject(['cookie_id:ck-a'], ['p_a']))).toBeNull();
    // A batch that names the subject's document only as made by it is rewritten too.
    expect(eraseFromRoutedBatch({ events: [batch.events[1]], profiles: ['p_b'], created: ['p_a'] }, subject(['cookie_id:ck-a'], ['p_a']))?.created).toEqual([]);
  });

  it("leaves out of an upload's append the placeholders an erasure made of staged rows, and rows naming a subject erased since, counting those per request", () => {
    const staged = [event('e1', 'kept'), event('e2', 'gone'), event('e3', 'kept-too'), event('e4', 'gone')];
    const scrubbed = eraseFromChunk(staged, subject(['cookie_id:gone']))!.events;
    const erasedSince = (identities: Array<{ value: string }>) => (identities.some((identity) => identity.value === 'kept-too') ? 'req_late' : null);
    const { events, late } = rowsToAppend(scrubbed, erasedSince);
    expect(events.map((row) => row.id)).toEqual(['e1']);
    expect([...late]).toEqual([['req_late', 1]]);
  });

  it('takes the subject out of real-time changes, stated memberships and touched profiles alike', () => {
    const doc = { changes: { s1: { entered: ['p_a', 'p_b'], exited: [], statedIn: ['p_a'], version: 2 }, s2: { entered: [], exited: ['p_c'] } }, touched: ['p_a', 'p_c'] };
    expect(eraseFromChanges(doc, new Set(['p_a']))).toEqual({ changes: { s1: { entered: ['p_b'], exited: [], statedIn: [], version: 2 }, s2: { entered: [], exited: ['p_c'] } }, touched: ['p_c'] });
    expect(eraseFromChanges(doc, new Set(['p_z']))).toBeNull();
  });
});

describe('a split document: where each of its keys went', () => {
  const marker = (parts: Record<string, string>, keys: Record<string, number>): RetiredMarker => ({ rebuildId: 'u', parts, keys, fallback: Object.values(parts)[0] });
  // D held S, Q and O; O was unlinked (D → P1: S and Q, P2: O); then Q from S (P1 → P1a: S, P1b: Q).
  const d = marker({ 0: 'P1', 1: 'P2' }, { 'k:s': 0, 'k:q': 0, 'k:o': 1 });
  const p1 = marker({ 0: 'P1a', 1: 'P1b' }, { 'k:s': 0, 'k:q': 1 });
  const markers = new Map([['D', d], ['P1', p1]]);

  it('follows a key part after part to the document holding it now', () => {
    expect(keyHolderAfterSplits(d, 'k:s', markers)).toBe('P1a');
    expect(keyHolderAfterSplits(d, 'k:q', markers)).toBe('P1b');
    expect(keyHolderAfterSplits(d, 'k:o', markers)).toBe('P2');
    expect(keyHolderAfterSplits(p1, 'k:q', markers)).toBe('P1b');
    // Not held by the split: nobody's; a part not known to be split is where the key is now.
    expect(keyHolderAfterSplits(d, 'k:x', markers)).toBeNull();
    expect(keyHolderAfterSplits(d, 'k:q', new Map([['D', d]]))).toBe('P1');
  });

  it('tells a split document apart from one that expired into a successor', () => {
    expect(splitMarker({ retired: d })).toBe(d);
    expect(splitMarker({ retired: { ...d, expired: { expiryId: 'x', at } } })).toBeNull();
    expect(splitMarker({})).toBeNull();
    expect(splitMarker(null)).toBeNull();
  });
});
