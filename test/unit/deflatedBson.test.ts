import fc from 'fast-check';
import { Binary, BSON } from 'mongodb';
import { decodeEvents, decodeEventsWithBytes, encodeEvents, ExtendedEvent, storedBytes } from '../../store/deflatedBson';

describe('deflatedBson: a batch of events as one stored binary value', () => {
  const events = Array.from({ length: 200 }, (_, n) => ({
    id: `evt_${n}`,
    type: n % 3 === 0 ? 'purchase' : 'page_view',
    timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, n)),
    identities: [{ type: 'cookie_id', value: `c${n % 17}` }],
    properties: { page: `/products/${n % 40}`, price: n / 4, tags: ['a', 'b'], nothing: null },
  }));

  it('decodes what it encodes, dates as dates and nested values unchanged', () => {
    const decoded = decodeEvents<(typeof events)[number]>(encodeEvents(events));
    expect(decoded).toEqual(events);
    expect(decoded[5].timestamp).toBeInstanceOf(Date);
  });

  it('stores the batch deflated: smaller than its BSON', () => {
    const plain = BSON.serialize({ events }).length;
    expect(encodeEvents(events).length()).toBeLessThan(plain / 2);
  });

  it('still reads batches stored before they were deflated (plain BSON, generic subtype)', () => {
    const legacy = new Binary(BSON.serialize({ events }));
    expect(decodeEvents(legacy)).toEqual(events);
  });

  it('keeps an empty batch', () => {
    expect(decodeEvents(encodeEvents([]))).toEqual([]);
  });

  describe('events read with their bytes and stored again, extended', () => {
    const value = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.date({ noInvalidDate: true }));
    const event = fc.record({
      id: fc.string(),
      type: fc.constantFrom('page_view', 'purchase'),
      timestamp: fc.date({ noInvalidDate: true }),
      identities: fc.array(fc.record({ type: fc.constantFrom('cookie_id', 'email'), value: fc.string() }), { maxLength: 3 }),
      traits: fc.option(fc.dictionary(fc.string(), value), { nil: undefined }),
      properties: fc.option(fc.dictionary(fc.string(), fc.oneof(value, fc.array(value), fc.dictionary(fc.string(), value))), { nil: undefined }),
    });

    it('stores exactly the bytes encoding the extended objects would, extended or not, and reads them back the same', () => {
      fc.assert(
        fc.property(fc.array(event, { maxLength: 30 }), fc.array(fc.boolean(), { maxLength: 30 }), (written, extend) => {
          const read = decodeEventsWithBytes<(typeof written)[number]>(encodeEvents(written));
          expect(read.events).toEqual(written);
          const objects = read.events.map((one, n) => ({ ...one, seq: extend[n] ? n * 1_000_003 : n, profileId: extend[n] ? `p_${n}` : 'other' }));
          const again = read.events.map((_, n) => (extend[n] ? new ExtendedEvent(read.bytes[n], { seq: n * 1_000_003, profileId: `p_${n}` }) : objects[n]));
          const stored = encodeEvents(again);
          expect(Buffer.from(storedBytes(stored)).equals(BSON.serialize({ events: objects }))).toBe(true);
          expect(decodeEvents(stored)).toEqual(objects);
        }),
      );
    });

    it("reads each event's bytes as BSON.serialize writes that event alone", () => {
      const read = decodeEventsWithBytes<(typeof events)[number]>(encodeEvents(events));
      expect(read.bytes.map((bytes) => BSON.deserialize(bytes))).toEqual(events);
      expect(read.bytes.every((bytes, n) => Buffer.from(bytes).equals(BSON.serialize(events[n])))).toBe(true);
    });
  });
});
