import { GroupCommitter } from '../../api/groupCommit';
import type { StoredEvent } from '../../domain/event';
import { ChunkTooLarge, type AppendResult, type EventLog } from '../../store/eventLog';

interface PendingAppend {
  sourceId: string;
  events: StoredEvent[];
  resolve: (result: AppendResult) => void;
  reject: (error: unknown) => void;
}

/** An event log whose appends stay in flight until the test settles them. */
class ManualLog {
  readonly appends: PendingAppend[] = [];
  private seq = 0;

  append(sourceId: string, events: StoredEvent[]): Promise<AppendResult> {
    return new Promise((resolve, reject) => this.appends.push({ sourceId, events, resolve, reject }));
  }

  /** Settles the n-th append (in call order), reporting the given indexes of its events as duplicates. */
  succeed(n: number, duplicateIndexes: number[] = []): void {
    this.appends[n].resolve({ seq: this.seq++, duplicateIndexes: new Set(duplicateIndexes) });
  }

  fail(n: number, error: unknown): void {
    this.appends[n].reject(error);
  }

  ids(n: number): string[] {
    return this.appends[n].events.map((e) => e.id);
  }

  asEventLog(): EventLog {
    return this as unknown as EventLog;
  }
}

/** An event log that stores at once and reports as duplicate any event id it has seen before for the source. */
class DedupingLog {
  readonly calls: Array<{ sourceId: string; ids: string[] }> = [];
  private readonly seen = new Map<string, Set<string>>();

  async append(sourceId: string, events: StoredEvent[]): Promise<AppendResult> {
    this.calls.push({ sourceId, ids: events.map((e) => e.id) });
    await Promise.resolve();
    const seen = this.seen.get(sourceId) ?? new Set<string>();
    this.seen.set(sourceId, seen);
    const duplicateIndexes = new Set<number>();
    events.forEach((event, index) => {
      if (seen.has(event.id)) duplicateIndexes.add(index);
      seen.add(event.id);
    });
    return { seq: this.calls.length - 1, duplicateIndexes };
  }

  asEventLog(): EventLog {
    return this as unknown as EventLog;
  }
}

function events(...ids: string[]): StoredEvent[] {
  const at = new Date('2025-06-15T12:00:00Z');
  return ids.map((id) => ({ id, type: 'page_view', timestamp: at, receivedAt: at, identities: [{ type: 'cookie_id', value: 'c' }] }));
}

function batch(prefix: string, size: number): StoredEvent[] {
  return events(...Array.from({ length: size }, (_, i) => `${prefix}${i}`));
}

/** Lets pending promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

/** Records whether a promise has settled, without an unhandled rejection. */
function track<T>(promise: Promise<T>): { state: () => 'pending' | 'fulfilled' | 'rejected'; value: () => T; error: () => unknown } {
  let state: 'pending' | 'fulfilled' | 'rejected' = 'pending';
  let value: T;
  let error: unknown;
  promise.then(
    (v) => {
      state = 'fulfilled';
      value = v;
    },
    (e) => {
      state = 'rejected';
      error = e;
    },
  );
  return { state: () => state, value: () => value, error: () => error };
}

describe('GroupCommitter', () => {
  it('writes a submission to an idle source at once', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const done = track(committer.submit('src_a', events('a1', 'a2')));
    expect(log.appends).toHaveLength(1);
    expect(log.appends[0].sourceId).toBe('src_a');
    expect(log.ids(0)).toEqual(['a1', 'a2']);
    expect(done.state()).toBe('pending');
    log.succeed(0);
    await settle();
    expect(done.state()).toBe('fulfilled');
    expect(done.value()).toEqual(new Set());
  });

  it('does not resolve a submission before its append resolves', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const done = track(committer.submit('src_a', events('a1')));
    await settle();
    expect(done.state()).toBe('pending');
    log.succeed(0);
    await settle();
    expect(done.state()).toBe('fulfilled');
  });

  it('groups submissions that arrive while a write is in flight into the next append, in arrival order', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const first = track(committer.submit('src_a', events('a1')));
    const second = track(committer.submit('src_a', events('b1', 'b2')));
    const third = track(committer.submit('src_a', events('c1')));
    await settle();
    expect(log.appends).toHaveLength(1);

    log.succeed(0);
    await settle();
    expect(first.state()).toBe('fulfilled');
    expect(second.state()).toBe('pending');
    expect(log.appends).toHaveLength(2);
    expect(log.ids(1)).toEqual(['b1', 'b2', 'c1']);

    log.succeed(1);
    await settle();
    expect(second.state()).toBe('fulfilled');
    expect(third.state()).toBe('fulfilled');
    expect(log.appends).toHaveLength(2);
  });

  it('appends a group too large for one chunk in halves, one after the other, and refuses only a submission too large alone', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const head = track(committer.submit('src_a', events('h1')));
    const a = track(committer.submit('src_a', events('a1', 'a2')));
    const b = track(committer.submit('src_a', events('b1')));
    const c = track(committer.submit('src_a', events('c1', 'a1')));
    log.succeed(0);
    await settle();
    expect(log.ids(1)).toEqual(['a1', 'a2', 'b1', 'c1', 'a1']);
    log.fail(1, new ChunkTooLarge('too large'));
    await settle();
    // The first half alone, the second waiting for it: the log keeps their order.
    expect(log.appends).toHaveLength(3);
    expect(log.ids(2)).toEqual(['a1', 'a2', 'b1']);
    log.fail(2, new ChunkTooLarge('still too large'));
    await settle();
    expect(log.ids(3)).toEqual(['a1', 'a2']);
    log.fail(3, new ChunkTooLarge('one submission too large'));
    await settle();
    expect(a.state()).toBe('rejected');
    expect(a.error()).toBeInstanceOf(ChunkTooLarge);
    expect(log.ids(4)).toEqual(['b1']);
    log.succeed(4);
    await settle();
    expect(b.state()).toBe('fulfilled');
    expect(c.state()).toBe('pending');
    expect(log.ids(5)).toEqual(['c1', 'a1']);
    log.succeed(5, [1]);
    await settle();
    // Repeats are told within the chunk each part became.
    expect(c.value()).toEqual(new Set([1]));
    expect(head.state()).toBe('fulfilled');
    expect(log.appends).toHaveLength(6);
  });

  it('rejects a grouped append with any other error whole, without splitting it', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    committer.submit('src_a', events('h1')).catch(() => undefined);
    const a = track(committer.submit('src_a', events('a1')));
    const b = track(committer.submit('src_a', events('b1')));
    log.succeed(0);
    await settle();
    log.fail(1, new Error('store down'));
    await settle();
    expect(a.state()).toBe('rejected');
    expect(b.state()).toBe('rejected');
    expect(log.appends).toHaveLength(2);
  });

  it('writes at once again after the queue drains', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const first = committer.submit('src_a', events('a1'));
    log.succeed(0);
    await first;
    const second = track(committer.submit('src_a', events('b1')));
    expect(log.appends).toHaveLength(2);
    expect(log.ids(1)).toEqual(['b1']);
    log.succeed(1);
    await settle();
    expect(second.state()).toBe('fulfilled');
  });

  it("maps duplicate indexes of a grouped append back to each submission's own indexes", async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const head = committer.submit('src_a', events('h1'));
    const a = committer.submit('src_a', events('a0', 'a1', 'a2'));
    const b = committer.submit('src_a', events('b0', 'b1'));
    const c = committer.submit('src_a', events('c0', 'c1', 'c2', 'c3'));
    log.succeed(0, [0]);
    expect(await head).toEqual(new Set([0]));
    await settle();
    expect(log.ids(1)).toEqual(['a0', 'a1', 'a2', 'b0', 'b1', 'c0', 'c1', 'c2', 'c3']);
    // Group offsets: a at 0..2, b at 3..4, c at 5..8.
    log.succeed(1, [1, 3, 4, 5, 8]);
    expect(await a).toEqual(new Set([1]));
    expect(await b).toEqual(new Set([0, 1]));
    expect(await c).toEqual(new Set([0, 3]));
  });

  it('gives an empty set to a submission with no duplicates in a group that has some', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const head = committer.submit('src_a', events('h1'));
    const a = committer.submit('src_a', events('a0', 'a1'));
    const b = committer.submit('src_a', events('b0', 'b1'));
    log.succeed(0);
    await head;
    await settle();
    log.succeed(1, [2]);
    expect(await a).toEqual(new Set());
    expect(await b).toEqual(new Set([0]));
  });

  it('reports an event repeated across grouped submissions as a duplicate of the later one only', async () => {
    const log = new DedupingLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const head = committer.submit('src_a', events('x'));
    const a = committer.submit('src_a', events('x', 'y'));
    const b = committer.submit('src_a', events('y', 'z'));
    expect(await head).toEqual(new Set());
    expect(await a).toEqual(new Set([0]));
    expect(await b).toEqual(new Set([0]));
    expect(log.calls.map((c) => c.ids)).toEqual([['x'], ['x', 'y', 'y', 'z']]);
  });

  it('never puts more than maxChunkEvents events in one append', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 5);
    const head = committer.submit('src_a', batch('h', 1));
    const sizes = [2, 2, 1, 3, 2, 4, 1, 1, 5];
    const rest = sizes.map((size, i) => committer.submit('src_a', batch(`s${i}-`, size)));
    for (let n = 0; log.appends.length > n; n++) {
      log.succeed(n);
      await settle();
    }
    await Promise.all([head, ...rest]);
    const appendSizes = log.appends.map((a) => a.events.length);
    expect(appendSizes.every((size) => size <= 5)).toBe(true);
    // Submissions are taken whole, in order, while they fit: [1] [2,2,1] [3,2] [4,1] [1] [5].
    expect(appendSizes).toEqual([1, 5, 5, 5, 1, 5]);
    expect(log.appends.flatMap((a) => a.events.map((e) => e.id))).toEqual(
      [batch('h', 1), ...sizes.map((size, i) => batch(`s${i}-`, size))].flat().map((e) => e.id),
    );
  });

  it('writes a single submission larger than maxChunkEvents whole, in an append of its own', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 3);
    const head = committer.submit('src_a', batch('h', 1));
    const small = committer.submit('src_a', batch('s', 1));
    const big = committer.submit('src_a', batch('b', 7));
    const after = committer.submit('src_a', batch('t', 2));
    for (let n = 0; log.appends.length > n; n++) {
      log.succeed(n);
      await settle();
    }
    await Promise.all([head, small, big, after]);
    expect(log.appends.map((a) => a.events.length)).toEqual([1, 1, 7, 2]);
    expect(log.ids(2)).toEqual(batch('b', 7).map((e) => e.id));
  });

  it('maps duplicates correctly when the queue is split into several appends', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 4);
    const head = committer.submit('src_a', batch('h', 1));
    const a = committer.submit('src_a', batch('a', 3));
    const b = committer.submit('src_a', batch('b', 3));
    log.succeed(0);
    await head;
    await settle();
    expect(log.ids(1)).toEqual(['a0', 'a1', 'a2']);
    log.succeed(1, [2]);
    await settle();
    expect(log.ids(2)).toEqual(['b0', 'b1', 'b2']);
    log.succeed(2, [0]);
    expect(await a).toEqual(new Set([2]));
    expect(await b).toEqual(new Set([0]));
  });

  it('rejects exactly the submissions of a failed append and goes on with the rest', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 3);
    const head = track(committer.submit('src_a', events('h')));
    const a = track(committer.submit('src_a', events('a0', 'a1')));
    const b = track(committer.submit('src_a', events('b0')));
    const c = track(committer.submit('src_a', events('c0', 'c1')));
    log.succeed(0);
    await settle();
    expect(log.ids(1)).toEqual(['a0', 'a1', 'b0']);

    const failure = new Error('write failed');
    log.fail(1, failure);
    await settle();
    expect(head.state()).toBe('fulfilled');
    expect(a.state()).toBe('rejected');
    expect(a.error()).toBe(failure);
    expect(b.state()).toBe('rejected');
    expect(b.error()).toBe(failure);
    expect(c.state()).toBe('pending');

    expect(log.ids(2)).toEqual(['c0', 'c1']);
    log.succeed(2, [1]);
    await settle();
    expect(c.state()).toBe('fulfilled');
    expect(c.value()).toEqual(new Set([1]));
  });

  it('accepts new submissions after a failure', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 10);
    const failed = track(committer.submit('src_a', events('a')));
    log.fail(0, new Error('down'));
    await settle();
    expect(failed.state()).toBe('rejected');
    const next = track(committer.submit('src_a', events('b')));
    expect(log.appends).toHaveLength(2);
    log.succeed(1);
    await settle();
    expect(next.state()).toBe('fulfilled');
  });

  it('keeps sources independent: a write in flight for one does not hold back another', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const a1 = track(committer.submit('src_a', events('a1')));
    const a2 = track(committer.submit('src_a', events('a2')));
    const b1 = track(committer.submit('src_b', events('b1')));
    expect(log.appends.map((p) => [p.sourceId, p.events.map((e) => e.id)])).toEqual([
      ['src_a', ['a1']],
      ['src_b', ['b1']],
    ]);
    log.succeed(1, [0]);
    await settle();
    expect(b1.state()).toBe('fulfilled');
    expect(b1.value()).toEqual(new Set([0]));
    expect(a1.state()).toBe('pending');
    expect(a2.state()).toBe('pending');

    log.succeed(0);
    await settle();
    expect(a1.state()).toBe('fulfilled');
    expect(log.appends[2].sourceId).toBe('src_a');
    expect(log.ids(2)).toEqual(['a2']);
  });

  it('never mixes events of different sources in one append', async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const all = [
      committer.submit('src_a', events('a1')),
      committer.submit('src_b', events('b1')),
      committer.submit('src_a', events('a2')),
      committer.submit('src_b', events('b2')),
      committer.submit('src_a', events('a3')),
    ];
    for (let n = 0; log.appends.length > n; n++) {
      log.succeed(n);
      await settle();
    }
    await Promise.all(all);
    for (const append of log.appends) {
      const prefix = append.sourceId === 'src_a' ? 'a' : 'b';
      expect(append.events.every((e) => e.id.startsWith(prefix))).toBe(true);
    }
    const idsOf = (sourceId: string) => log.appends.filter((p) => p.sourceId === sourceId).flatMap((p) => p.events.map((e) => e.id));
    expect(idsOf('src_a')).toEqual(['a1', 'a2', 'a3']);
    expect(idsOf('src_b')).toEqual(['b1', 'b2']);
  });

  it("does not let one source's failure reject another source's submissions", async () => {
    const log = new ManualLog();
    const committer = new GroupCommitter(log.asEventLog(), 100);
    const a = track(committer.submit('src_a', events('a1')));
    const b = track(committer.submit('src_b', events('b1')));
    log.fail(0, new Error('src_a write failed'));
    log.succeed(1);
    await settle();
    expect(a.state()).toBe('rejected');
    expect(b.state()).toBe('fulfilled');
  });

  it('has only one append in flight per source at a time', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const log = {
      async append(): Promise<AppendResult> {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 1));
        inFlight--;
        return { seq: 0, duplicateIndexes: new Set<number>() };
      },
    };
    const committer = new GroupCommitter(log as unknown as EventLog, 2);
    const submissions: Array<Promise<Set<number>>> = [];
    for (let i = 0; i < 20; i++) {
      submissions.push(committer.submit('src_a', events(`e${i}`)));
      if (i % 3 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await Promise.all(submissions);
    expect(maxInFlight).toBe(1);
  });
});
