/**
 * Profiles are owned by partitions: a profile document belongs to partition `partitionOf(id, n)`,
 * and each partition has exactly one writer at a time. FNV-1a over the id's UTF-16 code units:
 * stable across processes and releases, cheap, and plain code that workflows may use too.
 */
export function partitionOf(profileId: string, partitions: number): number {
  return stableHash(profileId) % partitions;
}

/** FNV-1a, 32 bits. */
export function stableHash(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}
