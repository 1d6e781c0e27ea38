import type { StoredEvent } from '../../domain/event';
import { COLLECTIONS, connectStore, type Store } from '../../store/db';
import { decodeEvents } from '../../store/deflatedBson';
import { EVENT_ID_FENCES, EventIdGenerations } from '../../store/eventIds';
import { RetentionStore } from '../../store/retention';
import { ProfileEventLog, routeId } from '../../store/profileEvents';
import { AckDeadlineExceeded, ChunkFenced, ChunkTooLarge, chunkId, DEFAULT_DEDUPE_WINDOW_HOURS, encodeChunk, eventIdKey, EventLog, type EventChunk, type StoredChunk } from '../../store/eventLog';
import { GroupCommitter } from '../../api/groupCommit';
import { baseConfig, testStore } from '../support/services';

function events(ids: string[]): StoredEvent[] {
  const now = new Date();
  return ids.map((id) => ({ id, type: 'page_view', timestamp: now, receivedAt: now, identities: [{ type: 'cookie_id', value: `c-${id}` }] }));
}

/** The store, with every claim of event ids held back until `gate` resolves: a writer stalled mid-append. */
function withStalledClaims(store: Store, gate: Promise<void>): Store {
  const bound = <T extends object>(target: T, prop: string | symbol) => {
    const value = Reflect.get(target, prop);
    return typeof value === 'function' ? value.bind(target) : value;
  };
  const db = new Proxy(store.db, {
    get(target, prop) {
      if (prop !== 'collection') return bound(target, prop);
      return (name: string) => {
        const collection = target.collection(name);
        if (!name.startsWith('event_ids_')) return collection;
        return new Proxy(collection, {
          get: (inner, innerProp) => (innerProp === 'insertMany' ? async (...args: Parameters<typeof collection.insertMany>) => (await gate, inner.insertMany(...args)) : bound(inner, innerProp)),
        });
      };
    },
  });
  return { ...store, db };
}

function claimGeneration(store: Store, at = Date.now()) {
  const generations = new EventIdGenerations(store.db, DEFAULT_DEDUPE_WINDOW_HOURS);
  return store.db.collection<{ _id: string; chunk: number }>(generations.collectionName(Math.floor(at / (DEFAULT_DEDUPE_WINDOW_HOURS * 3_600_000))));
}

describe('source event log', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('eventlog');
  });
  afterAll(() => store.close());

  it('reports repeated ids as duplicates, within one append and across appends', async () => {
    const log = new EventLog(store);
    const first = await log.append('s1', events(['a', 'b', 'a']));
    expect([...first.duplicateIndexes]).toEqual([2]);
    const second = await log.append('s1', events(['b', 'c']));
    expect([...second.duplicateIndexes]).toEqual([0]);
    expect(second.seq).toBe(first.seq + 1);
    const sealed = await log.read('s1', second.seq);
    expect(sealed?.state).toBe('sealed');
    expect(sealed?.duplicates).toEqual([0]);
  });

  it('without claims, reports only repeats within the append, marks the chunk unclaimed and writes no id', async () => {
    const log = new EventLog(store);
    await log.append('s8', events(['a']));
    const unclaimed = await log.append('s8', events(['a', 'b', 'b']), { claimIds: false });
    expect([...unclaimed.duplicateIndexes]).toEqual([2]);
    const read = await log.read('s8', unclaimed.seq);
    expect(read).toMatchObject({ state: 'sealed', duplicates: [2], claimed: false });
    expect(await log.claimingChunk('s8', 'b', Date.now())).toBeNull();
  });

  it('drains a chunk that claims no ids at once, even when its writer died before the seal', async () => {
    const log = new EventLog(store);
    // Written a moment ago, never sealed: a claiming chunk would wait out the grace period.
    const chunk: EventChunk = { _id: chunkId('s9', 0), sourceId: 's9', seq: 0, createdAt: new Date(), events: events(['p', 'q', 'p']), claimed: false };
    await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk(chunk));
    expect(await log.readiness('s9', 0, 60_000)).toEqual({ ready: true, retryInMs: null });
    expect(await log.read('s9', 0)).toMatchObject({ state: 'sealed', duplicates: [2] });
    // The next append finds the slot taken and goes after it.
    expect((await log.append('s9', events(['r']), { claimIds: false })).seq).toBe(1);
  });

  it('reads a chunk whose writer has not sealed it as pending', async () => {
    const log = new EventLog(store);
    await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk({ _id: chunkId('s6', 0), sourceId: 's6', seq: 0, createdAt: new Date(), events: events(['p']) }));
    expect((await log.read('s6', 0))?.state).toBe('pending');
  });

  it('gives concurrent writers in different processes distinct, gap-free slots', async () => {
    const other = await connectStore(baseConfig.MONGODB_URI, store.db.databaseName);
    try {
      // 40 appends at once queue for slots: on a loaded box the last may seal after the 10 s an API
      // would wait before answering. What is asserted here is the slots, so the deadline is out of the way.
      const writers = [new EventLog(store, { ackDeadlineMs: 120_000 }), new EventLog(other, { ackDeadlineMs: 120_000 })];
      const appends = Array.from({ length: 40 }, (_, n) => writers[n % 2].append('s2', events([`e${n}`])));
      const seqs = (await Promise.all(appends)).map((result) => result.seq).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: 40 }, (_, n) => n));
      expect(await writers[0].findHead('s2', 0)).toBe(40);
      const stored = await store.db.collection<StoredChunk>(COLLECTIONS.events).find({ sourceId: 's2' }).toArray();
      expect(stored.flatMap((chunk) => decodeEvents<StoredEvent>(chunk.events).map((event) => event.id)).sort()).toEqual(
        Array.from({ length: 40 }, (_, n) => `e${n}`).sort(),
      );
    } finally {
      await other.close();
    }
  });

  it('finds the head of a long log from any point at or below it', async () => {
    const log = new EventLog(store);
    for (let n = 0; n < 37; n++) await log.append('s3', events([`h${n}`]));
    expect(await new EventLog(store).findHead('s3', 0)).toBe(37);
    expect(await new EventLog(store).findHead('s3', 36)).toBe(37);
    expect(await new EventLog(store).findHead('s3', 37)).toBe(37);
  });

  it('never writes a fresh process\'s first chunk into a drained slot that retention has already removed', async () => {
    const log = new EventLog(store);
    for (let n = 0; n < 5; n++) await log.append('s7', events([`r${n}`]));
    // The drain has folded slots 0–3 and retention removed 0–2: slot 0 is free again, but behind the drain.
    await store.db.collection(COLLECTIONS.drainPositions).insertOne({ _id: 's7' as never, cursor: 4 });
    await store.db.collection<StoredChunk>(COLLECTIONS.events).deleteMany({ _id: { $in: [0, 1, 2].map((seq) => chunkId('s7', seq)) } });
    const fresh = await new EventLog(store).append('s7', events(['after-restart']));
    expect(fresh.seq).toBe(5);
  });

  it('never writes into a slot retention removed behind the drain after others took the slots this process expected', async () => {
    let clock = Date.now();
    const quiet = new EventLog(store, { rawEventTtlHours: 1, now: () => clock });
    expect((await quiet.append('s10', events(['q0']))).seq).toBe(0);
    // Another process appends meanwhile; the drain folds it all and retention removes every chunk.
    const busy = new EventLog(store);
    for (let n = 0; n < 3; n++) await busy.append('s10', events([`b${n}`]));
    await store.db.collection(COLLECTIONS.drainPositions).insertOne({ _id: 's10' as never, cursor: 4 });
    expect(await new RetentionStore(store).expireRawChunks('s10', 4, new Date(Date.now() + 60_000), 100)).toMatchObject({ chunks: 4 });
    // The quiet process comes back later than a chunk can outlive retention: slot 1, where it expected to write, is free but behind the drain.
    clock += 31 * 60_000;
    expect((await quiet.append('s10', events(['q1']))).seq).toBe(4);
  });

  it('removes with drained chunks the ranges batches starting at them routed, and no later one', async () => {
    const log = new EventLog(store);
    for (let n = 0; n < 5; n++) await log.append('s12', events([`r${n}`]));
    const routed = new ProfileEventLog(store);
    expect(await routed.fixRange('s12', 0, 2)).toBe(2);
    expect(await routed.fixRange('s12', 2, 4)).toBe(4);
    expect(await routed.fixRange('s12', 4, 5)).toBe(5);
    const routes = store.db.collection(COLLECTIONS.eventRoutes);
    // Drained up to 4: the batches from 0 and 2 are done with; the one from 4 may still be retried.
    expect(await new RetentionStore(store).expireRawChunks('s12', 4, new Date(Date.now() + 60_000), 100)).toMatchObject({ chunks: 4 });
    expect((await routes.find({ _id: { $in: [routeId('s12', 0), routeId('s12', 2), routeId('s12', 4)] as never[] } }).toArray()).map((route) => route._id)).toEqual([routeId('s12', 4)]);
    expect(await routed.fixRange('s12', 4, 6)).toBe(5);
  });

  it('keeps a drained chunk its writer never sealed until it is as old as the time to live, as a sealed one', async () => {
    const chunks = store.db.collection<StoredChunk>(COLLECTIONS.events);
    await chunks.insertOne(encodeChunk({ _id: chunkId('s11', 0), sourceId: 's11', seq: 0, createdAt: new Date(), events: events(['u0']), claimed: false }));
    const retention = new RetentionStore(store);
    expect(await retention.expireRawChunks('s11', 1, new Date(Date.now() - 3_600_000), 100)).toEqual({ chunks: 0, events: 0 });
    expect(await new EventLog(store).exists('s11', 0)).toBe(true);
    expect(await retention.expireRawChunks('s11', 1, new Date(Date.now() + 60_000), 100)).toMatchObject({ chunks: 1 });
  });

  it('treats the ids an abandoned pending chunk did not claim as not its own', async () => {
    const log = new EventLog(store);
    await log.append('s4', events(['x']));
    const chunk: EventChunk = { _id: chunkId('s4', 1), sourceId: 's4', seq: 1, createdAt: new Date(0), events: events(['x', 'y', 'z', 'y']) };
    await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk(chunk));
    // The writer died after claiming `y` only; `x` belongs to chunk 0 and `z` was never claimed.
    await store.db.collection(new EventIdGenerations(store.db, DEFAULT_DEDUPE_WINDOW_HOURS).collectionName(0)).insertOne({ _id: eventIdKey('s4', 'y') as never, chunk: 1 });
    expect([...(await log.unclaimedIndexes(chunk))].sort()).toEqual([0, 2, 3]);
  });

  it('seals a chunk whose writer stalled past the grace itself: the writer is refused, and its retry takes back the claims that came too late', async () => {
    let release = () => undefined as void;
    const stalled = new EventLog(withStalledClaims(store, new Promise<void>((resolve) => (release = resolve))));
    const log = new EventLog(store);
    const appending = stalled.append('f1', events(['a', 'b', 'c']));
    appending.catch(() => undefined); // awaited below
    let chunk = await log.read('f1', 0);
    while (!chunk) chunk = (await new Promise((resolve) => setTimeout(resolve, 10)), await log.read('f1', 0));
    expect(chunk.state).toBe('pending');
    // The drain gives up on the writer: nothing was claimed, so all three are skipped — for good.
    expect([...(await log.fence(chunk))].sort()).toEqual([0, 1, 2]);
    expect(await log.read('f1', 0)).toMatchObject({ state: 'sealed', fenced: true, duplicates: [0, 1, 2] });
    release();
    await expect(appending).rejects.toBeInstanceOf(ChunkFenced);
    expect(await log.claimingChunk('f1', 'a', Date.now())).toBe(0);
    // Appended again, none is a duplicate: the claims the stalled writer made are taken back.
    const retry = await log.append('f1', events(['a', 'b', 'c']));
    expect(retry).toEqual({ seq: 1, duplicateIndexes: new Set() });
    expect(await log.claimingChunk('f1', 'a', Date.now())).toBe(1);
    // Once taken back, they are duplicates like any other.
    expect([...(await log.append('f1', events(['c', 'd']))).duplicateIndexes]).toEqual([0]);
  });

  it('fences only what a pending chunk had not claimed, and takes back only the fenced chunk\'s own skipped claims', async () => {
    const log = new EventLog(store);
    await log.append('f2', events(['x']));
    const chunk: EventChunk = { _id: chunkId('f2', 1), sourceId: 'f2', seq: 1, createdAt: new Date(), events: events(['x', 'y', 'z', 'y']) };
    await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk(chunk));
    // Claimed in time: `y` (applied from index 1, its repeat at 3 skipped); `x` belongs to chunk 0.
    await claimGeneration(store).insertOne({ _id: eventIdKey('f2', 'y'), chunk: 1 });
    const read = await log.read('f2', 1);
    expect([...(await log.fence(read as NonNullable<typeof read>))].sort()).toEqual([0, 2, 3]);
    // The stalled writer's claim of `z` lands after the fence.
    await claimGeneration(store).insertOne({ _id: eventIdKey('f2', 'z'), chunk: 1 });
    const retry = await log.append('f2', events(['x', 'y', 'z']));
    expect([...retry.duplicateIndexes].sort()).toEqual([0, 1]);
    expect(await log.claimingChunk('f2', 'z', Date.now())).toBe(retry.seq);
    expect(await log.claimingChunk('f2', 'x', Date.now())).toBe(0);
    expect(await log.claimingChunk('f2', 'y', Date.now())).toBe(1);
  });

  it('takes back only what the seal that stands skipped, when a drain fenced a chunk again after stopping half way', async () => {
    const log = new EventLog(store);
    const generations = new EventIdGenerations(store.db, DEFAULT_DEDUPE_WINDOW_HOURS);
    const pending = async (sourceId: string, ids: string[]) => {
      await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk({ _id: chunkId(sourceId, 0), sourceId, seq: 0, createdAt: new Date(), events: events(ids) }));
      return (await log.read(sourceId, 0)) as NonNullable<Awaited<ReturnType<EventLog['read']>>>;
    };
    // A drain recorded its fence and stopped before sealing; the writer's claim of `q` landed before the drain's retry fenced again.
    const chunk = await pending('f5', ['p', 'q']);
    await generations.recordFence({ _id: chunk._id, sourceId: 'f5', chunk: 0, at: chunk.createdAt });
    await claimGeneration(store).insertOne({ _id: eventIdKey('f5', 'q'), chunk: 0 });
    expect([...(await log.fence(chunk))]).toEqual([0]);
    await claimGeneration(store).insertOne({ _id: eventIdKey('f5', 'p'), chunk: 0 });
    expect([...(await log.append('f5', events(['p', 'q']))).duplicateIndexes]).toEqual([1]);

    // A drain sealed and stopped before confirming its fence: the seal and the chunk say what was skipped.
    const unconfirmed = await pending('f6', ['r', 's']);
    await claimGeneration(store).insertOne({ _id: eventIdKey('f6', 's'), chunk: 0 });
    await generations.recordFence({ _id: unconfirmed._id, sourceId: 'f6', chunk: 0, at: unconfirmed.createdAt });
    await store.db.collection(COLLECTIONS.eventSeals).insertOne({ _id: chunkId('f6', 0) as never, duplicates: [0], accepted: 1, chunkCreatedAt: unconfirmed.createdAt, sealedAt: new Date(), fenced: true });
    await claimGeneration(store).insertOne({ _id: eventIdKey('f6', 'r'), chunk: 0 });
    expect([...(await log.append('f6', events(['r', 's']))).duplicateIndexes]).toEqual([1]);
  });

  it('keeps to the writer\'s seal when it lands as the drain gives up, and keeps no fence', async () => {
    const log = new EventLog(store);
    await store.db.collection<StoredChunk>(COLLECTIONS.events).insertOne(encodeChunk({ _id: chunkId('f3', 0), sourceId: 'f3', seq: 0, createdAt: new Date(), events: events(['m', 'n']) }));
    const read = await log.read('f3', 0);
    expect(read?.state).toBe('pending');
    // The writer claims both and seals between the drain's read and its seal.
    await claimGeneration(store).insertMany([{ _id: eventIdKey('f3', 'm'), chunk: 0 }, { _id: eventIdKey('f3', 'n'), chunk: 0 }]);
    await store.db.collection(COLLECTIONS.eventSeals).insertOne({ _id: chunkId('f3', 0) as never, duplicates: [], accepted: 2, chunkCreatedAt: new Date(), sealedAt: new Date() });
    expect([...(await log.fence({ ...(read as NonNullable<typeof read>), duplicates: [] }))]).toEqual([]);
    expect(await store.db.collection(EVENT_ID_FENCES).countDocuments({ sourceId: 'f3' })).toBe(0);
    expect((await log.append('f3', events(['m']))).duplicateIndexes).toEqual(new Set([0]));
  });

  it('lets a fence go with its chunk\'s claims, and forgets erased ids in it', async () => {
    const generations = new EventIdGenerations(store.db, DEFAULT_DEDUPE_WINDOW_HOURS);
    const fences = store.db.collection<{ _id: string; ids: string[] }>(EVENT_ID_FENCES);
    await generations.confirmFence({ _id: chunkId('f4', 0), sourceId: 'f4', chunk: 0, ids: ['f4:old'], at: new Date(0) });
    await generations.confirmFence({ _id: chunkId('f4', 1), sourceId: 'f4', chunk: 1, ids: ['f4:kept', 'f4:erased'], at: new Date() });
    expect(await EventIdGenerations.forgetFenced(store.db, ['f4:erased'])).toBe(1);
    expect((await fences.findOne({ _id: chunkId('f4', 1) }))?.ids).toEqual(['f4:kept']);
    await generations.dropExpired(Date.now());
    expect((await fences.find({ _id: { $in: [chunkId('f4', 0), chunkId('f4', 1)] } }).toArray()).map((fence) => fence._id)).toEqual([chunkId('f4', 1)]);
  });

  it('refuses to acknowledge an append that outlived its deadline', async () => {
    let clock = 0;
    const log = new EventLog(store, { ackDeadlineMs: 1000, now: () => (clock += 1100) });
    await expect(log.append('s5', events(['late']))).rejects.toBeInstanceOf(AckDeadlineExceeded);
  });

  it('refuses events too large for one chunk before taking a slot, deflated or not, and stores the next append in the slot', async () => {
    const log = new EventLog(store);
    const sized = (ids: string[], text: (id: string) => string) => events(ids).map((event) => ({ ...event, properties: { text: text(event.id) } }));
    // Random text deflates little: 12 events of ~1 MB pass 8 MB deflated.
    const random = (id: string) => `${id}:${[...Array(1_000_000)].map(() => String.fromCharCode(33 + Math.floor(Math.random() * 90))).join('')}`;
    await expect(log.append('big', sized(Array.from({ length: 12 }, (_, n) => `r${n}`), random), { claimIds: false })).rejects.toBeInstanceOf(ChunkTooLarge);
    // Repeated text deflates to almost nothing, but 20 events of ~1 MB pass what one BSON document may hold at all.
    await expect(log.append('big', sized(Array.from({ length: 20 }, (_, n) => `s${n}`), (id) => id.padEnd(1_000_000, 'x')))).rejects.toBeInstanceOf(ChunkTooLarge);
    expect(await log.exists('big', 0)).toBe(false);
    const fits = await log.append('big', sized(['f0', 'f1'], random), { claimIds: false });
    expect(fits.seq).toBe(0);
    expect((await log.read('big', 0))?.events.map((event) => event.id)).toEqual(['f0', 'f1']);
  });

  it('stores every submission of a group too large for one chunk, in order, over several chunks', async () => {
    const log = new EventLog(store);
    const committer = new GroupCommitter(log, 2000);
    const large = (id: string) => events([id]).map((event) => ({ ...event, properties: { text: `${id}:${'x'.repeat(900_000)}`, list: Array.from({ length: 90 }, (_, n) => `${id}:${n}`.padEnd(10_000, 'y')) } }));
    // The first is written alone; the 23 that wait for it form one group of ~40 MB as BSON.
    const ids = Array.from({ length: 24 }, (_, n) => `g${n}`);
    const answers = await Promise.all(ids.map((id) => committer.submit('grouped', large(id))));
    expect(answers).toEqual(ids.map(() => new Set()));
    const stored: string[] = [];
    for (let seq = 0; await log.exists('grouped', seq); seq++) stored.push(...((await log.read('grouped', seq))?.events.map((event) => event.id) ?? []));
    expect(stored).toEqual(ids);
  });

  it("keeps a heavy person's moved history in batches each a document can hold, written once however often the move is retried", async () => {
    const routed = new ProfileEventLog(store);
    const at = new Date();
    // ~30 MB of events as an unlink would move them to two parts.
    const moved = Array.from({ length: 300 }, (_, n) => ({
      id: `mv-${n}`,
      type: 'page_view',
      timestamp: new Date(at.getTime() - n * 1000),
      receivedAt: at,
      identities: [{ type: 'cookie_id' as const, value: `c-${n % 2}` }],
      properties: { text: `${n}:`.padEnd(100_000, 'z') },
      profileId: `p_part_${n % 2}`,
      sourceId: 'src_moved',
      party: 'first' as const,
      seq: n,
    }));
    const movedBatches = () => store.db.collection(COLLECTIONS.profileEvents).countDocuments({ sourceId: '~moved' });
    await routed.writeMoved(3, 'unlink_1:p_split', moved);
    const written = await movedBatches();
    expect(written).toBeGreaterThan(3);
    await routed.writeMoved(3, 'unlink_1:p_split', [...moved].reverse());
    expect(await movedBatches()).toBe(written);
    for (const part of ['p_part_0', 'p_part_1']) {
      const held = await routed.eventsOf([part]);
      expect(held.map((event) => event.id).sort()).toEqual(moved.filter((event) => event.profileId === part).map((event) => event.id).sort());
    }
    // No batch is named after the document the move came from: an erasure of it keeps the batch's name.
    const names = (await store.db.collection(COLLECTIONS.profileEvents).find({ sourceId: '~moved' }, { projection: { _id: 1 } }).toArray()).map((doc) => String(doc._id));
    expect(names.filter((name) => name.includes('p_split'))).toEqual([]);

    // Each moved batch is registered, and leaves one history window after its move.
    const registered = store.db.collection(COLLECTIONS.movedEventBatches);
    expect((await registered.find({}).toArray()).map((doc) => String(doc._id)).sort()).toEqual([...names].sort());
    const retention = new RetentionStore(store);
    expect(await retention.expireMovedBatches(new Date(at.getTime() - 60_000), 100)).toBe(0);
    expect(await movedBatches()).toBe(written);
    expect(await retention.expireMovedBatches(new Date(Date.now() + 60_000), 2)).toBe(2);
    expect(await retention.expireMovedBatches(new Date(Date.now() + 60_000), 100)).toBe(written - 2);
    expect(await movedBatches()).toBe(0);
    expect(await registered.countDocuments({})).toBe(0);
    expect(await routed.eventsOf(['p_part_0', 'p_part_1'])).toEqual([]);
  });
});
