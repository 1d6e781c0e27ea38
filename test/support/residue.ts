import { Binary, BSON, type Db } from 'mongodb';
import { inflateSequence, storedBytes } from '../../store/deflatedBson';

/** Where a needle was found: collection, document and the path inside it. */
export interface Residue {
  collection: string;
  id: string;
  path: string;
  needle: string;
}

/**
 * Reads every document of every collection and looks for the needles in every string, every key and
 * every binary value — inflated when deflated (event batches, segment change records), decoded as BSON when it is BSON
 * (event chunks, routed batches, snapshots), else searched as raw bytes. What an erasure must leave none of.
 */
export async function findResidue(db: Db, needles: string[]): Promise<Residue[]> {
  const found: Residue[] = [];
  const look = (collection: string, id: string, path: string, text: string) => {
    for (const needle of needles) if (text.includes(needle)) found.push({ collection, id, path, needle });
  };
  const walk = (collection: string, id: string, path: string, value: unknown): void => {
    if (typeof value === 'string') return look(collection, id, path, value);
    if (value instanceof Binary || value instanceof Uint8Array) {
      const bytes = value instanceof Binary ? storedBytes(value) : value;
      let decoded: unknown = null;
      try {
        decoded = BSON.deserialize(bytes);
      } catch {
        // A sequence of documents (see deflateSequence), or bytes that are no BSON at all.
        try {
          decoded = value instanceof Binary ? inflateSequence(value) : null;
        } catch {
          decoded = null;
        }
      }
      if (decoded) walk(collection, id, `${path}<bson>`, decoded);
      else look(collection, id, path, Buffer.from(bytes).toString('latin1'));
      return;
    }
    if (Array.isArray(value)) return value.forEach((item, i) => walk(collection, id, `${path}[${i}]`, item));
    if (value && typeof value === 'object' && !(value instanceof Date)) {
      for (const [key, item] of Object.entries(value)) {
        look(collection, id, `${path}.${key}<key>`, key);
        walk(collection, id, `${path}.${key}`, item);
      }
    }
  };
  for (const { name } of await db.listCollections({}, { nameOnly: true }).toArray()) {
    for await (const doc of db.collection(name).find({})) walk(name, String(doc._id), '', doc);
  }
  return found;
}
