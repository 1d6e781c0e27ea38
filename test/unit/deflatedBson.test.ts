import { Binary, BSON } from 'mongodb';
import { decodeEvents, encodeEvents } from '../../store/deflatedBson';

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
});
