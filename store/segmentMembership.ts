import { Bitmap } from '../domain/segments';
import type { Store } from './db';
import { binarySearch, SegmentRunStore, SnapshotReader, type ChangeDoc, type RunDoc, type SnapshotChunk } from './segmentRuns';
import type { SegmentDoc } from './segments';

/** Members per page when all of a segment's members are walked. */
const MEMBER_PAGE = 10_000;

/**
 * The snapshot a walk of a segment's members read was let go meanwhile (a newer run replaced it, and
 * retention dropped its chunks): its members are not known from it. Read the segment again and walk
 * its current snapshot.
 */
export class SnapshotReleased extends Error {
  constructor(readonly segmentId: string, readonly runId: string) {
    super(`segment ${segmentId}'s snapshot (run ${runId}) was let go while it was read: read the segment again`);
  }
}

/** Reads segments' members again, up to 3 times, while their snapshot is let go under the read: `read` reads the segments afresh. */
export async function onCurrentSnapshots<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (error) {
      if (!(error instanceof SnapshotReleased) || attempt >= 3) throw error;
    }
  }
}

/** Per segment, each profile's latest real-time state since the segment's snapshot: true entered, false exited. */
export type RealTimeStates = Map<string, Map<string, boolean>>;

/**
 * Per segment of a run begun at `startedAt` (in the run's order), the profiles a real-time change
 * recorded since then states, under the run's version of the segment. Once the run completes, their
 * membership is that change's and not the run's (see SegmentMembership): a pass that read one of
 * them before the change holds its state from before.
 */
export function statedSince(changes: readonly ChangeDoc[], segments: ReadonlyArray<{ id: string; version: number }>, startedAt: Date): Array<Set<string>> {
  return segments.map(({ id, version }) => {
    const stated = new Set<string>();
    for (const change of changes) {
      const entry = Object.hasOwn(change.changes, id) ? change.changes[id] : undefined;
      if (!entry || change.at < startedAt || (entry.version !== undefined && entry.version !== version)) continue;
      for (const ids of [entry.entered, entry.exited, entry.statedIn ?? [], entry.statedOut ?? []]) for (const profileId of ids) stated.add(profileId);
    }
    return stated;
  });
}

/**
 * A segment's membership now: the snapshot of its last completed batch run, overridden per profile
 * by the real-time changes recorded since that run started (the later evaluation of a profile wins:
 * a change recorded after the run started saw the profile no earlier than the run did).
 */
export class SegmentMembership {
  readonly runs: SegmentRunStore;
  /** Per run, read once, however many segments ask at the same time. */
  private readonly readers = new Map<string, Promise<SnapshotReader | null>>();

  constructor(store: Store | SegmentRunStore) {
    this.runs = store instanceof SegmentRunStore ? store : new SegmentRunStore(store);
  }

  /** The real-time states of the given segments, from one read of the pending changes (or the changes given, read since the oldest snapshot's start). */
  async realTime(segments: SegmentDoc[], changes?: ChangeDoc[]): Promise<RealTimeStates> {
    const states: RealTimeStates = new Map(segments.map((segment) => [segment._id, new Map()]));
    if (segments.length === 0) return states;
    const since = (segment: SegmentDoc) => segment.current?.startedAt ?? new Date(0);
    const oldest = segments.reduce((min, segment) => (since(segment) < min ? since(segment) : min), since(segments[0]));
    for (const change of changes ?? (await this.runs.changesSince(oldest))) {
      for (const segment of segments) {
        const entry = Object.hasOwn(change.changes, segment._id) ? change.changes[segment._id] : undefined;
        // Changes under another version of the rule belong to another snapshot (an edit's run replaces this one).
        if (!entry || change.at < since(segment) || (entry.version !== undefined && entry.version !== (segment.current?.version ?? segment.version))) continue;
        const state = states.get(segment._id) as Map<string, boolean>;
        for (const id of [...entry.entered, ...(entry.statedIn ?? [])]) state.set(id, true);
        for (const id of [...entry.exited, ...(entry.statedOut ?? [])]) state.set(id, false);
      }
    }
    return states;
  }

  /**
   * Runs `walk` over a segment's members; while its snapshot is let go under the walk (up to three
   * times), reads the segment again (`reread`) with its real-time changes, and walks anew.
   */
  async walkCurrent<T>(segment: SegmentDoc, states: RealTimeStates, reread: (id: string) => Promise<SegmentDoc | null>, walk: (segment: SegmentDoc, states: RealTimeStates) => Promise<T>): Promise<T> {
    let current = { segment, states };
    return onCurrentSnapshots(async () => {
      try {
        return await walk(current.segment, current.states);
      } catch (error) {
        if (error instanceof SnapshotReleased) {
          const again = (await reread(segment._id)) ?? current.segment;
          current = { segment: again, states: await this.realTime([again]) };
        }
        throw error;
      }
    });
  }

  /** Lets go of a run's reader and the chunks it kept. */
  forget(runId: string): void {
    this.readers.delete(runId);
  }

  private reader(segment: SegmentDoc): Promise<SnapshotReader | null> {
    if (!segment.current) return Promise.resolve(null);
    const { runId } = segment.current;
    let reader = this.readers.get(runId);
    if (!reader) {
      this.readers.set(runId, (reader = this.runs.getRun(runId).then((run) => run && new SnapshotReader(this.runs, run))));
      reader.catch(() => this.readers.delete(runId)); // a failed read is tried again by the next to ask
    }
    return reader;
  }

  async inSnapshot(segment: SegmentDoc, profileId: string): Promise<boolean> {
    const reader = await this.reader(segment);
    return reader ? reader.isMember(segment._id, profileId) : false;
  }

  /**
   * Whether any of `ids` (ascending) is a member now: by its real-time state, else by the snapshot —
   * each chunk they fall in read once, one held at a time, none between them.
   */
  async anyMember(segment: SegmentDoc, states: RealTimeStates, ids: readonly string[]): Promise<boolean> {
    const state = states.get(segment._id);
    const reader = await this.reader(segment);
    const index = reader?.segmentIndex(segment._id) ?? -1;
    let held = null as { n: number; chunk: SnapshotChunk | null } | null;
    for (const id of ids) {
      const now = state?.get(id);
      if (now !== undefined) {
        if (now) return true;
        continue;
      }
      if (!reader || index < 0) continue;
      const n = reader.chunkOf(id);
      if (n >= reader.run.chunks.length || reader.run.chunks[n].counts[index] === 0) continue;
      if (held?.n !== n) held = { n, chunk: await this.runs.readChunk(reader.run._id, n) };
      const at = held.chunk ? binarySearch(held.chunk.ids, id) : -1;
      if (at >= 0 && new Bitmap(held.chunk!.bits[index]).has(at)) return true;
    }
    return false;
  }

  /** Members now; null before the segment's first run completes. */
  async size(segment: SegmentDoc, states: RealTimeStates): Promise<number | null> {
    if (!segment.current) return null;
    let size = segment.current.size;
    for (const [id, state] of states.get(segment._id) ?? []) {
      const before = await this.inSnapshot(segment, id);
      if (state && !before) size++;
      if (!state && before) size--;
    }
    return size;
  }

  /**
   * Membership now of each of `segments` (null for none), for profile ids asked in ascending order:
   * each snapshot involved is walked alongside, a chunk at a time (`reach` reads the chunks ids up to
   * a given one may be in, and lets go of those passed), so a run's comparison of its result with
   * what stood before costs no read per profile, and holds a few chunks of each snapshot at once.
   */
  async ascending(segments: Array<SegmentDoc | null>, states: RealTimeStates): Promise<{ reach(id: string): Promise<void>; has(k: number, id: string): boolean }> {
    const walks = new Map<string, { walk: AscendingSnapshot; run: RunDoc }>();
    for (const segment of segments) {
      if (!segment?.current || walks.has(segment.current.runId)) continue;
      const run = await this.runs.getRun(segment.current.runId);
      if (run) walks.set(run._id, { walk: new AscendingSnapshot(run, (n) => this.runs.readChunk(run._id, n)), run });
    }
    const bySegment = segments.map((segment) => {
      const found = segment?.current ? walks.get(segment.current.runId) : undefined;
      return found && segment ? { walk: found.walk, index: found.run.segments.findIndex((s) => s.id === segment._id) } : null;
    });
    return {
      reach: async (id) => void (await Promise.all([...walks.values()].map(({ walk }) => walk.reach(id)))),
      has: (k, id) => {
        const segment = segments[k];
        const state = segment ? states.get(segment._id)?.get(id) : undefined;
        if (state !== undefined) return state;
        const at = bySegment[k];
        if (!at || at.index < 0) return false;
        const position = at.walk.seek(id);
        return position !== null && new Bitmap(position.chunk.bits[at.index]).has(position.index);
      },
    };
  }

  /**
   * Every member, in ascending id order, a page at a time (a snapshot chunk's worth is read per page).
   * Holds one chunk at a time, the one a page ended in kept for the next: a walk of many snapshots
   * of a million people each (an overlap) does not keep them. With `keepRun`, the chunks read stay
   * with the run's reader for walks of its other segments, until `forget` lets the run go.
   */
  async *pages(segment: SegmentDoc, states: RealTimeStates, options: { keepRun?: boolean } = {}): AsyncGenerator<string[]> {
    const reader = options.keepRun ? await this.reader(segment) : null;
    let last: { n: number; chunk: Promise<SnapshotChunk | null> } | null = null;
    const read = (runId: string, n: number) => {
      if (reader) return reader.chunk(n);
      if (last?.n !== n) last = { n, chunk: this.runs.readChunk(runId, n) };
      return last.chunk;
    };
    for (let after = ''; ; ) {
      const page = await this.members(segment, states, after, MEMBER_PAGE, read);
      yield page.members;
      if (!page.next) return;
      after = page.next;
    }
  }

  /**
   * A page of members in ascending id order after `after`, and the cursor of the next page (null on
   * the last). The chunks it reads are not kept (unlike those `inSnapshot` reads), unless `read` keeps them.
   */
  async members(
    segment: SegmentDoc,
    states: RealTimeStates,
    after: string,
    limit: number,
    read: (runId: string, n: number) => Promise<SnapshotChunk | null> = (runId, n) => this.runs.readChunk(runId, n),
  ): Promise<{ members: string[]; next: string | null }> {
    const state = states.get(segment._id) ?? new Map<string, boolean>();
    const entered = [...state].filter(([id, member]) => member && id > after).map(([id]) => id).sort();
    const page: string[] = [];
    let e = 0;
    const reader = await this.reader(segment);
    // A run no longer stored, or whose chunks were dropped though it has members: a walk would give the real-time changes only.
    if (segment.current && (!reader || (reader.run.chunks.length === 0 && segment.current.size > 0))) throw new SnapshotReleased(segment._id, segment.current.runId);
    const index = reader?.segmentIndex(segment._id) ?? -1;
    if (reader && index >= 0) {
      for (let n = reader.chunkAfter(after); n < reader.run.chunks.length && page.length <= limit; n++) {
        if (reader.run.chunks[n].counts[index] === 0) continue;
        const chunk = await read(reader.run._id, n);
        if (!chunk) throw new SnapshotReleased(segment._id, reader.run._id);
        const bits = new Bitmap(chunk.bits[index]);
        for (let i = 0; i < chunk.ids.length && page.length <= limit; i++) {
          const id = chunk.ids[i];
          if (id <= after || !bits.has(i) || state.has(id)) continue;
          while (e < entered.length && entered[e] < id && page.length <= limit) page.push(entered[e++]);
          if (page.length <= limit) page.push(id);
        }
      }
    }
    while (e < entered.length && page.length <= limit) page.push(entered[e++]);
    const more = page.length > limit;
    const members = page.slice(0, limit);
    return { members, next: more ? members[members.length - 1] : null };
  }
}

/** A snapshot's chunks walked in ascending id order: each seek moves forward only. */
class AscendingSnapshot {
  private c = 0;
  private i = 0;
  /** Chunks read (or being read) from the walk's position on; the next one is read ahead. */
  private readonly chunks = new Map<number, Promise<SnapshotChunk | null>>();
  private readonly ready = new Map<number, SnapshotChunk | null>();

  constructor(
    private readonly run: RunDoc,
    private readonly read: (n: number) => Promise<SnapshotChunk | null>,
  ) {}

  /** Reads the chunks ids up to `id` may be in (by the run's record of each chunk's first id), and lets go of those passed. */
  async reach(id: string): Promise<void> {
    for (const n of [...this.chunks.keys()]) {
      if (n >= this.c) continue;
      this.chunks.delete(n);
      this.ready.delete(n);
    }
    const load = (n: number) => {
      if (n < this.run.chunks.length && !this.chunks.has(n)) this.chunks.set(n, this.read(n));
    };
    let n = this.c;
    for (; n < this.run.chunks.length && this.run.chunks[n].first <= id; n++) {
      load(n);
      load(n + 1);
      this.ready.set(n, await (this.chunks.get(n) as Promise<SnapshotChunk | null>));
    }
  }

  /** Where `id` is, or null; ids are asked in ascending order (asking the same id again is fine), each after a `reach` at or past it. */
  seek(id: string): { chunk: SnapshotChunk; index: number } | null {
    while (this.c < this.run.chunks.length) {
      if (this.run.chunks[this.c].first > id) return null;
      const chunk = this.ready.get(this.c);
      if (chunk === undefined) throw new Error(`snapshot chunk ${this.c} of run ${this.run._id} was asked for before it was reached`);
      if (chunk !== null) {
        while (this.i < chunk.ids.length && chunk.ids[this.i] < id) this.i++;
        if (this.i < chunk.ids.length) return chunk.ids[this.i] === id ? { chunk, index: this.i } : null;
      }
      this.c++;
      this.i = 0;
    }
    return null;
  }
}
