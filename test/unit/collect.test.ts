import { prepareEvents, type PrepareOptions } from '../../domain/collect';
import { sha256Hex } from '../../domain/identity';
import { buildTcString } from './tcfFixture';

const NOW = new Date('2025-06-15T12:00:00.000Z');
const OPTIONS: PrepareOptions = { now: NOW, defaultPhoneRegion: 'US' };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function pathsOf(result: ReturnType<typeof prepareEvents>, index: number): string[] {
  const rejected = result.rejected.find((r) => r.index === index);
  return rejected ? rejected.errors.map((e) => e.path) : [];
}

describe('prepareEvents: accepted events', () => {
  it('accepts a minimal event and generates an id when none is given', () => {
    const result = prepareEvents([{ type: 'page_view', identities: { cookie_id: 'c-1' } }], OPTIONS);
    expect(result.rejected).toEqual([]);
    expect(result.accepted).toHaveLength(1);
    const { index, event } = result.accepted[0];
    expect(index).toBe(0);
    expect(event.id).toMatch(UUID);
    expect(event.type).toBe('page_view');
    expect(event.identities).toEqual([{ type: 'cookie_id', value: 'c-1' }]);
  });

  it('generates a different id for each event without one', () => {
    const event = { type: 'page_view', identities: { cookie_id: 'c-1' } };
    const result = prepareEvents([event, event], OPTIONS);
    expect(result.accepted[0].event.id).not.toBe(result.accepted[1].event.id);
  });

  it('keeps an id the client gave', () => {
    const result = prepareEvents([{ id: 'evt-42', type: 'page_view', identities: { cookie_id: 'c-1' } }], OPTIONS);
    expect(result.accepted[0].event.id).toBe('evt-42');
  });

  it('stamps an event without a timestamp with now, and receivedAt with now', () => {
    const { event } = prepareEvents([{ type: 'page_view', identities: { cookie_id: 'c-1' } }], OPTIONS).accepted[0];
    expect(event.timestamp.getTime()).toBe(NOW.getTime());
    expect(event.receivedAt.getTime()).toBe(NOW.getTime());
  });

  it('parses a timestamp given as an ISO string with Z', () => {
    const { event } = prepareEvents(
      [{ type: 'x', identities: { cookie_id: 'c' }, timestamp: '2025-06-14T08:30:00.250Z' }],
      OPTIONS,
    ).accepted[0];
    expect(event.timestamp).toBeInstanceOf(Date);
    expect(event.timestamp.toISOString()).toBe('2025-06-14T08:30:00.250Z');
  });

  it('parses a timestamp given as an ISO string with an offset', () => {
    const { event } = prepareEvents(
      [{ type: 'x', identities: { cookie_id: 'c' }, timestamp: '2025-06-14T10:30:00+02:00' }],
      OPTIONS,
    ).accepted[0];
    expect(event.timestamp.toISOString()).toBe('2025-06-14T08:30:00.000Z');
  });

  it('parses a timestamp given as epoch milliseconds', () => {
    const ms = Date.UTC(2025, 5, 14, 8, 30, 0, 250);
    const { event } = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, timestamp: ms }], OPTIONS).accepted[0];
    expect(event.timestamp).toBeInstanceOf(Date);
    expect(event.timestamp.getTime()).toBe(ms);
  });

  it('accepts a timestamp in the future within the allowed skew', () => {
    const result = prepareEvents(
      [{ type: 'x', identities: { cookie_id: 'c' }, timestamp: NOW.getTime() + 60_000 }],
      { ...OPTIONS, maxFutureSkewMs: 120_000 },
    );
    expect(result.rejected).toEqual([]);
    expect(result.accepted).toHaveLength(1);
  });

  it('hashes raw email and phone and keeps the others', () => {
    const result = prepareEvents(
      [
        {
          type: 'signup',
          identities: {
            email: ' Jane.Doe@Example.com ',
            phone: '(202) 555-0143',
            cookie_id: 'c-1',
            maid: '6D92078A-8246-4BA4-AE5B-76104861E7DC',
          },
        },
      ],
      OPTIONS,
    );
    expect(result.rejected).toEqual([]);
    expect(result.accepted[0].event.identities).toEqual(
      expect.arrayContaining([
        { type: 'email_sha256', value: sha256Hex('jane.doe@example.com') },
        { type: 'phone_sha256', value: sha256Hex('+12025550143'), digits: sha256Hex('12025550143') },
        { type: 'cookie_id', value: 'c-1' },
        { type: 'maid', value: '6d92078a-8246-4ba4-ae5b-76104861e7dc' },
      ]),
    );
    expect(result.accepted[0].event.identities).toHaveLength(4);
  });

  it('reads a national phone number in the configured default region', () => {
    const result = prepareEvents([{ type: 'x', identities: { phone: '020 7946 0958' } }], {
      ...OPTIONS,
      defaultPhoneRegion: 'GB',
    });
    expect(result.accepted[0].event.identities).toEqual([{ type: 'phone_sha256', value: sha256Hex('+442079460958'), digits: sha256Hex('442079460958') }]);
  });

  it('puts no raw email or phone in the serialized accepted events', () => {
    const rawEmail = 'Jane.Doe+dmp@Example.com';
    const rawPhone = '+1 (202) 555-0143';
    const result = prepareEvents(
      [
        { type: 'signup', identities: { email: rawEmail } },
        { type: 'signup', identities: { phone: rawPhone } },
        { type: 'signup', identities: { email: rawEmail, phone: rawPhone, crm_id: 'crm-1' } },
      ],
      OPTIONS,
    );
    expect(result.accepted).toHaveLength(3);
    const serialized = JSON.stringify(result.accepted);
    for (const needle of [rawEmail, rawEmail.toLowerCase(), 'jane.doe', 'example.com', rawPhone, '2025550143', '5550143']) {
      expect(serialized.toLowerCase()).not.toContain(needle.toLowerCase());
    }
    expect(serialized).toContain(sha256Hex('jane.doe+dmp@example.com'));
    expect(serialized).toContain(sha256Hex('+12025550143'));
  });

  it('encodes dotted and dollar trait and property names', () => {
    const { event } = prepareEvents(
      [
        {
          type: 'x',
          identities: { cookie_id: 'c' },
          traits: { 'plan.tier': 'gold', $score: 3, plain: true },
          properties: { 'page.url': '/home' },
        },
      ],
      OPTIONS,
    ).accepted[0];
    expect(event.traits).toEqual({ 'plan%2Etier': 'gold', '%24score': 3, plain: true });
    expect(event.properties).toEqual({ 'page%2Eurl': '/home' });
  });

  it('takes several ids of one type, naming each refused one by its place', () => {
    const { event } = prepareEvents([{ type: 'alias', identities: { crm_id: ['u-1', 'u-2'], cookie_id: 'c' } }], OPTIONS).accepted[0];
    expect(event.identities).toEqual([
      { type: 'crm_id', value: 'u-1' },
      { type: 'crm_id', value: 'u-2' },
      { type: 'cookie_id', value: 'c' },
    ]);
    expect(pathsOf(prepareEvents([{ type: 'x', identities: { crm_id: ['u-1', 'u\u0000'] } }], OPTIONS), 0)).toEqual(['identities.crm_id.1']);
    expect(pathsOf(prepareEvents([{ type: 'x', identities: { crm_id: [] } }], OPTIONS), 0)).toEqual(['identities.crm_id']);
    expect(pathsOf(prepareEvents([{ type: 'x', identities: { crm_id: ['u-1', 'u-2', 'u-3'] } }], OPTIONS), 0)).toEqual(['identities.crm_id']);
  });

  it('reads a previousId both as a cookie id (first) and as a customer id, marked as readings; an address only as its hash', () => {
    const read = (input: object) => prepareEvents([{ type: 'alias', identities: { crm_id: 'u-9' }, ...input }], OPTIONS).accepted[0].event.identities;
    expect(read({ previousId: 'u-8' })).toEqual([
      { type: 'crm_id', value: 'u-9' },
      { type: 'cookie_id', value: 'u-8', previous: true },
      { type: 'crm_id', value: 'u-8', previous: true },
    ]);
    const hashed = read({ previousId: ' Jane.Doe@Example.com ' });
    expect(hashed).toEqual([{ type: 'crm_id', value: 'u-9' }, { type: 'email_sha256', value: sha256Hex('jane.doe@example.com'), previous: true }]);
    expect(JSON.stringify(hashed)).not.toMatch(/example/i);
    // An id of unknown type that is one of the event's own identities is that identity: no other reading of it is kept.
    expect(read({ previousId: 'u-9' })).toEqual([{ type: 'crm_id', value: 'u-9' }]);
    expect(prepareEvents([{ type: 'alias', identities: { cookie_id: 'c-1' }, previousId: 'c-1' }], OPTIONS).accepted[0].event.identities).toEqual([{ type: 'cookie_id', value: 'c-1' }]);
    expect(pathsOf(prepareEvents([{ type: 'alias', identities: { crm_id: 'u-9' }, previousId: 'x\u0000' }], OPTIONS), 0)).toEqual(['previousId']);
    expect(pathsOf(prepareEvents([{ type: 'alias', identities: { crm_id: 'u-9' }, previousId: '' }], OPTIONS), 0)).toEqual(['previousId']);
  });

  it('takes the email and phone traits as identities, hashed, and never keeps them as traits', () => {
    const { event } = prepareEvents(
      [{ type: 'signup', identities: { cookie_id: 'c' }, traits: { email: ' Jane@Example.com ', phone: 2025550143, plan: 'gold' } }],
      OPTIONS,
    ).accepted[0];
    expect(event.identities).toEqual([
      { type: 'cookie_id', value: 'c' },
      { type: 'email_sha256', value: sha256Hex('jane@example.com') },
      { type: 'phone_sha256', value: sha256Hex('+12025550143'), digits: sha256Hex('12025550143') },
    ]);
    expect(event.traits).toEqual({ plan: 'gold' });
  });

  it('drops an email trait without using it when the event names an email identity itself', () => {
    const { event } = prepareEvents(
      [{ type: 'x', identities: { email_sha256: sha256Hex('a@example.com') }, traits: { email: 'b@example.com' } }],
      OPTIONS,
    ).accepted[0];
    expect(event.identities).toEqual([{ type: 'email_sha256', value: sha256Hex('a@example.com') }]);
    expect('traits' in event).toBe(false);
  });

  it('refuses an email trait that is no email address, naming the trait; a blank one is no value', () => {
    const result = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, traits: { email: 'nobody' } }], OPTIONS);
    expect(result.rejected).toEqual([{ index: 0, errors: [{ path: 'traits.email', message: 'not a valid email address' }] }]);
    const blank = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, traits: { email: ' ', plan: 'gold' } }], OPTIONS).accepted[0].event;
    expect(blank.identities).toEqual([{ type: 'cookie_id', value: 'c' }]);
    expect(blank.traits).toEqual({ plan: 'gold' });
  });

  it('stores email addresses found in other traits and in properties as (redacted)', () => {
    const { event } = prepareEvents(
      [{ type: 'page_view', identities: { cookie_id: 'c' }, traits: { 'work.email': 'jane@corp.example' }, properties: { url: 'https://x.example/?e=jane@corp.example' } }],
      OPTIONS,
    ).accepted[0];
    expect(event.traits).toEqual({ 'work%2Eemail': '(redacted)' });
    expect(event.properties).toEqual({ url: 'https://x.example/?e=(redacted)' });
  });

  it('stores an email address in an event name as (redacted), and in an event id as a digest of the id that keeps ids apart and repeats alike', () => {
    const events = ['jane@corp.example', 'john@corp.example', 'jane@corp.example'].map((email) => ({ id: `order:${email}:1`, type: `Invite sent to ${email}`, identities: { cookie_id: 'c' } }));
    const [jane, john, janeAgain] = prepareEvents(events, OPTIONS).accepted.map(({ event }) => event);
    expect(jane.type).toBe('Invite sent to (redacted)');
    expect(jane.id).toMatch(/^order:\(redacted:[0-9a-f]{16}\):1$/);
    expect(john.id).not.toBe(jane.id);
    expect(janeAgain.id).toBe(jane.id);
    expect(JSON.stringify([jane, john, janeAgain])).not.toMatch(/@|corp\.example/);
    expect(prepareEvents([{ id: 'evt-1', type: 'page_view', identities: { cookie_id: 'c' } }], OPTIONS).accepted[0].event).toMatchObject({ id: 'evt-1', type: 'page_view' });
  });

  it("corrects timestamps by the sender's clock skew when sentAt is known: receivedAt − (sentAt − timestamp)", () => {
    const behind = { ...OPTIONS, sentAt: new Date(NOW.getTime() - 3 * 86_400_000) };
    const result = prepareEvents(
      [
        { type: 'x', identities: { cookie_id: 'c' }, timestamp: new Date(behind.sentAt.getTime() - 5_000).toISOString() },
        { type: 'x', identities: { cookie_id: 'c' } },
      ],
      behind,
    );
    expect(result.accepted.map(({ event }) => event.timestamp.getTime())).toEqual([NOW.getTime() - 5_000, NOW.getTime()]);
    // A clock days ahead is no future event once corrected; a timestamp far ahead of its own sentAt still is.
    const ahead = { ...OPTIONS, sentAt: new Date(NOW.getTime() + 3 * 86_400_000) };
    expect(prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, timestamp: ahead.sentAt.toISOString() }], ahead).accepted[0].event.timestamp).toEqual(NOW);
    expect(pathsOf(prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, timestamp: new Date(ahead.sentAt.getTime() + 2 * 86_400_000).toISOString() }], ahead), 0)).toEqual(['timestamp']);
  });

  it('leaves traits, properties and consent out when the event has none', () => {
    const { event } = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' } }], OPTIONS).accepted[0];
    expect('traits' in event).toBe(false);
    expect('properties' in event).toBe(false);
    expect('consent' in event).toBe(false);
  });

  it('decodes a TCF consent string into purpose and vendor ids', () => {
    const tcf = buildTcString({ purposeConsents: [1, 2], vendorConsents: [8] });
    const { event } = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, consent: { tcf } }], OPTIONS).accepted[0];
    expect(event.consent?.tcf?.purposeConsents).toEqual([1, 2]);
    expect(event.consent?.tcf?.vendorConsents).toEqual([8]);
    expect(event.consent?.tcf?.tcString).toBe(tcf);
  });
});

describe('prepareEvents: rejected events', () => {
  it('rejects each invalid event on its own, by index, and keeps the valid ones in order', () => {
    const result = prepareEvents(
      [
        { type: 'ok-0', identities: { cookie_id: 'a' } },
        { identities: { cookie_id: 'b' } },
        { type: 'ok-2', identities: { cookie_id: 'c' } },
        { type: 'bad-3', identities: {} },
        { type: 'ok-4', identities: { cookie_id: 'e' } },
      ],
      OPTIONS,
    );
    expect(result.accepted.map((a) => a.index)).toEqual([0, 2, 4]);
    expect(result.accepted.map((a) => a.event.type)).toEqual(['ok-0', 'ok-2', 'ok-4']);
    expect(result.rejected.map((r) => r.index)).toEqual([1, 3]);
  });

  it('reports a missing type at path "type"', () => {
    expect(pathsOf(prepareEvents([{ identities: { cookie_id: 'c' } }], OPTIONS), 0)).toEqual(['type']);
  });

  it('reports empty identities at path "identities"', () => {
    expect(pathsOf(prepareEvents([{ type: 'x', identities: {} }], OPTIONS), 0)).toEqual(['identities']);
  });

  it('reports missing identities at path "identities"', () => {
    expect(pathsOf(prepareEvents([{ type: 'x' }], OPTIONS), 0)).toEqual(['identities']);
  });

  it('reports an unknown identity type under "identities"', () => {
    const result = prepareEvents([{ type: 'x', identities: { fingerprint: 'abc' } }], OPTIONS);
    expect(result.accepted).toEqual([]);
    expect(pathsOf(result, 0)).toContain('identities');
    expect(JSON.stringify(result.rejected)).toContain('fingerprint');
  });

  it('reports fields of the wrong type at their own paths', () => {
    const result = prepareEvents(
      [{ type: 5, identities: { cookie_id: 7 }, timestamp: true, traits: { score: { nested: 1 } } }],
      OPTIONS,
    );
    expect(pathsOf(result, 0).sort()).toEqual(['identities.cookie_id', 'timestamp', 'traits.score', 'type']);
  });

  it('keeps a trait or property named __proto__ as a plain field, and checks its value like any other', () => {
    const event = JSON.parse('{"type": "page_view", "identities": {"cookie_id": "c-1"}, "traits": {"__proto__": "gold", "plan": "a"}, "properties": {"__proto__": 3}}');
    const result = prepareEvents([event], OPTIONS);
    expect(result.rejected).toEqual([]);
    const { traits, properties } = result.accepted[0].event;
    expect(Object.entries(traits ?? {})).toEqual([['plan', 'a'], ['__proto__', 'gold']]);
    expect(Object.entries(properties ?? {})).toEqual([['__proto__', 3]]);
    expect(Object.getPrototypeOf(traits)).toBe(Object.prototype);

    const refused = prepareEvents([JSON.parse('{"type": "x", "identities": {"cookie_id": "c"}, "traits": {"__proto__": {"nested": 1}, "score": {"n": 2}}}')], OPTIONS);
    expect(pathsOf(refused, 0).sort()).toEqual(['traits.__proto__', 'traits.score']);
  });

  it('reports a body that is not an object at "(body)"', () => {
    const result = prepareEvents(['not an event', null, 42], OPTIONS);
    expect(result.accepted).toEqual([]);
    expect(result.rejected.map((r) => [r.index, r.errors.map((e) => e.path)])).toEqual([
      [0, ['(body)']],
      [1, ['(body)']],
      [2, ['(body)']],
    ]);
  });

  it('reports an unknown top-level key', () => {
    const result = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, userId: 'u-1' }], OPTIONS);
    expect(result.accepted).toEqual([]);
    expect(JSON.stringify(result.rejected)).toContain('userId');
  });

  it('reports a phone that is not a possible number at "identities.phone"', () => {
    const result = prepareEvents([{ type: 'x', identities: { phone: 'call me maybe' } }], OPTIONS);
    expect(result.accepted).toEqual([]);
    expect(pathsOf(result, 0)).toEqual(['identities.phone']);
  });

  it('reports an invalid email at "identities.email"', () => {
    const result = prepareEvents([{ type: 'x', identities: { email: 'jane-at-example.com' } }], OPTIONS);
    expect(pathsOf(result, 0)).toEqual(['identities.email']);
  });

  it('rejects the whole event when one of several identities is invalid', () => {
    const result = prepareEvents([{ type: 'x', identities: { cookie_id: 'c', maid: 'not-a-uuid' } }], OPTIONS);
    expect(result.accepted).toEqual([]);
    expect(pathsOf(result, 0)).toEqual(['identities.maid']);
  });

  it('reports every invalid identity, not only the first', () => {
    const result = prepareEvents([{ type: 'x', identities: { email: 'nope', phone: 'nope', email_sha256: 'nope' } }], OPTIONS);
    expect(pathsOf(result, 0).sort()).toEqual(['identities.email', 'identities.email_sha256', 'identities.phone']);
  });

  it('reports a timestamp too far in the future at "timestamp"', () => {
    const result = prepareEvents(
      [{ type: 'x', identities: { cookie_id: 'c' }, timestamp: NOW.getTime() + 25 * 3600 * 1000 }],
      OPTIONS,
    );
    expect(result.accepted).toEqual([]);
    expect(pathsOf(result, 0)).toEqual(['timestamp']);
  });

  it('reports a timestamp past the range of dates, given or once corrected by sentAt, at "timestamp", never as a date it is not', () => {
    const beyond = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, timestamp: 8_700_000_000_000_000 }], OPTIONS);
    expect(pathsOf(beyond, 0)).toEqual(['timestamp']);
    // The last millisecond a date holds, sent by a clock 26 years behind: corrected past that.
    const pushed = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, timestamp: 8_640_000_000_000_000 }], { ...OPTIONS, sentAt: new Date('2000-01-01T00:00:00Z') });
    expect(pushed.accepted).toEqual([]);
    expect(pushed.rejected[0].errors).toEqual([{ path: 'timestamp', message: 'is outside the range of dates once corrected by sentAt' }]);
  });

  it('applies a custom future skew', () => {
    const result = prepareEvents(
      [{ type: 'x', identities: { cookie_id: 'c' }, timestamp: new Date(NOW.getTime() + 5_000).toISOString() }],
      { ...OPTIONS, maxFutureSkewMs: 1_000 },
    );
    expect(pathsOf(result, 0)).toEqual(['timestamp']);
  });

  it('reports a timestamp that is not ISO 8601 or an integer at "timestamp"', () => {
    for (const timestamp of ['yesterday', '2025-06-14', '2025-06-14T08:30:00', -1, 1.5]) {
      const result = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, timestamp }], OPTIONS);
      expect(pathsOf(result, 0)).toEqual(['timestamp']);
    }
  });

  it('reports an unreadable TCF string at "consent.tcf"', () => {
    const result = prepareEvents([{ type: 'x', identities: { cookie_id: 'c' }, consent: { tcf: 'garbage' } }], OPTIONS);
    expect(result.accepted).toEqual([]);
    expect(pathsOf(result, 0)).toEqual(['consent.tcf']);
  });

  it('reports identity, timestamp and consent errors of one event together', () => {
    const result = prepareEvents(
      [
        {
          type: 'x',
          identities: { phone: 'nope' },
          timestamp: NOW.getTime() + 48 * 3600 * 1000,
          consent: { tcf: 'garbage' },
        },
      ],
      OPTIONS,
    );
    expect(pathsOf(result, 0).sort()).toEqual(['consent.tcf', 'identities.phone', 'timestamp']);
  });

  it('does not echo a rejected raw email or phone back in its errors', () => {
    const result = prepareEvents([{ type: 'x', identities: { email: 'jane doe@example.com', phone: 'jane 555 0143 x' } }], OPTIONS);
    const serialized = JSON.stringify(result.rejected);
    expect(serialized).not.toContain('jane');
    expect(serialized).not.toContain('0143');
  });
});
