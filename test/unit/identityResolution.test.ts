import type { StoredEvent } from '../../domain/event';
import { identityKey, sha256Hex, type Identity } from '../../domain/identity';
import { identityBlocklist } from '../../domain/identityBlocklist';
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

  it("blocks a placeholder as any partner's user id, and no real one", () => {
    const blocked = identityBlocklist();
    for (const placeholder of ['ttd:undefined', 'lotame:0', 'x:null', 'x:', 'ttd:NULL', 'ttd:Undefined']) expect(blocked(`partner_uid:${placeholder}`)).toBe(true);
    for (const real of ['ttd:u-1', 'ttd:undefined-1', 'null:abc']) expect(blocked(`partner_uid:${real}`)).toBe(false);
    expect(blocked('cookie_id:ttd:undefined')).toBe(false);
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
