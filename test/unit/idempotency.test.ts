import { IdempotencyKeySchema, idForKey, requestFingerprint } from '../../domain/idempotency';

describe('idempotency keys of creates', () => {
  it('makes one id of a key, shaped as random ids are, and another of another key or resource', () => {
    expect(idForKey('dst', 'sync-1')).toBe(idForKey('dst', 'sync-1'));
    expect(idForKey('dst', 'sync-1')).toMatch(/^dst_[0-9a-f]{16}$/);
    expect(idForKey('dst', 'sync-2')).not.toBe(idForKey('dst', 'sync-1'));
    expect(idForKey('seg', 'sync-1').slice(4)).not.toBe(idForKey('dst', 'sync-1').slice(4));
  });

  it('tells requests apart by their bodies', () => {
    expect(requestFingerprint({ name: 'a', segments: ['s'] })).toBe(requestFingerprint({ name: 'a', segments: ['s'] }));
    expect(requestFingerprint({ name: 'a', segments: ['s'] })).not.toBe(requestFingerprint({ name: 'b', segments: ['s'] }));
    expect(requestFingerprint(undefined)).toBe(requestFingerprint(undefined));
  });

  it('takes 1 to 255 visible ASCII characters', () => {
    for (const key of ['a', 'crm-sync:2026-12-05', '~'.repeat(255), 'A1!"#$%&\'()*+,-./']) expect({ key, ok: IdempotencyKeySchema.safeParse(key).success }).toEqual({ key, ok: true });
    for (const key of ['', ' ', 'a b', 'tab\there', 'é', 'x'.repeat(256), 'line\nbreak']) expect({ key, ok: IdempotencyKeySchema.safeParse(key).success }).toEqual({ key, ok: false });
  });
});
