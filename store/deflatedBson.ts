import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Binary, BSON } from 'mongodb';

/** A binary subtype from the range left to applications: a deflated BSON document. */
const DEFLATED_BSON = 0x80;

const { parseToElements, ByteUtils, NumberUtils } = BSON.onDemand;
const BSON_DOCUMENT = 3;
const BSON_ARRAY = 4;
const EVENTS_NAME = Buffer.from('events\0');
/** Array keys `0\0`, `1\0`, …, made once. */
const indexKeys: Buffer[] = [];
const indexKey = (index: number) => (indexKeys[index] ??= Buffer.from(`${index}\0`));

/**
 * A document nothing queries inside, stored as one binary value: BSON, deflated. FerretDB turns
 * every field of a document into typed PostgreSQL jsonb, so thousands of nested fields cost far more
 * CPU to write and read than the same data as one opaque value (measured: routing a batch of events
 * through the store took a third of the time; reading a day's segment change records, an eighth),
 * and BSON keeps dates as dates. Deflated, a value is several times smaller, and the store's cost of
 * a binary value grows with its size (it keeps it as base64 text inside jsonb): writing and reading a
 * 500-event batch took a fifth to a quarter of the time, against well under a millisecond to deflate
 * and inflate it (see README).
 */
export function deflateDocument(doc: object): Binary {
  return new Binary(deflateRawSync(BSON.serialize(doc), { level: 1 }), DEFLATED_BSON);
}

export function inflateDocument<T>(binary: Binary): T {
  return BSON.deserialize(storedBytes(binary)) as T;
}

/** A binary subtype of ours too: BSON documents one after another, deflated together. */
const DEFLATED_BSON_SEQUENCE = 0x81;

/**
 * Documents stored as one value, each serialized on its own (see deflateDocument): together they may
 * pass the ~17 MB the serializer holds at once, and still deflate to well within a stored document.
 */
export function deflateSequence(docs: object[]): Binary {
  return new Binary(deflateRawSync(Buffer.concat(docs.map((doc) => BSON.serialize(doc))), { level: 1 }), DEFLATED_BSON_SEQUENCE);
}

export function inflateSequence<T>(binary: Binary): T[] {
  if (binary.sub_type !== DEFLATED_BSON_SEQUENCE) throw new Error(`not a sequence of documents (binary subtype ${binary.sub_type})`);
  const bytes = storedBytes(binary);
  const docs: T[] = [];
  for (let at = 0; at < bytes.length; at += NumberUtils.getInt32LE(bytes, at)) docs.push(BSON.deserialize(bytes.subarray(at, at + NumberUtils.getInt32LE(bytes, at))) as T);
  return docs;
}

/**
 * An event to be stored as the bytes it was read as (see `decodeEventsWithBytes`) followed by
 * `added`, whose names the event must not have. Routing stores each event it reads again with its
 * target added: copying its bytes took ~4 of the ~9 µs an event that encoding and deflating a
 * routed batch took (see README).
 */
export class ExtendedEvent<A extends object = object> {
  constructor(
    readonly stored: Uint8Array,
    readonly added: A,
  ) {}
}

/** A batch of events as one stored value. */
export function encodeEvents(events: object[]): Binary {
  if (!events.some((event) => event instanceof ExtendedEvent)) return deflateDocument({ events });
  return new Binary(deflateRawSync(eventsDocument(events), { level: 1 }), DEFLATED_BSON);
}

/** Decodes a stored batch. */
export function decodeEvents<T>(binary: Binary): T[] {
  return (BSON.deserialize(storedBytes(binary)) as { events: T[] }).events;
}

/** Decodes a stored batch, and the bytes each event is stored as (to store it again extended, see `ExtendedEvent`). */
export function decodeEventsWithBytes<T>(binary: Binary): { events: T[]; bytes: Uint8Array[] } {
  const stored = storedBytes(binary);
  const { events } = BSON.deserialize(stored) as { events: T[] };
  const array = [...parseToElements(stored)].find(([type, nameOffset, nameLength]) => type === BSON_ARRAY && ByteUtils.toUTF8(stored, nameOffset, nameOffset + nameLength, false) === 'events');
  if (!array) throw new Error('a stored batch without events');
  const bytes: Uint8Array[] = [];
  for (const [, , , offset, length] of parseToElements(stored, array[3])) bytes.push(stored.subarray(offset, offset + length));
  return { events, bytes };
}

/**
 * `{ events: [...] }` laid out as `BSON.serialize` would lay out the events with their additions:
 * an extended event as its stored bytes' elements followed by the added fields', any other event
 * encoded anew.
 */
function eventsDocument(events: object[]): Uint8Array {
  const parts = events.map((event, index) => {
    if (!(event instanceof ExtendedEvent)) return { key: indexKey(index), head: BSON.serialize(event), tail: null, size: 0 };
    const tail = BSON.serialize(event.added);
    return { key: indexKey(index), head: event.stored, tail, size: event.stored.length + tail.length - 5 };
  });
  let arraySize = 5;
  for (const part of parts) arraySize += 1 + part.key.length + (part.tail ? part.size : part.head.length);
  const out = new Uint8Array(4 + 1 + EVENTS_NAME.length + arraySize + 1);
  NumberUtils.setInt32LE(out, 0, out.length);
  out[4] = BSON_ARRAY;
  out.set(EVENTS_NAME, 5);
  let at = 5 + EVENTS_NAME.length;
  NumberUtils.setInt32LE(out, at, arraySize);
  at += 4;
  for (const { key, head, tail, size } of parts) {
    out[at++] = BSON_DOCUMENT;
    out.set(key, at);
    at += key.length;
    if (!tail) {
      out.set(head, at);
      at += head.length;
      continue;
    }
    // Both documents' elements, in order, under one length header and one terminator.
    NumberUtils.setInt32LE(out, at, size);
    out.set(head.subarray(4, head.length - 1), at + 4);
    out.set(tail.subarray(4), at + head.length - 1);
    at += size;
  }
  out[at++] = 0; // the array's end
  out[at] = 0; // the document's end
  return out;
}

/**
 * A stored binary value's bytes as written before deflating: inflated when it is a deflated document
 * (or sequence of them), as stored otherwise (batches written before they were deflated, and every
 * other binary value).
 * Whatever reads binary values generically — a search for an erased subject's residue — reads them
 * through this.
 */
export function storedBytes(binary: Binary): Uint8Array {
  return binary.sub_type === DEFLATED_BSON || binary.sub_type === DEFLATED_BSON_SEQUENCE ? inflateRawSync(binary.buffer) : binary.buffer;
}
