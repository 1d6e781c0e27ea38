import { createIdentityResolver, MissEstimate, severedLinkKeys } from '../../activities/identityResolver';
import type { StoredEvent } from '../../domain/event';
import { identityKey, type Identity } from '../../domain/identity';
import { parseIdentityCaps } from '../../domain/identityCaps';
import { COLLECTIONS, type Store } from '../../store/db';
import { IdentityCapStore } from '../../store/identityCaps';
import { IdentityIndex } from '../../store/identities';
import { testStore, uniqueName } from '../support/services';

const at = new Date('2026-03-01T00:00:00Z');
const event = (id: string, identities: Identity[]): StoredEvent => ({ id, type: 'login', timestamp: at, receivedAt: at, identities });
const cookie = (value: string): Identity => ({ type: 'cookie_id', value });
const crm = (value: string): Identity => ({ type: 'crm_id', value });

/** Events of `count` new people, each a CRM id with a cookie. */
function people(prefix: string, count: number): StoredEvent[] {
  return Array.from({ length: count }, (_, n) => event(`${prefix}-${n}`, [crm(`${prefix}-${n}`), cookie(`${prefix}-c${n}`)]));
}

describe('identity resolver: cache misses left to the claims, and claims settled within the process', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('resolver');
  });
  afterAll(() => store.close());

  function resolverOn(identities: IdentityIndex) {
    // Small limits, so a few batches teach it that misses are new.
    const misses = new MissEstimate({ horizon: 100, evidence: 40, rare: 0.02 });
    return createIdentityResolver({ identities, capStore: new IdentityCapStore(store), caps: parseIdentityCaps(''), blocked: () => false, now: () => at, misses });
  }

  /** Puts identity documents in the store as another process would: this process has not cached them. */
  async function claimElsewhere(keys: string[], profileId: string): Promise<void> {
    const other = new IdentityIndex(store);
    await other.claim(keys.map((key) => ({ key, type: key.startsWith('crm_id:') ? 'crm_id' : 'cookie_id', profileId })), at);
  }

  it("makes no link an unlink severed: a severed event sent again joins the two sides no more, another event still does", async () => {
    const source = uniqueName('src');
    const [tablet, ben] = [identityKey(cookie('sev-tablet')), identityKey(crm('sev-ben'))];
    await claimElsewhere([tablet], 'p_ana_part');
    await claimElsewhere([ben], 'p_ben_part');
    const severances = [{ keys: [tablet, ben] as [string, string], eventIds: ['sev-u3'] }];
    const resolver = createIdentityResolver({ identities: new IdentityIndex(store), capStore: new IdentityCapStore(store), caps: parseIdentityCaps(''), blocked: () => false, now: () => at, severed: async () => severedLinkKeys(severances) });
    const repeat = await resolver.resolve(source, [event('sev-u3', [crm('sev-ben'), cookie('sev-tablet')])]);
    expect(repeat.links).toEqual([]);
    const fresh = await resolver.resolve(source, [event('sev-u9', [crm('sev-ben'), cookie('sev-tablet')])]);
    expect(fresh.links).toEqual([expect.objectContaining({ profiles: ['p_ana_part', 'p_ben_part'], eventId: 'sev-u9' })]);
  });

  it('stops reading misses once they prove new, settles the few held ones through their claims, and reads again after', async () => {
    const source = uniqueName('src');
    const identities = new IdentityIndex(store);
    const resolver = resolverOn(identities);

    expect((await resolver.resolve(source, people('a', 30))).unread).toBe(0); // no evidence yet: read
    const skipped = await resolver.resolve(source, people('b', 30));
    expect(skipped.unread).toBe(60);
    expect(skipped.lostClaims).toBe(0);

    // Three CRM ids another process already holds, unknown to this one; their events bring new cookies.
    const held = ['x-0', 'x-1', 'x-2'].map((value) => identityKey(crm(value)));
    await claimElsewhere(held, 'p_elsewhere');
    const events = [event('x-0', [crm('x-0'), cookie('x-c0')]), event('x-1', [cookie('x-c1'), crm('x-1')]), event('x-2', [crm('x-2')]), ...people('c', 20)];
    const settled = await resolver.resolve(source, events);
    expect(settled.unread).toBe(45);
    expect(settled.lostClaims).toBe(3);
    // Each event goes where its CRM id lives, as a read would have found; a new cookie joins that
    // profile through a link to the document its claim made.
    expect(settled.targets.slice(0, 3)).toEqual(['p_elsewhere', 'p_elsewhere', 'p_elsewhere']);
    expect(settled.claims).toEqual([]);
    expect(settled.links.map((link) => link.profiles)).toEqual(
      expect.arrayContaining([expect.arrayContaining(['p_elsewhere']), expect.arrayContaining(['p_elsewhere'])]),
    );
    expect(settled.links).toHaveLength(2);

    // 3 of 45 misses were held: too many to keep skipping reads.
    expect((await resolver.resolve(source, people('d', 10))).unread).toBe(0);
  });

  it('without evidence reads a sample of many misses: the rest are left to the claims when none of it is held, read when some is', async () => {
    const source = uniqueName('src');
    const sampling = () => new MissEstimate({ horizon: 1000, evidence: 1000, rare: 0.01, sample: 8 });
    // A new process, a batch of 40 new people (80 keys): 8 keys read, the other 72 claimed unread.
    const fresh = createIdentityResolver({ identities: new IdentityIndex(store), capStore: new IdentityCapStore(store), caps: parseIdentityCaps(''), blocked: () => false, now: () => at, misses: sampling() });
    const first = await fresh.resolve(source, people('s', 40));
    expect(first.unread).toBe(72);
    expect(first.lostClaims).toBe(0);
    expect(first.newProfiles).toBe(40);

    // Another new process (a restart) meets the same people again with 10 new ones: the sample finds
    // held keys, so every miss is read and no claim is lost; the known people go to their documents.
    const restarted = createIdentityResolver({ identities: new IdentityIndex(store), capStore: new IdentityCapStore(store), caps: parseIdentityCaps(''), blocked: () => false, now: () => at, misses: sampling() });
    const again = await restarted.resolve(source, [...people('s', 40), ...people('t', 10)]);
    expect(again.unread).toBe(0);
    expect(again.lostClaims).toBe(0);
    expect(again.targets.slice(0, 40)).toEqual(first.targets);
    expect(again.newProfiles).toBe(10);
  });

  it('reads the caps of a document it learns of only through a lost claim, and refuses the join', async () => {
    const source = uniqueName('src');
    const identities = new IdentityIndex(store);
    const resolver = resolverOn(identities);
    await resolver.resolve(source, people('e', 30));
    await resolver.resolve(source, people('f', 30));

    const full = uniqueName('p_full');
    await claimElsewhere([identityKey(crm('y-0'))], full);
    await new IdentityCapStore(store).mark([{ profileId: full, types: ['cookie_id'] }], at);
    const result = await resolver.resolve(source, [event('y-0', [crm('y-0'), cookie('y-c0')])]);
    expect(result.unread).toBe(2);
    expect(result.lostClaims).toBe(1);
    expect(result.targets).toEqual([full]);
    expect(result.links).toEqual([]);
    expect(result.refusals).toEqual([expect.objectContaining({ profileId: full, key: identityKey(cookie('y-c0')) })]);
  });

  it("marks a document its batch's claims bring past a cap before claiming, so a retry after a crash refuses the same joins instead of linking them", async () => {
    const source = uniqueName('src');
    const shared = crm(uniqueName('burst'));
    const cookies = ['a', 'b', 'c', 'd'].map((c) => cookie(uniqueName(`ck-${c}`)));
    // Four new cookies with one CRM id, then the third again: refused, it must not be linked either.
    const batch = [...cookies.map((c) => event(uniqueName('e'), [shared, c])), event(uniqueName('e'), [shared, cookies[2]])];
    const resolverWith = (step?: Parameters<typeof createIdentityResolver>[0]['step']) =>
      createIdentityResolver({ identities: new IdentityIndex(store), capStore: new IdentityCapStore(store), caps: parseIdentityCaps('cookie_id=2'), blocked: () => false, now: () => at, step });

    // The first attempt stops right after its claims went in (a worker killed there).
    const crash = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
      const result = await work();
      if (name === 'claim') throw new Error('killed after claiming');
      return result;
    };
    await expect(resolverWith(crash).resolve(source, batch)).rejects.toThrow('killed after claiming');

    const retry = await resolverWith().resolve(source, batch);
    const owner = retry.targets[0] as string;
    expect(retry.targets).toEqual(Array(5).fill(owner));
    expect(retry.claims).toEqual([]);
    expect(retry.links).toEqual([]);
    expect(retry.refusals.map((refusal) => [refusal.eventId, refusal.key])).toEqual([2, 3, 4].map((n) => [batch[n].id, identityKey(batch[n].identities[1])]));
    expect((await new IdentityCapStore(store).capped([owner])).get(owner)).toEqual(new Set(['cookie_id']));
    // Each refused cookie has a document of its own.
    const refusedOwners = await new IdentityIndex(store).reload([cookies[2], cookies[3]].map(identityKey));
    expect(refusedOwners.size).toBe(2);
    expect(new Set(refusedOwners.values()).size).toBe(2);
    expect([...refusedOwners.values()]).not.toContain(owner);
  });

  it("always reads the readings of an id of unknown type, so a server alias joins a user id only the store knows, while other misses go unread", async () => {
    const source = uniqueName('src');
    const resolver = resolverOn(new IdentityIndex(store));
    await resolver.resolve(source, people(uniqueName('g'), 30));
    expect((await resolver.resolve(source, people(uniqueName('h'), 30))).unread).toBe(60); // misses now go unread

    const old = crm(uniqueName('acct-old'));
    await claimElsewhere([identityKey(old)], 'p_old_user');
    const renamed = crm(uniqueName('acct-new'));
    const alias = event(uniqueName('alias'), [renamed, { ...cookie(old.value), previous: true }, { ...old, previous: true }]);
    const result = await resolver.resolve(source, [alias, ...people(uniqueName('i'), 5)]);
    expect(result.targets[0]).toBe('p_old_user');
    expect(result.claimed.filter((claim) => claim.profileId === 'p_old_user')).toEqual([{ key: identityKey(renamed), type: 'crm_id', profileId: 'p_old_user' }]);
    expect(result.unmatched).toEqual([{ event: 0, key: identityKey(cookie(old.value)) }]);
    expect(result.unread).toBe(11); // the alias's new id and the five people's ids: unread as before
  });

  it('keeps every type that processes mark on one document at once', async () => {
    const types = ['cookie_id', 'email_sha256', 'maid', 'crm_id'] as const;
    for (let round = 0; round < 8; round++) {
      const profileId = `p_marked_at_once_${round}`;
      await Promise.all(types.map((type) => new IdentityCapStore(store).mark([{ profileId, types: [type] }], at)));
      expect({ round, types: [...((await new IdentityCapStore(store).capped([profileId])).get(profileId) ?? [])].sort() }).toEqual({ round, types: [...types].sort() });
    }
  });

  it('keeps every cap marker while they are few, and sees one another process writes on its next call; past the limit it reads them by document', async () => {
    const [a, b, c] = [uniqueName('p_cap'), uniqueName('p_cap'), uniqueName('p_cap')];
    const writer = new IdentityCapStore(store);
    const drain = new IdentityCapStore(store);
    expect([...(await drain.capped([a, b, c])).keys()]).toEqual([]);
    await writer.mark([{ profileId: a, types: ['cookie_id'] }], at);
    expect([...(await drain.capped([a, b, c])).entries()]).toEqual([[a, new Set(['cookie_id'])]]);
    // A marker written without the stamp changing is not seen by a drain keeping them all: the stamp is what it reads.
    await store.db.collection(COLLECTIONS.identityCaps).replaceOne({ _id: b } as never, { types: ['maid'], at }, { upsert: true });
    expect([...(await drain.capped([b])).keys()]).toEqual([]);
    await writer.mark([{ profileId: c, types: ['crm_id'] }], at);
    expect(new Map(await drain.capped([a, b, c]))).toEqual(new Map([[a, new Set(['cookie_id'])], [b, new Set(['maid'])], [c, new Set(['crm_id'])]]));
    // With more markers than it keeps (the test store holds at least these three), each document's is read by `_id`.
    const reader = new IdentityCapStore(store, 2);
    const fresh = uniqueName('p_cap');
    await store.db.collection(COLLECTIONS.identityCaps).replaceOne({ _id: fresh } as never, { types: ['email_sha256'], at }, { upsert: true });
    expect(new Map(await reader.capped([a, fresh, uniqueName('p_none')]))).toEqual(new Map([[a, new Set(['cookie_id'])], [fresh, new Set(['email_sha256'])]]));
    // A later marker of a document adds its types to the earlier one's (a drain and the writer may both mark it).
    await drain.mark([{ profileId: c, types: ['cookie_id'] }], at);
    expect((await writer.capped([c])).get(c)).toEqual(new Set(['cookie_id', 'crm_id']));
    // A reader past the limit sees the types another process's marking added to a marker it had read.
    expect((await reader.capped([fresh])).get(fresh)).toEqual(new Set(['email_sha256']));
    await writer.mark([{ profileId: fresh, types: ['maid'] }], at);
    expect((await reader.capped([fresh])).get(fresh)).toEqual(new Set(['email_sha256', 'maid']));
  });

  it('waits for a claim of the same keys in flight in this process instead of sending them again', async () => {
    const identities = new IdentityIndex(store);
    const claims = (profileId: string, values: string[]) => values.map((value) => ({ key: identityKey(cookie(`k-${value}`)), type: 'cookie_id' as const, profileId }));
    const [first, second] = await Promise.all([identities.claim(claims('p1', ['a', 'b', 'c']), at), identities.claim(claims('p2', ['b', 'c', 'd']), at)]);
    expect(first).toEqual({ held: [], sent: 3, refused: 0 });
    expect(second).toEqual({ held: [identityKey(cookie('k-b')), identityKey(cookie('k-c'))], sent: 1, refused: 0 });
    const owners = identities.cached([identityKey(cookie('k-b')), identityKey(cookie('k-d'))]).owners;
    expect([...owners.values()]).toEqual(['p1', 'p2']);
    // Another process has no such help: the store refuses its claim, and it reads the owner back.
    const other = new IdentityIndex(store);
    expect(await other.claim(claims('p2', ['a']), at)).toEqual({ held: [identityKey(cookie('k-a'))], sent: 1, refused: 1 });
  });
  it('names the documents a batch makes, never one that owned an identity before it', async () => {
    const source = uniqueName('src');
    const resolver = resolverOn(new IdentityIndex(store));
    const first = await resolver.resolve(source, people('g', 5));
    expect([...first.created].sort()).toEqual([...new Set(first.targets)].sort());
    expect(first.created).toHaveLength(5);

    // The same batch again, as a retried drain resolves it: its documents exist by now.
    const again = await resolver.resolve(source, people('g', 5));
    expect(again.targets).toEqual(first.targets);
    expect(again.created).toEqual([]);

    // A known person's new cookie is claimed for their document, which the batch did not make; a
    // new person's document it did — also when its claims won against another process's.
    await claimElsewhere([identityKey(crm('h-held'))], 'p_held_elsewhere');
    const mixed = await resolver.resolve(source, [event('g-0', [crm('g-0'), cookie('g-new-cookie')]), event('h-0', [crm('h-0')]), event('h-held', [crm('h-held')])]);
    expect(mixed.targets[0]).toBe(first.targets[0]);
    expect(mixed.targets[2]).toBe('p_held_elsewhere');
    expect(mixed.created).toEqual([mixed.targets[1]]);
  });
});
