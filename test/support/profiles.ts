import { decodeFieldName } from '../../domain/fieldNames';
import { partitionOf } from '../../domain/partition';
import type { ProfileDoc } from '../../domain/profile';
import { COLLECTIONS, type Store } from '../../store/db';
import { ProfileEventLog } from '../../store/profileEvents';
import { decodeProfile, type StoredProfile } from '../../store/profiles';
import type { ExpectedProfile } from './audience';

/** Compares every stored profile with the expected fold of the input; returns readable differences. */
export async function profileDifferences(store: Store, expected: Map<string, ExpectedProfile>): Promise<string[]> {
  const differences: string[] = [];
  const docs = await latestProfiles(store);
  if (docs.length !== expected.size) differences.push(`profile count ${docs.length}, expected ${expected.size}`);
  const byCookie = new Map<string, ProfileDoc>();
  for (const doc of docs) {
    const cookies = doc.identities.filter((identity) => identity.type === 'cookie_id');
    if (cookies.length !== 1) differences.push(`profile ${doc.profileId} has ${cookies.length} cookies`);
    for (const cookie of cookies) {
      if (byCookie.has(cookie.value)) differences.push(`cookie ${cookie.value} is on two profiles`);
      byCookie.set(cookie.value, doc);
    }
  }
  for (const [cookie, want] of expected) {
    const doc = byCookie.get(cookie);
    if (!doc) {
      differences.push(`no profile for ${cookie}`);
      continue;
    }
    const counters: ExpectedProfile['counters'] = {};
    for (const [key, counter] of Object.entries(doc.counters)) {
      counters[decodeFieldName(key)] = { count: counter.count, firstSeen: counter.firstSeen.toISOString(), lastSeen: counter.lastSeen.toISOString() };
    }
    if (JSON.stringify(sortKeys(counters)) !== JSON.stringify(sortKeys(want.counters))) {
      differences.push(`${cookie}: counters ${JSON.stringify(counters)} expected ${JSON.stringify(want.counters)}`);
    }
    const email = doc.identities.find((identity) => identity.type === 'email_sha256')?.value;
    if (email !== want.emailSha256) differences.push(`${cookie}: email hash ${email} expected ${want.emailSha256}`);
  }
  return differences.slice(0, 20);
}

/** The newest version of every profile (a test-side full scan; the product never scans on a hot path). */
export async function latestProfiles(store: Store): Promise<ProfileDoc[]> {
  const newest = new Map<string, ProfileDoc>();
  for await (const stored of store.db.collection<StoredProfile>(COLLECTIONS.profiles).find({})) {
    const doc = decodeProfile(stored);
    const seen = newest.get(doc.profileId);
    if (!seen || seen.version < doc.version) newest.set(doc.profileId, doc);
  }
  return [...newest.values()];
}

function sortKeys<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => a.localeCompare(b)));
}

/** How many of a source's events the partition writers have folded into profiles, from their saved positions. */
export async function eventsFolded(store: Store, sourceId: string, partitions: number): Promise<number> {
  return new ProfileEventLog(store).eventsApplied(sourceId, partitions);
}

/** Write groups that hold profile versions but no partition position records: versions compaction would never remove. */
export async function unrecordedGroups(store: Store, partitions: number): Promise<string[]> {
  const recorded = new Set((await new ProfileEventLog(store).loadPositions(partitions)).flatMap((position) => Object.keys(position.groups)));
  const stored: string[] = await store.db.collection(COLLECTIONS.profiles).distinct('group');
  return stored.filter((group) => !recorded.has(group));
}

/** A write group as its partition's position counts it, beside the versions the store holds under it. */
export interface GroupAccount {
  partition: number;
  group: string;
  next: boolean;
  written: number;
  superseded: number;
  stored: number;
}

/** Every recorded write group's counts beside what the store holds (a test-side scan), and the groups no position records. */
export async function groupAccounts(store: Store, partitions: number): Promise<{ groups: GroupAccount[]; unrecorded: Map<string, number> }> {
  const held = new Map<string, number>();
  for await (const version of store.db.collection<{ group?: string }>(COLLECTIONS.profiles).find({}, { projection: { group: 1 } })) {
    held.set(version.group ?? '-', (held.get(version.group ?? '-') ?? 0) + 1);
  }
  const positions = await new ProfileEventLog(store).loadPositions(partitions);
  const groups = positions.flatMap((position, partition) =>
    Object.entries(position.groups).map(([group, counts]) => ({ partition, group, next: group === position.nextGroup, written: counts.written, superseded: counts.superseded, stored: held.get(group) ?? 0 })),
  );
  const recorded = new Set(groups.map((account) => account.group));
  return { groups, unrecorded: new Map([...held].filter(([group]) => !recorded.has(group))) };
}

/**
 * Where compaction stands, for a failure's message: per partition, each write group as its position
 * records it (written, superseded) beside the versions the store holds under it.
 */
export async function compactionState(store: Store, partitions: number): Promise<string> {
  const { groups, unrecorded } = await groupAccounts(store, partitions);
  const lines = groups.map((account) => `p${account.partition} ${account.group}${account.next ? ' (next)' : ''}: written ${account.written}, superseded ${account.superseded}, stored ${account.stored}`);
  for (const [group, n] of unrecorded) lines.push(`unrecorded ${group}: stored ${n}`);
  return lines.join('\n');
}

/** Profile ids that hash to `partition` of `partitions`, as a drain's would. */
export function idsInPartition(prefix: string, count: number, partition: number, partitions: number): string[] {
  const ids: string[] = [];
  for (let n = 0; ids.length < count; n++) if (partitionOf(`${prefix}-${n}`, partitions) === partition) ids.push(`${prefix}-${n}`);
  return ids;
}
