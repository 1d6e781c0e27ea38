import { createHash } from 'node:crypto';
import {
  IDENTITY_PRIORITY,
  IdentityError,
  STORED_IDENTITY_TYPES,
  identityKey,
  identityKeysOf,
  normalizeEmail,
  normalizePhone,
  normalizeSha256,
  sha256Hex,
  toStoredIdentity,
  uid2EmailHash,
  uid2Of,
} from '../../domain/identity';

describe('sha256Hex', () => {
  it('matches the FIPS 180-2 test vector for "abc"', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('matches the published digest of the empty string', () => {
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('matches the FIPS 180-2 two-block test vector', () => {
    expect(sha256Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')).toBe(
      '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
    );
  });

  it('hashes text as its UTF-8 bytes', () => {
    // "é" is c3 a9 in UTF-8; a Latin-1 reading would hash the single byte e9.
    const utf8 = createHash('sha256').update(Buffer.from([0xc3, 0xa9])).digest('hex');
    const latin1 = createHash('sha256').update(Buffer.from([0xe9])).digest('hex');
    expect(sha256Hex('é')).toBe(utf8);
    expect(sha256Hex('é')).not.toBe(latin1);
  });
});

describe('normalizeEmail', () => {
  it('trims surrounding whitespace and lowercases', () => {
    expect(normalizeEmail('  Jane.Doe@Example.COM \n')).toBe('jane.doe@example.com');
  });

  it.each([
    ['no at sign', 'jane.example.com'],
    ['nothing before the at sign', '@example.com'],
    ['nothing after the at sign', 'jane@'],
    ['two at signs', 'jane@doe@example.com'],
    ['whitespace inside', 'jane doe@example.com'],
    ['domain without a dot', 'jane@localhost'],
    ['empty', ''],
    ['only whitespace', '   '],
  ])('rejects an address with %s', (_, raw) => {
    expect(() => normalizeEmail(raw)).toThrow(IdentityError);
  });
});

describe('normalizePhone', () => {
  it('reads a national number in the default region and returns E.164', () => {
    expect(normalizePhone('(202) 555-0143', 'US')).toBe('+12025550143');
  });

  it('accepts the default region in lower case', () => {
    expect(normalizePhone('(202) 555-0143', 'us')).toBe('+12025550143');
  });

  it('keeps the country code of an international number regardless of the default region', () => {
    expect(normalizePhone('+44 20 7946 0958', 'US')).toBe('+442079460958');
  });

  it('gives the same E.164 for differently formatted spellings of one number', () => {
    expect(normalizePhone('202.555.0143', 'US')).toBe(normalizePhone('+1 (202) 555-0143', 'DE'));
  });

  it.each([['hello'], ['12'], ['+1 202'], [''], ['not a phone 555']])('rejects %j', (raw) => {
    expect(() => normalizePhone(raw, 'US')).toThrow(IdentityError);
  });
});

describe('normalizeSha256', () => {
  const hex = sha256Hex('jane.doe@example.com');
  const base64 = Buffer.from(hex, 'hex').toString('base64');

  it('returns lowercase hex unchanged', () => {
    expect(normalizeSha256(hex)).toBe(hex);
  });

  it('lowercases uppercase hex', () => {
    expect(normalizeSha256(hex.toUpperCase())).toBe(hex);
  });

  it('trims whitespace around the digest', () => {
    expect(normalizeSha256(`  ${hex.toUpperCase()}\t`)).toBe(hex);
  });

  it('converts a base64 digest to the same lowercase hex', () => {
    expect(base64).toHaveLength(44);
    expect(normalizeSha256(base64)).toBe(hex);
  });

  it.each([
    ['63 hex characters', 'a'.repeat(63)],
    ['65 hex characters', 'a'.repeat(65)],
    ['a non-hex character', `${'a'.repeat(63)}g`],
    ['base64 of the wrong length', Buffer.from('short').toString('base64')],
    ['base64 without padding', Buffer.from(hex, 'hex').toString('base64').slice(0, 43)],
    ['an MD5 digest', '5d41402abc4b2a76b9719d911017c592'],
    ['empty', ''],
  ])('rejects %s', (_, raw) => {
    expect(() => normalizeSha256(raw)).toThrow(IdentityError);
  });
});

describe('toStoredIdentity', () => {
  it('keeps a crm_id that is an email address as the hashed email, never raw', () => {
    expect(toStoredIdentity('crm_id', ' Ada@Example.com ', 'US')).toEqual(toStoredIdentity('email', 'ada@example.com', 'US'));
    expect(toStoredIdentity('crm_id', 'user@host', 'US')).toEqual({ type: 'crm_id', value: 'user@host' });
    expect(toStoredIdentity('crm_id', 'C-1001', 'US')).toEqual({ type: 'crm_id', value: 'C-1001' });
  });

  it('refuses a cookie or customer id that holds an email address inside it, which would be kept raw', () => {
    for (const [type, value] of [['crm_id', 'Ada <ada@example.com>'], ['cookie_id', 'id=ada%40example.com'], ['crm_id', 'crm:ada@example.com (old)']] as const) {
      expect(() => toStoredIdentity(type, value, 'US')).toThrow('holds an email address: send the address as email, or an id without one');
    }
    // One an address's own syntax allows whole is hashed as one: never raw either.
    expect(toStoredIdentity('crm_id', 'sso|ada@example.com', 'US').type).toBe('email_sha256');
    // No address: a name with an @ but no domain.
    expect(toStoredIdentity('crm_id', 'team@acme', 'US')).toEqual({ type: 'crm_id', value: 'team@acme' });
    expect(toStoredIdentity('crm_id', 'team@acme (EU)', 'US')).toEqual({ type: 'crm_id', value: 'team@acme (EU)' });
  });

  it('keeps a cookie id that is an email address, and a cookie or customer id that is an international phone number, hashed, never raw', () => {
    expect(toStoredIdentity('cookie_id', 'Jane@Example.com', 'US')).toEqual(toStoredIdentity('email', 'jane@example.com', 'US'));
    expect(toStoredIdentity('crm_id', '+1 415 555 0100', 'US')).toEqual(toStoredIdentity('phone', '+14155550100', 'US'));
    expect(toStoredIdentity('cookie_id', '+4915112345678', 'US')).toEqual(toStoredIdentity('phone', '+49 151 12345678', 'US'));
    // Ids that only look numeric stay as they are: no '+', or no possible number after it.
    expect(toStoredIdentity('crm_id', '4155550100', 'US')).toEqual({ type: 'crm_id', value: '4155550100' });
    expect(toStoredIdentity('crm_id', '+12', 'US')).toEqual({ type: 'crm_id', value: '+12' });
  });

  it.each([
    ['a newline', 'x\nemail_sha256:abc'],
    ['a tab', 'a\tb'],
    ['a carriage return', 'a\rb'],
    ['NUL', 'a\u0000b'],
    ['DEL', 'a\u007fb'],
  ])('refuses a cookie or customer id holding %s: identity keys are packed on newlines', (_, raw) => {
    for (const type of ['cookie_id', 'crm_id'] as const) expect(() => toStoredIdentity(type, raw, 'US')).toThrow('must not hold control characters');
  });

  it('gives the keys an operator\'s identity may be stored under: its stored form, then a cookie or customer id as an older version kept it', () => {
    expect(identityKeysOf('cookie_id', ' Jane@Example.com ', 'US')).toEqual([identityKey(toStoredIdentity('email', 'jane@example.com', 'US')), 'cookie_id:Jane@Example.com']);
    expect(identityKeysOf('crm_id', '+1 415 555 0100', 'US')).toEqual([identityKey(toStoredIdentity('phone', '+14155550100', 'US')), 'crm_id:+1 415 555 0100']);
    expect(identityKeysOf('cookie_id', 'a\nb', 'US')).toEqual(['cookie_id:a\nb']);
    expect(identityKeysOf('cookie_id', 'c-1', 'US')).toEqual(['cookie_id:c-1']);
    expect(identityKeysOf('email', 'jane@example.com', 'US')).toEqual([identityKey(toStoredIdentity('email', 'jane@example.com', 'US'))]);
    expect(() => identityKeysOf('email', 'not an email', 'US')).toThrow(IdentityError);
    expect(() => identityKeysOf('cookie_id', '   ', 'US')).toThrow(IdentityError);
  });

  it('refuses a partner user id that is an email address or a phone number', () => {
    expect(() => toStoredIdentity('partner_uid', 'dsp-x:jane.doe@example.com', 'US')).toThrow('is an email address or a phone number');
    expect(() => toStoredIdentity('partner_uid', 'dsp-x:+14155550100', 'US')).toThrow('is an email address or a phone number');
    expect(toStoredIdentity('partner_uid', 'dsp-x:4155550100', 'US')).toEqual({ type: 'partner_uid', value: 'dsp-x:4155550100' });
  });

  const rawEmail = '  Jane.Doe@Example.COM ';
  const rawPhone = '(202) 555-0143';

  it('stores a raw email as the SHA-256 of its normalized form', () => {
    expect(toStoredIdentity('email', rawEmail, 'US')).toEqual({
      type: 'email_sha256',
      value: sha256Hex('jane.doe@example.com'),
    });
  });

  it('stores a raw phone as the SHA-256 of its E.164 form, and beside it that of its digits without "+" (Meta\'s and TikTok\'s rule)', () => {
    expect(toStoredIdentity('phone', rawPhone, 'US')).toEqual({ type: 'phone_sha256', value: sha256Hex('+12025550143'), digits: sha256Hex('12025550143') });
    // TikTok's published example: (657)777-0000 in the US is 16577770000; a national number gets its country code.
    expect(toStoredIdentity('phone', '(657)777-0000', 'US').digits).toBe(sha256Hex('16577770000'));
    expect(toStoredIdentity('phone', '0844 412 4653', 'GB')).toEqual({ type: 'phone_sha256', value: sha256Hex('+448444124653'), digits: sha256Hex('448444124653') });
  });

  it('gives the same stored identity for a raw email and its client-side hash', () => {
    const fromRaw = toStoredIdentity('email', rawEmail, 'US');
    const fromHash = toStoredIdentity('email_sha256', sha256Hex('jane.doe@example.com').toUpperCase(), 'US');
    expect(fromHash).toEqual(fromRaw);
  });

  it('never returns the raw email or phone', () => {
    for (const [type, raw] of [
      ['email', rawEmail],
      ['phone', rawPhone],
    ] as const) {
      const stored = toStoredIdentity(type, raw, 'US');
      const text = JSON.stringify(stored);
      expect(STORED_IDENTITY_TYPES).toContain(stored.type);
      expect(stored.type).not.toBe(type);
      expect(stored.value).toMatch(/^[0-9a-f]{64}$/);
      expect(text.toLowerCase()).not.toContain(raw.trim().toLowerCase());
      expect(text).not.toContain('jane');
      expect(text).not.toContain('5550143');
    }
  });

  it('rejects an invalid raw email or phone', () => {
    expect(() => toStoredIdentity('email', 'not-an-email', 'US')).toThrow(IdentityError);
    expect(() => toStoredIdentity('phone', 'call me', 'US')).toThrow(IdentityError);
  });

  it('normalizes a base64 phone hash to lowercase hex, with no digits-only hash (the number is not known)', () => {
    const hex = sha256Hex('+12025550143');
    expect(toStoredIdentity('phone_sha256', Buffer.from(hex, 'hex').toString('base64'), 'US')).toEqual({
      type: 'phone_sha256',
      value: hex,
    });
  });

  it('lowercases a mobile advertising id', () => {
    expect(toStoredIdentity('maid', ' 6D92078A-8246-4BA4-AE5B-76104861E7DC ', 'US')).toEqual({
      type: 'maid',
      value: '6d92078a-8246-4ba4-ae5b-76104861e7dc',
    });
  });

  it.each([
    ['not a UUID', 'not-a-uuid'],
    ['a UUID without dashes', '6d92078a82464ba4ae5b76104861e7dc'],
    ['a UUID with a non-hex character', '6d92078a-8246-4ba4-ae5b-76104861e7dz'],
    ['a UUID in braces', '{6d92078a-8246-4ba4-ae5b-76104861e7dc}'],
  ])('rejects a mobile advertising id that is %s', (_, raw) => {
    expect(() => toStoredIdentity('maid', raw, 'US')).toThrow(IdentityError);
  });

  it('keeps cookie and CRM ids as given apart from surrounding whitespace', () => {
    expect(toStoredIdentity('cookie_id', '  Abc-123 ', 'US')).toEqual({ type: 'cookie_id', value: 'Abc-123' });
    expect(toStoredIdentity('crm_id', 'CRM/42', 'US')).toEqual({ type: 'crm_id', value: 'CRM/42' });
  });

  it('accepts cookie and CRM ids of 1 to 256 characters only', () => {
    expect(toStoredIdentity('cookie_id', 'x'.repeat(256), 'US').value).toHaveLength(256);
    expect(() => toStoredIdentity('cookie_id', 'x'.repeat(257), 'US')).toThrow(IdentityError);
    expect(() => toStoredIdentity('crm_id', '   ', 'US')).toThrow(IdentityError);
  });

  it('takes a partner user id as <partner>:<their id>, the partner a slug, and refuses any other shape', () => {
    expect(toStoredIdentity('partner_uid', ' ttd:AB-12/x=y ', 'US')).toEqual({ type: 'partner_uid', value: 'ttd:AB-12/x=y' });
    // Only the first colon separates: a partner's own id may hold more.
    expect(toStoredIdentity('partner_uid', 'ttd:a:b', 'US').value).toBe('ttd:a:b');
    // Unexpanded macros and the all-zero id partners send for users they do not know are no user's.
    const placeholders = ['ttd:${PUID}', 'ttd:{UID}', 'ttd:[UID]', 'ttd:%%UID%%', 'ttd:__UID__', 'ttd:$UID', 'ttd:00000000-0000-0000-0000-000000000000', 'ttd:0'];
    for (const bad of ['ttd', ':abc', 'TTD:abc', 'ttd:', 'ttd:a b', `ttd:${'x'.repeat(257)}`, `${'p'.repeat(33)}:abc`, ...placeholders]) {
      expect(() => toStoredIdentity('partner_uid', bad, 'US')).toThrow(IdentityError);
    }
  });
});

describe('identityKey', () => {
  it('is "<type>:<value>"', () => {
    expect(identityKey({ type: 'cookie_id', value: 'abc' })).toBe('cookie_id:abc');
    const hex = sha256Hex('jane.doe@example.com');
    expect(identityKey(toStoredIdentity('email', 'Jane.Doe@example.com', 'US'))).toBe(`email_sha256:${hex}`);
  });

  it('tells apart equal values of different types', () => {
    expect(identityKey({ type: 'cookie_id', value: 'x' })).not.toBe(identityKey({ type: 'crm_id', value: 'x' }));
  });
});

describe('IDENTITY_PRIORITY', () => {
  it('ranks every stored identity type exactly once', () => {
    expect([...IDENTITY_PRIORITY].sort()).toEqual([...STORED_IDENTITY_TYPES].sort());
  });
});

describe('UID2 hashed emails, computed at the edge beside ours', () => {
  it("matches UID2's published vector", () => {
    expect(uid2EmailHash('Jane.Saoirse@gmail.com')).toBe('ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=');
    // gmail.com drops dots and a +suffix from the local part, after trimming and lowercasing.
    expect(uid2EmailHash('  JANE.SAOIRSE+news@GMAIL.COM ')).toBe('ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=');
  });

  it('keeps the UID2 hash on the stored identity only where it differs from ours', () => {
    const gmail = toStoredIdentity('email', 'Jane.Saoirse@gmail.com', 'US');
    expect(gmail).toEqual({ type: 'email_sha256', value: createHash('sha256').update('jane.saoirse@gmail.com').digest('hex'), uid2: 'ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=' });
    expect(uid2Of(gmail)).toBe('ku4mBX7Z3qJTXWyLFB1INzkyR2WZGW4ANSJUiW21iI8=');
    // Other domains keep dots and suffixes: UID2's hash is ours, in base64.
    const other = toStoredIdentity('email', 'Jane.Saoirse+news@example.com', 'US');
    expect(other.uid2).toBeUndefined();
    expect(uid2Of(other)).toBe(createHash('sha256').update('jane.saoirse+news@example.com').digest('base64'));
  });
});
