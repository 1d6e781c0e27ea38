import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Binary, BSON } from 'mongodb';

/** A binary subtype from the range left to applications: a deflated BSON document. */
const DEFLATED_BSON = 0x80;

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

/** A batch of events as one stored value. */
export function encodeEvents<T extends object>(events: T[]): Binary {
  return deflateDocument({ events });
}

export function decodeEvents<T>(binary: Binary): T[] {
  return inflateDocument<{ events: T[] }>(binary).events;
}

/**
 * A stored binary value's bytes as written before deflating: inflated when it is a deflated document,
 * as stored otherwise (batches written before they were deflated, and every other binary value).
 * Whatever reads binary values generically — a search for an erased subject's residue — reads them
 * through this.
 */
export function storedBytes(binary: Binary): Uint8Array {
  return binary.sub_type === DEFLATED_BSON ? inflateRawSync(binary.buffer) : binary.buffer;
}
