import type { StoredEvent } from '../../domain/event';
import { identityKey, IdentityError, sha256Hex, type Identity } from '../../domain/identity';
import { blocklistKeys, identityBlocklist } from '../../domain/identityBlocklist';
import { cappedTypes, parseIdentityCaps } from '../../domain/identityCaps';
import { resolveIdentities } from '../../domain/identityResolution';

function event(id: string, identities: Identity[]): StoredEvent {
  const at = new Date('2026-03-01T00:00:00Z');
  return { id, type: 'page_view', timestamp: at, receivedAt: at, identities };
}
const newId = (e: StoredEvent) => `p_${e.id}`;
const cookie = (value: string): Identity => ({ type: 'cookie_id', value });
const email = (address: string): Identity => ({ type: 'email_sha256', value: sha256Hex(address) });

describe('resolveIdentities', () => {
  it('sends an event to the owner of its highest-priority known identity and claims the rest for it', () => {
    const known = new Map([[identityKey(cookie('c1')), 'p_old'], [identityKey(email('a@x.org')), 'p_mail']]);
    const result = resolveIdentities([event('e1', [cookie('c1'), email('a@x.org'), { type: 'crm_id', value: 'r1' }])], known, newId);
    expect(result.targets).toEqual(['p_mail']); // email outranks cookie
    expect(result.claims).toEqual([{ key: 'crm_id:r1', type: 'crm_id', profileId: 'p_mail' }]);
    expect(result.links).toEqual([{ profiles: ['p_mail', 'p_old'], via: identityKey(cookie('c1')), eventId: 'e1' }]);
  });

  it('creates one new document for unknown identities and lets later events in the batch find it', () => {
    const result = resolveIdentities([event('e1', [cookie('c9')]), event('e2', [cookie('c9'), email('b@x.org')])], new Map(), newId);
    expect(result.targets).toEqual(['p_e1', 'p_e1']);
    expect(result.claims.map((claim) => claim.key)).toEqual([identityKey(cookie('c9')), identityKey(email('b@x.org'))]);
    expect(result.links).toEqual([]);
  });

  it('never claims or links on blocklisted junk, so strangers sharing it stay apart', () => {
    const blocked = identityBlocklist(['cookie_id:shared-kiosk']);
    const zeroMaid: Identity = { type: 'maid', value: '00000000-0000-0000-0000-000000000000' };
    const result = resolveIdentities(
      [event('e1', [cookie('c1'), zeroMaid, email('test@example.com')]), event('e2', [cookie('c2'), zeroMaid, email('test@example.com')]), event('e3', [cookie('shared-kiosk')])],
      new Map(),
      newId,
      blocked,
    );
    expect(result.targets).toEqual(['p_e1', 'p_e2', null]);
    expect(result.claims.map((claim) => claim.key)).toEqual([identityKey(cookie('c1')), identityKey(cookie('c2'))]);
    expect(result.links).toEqual([]);
  });

  it('blocks extra entries however they are written: an ad id in upper case, a hash in upper case, a raw email or phone', () => {
    const maid = '6D92078A-8246-4BA4-AE5B-76104861E7DC';
    const hash = sha256Hex('shared@company.example');
    const blocked = identityBlocklist([`maid:${maid}`, `email_sha256:${hash.toUpperCase()}`, 'email:Front.Desk@Company.Example', 'phone:+1 (415) 555-0100']);
    expect(blocked(identityKey({ type: 'maid', value: maid.toLowerCase() }))).toBe(true);
    expect(blocked(identityKey({ type: 'email_sha256', value: hash }))).toBe(true);
    expect(blocked(identityKey({ type: 'email_sha256', value: sha256Hex('front.desk@company.example') }))).toBe(true);
    expect(blocked(identityKey({ type: 'phone_sha256', value: sha256Hex('+14155550100') }))).toBe(true);
    expect(blocked(identityKey({ type: 'maid', value: '6d92078a-8246-4ba4-ae5b-76104861e7dd' }))).toBe(false);
    // Values collection refuses are blocked as written; a phone without a country code is read in the region given.
    expect(blocklistKeys('maid:00000000-0000-0000-0000-000000000000', 'US')).toEqual(['maid:00000000-0000-0000-0000-000000000000']);
    expect(blocklistKeys('partner_uid:ttd:${UID}', 'US')).toEqual(['partner_uid:ttd:${UID}']);
    expect(identityBlocklist(['phone:020 7946 0018'], 'GB')(identityKey({ type: 'phone_sha256', value: sha256Hex('+442079460018') }))).toBe(true);
    expect(() => blocklistKeys('fax:123', 'US')).toThrow(IdentityError);
  });

  it("blocks a placeholder as any partner's user id, and no real one", () => {
    const blocked = identityBlocklist();
    for (const placeholder of ['ttd:undefined', 'lotame:0', 'x:null', 'x:', 'ttd:NULL', 'ttd:Undefined']) expect(blocked(`partner_uid:${placeholder}`)).toBe(true);
    for (const real of ['ttd:u-1', 'ttd:undefined-1', 'null:abc']) expect(blocked(`partner_uid:${real}`)).toBe(false);
    expect(blocked('cookie_id:ttd:undefined')).toBe(false);
  });

  it('blocks a placeholder cookie or customer id in any case, and no real one', () => {
    const blocked = identityBlocklist();
    for (const placeholder of ['NULL', 'None', 'Undefined', 'nan', 'N/A', '0', '']) {
      expect(blocked(`crm_id:${placeholder}`)).toBe(true);
      expect(blocked(`cookie_id:${placeholder}`)).toBe(true);
    }
    for (const real of ['NULL-1', 'nancy', 'n/a/b', '00']) expect(blocked(`crm_id:${real}`)).toBe(false);
    expect(blocked('email_sha256:null')).toBe(false);
  });

  it('refuses joins to a document that holds its cap of the type: a new identity gets its own document, a known one is not linked', () => {
    const known = new Map([[identityKey(email('a@x.org')), 'p_full'], [identityKey(cookie('c7')), 'p_other']]);
    const capped = (profileId: string, type: Identity['type']) => profileId === 'p_full' && type === 'cookie_id';
    const newIdFor = (e: StoredEvent, key?: string) => (key ? `p_${e.id}_${key}` : `p_${e.id}`);
    const result = resolveIdentities([event('e1', [email('a@x.org'), cookie('c9')]), event('e2', [email('a@x.org'), cookie('c7')])], known, newIdFor, () => false, capped);
    expect(result.targets).toEqual(['p_full', 'p_full']);
    expect(result.claims).toEqual([{ key: 'cookie_id:c9', type: 'cookie_id', profileId: 'p_e1_cookie_id:c9' }]);
    expect(result.links).toEqual([]);
    expect(result.refusals).toEqual([
      { profileId: 'p_full', key: 'cookie_id:c9', type: 'cookie_id', event: 0, eventId: 'e1' },
      { profileId: 'p_full', key: 'cookie_id:c7', type: 'cookie_id', event: 1, eventId: 'e2' },
    ]);
    // Other types still join.
    const emails = resolveIdentities([event('e3', [email('a@x.org'), email('b@x.org')])], new Map(known), newIdFor, () => false, capped);
    expect(emails.claims).toEqual([{ key: identityKey(email('b@x.org')), type: 'email_sha256', profileId: 'p_full' }]);
    expect(emails.refusals).toEqual([]);
  });

  it("caps a document's links within one batch too: one shared customer id beside many known people's emails joins the cap's worth of them", () => {
    const caps = parseIdentityCaps('email_sha256=2');
    const crm: Identity = { type: 'crm_id', value: 'test-account' };
    const known = new Map<string, string>([[identityKey(crm), 'p_shared'], ...['a', 'b', 'c', 'd'].map((n) => [identityKey(email(`${n}@x.org`)), `p_${n}`] as [string, string])]);
    const rows = ['a', 'b', 'c', 'd'].map((n, i) => event(`r${i}`, [crm, email(`${n}@x.org`)]));
    // The same pair again is no new identity for the document.
    const result = resolveIdentities([rows[0], ...rows], new Map(known), newId, () => false, () => false, caps);
    expect(result.targets).toEqual(['p_shared', 'p_shared', 'p_shared', 'p_shared', 'p_shared']);
    expect(result.links.map((link) => link.profiles)).toEqual([['p_a', 'p_shared'], ['p_b', 'p_shared']]);
    expect(result.refusals.map((refusal) => [refusal.eventId, refusal.profileId, refusal.type])).toEqual([['r2', 'p_shared', 'email_sha256'], ['r3', 'p_shared', 'email_sha256']]);
    expect(result.capsHit).toEqual([{ profileId: 'p_shared', types: ['email_sha256'] }]);
    // Without caps, every one of them joins.
    expect(resolveIdentities(rows, new Map(known), newId).links).toHaveLength(4);
  });

  it("caps a document's claims within one batch: a burst of one id's cookies stops at the cap, and what it refused stays unlinked", () => {
    const caps = parseIdentityCaps('cookie_id=2');
    const newIdFor = (e: StoredEvent, key?: string) => (key ? `p_${e.id}_${key}` : `p_${e.id}`);
    const crm: Identity = { type: 'crm_id', value: 'shared' };
    const burst = ['a', 'b', 'c', 'd'].map((c, n) => event(`e${n}`, [crm, cookie(c)]));
    // The refused cookie seen again with the CRM id later in the batch: known now, and still not linked.
    const result = resolveIdentities([...burst, event('e4', [crm, cookie('c')])], new Map(), newIdFor, () => false, () => false, caps);
    expect(result.targets).toEqual(['p_e0', 'p_e0', 'p_e0', 'p_e0', 'p_e0']);
    expect(result.claims.filter((claim) => claim.profileId === 'p_e0').map((claim) => claim.key)).toEqual(['crm_id:shared', 'cookie_id:a', 'cookie_id:b']);
    expect(result.claims.filter((claim) => claim.profileId !== 'p_e0')).toEqual([
      { key: 'cookie_id:c', type: 'cookie_id', profileId: 'p_e2_cookie_id:c' },
      { key: 'cookie_id:d', type: 'cookie_id', profileId: 'p_e3_cookie_id:d' },
    ]);
    expect(result.links).toEqual([]);
    expect(result.refusals.map((refusal) => [refusal.eventId, refusal.key])).toEqual([['e2', 'cookie_id:c'], ['e3', 'cookie_id:d'], ['e4', 'cookie_id:c']]);
    expect(result.capsHit).toEqual([{ profileId: 'p_e0', types: ['cookie_id'] }]);

    // A document that existed before the batch takes at most the cap's worth of new ids in it; without caps, all of them.
    const known = new Map([['crm_id:shared', 'p_old']]);
    const existing = resolveIdentities(burst, new Map(known), newIdFor, () => false, () => false, caps);
    expect(existing.claims.filter((claim) => claim.profileId === 'p_old')).toHaveLength(2);
    expect(existing.capsHit).toEqual([{ profileId: 'p_old', types: ['cookie_id'] }]);
    expect(resolveIdentities(burst, new Map(known), newIdFor).claims.filter((claim) => claim.profileId === 'p_old')).toHaveLength(4);
  });

  it("refuses an alias's second new CRM id when the cap is one, and names for marking only documents that refused something", () => {
    const newIdFor = (e: StoredEvent, key?: string) => (key ? `p_${e.id}_${key}` : `p_${e.id}`);
    const alias = event('e1', [{ type: 'crm_id', value: 'old' }, { type: 'crm_id', value: 'new' }, cookie('k')]);
    const result = resolveIdentities([alias], new Map(), newIdFor, () => false, () => false, parseIdentityCaps('crm_id=1'));
    expect(result.claims.map((claim) => [claim.key, claim.profileId])).toEqual([
      ['crm_id:old', 'p_e1'],
      ['crm_id:new', 'p_e1_crm_id:new'],
      ['cookie_id:k', 'p_e1'],
    ]);
    expect(result.refusals).toEqual([{ profileId: 'p_e1', key: 'crm_id:new', type: 'crm_id', event: 0, eventId: 'e1' }]);
    // The refused id's own document is at the cap of one too, but refused nothing: its writer marks it.
    expect(result.capsHit).toEqual([{ profileId: 'p_e1', types: ['crm_id'] }]);
    expect(resolveIdentities([alias], new Map(), newIdFor, () => false, () => false, parseIdentityCaps('crm_id=2')).capsHit).toEqual([]);
    // A document already marked capped refuses without being named again.
    const marked = resolveIdentities([alias], new Map(), newIdFor, () => false, (profileId) => profileId === 'p_e1', parseIdentityCaps('crm_id=1'));
    expect(marked.refusals.length).toBeGreaterThan(0);
    expect(marked.capsHit).toEqual([]);
  });

  it('refuses again, without caps or markers, an identity owned by the document of its own an earlier attempt at the same event gave it', () => {
    const newIdFor = (e: StoredEvent, key?: string) => (key ? `p_${e.id}_${key}` : `p_${e.id}`);
    const known = new Map([['crm_id:shared', 'p_full'], ['cookie_id:c', 'p_e2_cookie_id:c']]);
    const again = resolveIdentities([event('e2', [{ type: 'crm_id', value: 'shared' }, cookie('c')])], new Map(known), newIdFor);
    expect(again.links).toEqual([]);
    expect(again.refusals).toEqual([{ profileId: 'p_full', key: 'cookie_id:c', type: 'cookie_id', event: 0, eventId: 'e2' }]);
    // Another event bringing the two together is a link, as ever (markers are what refuse it).
    expect(resolveIdentities([event('e9', [{ type: 'crm_id', value: 'shared' }, cookie('c')])], new Map(known), newIdFor).links).toHaveLength(1);
  });

  it('keeps an event on the same document when it is resolved again after its refused identity, of higher priority, was claimed for a document of its own', () => {
    // A shared device's document holds its cap of emails; a new email arrives on it.
    const newIdFor = (e: StoredEvent, key?: string) => (key ? `p_${e.id}_${key}` : `p_${e.id}`);
    const capped = (profileId: string, type: Identity['type']) => profileId === 'p_device' && type === 'email_sha256';
    const sent = event('e3', [email('new@x.org'), cookie('shared-device')]);
    const known = new Map([[identityKey(cookie('shared-device')), 'p_device']]);
    const first = resolveIdentities([sent], known, newIdFor, () => false, capped);
    expect(first.targets).toEqual(['p_device']);
    expect(first.links).toEqual([]);
    // Resolved again (a lost claim in its batch, a retry, the event sent again): the email is known now, as its own document's.
    const again = resolveIdentities([sent], new Map(known), newIdFor, () => false, capped);
    expect(again.targets).toEqual(['p_device']);
    expect(again.links).toEqual([]);
    expect(again.refusals).toEqual([{ profileId: 'p_device', key: identityKey(email('new@x.org')), type: 'email_sha256', event: 0, eventId: 'e3' }]);
  });
});

describe('resolveIdentities: an id of unknown type (a server alias\'s previousId)', () => {
  const reading = (identity: Identity): Identity => ({ ...identity, previous: true });
  const alias = (previous: string) => event('a1', [{ type: 'crm_id', value: 'new' }, reading(cookie(previous)), reading({ type: 'crm_id', value: previous })]);

  it('joins the profile that knows it as a customer id, and leaves its cookie reading off, unclaimed', () => {
    const result = resolveIdentities([alias('old')], new Map([['crm_id:old', 'p_user']]), newId);
    expect(result.targets).toEqual(['p_user']);
    expect(result.claims).toEqual([{ key: 'crm_id:new', type: 'crm_id', profileId: 'p_user' }]);
    expect(result.unmatched).toEqual([{ event: 0, key: 'cookie_id:old' }]);
    expect(result.links).toEqual([]);
  });

  it('joins the profile that knows it as a cookie id, and leaves its customer reading off', () => {
    const result = resolveIdentities([alias('anon')], new Map([['crm_id:new', 'p_user'], ['cookie_id:anon', 'p_anon']]), newId);
    expect(result.targets).toEqual(['p_user']);
    expect(result.claims).toEqual([]);
    expect(result.links).toEqual([{ profiles: ['p_anon', 'p_user'], via: 'cookie_id:anon', eventId: 'a1' }]);
    expect(result.unmatched).toEqual([{ event: 0, key: 'crm_id:anon' }]);
  });

  it('keeps it as a cookie id while the graph knows neither reading, and later events of the batch find it so', () => {
    const result = resolveIdentities([alias('anon'), event('t2', [cookie('anon')])], new Map(), newId);
    expect(result.targets).toEqual(['p_a1', 'p_a1']);
    expect(result.claims.map((claim) => claim.key)).toEqual(['crm_id:new', 'cookie_id:anon']);
    expect(result.unmatched).toEqual([{ event: 0, key: 'crm_id:anon' }]);
  });

  it('joins both profiles when each reading is known, and never keeps a blocklisted reading', () => {
    const both = resolveIdentities([alias('x')], new Map([['cookie_id:x', 'p_c'], ['crm_id:x', 'p_u']]), newId);
    expect(both.targets).toEqual(['p_u']);
    expect(both.links).toEqual([{ profiles: ['p_c', 'p_u'], via: 'cookie_id:x', eventId: 'a1' }]);
    expect(both.unmatched).toEqual([]);
    // The cookie reading is junk: the customer reading is the one kept.
    const junk = resolveIdentities([alias('kiosk')], new Map(), newId, identityBlocklist(['cookie_id:kiosk']));
    expect(junk.claims.map((claim) => claim.key)).toEqual(['crm_id:new', 'crm_id:kiosk']);
    expect(junk.unmatched).toEqual([]);
  });
});

describe('identity caps', () => {
  it('parses `type=n` lists over the defaults and names what is wrong', () => {
    expect(parseIdentityCaps('')).toEqual({ cookie_id: 1000, maid: 100, email_sha256: 20, phone_sha256: 20, crm_id: 5, partner_uid: 1000 });
    expect(parseIdentityCaps('cookie_id=3, crm_id=1')).toMatchObject({ cookie_id: 3, crm_id: 1, maid: 100 });
    expect(() => parseIdentityCaps('email=3')).toThrow(/unknown identity type 'email'/);
    expect(() => parseIdentityCaps('maid=0')).toThrow(/cap of maid must be a whole number/);
  });

  it('names the types a document holds its cap of', () => {
    const at = new Date(0);
    const entry = (identity: Identity) => ({ ...identity, firstSeen: at, lastSeen: at, sourceId: 's' });
    const caps = parseIdentityCaps('cookie_id=2');
    expect(cappedTypes({ identities: [entry(cookie('a')), entry(email('x@y.org'))] }, caps)).toEqual([]);
    expect(cappedTypes({ identities: [entry(cookie('a')), entry(cookie('b')), entry(email('x@y.org'))] }, caps)).toEqual(['cookie_id']);
  });
});
