/**
 * Profiles are owned by partitions: a profile document belongs to partition `partitionOf(id, n)`,
 * and each partition has exactly one writer at a time. FNV-1a over the id's UTF-16 code units:
 * stable across processes and releases, cheap, and plain code that workflows may use too.
 */
export function partitionOf(profileId: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < profileId.length; i++) {
    hash ^= profileId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % partitions;
}
