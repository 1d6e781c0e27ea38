import type { StoredEvent } from '../../domain/event';
import { identityKey, sha256Hex, type Identity } from '../../domain/identity';
import { identityBlocklist } from '../../domain/identityBlocklist';
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
});
