import { randomUUID } from 'node:crypto';
import { Binary, BSON, type Collection } from 'mongodb';
import type { CountedSubject } from '../domain/audienceReports';
import { nextVersion, type ProfileDoc, type RecentEvent, type SegmentSubject } from '../domain/profile';
import type { SubjectNeeds } from '../domain/segmentRules';
import { COLLECTIONS, deleteByIds, forEachConcurrently, insertKeyed, type Store } from './db';
import { BoundedCache } from './keyedSequence';
import { VersionClaims } from './versionClaims';

/**
 * As stored: the keys the store looks documents up by, and the content as one BSON-encoded binary
 * value — FerretDB turns every nested field into typed jsonb, which made writing a profile version
 * cost several times what the same bytes cost as one value (see store/deflatedBson). Nothing filters on
 * profile content inside the store: segments and insights evaluate it in the application.
 */
export interface StoredProfile {
  _id: string;
  profileId: string;
  version: number;
  /** The write group (one partition fold) that inserted it: superseded versions leave a group at a time. */
  group: string;
  /** The slice of its group naming it (absent on versions written before): an erasure pulls it out there. */
  slice?: string;
  body: Binary;
}

/**
 * The versions one write put in a write group, recorded just before them: compaction learns a
 * group's members here. FerretDB applies a projection only after reading whole documents, so asking
 * the versions themselves read every superseded profile once more (in a `bench:ingest` drain, half
 * of the 7.3 s PostgreSQL spent reading write groups; the delete's own read is the other half).
 * Written first, a slice never misses a version. It names one its write never made only when the
 * write was interrupted (harmless to compaction: it is not found); versions refused because another
 * writer made them are taken out again.
 */
interface GroupSlice {
  _id: string;
  group: string;
  versions: SliceEntry[];
}

type SliceEntry = Pick<StoredProfile, '_id' | 'profileId' | 'version'>;

/** A version as its slice names it: `$pullAll` matches entries whole, fields in this order. */
function sliceEntry({ _id, profileId, version }: SliceEntry): SliceEntry {
  return { _id, profileId, version };
}

/** What a write group holds (see ProfileStore.tally). */
export interface GroupTally {
  /** Its versions in the store. */
  written: number;
  /** Per write group, how many of the versions this group's versions replaced it holds. */
  replaced: Map<string, number>;
  /** Empty versions of expired documents among its versions, and when the last of them expired. */
  expired: number;
  expiredAt?: Date;
}

/** A profile document version as read back, with the write group it came in. */
export type StoredVersion = Readonly<ProfileDoc> & { readonly group: string };

export function encodeProfile(doc: ProfileDoc & { group?: string }, group: string, slice?: string): StoredProfile {
  const { _id, profileId, version, group: _previousGroup, ...body } = doc;
  return { _id, profileId, version, group, ...(slice && { slice }), body: new Binary(BSON.serialize(body)) };
}

export function decodeProfile(stored: StoredProfile): StoredVersion {
  const body = BSON.deserialize(stored.body.buffer) as Omit<ProfileDoc, '_id' | 'profileId' | 'version'>;
  return { _id: stored._id, profileId: stored.profileId, version: stored.version, ...body, group: stored.group };
}

const { parseToElements, ByteUtils, NumberUtils } = BSON.onDemand;

/** The top-level elements of a BSON document, by name. */
function elements(bytes: Uint8Array, offset = 0): Map<string, [type: number, offset: number, length: number]> {
  const found = new Map<string, [number, number, number]>();
  for (const [type, nameOffset, nameLength, at, length] of parseToElements(bytes, offset)) {
    found.set(ByteUtils.toUTF8(bytes, nameOffset, nameOffset + nameLength, false), [type, at, length]);
  }
  return found;
}

/** A document's top-level elements of the expected types, and a whole decode of one of them. */
function topLevel(bytes: Uint8Array) {
  const top = elements(bytes);
  const sub = (name: string, types: number[]) => {
    const element = top.get(name);
    return element && types.includes(element[0]) ? element : null;
  };
  const decode = <T>(element: [number, number, number] | null, empty: T): T => (element ? (BSON.deserialize(bytes.subarray(element[1], element[1] + element[2]), { promoteValues: true }) as T) : empty);
  return { sub, decode };
}

const BSON_DOCUMENT = 3;
const BSON_ARRAY = 4;
const BSON_BOOLEAN = 8;
const BSON_DATE = 9;

/** What a batch run needs of a document besides the rules' fields: whether it is split, linked, or a part. */
export type SegmentFields = SegmentSubject & Pick<ProfileDoc, 'linked' | 'ancestors' | 'retired'>;

/**
 * Decodes only what segment rules read (`needs`) of a stored profile — decoding the whole document
 * (trait origins, retry guards, every recent event with its properties) was most of a batch run's
 * own work. Fields not needed are left empty, which rules that do not read them never see.
 */
export function decodeForSegments(stored: StoredProfile, needs: SubjectNeeds): SegmentFields {
  const bytes = stored.body.buffer;
  const { sub, decode } = topLevel(bytes);
  const lastSeen = sub('lastSeen', [BSON_DATE]);
  const view: SegmentFields = {
    identities: needs.identities ? identityTypes(bytes, sub('identities', [BSON_ARRAY])) : [],
    traits: needs.traits ? decode(sub('traits', [BSON_DOCUMENT]), {}) : {},
    consent: needs.consent ? decode(sub('consent', [BSON_DOCUMENT]), null) : null,
    sources: needs.consent ? Object.values(decode<Record<string, string>>(sub('sources', [BSON_ARRAY]), {})) : [],
    lastSeen: new Date(lastSeen ? Number(NumberUtils.getBigInt64LE(bytes, lastSeen[1])) : 0),
    counters: {},
  };
  const linked = sub('linked', [BSON_BOOLEAN]);
  if (linked && bytes[linked[1]] === 1) view.linked = true;
  if (sub('ancestors', [BSON_ARRAY])) view.ancestors = Object.values(decode<Record<string, string>>(sub('ancestors', [BSON_ARRAY]), {}));
  if (sub('retired', [BSON_DOCUMENT])) view.retired = decode(sub('retired', [BSON_DOCUMENT]), undefined);
  const counters = needs.events.size > 0 ? sub('counters', [BSON_DOCUMENT]) : null;
  if (counters) {
    for (const [key, [type, at]] of elements(bytes, counters[1])) {
      const recent = needs.events.get(key);
      if (recent === undefined || type !== BSON_DOCUMENT) continue;
      const fields = elements(bytes, at);
      const pick = (name: string) => {
        const element = fields.get(name);
        return element ? BSON.deserialize(bytes.subarray(element[1], element[1] + element[2])) : undefined;
      };
      const count = fields.get('count');
      // An own property even for a name such as `__proto__`, as a whole decode makes it.
      Object.defineProperty(view.counters, key, { enumerable: true, writable: true, configurable: true, value: {
        count: count ? readNumber(bytes, count) : 0,
        firstSeen: view.lastSeen,
        lastSeen: view.lastSeen,
        days: (pick('days') as Record<string, number> | undefined) ?? {},
        ...(recent && { recent: Object.values((pick('recent') as Record<string, RecentEvent> | undefined) ?? {}) }),
      } });
    }
  }
  return view;
}

/**
 * Decodes only what an audience report counts: traits, each event type's total (not its daily
 * buckets or recent events, most of a document's bytes), identity types, consented purposes and
 * campaign counters.
 */
export function decodeForReports(stored: StoredProfile): CountedSubject {
  const bytes = stored.body.buffer;
  const { sub, decode } = topLevel(bytes);
  const counters: Record<string, { count: number }> = {};
  const counterElements = sub('counters', [BSON_DOCUMENT]);
  if (counterElements) {
    for (const [key, [type, at]] of elements(bytes, counterElements[1])) {
      const count = type === BSON_DOCUMENT ? elements(bytes, at).get('count') : undefined;
      // An own property even for a name such as `__proto__`, as a whole decode makes it.
      if (count) Object.defineProperty(counters, key, { enumerable: true, writable: true, configurable: true, value: { count: readNumber(bytes, count) } });
    }
  }
  return {
    identities: identityTypes(bytes, sub('identities', [BSON_ARRAY])),
    traits: decode(sub('traits', [BSON_DOCUMENT]), {}),
    consent: purposeConsents(bytes, sub('consent', [BSON_DOCUMENT])),
    campaigns: decode(sub('campaigns', [BSON_DOCUMENT]), undefined),
    counters,
  };
}

const BSON_STRING = 2;

function readString(bytes: Uint8Array, [type, at]: [number, number, number]): string | null {
  if (type !== BSON_STRING) return null;
  const length = NumberUtils.getInt32LE(bytes, at);
  return ByteUtils.toUTF8(bytes, at + 4, at + 4 + length - 1, false);
}

/** Identities as rules read them: their types only. */
function identityTypes(bytes: Uint8Array, array: [number, number, number] | null): ProfileDoc['identities'] {
  if (!array) return [];
  const types: ProfileDoc['identities'] = [];
  for (const [, [type, at]] of elements(bytes, array[1])) {
    const field = type === BSON_DOCUMENT ? elements(bytes, at).get('type') : undefined;
    const value = field && readString(bytes, field);
    if (value) types.push({ type: value } as ProfileDoc['identities'][number]);
  }
  return types;
}

/** Consent as rules read it: the TCF purposes consented to. */
function purposeConsents(bytes: Uint8Array, consent: [number, number, number] | null): ProfileDoc['consent'] {
  const tcf = consent && elements(bytes, consent[1]).get('tcf');
  const purposes = tcf && tcf[0] === BSON_DOCUMENT ? elements(bytes, tcf[1]).get('purposeConsents') : undefined;
  if (!purposes || purposes[0] !== BSON_ARRAY) return null;
  const purposeConsents = Object.values(BSON.deserialize(bytes.subarray(purposes[1], purposes[1] + purposes[2]))) as number[];
  return { tcf: { purposeConsents } } as ProfileDoc['consent'];
}

/** What an export reads of a stored profile (domain/destinations `exportFacts`): identities, consent and sources only. */
export function decodeForExport(stored: StoredProfile): Pick<ProfileDoc, 'identities' | 'consent' | 'sources'> {
  const bytes = stored.body.buffer;
  const top = elements(bytes);
  const decode = <T>(name: string, type: number, empty: T): T => {
    const element = top.get(name);
    return element && element[0] === type ? (BSON.deserialize(bytes.subarray(element[1], element[1] + element[2])) as T) : empty;
  };
  return {
    identities: Object.values(decode<Record<string, ProfileDoc['identities'][number]>>('identities', BSON_ARRAY, {})),
    consent: decode<ProfileDoc['consent']>('consent', BSON_DOCUMENT, null),
    sources: Object.values(decode<Record<string, string>>('sources', BSON_ARRAY, {})),
  };
}

/** Only the retired marker of a stored profile (a split or expired document's), without decoding the rest. */
function retiredOf(stored: StoredProfile): ProfileDoc['retired'] {
  const { sub, decode } = topLevel(stored.body.buffer);
  return decode<ProfileDoc['retired']>(sub('retired', [BSON_DOCUMENT]), undefined);
}

/** A BSON number element (int32, int64 or double) as a JS number. */
function readNumber(bytes: Uint8Array, [type, at]: [number, number, number]): number {
  if (type === 16) return NumberUtils.getInt32LE(bytes, at);
  if (type === 18) return Number(NumberUtils.getBigInt64LE(bytes, at));
  return NumberUtils.getFloat64LE(bytes, at);
}

/**
 * Profile documents are stored as versions that are inserted, never updated: on FerretDB an insert
 * costs a fraction of an update (measured: ~17k inserted documents/s against ~500 replaced/s at 1M
 * documents). The newest version is found with one indexed read of the document's versions. A
 * version carries its own retry guard, so inserting it is the whole commit of a fold for that
 * document, and its versioned `_id` makes a second writer of the same version fail instead of
 * overwriting. Superseded versions leave by write group (one indexed delete per group), so nothing
 * is ever deleted one document at a time.
 */
export class ProfileStore {
  readonly profiles: Collection<StoredProfile>;
  private readonly slices: Collection<GroupSlice>;
  private readonly births: Collection<{ _id: string }>;
  private readonly claims: VersionClaims;
  /** The newest version this process has seen of each document, and when (see `cachePoint`). */
  private readonly latest: BoundedCache<string, { version: StoredVersion; at: number }>;
  private clock = 0;

  constructor(store: Store, cacheSize = 100_000) {
    this.profiles = store.db.collection<StoredProfile>(COLLECTIONS.profiles);
    this.slices = store.db.collection<GroupSlice>(COLLECTIONS.profileGroupSlices);
    this.births = store.db.collection<{ _id: string }>(COLLECTIONS.profileBirths);
    this.claims = new VersionClaims(store);
    this.latest = new BoundedCache(cacheSize);
  }

  /**
   * A point in this process's cache: what it learns from now on is newer. A writer that takes a
   * partition over (or back) takes one, and trusts only what its cache learned since: what it knew
   * from before may have been changed by the writer it took over from.
   */
  cachePoint(): number {
    return ++this.clock;
  }

  /**
   * The newest version of a document, or null when it has none. `trustSince` answers from this
   * process's cache what it learned since that point (see cachePoint): only for a writer that
   * knows nobody else has written since. The result is shared with the cache: read it, or change
   * a copy (`nextVersion`), never the result.
   */
  async get(profileId: string, options: { trustSince?: number } = {}): Promise<StoredVersion | null> {
    const cached = this.latest.get(profileId);
    if (cached && options.trustSince !== undefined && cached.at >= options.trustSince) return cached.version;
    const versions = await this.profiles.find({ profileId }).toArray();
    if (versions.length === 0) return null;
    const newest = decodeProfile(versions.reduce((a, b) => (b.version > a.version ? b : a)));
    this.remember(newest);
    return newest;
  }

  private remember(version: StoredVersion): void {
    this.latest.set(version.profileId, { version, at: this.clock });
  }

  /**
   * Records that these documents get their first version now (one keyed insert for all), and
   * returns those that had one before. A writer that takes a document for new without reading it
   * must ask: its first version's id may be free again though the document was made — its first
   * version superseded and compacted away — and inserting it would then succeed, unseen.
   */
  async recordBirths(profileIds: string[]): Promise<Set<string>> {
    const before = await insertKeyed(this.births, profileIds.map((_id) => ({ _id })));
    return new Set([...before].map((index) => profileIds[index]));
  }

  /**
   * Removes documents whole, for their writer's compaction: the birth record, then every version
   * (one indexed delete per document). Write groups' slices may still name the versions: a
   * compaction passes over members that are gone. Returns the versions removed.
   */
  async purgeDocuments(profileIds: string[]): Promise<number> {
    for (const id of profileIds) this.latest.delete(id);
    await deleteByIds(this.births, profileIds);
    let removed = 0;
    await forEachConcurrently(profileIds, 8, async (profileId) => {
      removed += (await this.profiles.deleteMany({ profileId })).deletedCount;
    });
    return removed;
  }

  /** Every stored version of a document (one indexed read): what an erasure must find all of. */
  async versions(profileId: string): Promise<StoredVersion[]> {
    return (await this.profiles.find({ profileId }).toArray()).map(decodeProfile);
  }

  /** Loads many documents, a bounded number of reads in flight at once. */
  async load(profileIds: string[], options: { trustSince?: number } = {}, concurrency = 16): Promise<Map<string, StoredVersion>> {
    const found = new Map<string, StoredVersion>();
    await forEachConcurrently(profileIds, concurrency, async (id) => {
      const doc = await this.get(id, options);
      if (doc) found.set(id, doc);
    });
    return found;
  }

  /**
   * Inserts new versions in one write, in write group `group`. A version that already exists means
   * someone else wrote this document since it was read: the write fails, and the retry reads again.
   */
  async saveVersions(docs: ProfileDoc[], group: string): Promise<void> {
    if (docs.length === 0) return;
    const slice = `${group}:${randomUUID()}`;
    await this.slices.insertOne({ _id: slice, group, versions: docs.map(sliceEntry) });
    try {
      await this.profiles.insertMany(docs.map((doc) => encodeProfile(doc, group, slice)), { ordered: false });
    } catch (error) {
      for (const doc of docs) this.latest.delete(doc.profileId);
      // Versions someone else wrote first leave the slice, so that it names no document this write
      // did not make (an erasure finds a slice through the versions that name it).
      const refused = ((error as { writeErrors?: Array<{ index: number }> }).writeErrors ?? []).map(({ index }) => sliceEntry(docs[index]));
      if (refused.length > 0) await this.pullFromSlice(slice, refused);
      throw error;
    }
    for (const doc of docs) this.remember({ ...doc, group });
  }

  /**
   * Hands every stored version to `take`, a batch at a time, through one cursor. The next batch is
   * asked for before the current one is handed over, so the store reads it while the caller works
   * (a plain cursor asks only once the caller is done).
   */
  async scan(take: (batch: StoredProfile[]) => void, batchSize = 1000): Promise<void> {
    const cursor = this.profiles.find({}, { batchSize });
    try {
      let more = cursor.hasNext();
      while (await more) {
        const batch = cursor.readBufferedDocuments();
        more = cursor.hasNext();
        take(batch);
      }
    } finally {
      await cursor.close();
    }
  }

  /**
   * Removes every version of the documents, for an erasure. Their names leave the slices holding them
   * first (so a retry still finds those slices through the versions), each slice in one `$pullAll` of
   * exact entries: a condition in `$pull` is ignored by FerretDB 1.24. A version names its slice, so
   * this reads no slice, however large its group; only for versions written before that are the
   * slices of their groups read. Returns the versions removed.
   */
  async removeDocuments(profileIds: string[], concurrency = 8): Promise<number> {
    const named = new Map<string, SliceEntry[]>();
    const unsliced = new Set<string>();
    await forEachConcurrently(profileIds, concurrency, async (profileId) => {
      for (const version of await this.profiles.find({ profileId }, { projection: { _id: 1, profileId: 1, version: 1, group: 1, slice: 1 } }).toArray()) {
        if (version.slice) named.set(version.slice, [...(named.get(version.slice) ?? []), sliceEntry(version)]);
        else unsliced.add(version.group);
      }
    });
    const erased = new Set(profileIds);
    await forEachConcurrently([...unsliced], concurrency, async (group) => {
      for (const slice of await this.slices.find({ group }).toArray()) {
        const entries = slice.versions.filter((version) => erased.has(version.profileId));
        if (entries.length > 0) named.set(slice._id, [...(named.get(slice._id) ?? []), ...entries]);
      }
    });
    await forEachConcurrently([...named], concurrency, ([slice, entries]) => this.pullFromSlice(slice, entries));
    let removed = 0;
    await forEachConcurrently(profileIds, concurrency, async (profileId) => {
      this.latest.delete(profileId);
      const { deletedCount } = await this.profiles.deleteMany({ profileId });
      await this.births.deleteOne({ _id: profileId });
      removed += deletedCount;
    });
    return removed;
  }

  /**
   * A document an unlink split, without one person's share, for their erasure: its versions before
   * the split (every side's data, each side's living on in its part) removed, and its marker — which
   * still sends the other sides' late events to their parts — kept without that person's keys, as a
   * new version: a writer holding the old one in its cache fails to write over it, and reads again.
   * Returns the versions removed or written; a repeat finds nothing left to do.
   */
  async eraseKeysFromSplit(profileId: string, keys: ReadonlySet<string>): Promise<number> {
    this.latest.delete(profileId);
    const stored = await this.profiles.find({ profileId }).toArray();
    if (stored.length === 0) return 0;
    let newest = stored.reduce((a, b) => (b.version > a.version ? b : a));
    const marker = decodeProfile(newest);
    if (!marker.retired || marker.retired.expired) return 0;
    let touched = 0;
    if (Object.keys(marker.retired.keys).some((key) => keys.has(key))) {
      const { group: _group, ...doc } = marker;
      const next = nextVersion(doc);
      next.retired = { ...marker.retired, keys: Object.fromEntries(Object.entries(marker.retired.keys).filter(([key]) => !keys.has(key))) };
      // Refused when a writer wrote the next version first: the retry reads that one.
      newest = encodeProfile(next, newest.group, newest.slice);
      await this.profiles.insertOne(newest);
      this.latest.delete(profileId);
      touched++;
    }
    touched += await deleteByIds(this.profiles, stored.filter((version) => version._id !== newest._id).map((version) => version._id));
    return touched;
  }

  /**
   * Erasures of documents sharing a slice pull from it at once. On FerretDB an update reads the
   * document and writes it back whole, so the later pull would put back what the earlier took out:
   * there each pull is made under a claim of the slice, after any other's.
   */
  private async pullFromSlice(slice: string, entries: SliceEntry[]): Promise<void> {
    await this.claims.exclusive(`${COLLECTIONS.profileGroupSlices}/${slice}`, () => this.slices.updateOne({ _id: slice }, { $pullAll: { versions: entries } }));
  }

  /**
   * What a write group holds, for a writer settling a write whose counts were never saved (it was
   * interrupted): of its `members` (by default all its slices name), those in the store, the group
   * of the version each replaced (its version before, when still stored: a compaction may have
   * deleted it, and an older one was replaced before), and its expired documents' empty versions.
   * One indexed read of the group's slices, and one per document: paid only after an interruption.
   */
  async tally(group: string, members?: SliceEntry[]): Promise<GroupTally> {
    const named = new Map<string, Set<string>>();
    for (const member of members ?? (await this.groupMembers(group))) named.set(member.profileId, (named.get(member.profileId) ?? new Set()).add(member._id));
    const tally: GroupTally = { written: 0, replaced: new Map(), expired: 0 };
    await forEachConcurrently([...named], 16, async ([profileId, ids]) => {
      const versions = await this.profiles.find({ profileId }).toArray();
      for (const version of versions.filter((stored) => stored.group === group && ids.has(stored._id))) {
        tally.written++;
        const previous = versions.find((stored) => stored.version === version.version - 1);
        if (previous) tally.replaced.set(previous.group, (tally.replaced.get(previous.group) ?? 0) + 1);
        const expiredAt = retiredOf(version)?.expired?.at;
        if (!expiredAt) continue;
        tally.expired++;
        if (!tally.expiredAt || tally.expiredAt < expiredAt) tally.expiredAt = expiredAt;
      }
    });
    return tally;
  }

  /**
   * The versions a write group holds, without their content: from its slices (a superset), or for
   * a group written before slices were kept, from the versions themselves.
   */
  async groupMembers(group: string): Promise<Array<Pick<StoredProfile, '_id' | 'profileId' | 'version'>>> {
    const slices = await this.slices.find({ group }).toArray();
    if (slices.length > 0) return slices.flatMap((slice) => slice.versions);
    return this.profiles.find({ group }, { projection: { _id: 1, profileId: 1, version: 1 } }).toArray();
  }

  /**
   * Removes the listed versions of a write group (one delete, indexed by the group), then its
   * slices; the caller has made sure none of them is newest. A version written into the group after
   * the caller listed it stays. Interrupted between the two, a retry finds the slices and no versions.
   */
  async dropGroup(group: string, versionIds: string[]): Promise<number> {
    const removed = versionIds.length === 0 ? 0 : (await this.profiles.deleteMany({ group, _id: { $in: versionIds } })).deletedCount;
    await this.slices.deleteMany({ group });
    return removed;
  }
}
