import { prepareEvents } from '../../domain/collect';
import { EventInputSchema, type EventInput } from '../../domain/schemas';
import { nameText } from '../../domain/text';
import { flattenFields, mapSegmentMessage, MAX_MESSAGE_BYTES, messagePath, purposeName, SegmentMessageSchema, type FieldOrigins, type MessageEnvelope } from '../../domain/trackingApi';
import { buildTcString } from './tcfFixture';

const RECEIVED_AT = new Date('2025-06-15T12:00:00.000Z');

function mapped(message: Record<string, unknown>, envelope: MessageEnvelope = {}): EventInput {
  const result = mapSegmentMessage(message, envelope, RECEIVED_AT);
  if (result.errors) throw new Error(`refused: ${JSON.stringify(result.errors)}`);
  return result.event;
}

function refusedPaths(message: unknown, envelope: MessageEnvelope = {}): string[] {
  const result = mapSegmentMessage(message, envelope, RECEIVED_AT);
  return (result.errors ?? []).map((error) => error.path);
}

/** The mapped event through the collector's own checks, with refusals named as the message's fields. */
function collectorPaths(message: Record<string, unknown>): string[] {
  const origins: FieldOrigins = new Map();
  const result = mapSegmentMessage(message, {}, RECEIVED_AT, origins);
  if (result.errors) throw new Error('refused by the mapping');
  const prepared = prepareEvents([result.event], { now: RECEIVED_AT, defaultPhoneRegion: 'US' });
  return prepared.rejected.flatMap((rejected) => rejected.errors.map((error) => messagePath(origins, error.path)));
}

describe('identities', () => {
  it('maps anonymousId to cookie_id and userId to crm_id, numbers read as strings', () => {
    expect(mapped({ type: 'track', event: 'x', anonymousId: 'anon-1', userId: 42 }).identities).toEqual({ cookie_id: 'anon-1', crm_id: '42' });
  });

  it('treats empty and null ids as absent', () => {
    expect(mapped({ type: 'track', event: 'x', anonymousId: '  ', userId: 'u-1' }).identities).toEqual({ crm_id: 'u-1' });
    expect(mapped({ type: 'track', event: 'x', anonymousId: null, userId: 'u-1' }).identities).toEqual({ crm_id: 'u-1' });
  });

  it("takes an identify's traits.email and phone as identities and drops them from the traits", () => {
    const event = mapped({ type: 'identify', userId: 'u-1', traits: { email: 'Ada@Example.com', phone: '+1 415 555 0123', plan: 'pro' } });
    expect(event.identities).toEqual({ crm_id: 'u-1', email: 'Ada@Example.com', phone: '+1 415 555 0123' });
    expect(event.traits).toEqual({ plan: 'pro' });
  });

  it('prefers traits.email over context.traits.email on an identify, and never keeps either as a trait', () => {
    const event = mapped({ type: 'identify', userId: 'u-1', traits: { email: 'new@example.com' }, context: { traits: { email: 'old@example.com', name: 'Ada' } } });
    expect(event.identities.email).toBe('new@example.com');
    expect(event.traits).toEqual({ name: 'Ada' });
    expect(JSON.stringify(event.traits)).not.toContain('@');
  });

  it('takes context.traits.email on other messages', () => {
    const event = mapped({ type: 'track', event: 'Order Completed', anonymousId: 'a', context: { traits: { email: 'ada@example.com', phone: 14155550123 } } });
    expect(event.identities).toEqual({ cookie_id: 'a', email: 'ada@example.com', phone: '14155550123' });
    expect(event.traits).toBeUndefined();
  });

  it('treats a blank email or phone trait as none: the message keeps its other ids and traits, and the collector takes it', () => {
    const event = mapped({ type: 'identify', userId: 'u1', traits: { email: '', phone: '  ', name: 'Ada' }, context: { traits: { email: 'ada@example.com' } } });
    expect(event.identities).toEqual({ crm_id: 'u1', email: 'ada@example.com' });
    expect(event.traits).toEqual({ name: 'Ada' });
    expect(collectorPaths({ type: 'identify', userId: 'u1', traits: { email: '', name: 'Ada' } })).toEqual([]);
    expect(collectorPaths({ type: 'track', event: 'x', anonymousId: 'a', context: { traits: { phone: ' ' } } })).toEqual([]);
  });

  it('refuses an email trait that is not a string, naming it', () => {
    expect(refusedPaths({ type: 'identify', userId: 'u', traits: { email: ['a@b.c'] } })).toEqual(['traits.email']);
  });

  it('names the email trait when the collector finds it is not an address', () => {
    expect(collectorPaths({ type: 'identify', userId: 'u', traits: { email: 'not-an-email' } })).toEqual(['traits.email']);
    expect(collectorPaths({ type: 'track', event: 'x', userId: 'u', context: { traits: { phone: 'n/a' } } })).toEqual(['context.traits.phone']);
  });

  it('maps context.device.advertisingId to maid', () => {
    const id = '6d92078a-8246-4ba4-ae5b-76104861e7dc';
    expect(mapped({ type: 'screen', anonymousId: 'a', context: { device: { advertisingId: id, adTrackingEnabled: true } } }).identities.maid).toBe(id);
  });

  it('does not use the advertising id at all when ad tracking is limited', () => {
    const event = mapped({ type: 'screen', anonymousId: 'a', context: { device: { advertisingId: '6d92078a-8246-4ba4-ae5b-76104861e7dc', adTrackingEnabled: false } } });
    expect(event.identities).toEqual({ cookie_id: 'a' });
    expect(JSON.stringify(event)).not.toContain('6d92078a');
  });

  it('keeps a message whose advertising id is none (all zeros, or not an IDFA/GAID), leaving the id out', () => {
    for (const advertisingId of ['00000000-0000-0000-0000-000000000000', 'not-an-ad-id']) {
      const event = mapped({ type: 'track', event: 'Order Completed', anonymousId: 'a', userId: 'u-1', context: { device: { advertisingId } } });
      expect(event.identities).toEqual({ cookie_id: 'a', crm_id: 'u-1' });
      expect(event.type).toBe('Order Completed');
    }
    expect(refusedPaths({ type: 'track', event: 'x', context: { device: { advertisingId: '00000000-0000-0000-0000-000000000000' } } })).toEqual(['userId']);
  });

  it('refuses a message that names nobody', () => {
    expect(refusedPaths({ type: 'track', event: 'x', properties: { a: 1 } })).toEqual(['userId']);
  });

  it('accepts a message known only by its email', () => {
    expect(mapped({ type: 'track', event: 'x', context: { traits: { email: 'ada@example.com' } } }).identities).toEqual({ email: 'ada@example.com' });
  });
});

describe('message types', () => {
  it('a track keeps its event name as the type and its messageId as the event id', () => {
    const event = mapped({ type: 'track', event: 'Order Completed', messageId: 'm-1', anonymousId: 'a', properties: { total: 12.5 } });
    expect(event).toMatchObject({ id: 'm-1', type: 'Order Completed', properties: { total: 12.5 } });
  });

  it('a track without an event name is refused naming `event`', () => {
    expect(refusedPaths({ type: 'track', anonymousId: 'a' })).toEqual(['event']);
  });

  it('an unknown type is refused naming `type`', () => {
    expect(refusedPaths({ type: 'purchase', anonymousId: 'a' })).toEqual(['type']);
    expect(refusedPaths({ anonymousId: 'a' })).toEqual(['type']);
  });

  it('a message that is not an object is refused as a whole', () => {
    expect(refusedPaths('track')).toEqual(['(message)']);
  });

  it("takes the endpoint's type when the message has none, and refuses a different one", () => {
    expect(mapped({ anonymousId: 'a', event: 'Signed Up' }, { type: 'track' }).type).toBe('Signed Up');
    expect(refusedPaths({ type: 'page', anonymousId: 'a' }, { type: 'track' })).toEqual(['type']);
  });

  it('a page takes context.page, then properties, then name and category as properties', () => {
    const event = mapped({
      type: 'page',
      anonymousId: 'a',
      name: 'Pricing',
      category: 'Docs',
      properties: { title: 'Pricing — Acme', name: 'ignored' },
      context: { page: { url: 'https://acme.test/pricing', referrer: 'https://search.test/', title: 'old title', path: '/pricing' } },
    });
    expect(event.type).toBe('page');
    expect(event.properties).toEqual({ url: 'https://acme.test/pricing', referrer: 'https://search.test/', title: 'Pricing — Acme', path: '/pricing', name: 'Pricing', category: 'Docs' });
  });

  it('a screen is of type screen with its name as a property', () => {
    expect(mapped({ type: 'screen', userId: 'u', name: 'Home' })).toMatchObject({ type: 'screen', properties: { name: 'Home' } });
  });

  it('an identify is of type identify with its traits', () => {
    expect(mapped({ type: 'identify', userId: 'u', traits: { plan: 'pro' } })).toMatchObject({ type: 'identify', traits: { plan: 'pro' } });
  });

  it('an alias holds userId as crm_id and previousId as cookie_id when it is the anonymousId, in one event, which joins them', () => {
    expect(mapped({ type: 'alias', userId: 'u-9', previousId: 'anon-9', anonymousId: 'anon-9' })).toMatchObject({ type: 'alias', identities: { crm_id: 'u-9', cookie_id: 'anon-9' } });
  });

  it("a server's alias (no anonymousId) passes previousId on as an id of unknown type: the drain joins whichever the graph knows it as", () => {
    const event = mapped({ type: 'alias', userId: 'u-9', previousId: 'u-8' });
    expect(event).toMatchObject({ type: 'alias', identities: { crm_id: 'u-9' }, previousId: 'u-8' });
    expect(event.identities).toEqual({ crm_id: 'u-9' });
    // A refused previousId is named as the message's field.
    expect(collectorPaths({ type: 'alias', userId: 'u-9', previousId: 'old\u0000id' })).toEqual(['previousId']);
  });

  it('an alias needs both ids', () => {
    expect(refusedPaths({ type: 'alias', userId: 'u-9' })).toEqual(['previousId']);
    expect(refusedPaths({ type: 'alias', previousId: 'anon-9' })).toEqual(['userId']);
    expect(refusedPaths({ type: 'alias', userId: '', previousId: 'anon-9' })).toEqual(['userId']);
    expect(refusedPaths({ type: 'alias', userId: '', previousId: 'u-8', anonymousId: 'anon-9' })).toEqual(['userId']);
  });

  it('an alias after an identify (previousId the earlier user id, anonymousId the cookie) holds both user ids and the cookie', () => {
    expect(mapped({ type: 'alias', userId: 'u-9', previousId: 'u-8', anonymousId: 'anon-9' }).identities).toEqual({ cookie_id: 'anon-9', crm_id: ['u-8', 'u-9'] });
    expect(mapped({ type: 'alias', userId: 'u-9', previousId: 'u-9', anonymousId: 'anon-9' }).identities).toEqual({ cookie_id: 'anon-9', crm_id: 'u-9' });
  });

  it("a group keeps groupId and the group's traits under `group.`, beside the user's context traits, without the group's email", () => {
    const event = mapped({
      type: 'group',
      userId: 'u',
      groupId: 'acme',
      traits: { name: 'Acme', employees: 120, email: 'billing@acme.test', address: { city: 'Lyon' } },
      context: { traits: { role: 'admin' } },
    });
    expect(event.type).toBe('group');
    expect(event.identities).toEqual({ crm_id: 'u' });
    expect(event.traits).toEqual({ role: 'admin', 'group.name': 'Acme', 'group.employees': 120, 'group.address.city': 'Lyon', 'group.id': 'acme' });
  });

  it('every mapped message is a valid event', () => {
    const messages = [
      { type: 'track', event: 'Order Completed', anonymousId: 'a', properties: { products: [{ sku: 'a', price: 1 }, { sku: 'b', price: 2 }], coupon: null } },
      { type: 'identify', userId: 'u', traits: { email: 'a@b.co', address: { city: 'Paris' }, tags: ['x', 'y'] } },
      { type: 'page', anonymousId: 'a', name: 'Home', context: { page: { url: 'https://x.test/' } } },
      { type: 'alias', userId: 'u', previousId: 'a' },
      { type: 'group', userId: 'u', groupId: 7, traits: { plan: { tier: 'gold' } } },
    ];
    for (const message of messages) expect(EventInputSchema.safeParse(mapped(message)).error).toBeUndefined();
  });
});

describe('flattening', () => {
  it('joins nested names with dots', () => {
    expect(Object.fromEntries(flattenFields({ address: { city: 'Paris', geo: { lat: 48.8 } }, plan: 'pro' }))).toEqual({ 'address.city': 'Paris', 'address.geo.lat': 48.8, plan: 'pro' });
  });

  it('keeps lists of scalars, without nulls', () => {
    expect(Object.fromEntries(flattenFields({ tags: ['a', null, 'b'], empty: [] }))).toEqual({ tags: ['a', 'b'], empty: [] });
  });

  it('turns a list of objects into one list per field', () => {
    const flat = flattenFields({ products: [{ sku: 'a', price: 10, options: { size: 'M' } }, { sku: 'b', price: 20 }] });
    expect(Object.fromEntries(flat)).toEqual({ 'products.sku': ['a', 'b'], 'products.price': [10, 20], 'products.options.size': ['M'] });
  });

  it('flattens lists inside lists, since the store takes no nested lists', () => {
    expect(Object.fromEntries(flattenFields({ grid: [[1, 2], [3]] }))).toEqual({ grid: [1, 2, 3] });
  });

  it('keeps null scalars and leaves nothing for empty objects', () => {
    expect(Object.fromEntries(flattenFields({ coupon: null, meta: {} }))).toEqual({ coupon: null });
  });

  it('keeps a nested field named __proto__ as a plain field of the traits', () => {
    const traits = mapped({ type: 'identify', userId: 'u', traits: { meta: JSON.parse('{"__proto__": {"polluted": 1}}') } }).traits ?? {};
    expect(Object.keys(traits)).toEqual(['meta.__proto__.polluted']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('names the flattened field of the message when a value breaks the event limits', () => {
    expect(collectorPaths({ type: 'track', event: 'x', anonymousId: 'a', properties: { item: { description: 'x'.repeat(2000) } } })).toEqual(['properties.item.description']);
  });
});

describe('time', () => {
  it('corrects clock skew: receivedAt − (sentAt − timestamp)', () => {
    // The sender's clock runs 2 hours fast; the event happened 5 minutes before it was sent.
    const event = mapped({ type: 'track', event: 'x', anonymousId: 'a', timestamp: '2025-06-15T13:55:00.000Z', sentAt: '2025-06-15T14:00:00.000Z' });
    expect(event.timestamp).toBe('2025-06-15T11:55:00.000Z');
  });

  it('reads originalTimestamp when timestamp is absent', () => {
    const event = mapped({ type: 'track', event: 'x', anonymousId: 'a', originalTimestamp: '2025-06-14T12:00:00.500+02:00', sentAt: '2025-06-15T12:00:00.000+02:00' });
    expect(event.timestamp).toBe('2025-06-14T12:00:00.500Z');
  });

  it("uses the batch's sentAt for messages without their own, and a message's own over it", () => {
    const message = { type: 'track', event: 'x', anonymousId: 'a', timestamp: '2025-01-01T00:00:00.000Z' };
    expect(mapped(message, { sentAt: '2025-01-01T00:01:00.000Z' }).timestamp).toBe('2025-06-15T11:59:00.000Z');
    expect(mapped({ ...message, sentAt: '2025-01-01T00:00:10.000Z' }, { sentAt: '2025-01-01T00:01:00.000Z' }).timestamp).toBe('2025-06-15T11:59:50.000Z');
  });

  it('keeps the timestamp as given without sentAt, and leaves none when there is none', () => {
    expect(mapped({ type: 'track', event: 'x', anonymousId: 'a', timestamp: '2025-06-01T00:00:00Z' }).timestamp).toBe('2025-06-01T00:00:00.000Z');
    expect(mapped({ type: 'track', event: 'x', anonymousId: 'a', sentAt: '2025-06-01T00:00:00Z' }).timestamp).toBeUndefined();
  });

  it('refuses a timestamp that is not ISO 8601 with a zone', () => {
    expect(refusedPaths({ type: 'track', event: 'x', anonymousId: 'a', timestamp: 'yesterday' })).toEqual(['timestamp']);
  });

  it('still refuses an event far in the future when nothing corrects it, naming the field it came from', () => {
    expect(collectorPaths({ type: 'track', event: 'x', anonymousId: 'a', originalTimestamp: '2025-06-20T00:00:00Z' })).toEqual(['originalTimestamp']);
    // The same time from a sender whose clock is as far ahead is corrected, and kept.
    expect(collectorPaths({ type: 'track', event: 'x', anonymousId: 'a', originalTimestamp: '2025-06-20T00:00:00Z', sentAt: '2025-06-20T00:00:01Z' })).toEqual([]);
  });
});

describe('consent', () => {
  it('turns categoryPreferences into purposes with lowercased names', () => {
    const event = mapped({ type: 'track', event: 'x', anonymousId: 'a', context: { consent: { categoryPreferences: { Advertising: true, DataSharing: false, 'Functional Cookies': true } } } });
    expect(event.consent).toEqual({ purposes: { advertising: true, data_sharing: false, functional_cookies: true } });
  });

  it('grants a purpose two categories read as only if both grant it', () => {
    const event = mapped({ type: 'track', event: 'x', anonymousId: 'a', context: { consent: { categoryPreferences: { DataSharing: true, data_sharing: false } } } });
    expect(event.consent?.purposes).toEqual({ data_sharing: false });
  });

  it('passes TCF and GPP strings the client put in context.consent', () => {
    const tcf = buildTcString({ purposeConsents: [1, 3, 4] });
    const event = mapped({ type: 'page', anonymousId: 'a', context: { consent: { tcf, gpp: 'DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA' } } });
    expect(event.consent).toEqual({ tcf, gpp: 'DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA' });
  });

  it("passes the GPP sections in force beside the GPP string, and ignores ids it cannot read or that come without one", () => {
    const gpp = 'DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA';
    expect(mapped({ type: 'page', anonymousId: 'a', context: { consent: { gpp, gppSid: [2] } } }).consent).toEqual({ gpp, gppSid: [2] });
    for (const gppSid of ['2', [2.5], [300], null]) expect(mapped({ type: 'page', anonymousId: 'a', context: { consent: { gpp, gppSid } } }).consent).toEqual({ gpp });
    expect(mapped({ type: 'page', anonymousId: 'a', context: { consent: { gppSid: [2] } } }).consent).toBeUndefined();
  });

  it('names the consent field of the message when the collector cannot read a TC string', () => {
    expect(collectorPaths({ type: 'track', event: 'x', anonymousId: 'a', context: { consent: { tcf: 'not a tc string' } } })).toEqual(['context.consent.tcf']);
  });

  it('purpose names', () => {
    expect(purposeName('Advertising')).toBe('advertising');
    expect(purposeName('DataSharing')).toBe('data_sharing');
    expect(purposeName(' Functional  Cookies ')).toBe('functional_cookies');
    expect(purposeName('ANALYTICS')).toBe('analytics');
    expect(purposeName('C0004')).toBe('c0004');
  });

  it('gives a category with no Latin letter or digit, or too long a name, a purpose of its own ending in a hash', () => {
    const japanese = purposeName('広告');
    expect(japanese).toMatch(/^category_[0-9a-f]{8}$/);
    expect(purposeName('分析')).not.toBe(japanese);
    const long = 'Functional Cookies And Similar Technologies For Site Performance Measurement';
    expect(purposeName(long)).toMatch(/^functional_cookies_and_similar_technologies_for_site_pe_[0-9a-f]{8}$/);
    expect(purposeName(long)).toHaveLength(64);
    expect(purposeName(long)).not.toBe(purposeName(`${long} Too`));
  });

  it('keeps a message whose consent categories are not Latin or are long, with their answers as purposes', () => {
    const long = 'Functional Cookies And Similar Technologies For Site Performance Measurement';
    const message = { type: 'track', event: 'x', anonymousId: 'a', context: { consent: { categoryPreferences: { 広告: false, [long]: true, Analytics: true } } } };
    expect(collectorPaths(message)).toEqual([]);
    expect(mapped(message).consent?.purposes).toEqual({ [purposeName('広告')]: false, [purposeName(long)]: true, analytics: true });
  });
});

describe('the batch around a message', () => {
  it("merges the batch's context under the message's own, objects one level deep", () => {
    const event = mapped(
      { type: 'screen', anonymousId: 'a', context: { device: { adTrackingEnabled: true }, traits: { plan: 'pro' } } },
      { context: { device: { advertisingId: '6d92078a-8246-4ba4-ae5b-76104861e7dc' }, traits: { plan: 'free', country: 'FR' } } },
    );
    expect(event.identities.maid).toBe('6d92078a-8246-4ba4-ae5b-76104861e7dc');
    expect(event.traits).toEqual({ plan: 'pro', country: 'FR' });
  });
});

describe('limits', () => {
  it('refuses a body-sized event name ending in a NUL at once, naming the field', () => {
    // The whole-body check runs before a message is measured: the name's checks see all of it.
    const result = SegmentMessageSchema.safeParse({ type: 'track', event: `${'a'.repeat(490_000)}\u0000`, anonymousId: 'a' });
    expect(result.error?.issues.map((issue) => [issue.path.join('.'), issue.message])).toEqual([['event', 'Too big: expected string to have <=128 characters']]);
    // Within its length, a name's pattern is linear: a long one ending in a NUL, or all blank, is refused as fast.
    for (const text of [`${'a'.repeat(1_000_000)}\u0000`, ' '.repeat(1_000_000)]) expect(nameText(2_000_000).safeParse(text).error?.issues[0].message).toMatch(/must not be blank, and must not hold the NUL character/);
    expect(nameText(10).parse('  a b  ')).toBe('a b');
  });

  it('refuses a message over 32 KB, naming its largest field', () => {
    const message = { type: 'track', event: 'x', anonymousId: 'a', properties: { blob: 'x'.repeat(MAX_MESSAGE_BYTES) } };
    const result = mapSegmentMessage(message, {}, RECEIVED_AT);
    expect(result.errors).toEqual([{ path: 'properties', message: expect.stringMatching(/more than 32768 \(32 KB\)/) }]);
  });

  it('measures each message of a body larger than the limit, and none of a body within it', () => {
    const message = { type: 'track', event: 'x', anonymousId: 'a', properties: { blob: 'x'.repeat(MAX_MESSAGE_BYTES) } };
    const bodyBytes = Buffer.byteLength(JSON.stringify({ batch: [message] }));
    expect(mapSegmentMessage(message, { bodyBytes }, RECEIVED_AT).errors).toEqual([{ path: 'properties', message: expect.stringMatching(/more than 32768/) }]);
    // A body within the limit holds no message beyond it: the stated size spares measuring each one.
    expect(mapSegmentMessage(message, { bodyBytes: MAX_MESSAGE_BYTES }, RECEIVED_AT).errors).toBeUndefined();
  });

  it('counts bytes, not characters', () => {
    const under = { type: 'track', event: 'x', anonymousId: 'a', properties: { text: 'é'.repeat(MAX_MESSAGE_BYTES / 2 - 100) } };
    expect(refusedPaths(under)).toEqual([]);
    const over = { ...under, properties: { text: 'é'.repeat(MAX_MESSAGE_BYTES / 2) } };
    expect(refusedPaths(over)).toEqual(['properties']);
  });

  it("cuts a page's URL, referrer or title longer than a property holds, as the JS tag does, instead of refusing the page view; a sender's own property is still refused", () => {
    const url = `https://shop.example/landing?gclid=${'g'.repeat(1500)}`;
    const page = { type: 'page', anonymousId: 'a', name: 'Landing', context: { page: { url, referrer: 'https://search.example/', title: 't'.repeat(2000) } } };
    expect(collectorPaths(page)).toEqual([]);
    const properties = mapped(page).properties as Record<string, string>;
    expect(properties.url).toBe(url.slice(0, 1024));
    expect(properties.title).toHaveLength(1024);
    expect(properties.referrer).toBe('https://search.example/');
    expect(collectorPaths({ type: 'track', event: 'x', anonymousId: 'a', properties: { note: 'n'.repeat(1025) } })).toEqual(['properties.note']);
  });

  it("cuts them where analytics.js copies them into the page's properties too, and never through the middle of a character", () => {
    const url = `https://shop.example/landing?fbclid=${'f'.repeat(2000)}`;
    const search = `?fbclid=${'f'.repeat(2000)}`;
    const title = `${'t'.repeat(1023)}🏔️ peaks`;
    const page = { type: 'page', anonymousId: 'a', properties: { url, search, title, note: 'kept' }, context: { page: { url, search, title } } };
    expect(collectorPaths(page)).toEqual([]);
    const properties = mapped(page).properties as Record<string, string>;
    expect(properties.url).toBe(url.slice(0, 1024));
    expect(properties.search).toHaveLength(1024);
    // The mountain's surrogate pair would be split at 1,024: the cut stops before it.
    expect(properties.title).toBe('t'.repeat(1023));
    expect(properties.note).toBe('kept');
    expect(collectorPaths({ type: 'page', anonymousId: 'a', properties: { note: 'n'.repeat(1025) } })).toEqual(['properties.note']);
  });

  it('removes an email address from a long page URL before cutting it, so no part of an address cut through is kept', () => {
    const start = 'https://shop.example/landing?to=';
    const url = `${start}${'x'.repeat(1024 - start.length - 'jane.doe@exa'.length)}&to=jane.doe@example.com&gclid=${'g'.repeat(100)}`;
    const properties = mapped({ type: 'page', anonymousId: 'a', context: { page: { url } } }).properties as Record<string, string>;
    expect(properties.url).not.toContain('jane');
    expect(properties.url).toHaveLength(1024);
    expect(properties.url.endsWith('&to=(redacte')).toBe(true);
  });
});
