import { redirectLinkEnd } from '../../domain/identitySplit';
import { partitionOf } from '../../domain/partition';
import { applyEvent, newProfile, profileVersionId, type ProfileDoc } from '../../domain/profile';
import { expiredVersion, expiresBy, isExpired, keysOf } from '../../domain/profileExpiry';
import { foldChanges } from '../../domain/segmentChanges';

const AT = new Date('2026-06-01T00:00:00Z');

function visitor(id: string, lastSeen: Date): ProfileDoc {
  const doc = newProfile(id, AT, lastSeen);
  applyEvent(
    doc,
    { id: `${id}-1`, type: 'purchase', timestamp: lastSeen, identities: [{ type: 'cookie_id', value: `ck-${id}` }, { type: 'crm_id', value: `crm-${id}` }], traits: { tier: 'gold' }, consent: { purposes: { ads: true } } },
    { sourceId: 'src_1', party: 'first', seq: 0 },
  );
  return doc;
}

describe('expiring an inactive document', () => {
  it('leaves the next version empty and retired, pointing at a successor in the same partition', () => {
    const doc = visitor('p_gone', AT);
    expect(keysOf(doc).sort()).toEqual(['cookie_id:ck-p_gone', 'crm_id:crm-p_gone']);
    const expired = expiredVersion(doc, 'x1', 8, new Date('2026-09-01T00:00:00Z'));
    expect(expired).toMatchObject({ _id: profileVersionId('p_gone', doc.version + 1), version: doc.version + 1, identities: [], traits: {}, traitOrigins: {}, counters: {}, consent: null, sources: [] });
    expect(expired.campaigns).toBeUndefined();
    expect(isExpired(expired)).toBe(true);
    expect(isExpired(doc)).toBe(false);
    const successor = expired.retired!.fallback;
    expect(successor).not.toBe('p_gone');
    expect(partitionOf(successor, 8)).toBe(partitionOf('p_gone', 8));
    // A retried expiry names the same successor; links made to the document through any identity lead to it.
    expect(expiredVersion(doc, 'x1', 8, new Date()).retired!.fallback).toBe(successor);
    expect(redirectLinkEnd(expired.retired!, 'cookie_id:ck-p_gone')).toBe(successor);
    // The original is left as it was.
    expect(doc.identities).toHaveLength(2);
  });

  it('expires only live documents last seen before the cutoff', () => {
    const cutoff = new Date('2026-07-01T00:00:00Z');
    expect(expiresBy(visitor('p_old', new Date('2026-06-30T23:59:59Z')), cutoff)).toBe(true);
    expect(expiresBy(visitor('p_new', cutoff), cutoff)).toBe(false);
    expect(expiresBy(expiredVersion(visitor('p_done', AT), 'x1', 8, AT), cutoff)).toBe(false);
  });

  it('records a person of one document leaving the segments they were in, and not one of several', () => {
    const single = visitor('p_single', AT);
    const joined = { ...visitor('p_joined', AT), linked: true };
    const changed = new Map([single, joined].map((doc) => [doc.profileId, expiredVersion(doc, 'x1', 8, AT)]));
    const previous = new Map([single, joined].map((doc) => [doc.profileId, doc]));
    const changes = foldChanges({
      segments: ['seg_buyers'],
      evaluate: (subject) => (Object.keys(subject.counters).length > 0 ? ['seg_buyers'] : []),
      changed,
      previousOf: (id) => previous.get(id) ?? null,
      components: new Map(),
      relinked: [],
    });
    expect(changes.seg_buyers).toMatchObject({ entered: [], exited: ['p_single'] });
  });
});
