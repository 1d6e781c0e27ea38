import { Binary, BSON } from 'mongodb';

/**
 * Batches of events are stored as one BSON-encoded binary value. FerretDB turns every field of a
 * document into typed PostgreSQL jsonb, so thousands of nested event fields cost far more CPU to
 * write and read than the same events as one opaque value (measured: routing a batch through the
 * store took a third of the time); nothing queries inside a batch, and BSON keeps dates as dates.
 */
export function encodeEvents<T extends object>(events: T[]): Binary {
  return new Binary(BSON.serialize({ events }));
}

export function decodeEvents<T>(binary: Binary): T[] {
  return BSON.deserialize(binary.buffer).events as T[];
}
