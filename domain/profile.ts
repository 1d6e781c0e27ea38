import { hash } from 'node:crypto';
import { cloneData } from './cloneData';
import { gppDecides, profilingRefusal, unitedRestrictions, type StoredConsent, type StoredGpp } from './consent';
import type { StoredEvent } from './event';
import { decodeFieldName, decodeKeys, encodeFieldName, setOwn } from './fieldNames';
import { identityKey, type Identity } from './identity';
import type { RetiredMarker } from './identitySplit';
import type { ConsentPolicy, Party, ProfileView } from './schemas';
import { compareText } from './text';

/** Days of per-type behaviour kept on a profile: segment windows ("≥ 2 purchases in 30 days") read them. */
export const BEHAVIOUR_DAYS = 90;

/**
 * Per event type, the newest events kept with their properties, for segment rules that filter on
 * properties ("a purchase with category shoes in 30 days"): at most RECENT_EVENTS_KEPT events, within
 * BEHAVIOUR_DAYS of the type's last event, each with at most RECENT_PROPERTIES_KEPT properties (see
 * keptProperties). A filtered count therefore counts among these events only.
 */
export const RECENT_EVENTS_KEPT = 32;
export const RECENT_PROPERTIES_KEPT = 16;

/**
 * A document's limits, so that it stays well within the 16 MB the store holds in one document
 * however its events are made (a trait name with a time in it, an event type per page): past them,
 * what would grow it is counted in `limited` instead of kept.
 * - Event types counted: the first EVENT_TYPES_KEPT to come. An event of a type past them is
 *   applied (identities, traits, consent) but not counted, so the types a profile has long held stay.
 * - The bytes of its traits (names, values as UTF-8, origins; see traitBytes): a new trait, or a
 *   larger value for one it holds, that would pass them is not kept.
 * - The bytes of one recent event's properties: `item` (what recommendations read) first, then
 *   the others smallest first, each that fits.
 * The first two are safety valves far above what a profile holds; past one, what stays depends on
 * the order events were folded in (a late event, or a rebuild after an unlink, may keep others).
 * Worst case under 12 MB a document: ~1 MB of traits (~4 MB as stored, with their origins) and 150 × ~50 KB of counters.
 */
export const TRAIT_BYTES_KEPT = 1024 * 1024;
export const EVENT_TYPES_KEPT = 150;
export const RECENT_PROPERTY_BYTES = 1536;
/** The property an event names its item by (see domain/recommendations). */
export const ITEM_PROPERTY = 'item';

export interface RecentEvent {
  at: Date;
  properties: Record<string, unknown>;
}

export interface EventCounter {
  count: number;
  firstSeen: Date;
  lastSeen: Date;
  /** Events per UTC day (`YYYYMMDD`), back to the day BEHAVIOUR_DAYS + 1 days before `lastSeen` (see BEHAVIOUR_REACH_MS). */
  days: Record<string, number>;
  /** Newest first. Absent on documents written before properties were kept. */
  recent?: RecentEvent[];
}

/** Event types a campaign's response is counted from (`properties.campaign`), and the figure each adds to. */
export const CAMPAIGN_EVENT_FIELDS = { impression: 'impressions', click: 'clicks', conversion: 'conversions' } as const;
/** Campaigns kept per document, the most recently seen: the oldest campaign leaves first. */
export const CAMPAIGNS_KEPT = 100;
const CAMPAIGN_NAME_MAX = 200;
/** A conversion's `properties.value` beyond this (either way) is no order's: not counted, so sums stay finite. */
export const CAMPAIGN_VALUE_MAX = 1e12;

/** One campaign's response on a profile: its impressions, clicks and conversions (with their `properties.value`). */
export interface CampaignCounter {
  impressions: number;
  clicks: number;
  conversions: number;
  value: number;
  lastSeen: Date;
}

export interface IdentityEntry extends Identity {
  firstSeen: Date;
  lastSeen: Date;
  /** The source that first reported it. */
  sourceId: string;
}

/** Where a trait's value came from: it decides which value wins (see `outranks`). */
export interface TraitOrigin {
  at: Date;
  sourceId: string;
  party: Party;
}

/**
 * A document's consent: per kind of signal — the TCF statement, each GPP US opt-out, each explicit
 * purpose flag — the newest the person gave, `since` dating each (see consentAfter); `sourceId` and
 * `at` name the newest signal. A merged profile's consent carries no `since` (see mostRestrictiveConsent).
 */
export type ProfileConsent = StoredConsent & { sourceId: string; at: Date; since?: ConsentSince };

/** When each kind of a document's consent was set. Absent on documents folded before kinds were dated: each kind there dates from `at`. */
export interface ConsentSince {
  /** The TCF statement: a TC string, or `tcfPending`. */
  tcf?: Date;
  /** The newest word that the GDPR does not apply (`tcfNotApplicable`): it ends a `tcfPending` older than it. */
  notApplicable?: Date;
  /** The GPP string kept for reference (the newest deciding one). */
  gpp?: Date;
  /** Each GPP opt-out field and `gpc`. */
  gppFields?: Partial<Record<'saleOptOut' | 'sharingOptOut' | 'targetedAdvertisingOptOut' | 'gpc', Date>>;
  /** Global Privacy Control as a browser sent it (`gpc`). */
  gpc?: Date;
  purposes?: Record<string, Date>;
}

/**
 * One stored profile document. Versions are never updated, only added: `_id` is
 * `<profileId>@<version>` and the newest version is the document (see store/profiles). A person may
 * be several such documents joined by identity links — the profile the API shows is their
 * combination (`combineProfiles`). Trait names and event types are encoded keys (see fieldNames).
 */
export interface ProfileDoc {
  _id: string;
  profileId: string;
  version: number;
  identities: IdentityEntry[];
  traits: Record<string, unknown>;
  traitOrigins: Record<string, TraitOrigin>;
  counters: Record<string, EventCounter>;
  /** Per campaign (encoded name), the response to it; absent until a campaign event is folded. */
  campaigns?: Record<string, CampaignCounter>;
  consent: ProfileConsent | null;
  sources: string[];
  /** Per source, the last log chunk whose events are already in this document: the retry guard. */
  applied: Record<string, number>;
  /**
   * The ids of the newest events folded into this document as tokens (see eventIdToken), oldest
   * first: an event repeating one of the newest EVENT_IDS_KEPT is dropped. The tracking channels
   * acknowledge before any event id is claimed, so this is where a client's retry of an
   * acknowledged batch stops. The newest few wait in `recentEventIdsTail` (see `remember`); older
   * ones past EVENT_IDS_KEPT of both may still stand at the start here, and count as forgotten.
   * Absent until an event is folded.
   */
  recentEventIds?: string;
  /** The newest event ids, fewer than TAIL_TOKENS tokens, not yet joined to `recentEventIds`. */
  recentEventIdsTail?: string;
  /** Set when an unlink split the document: it is empty, and its parts hold its content. */
  retired?: RetiredMarker;
  /** For a part of a split document: the split documents it descends from, nearest first (links made to them may reach it). */
  ancestors?: string[];
  /** Set once a link joins it to another document: its segments are evaluated over its whole profile. */
  linked?: boolean;
  /** What the document's limits kept out (see TRAIT_BYTES_KEPT): trait values not kept, events of types not counted. */
  limited?: Limited;
  firstSeen: Date;
  lastSeen: Date;
  createdAt: Date;
  updatedAt: Date;
}

export interface Limited {
  traits?: number;
  eventTypes?: number;
}

/** The fields of a log event that profile application reads. */
export type ProfileEvent = Pick<StoredEvent, 'id' | 'type' | 'timestamp' | 'identities' | 'traits' | 'properties' | 'consent' | 'consentOnly'>;

/** What segment rules read: one document, or a person's documents combined (`combineDocuments`). Keys encoded. */
export type SegmentSubject = Pick<ProfileDoc, 'identities' | 'traits' | 'counters' | 'consent' | 'lastSeen' | 'sources'> & {
  /** The person opted out of profiling ("do not sell or share"): no rule places them in a segment. */
  optOut?: boolean;
};

/** Which source (and its party) an event came from, and the log chunk that held it. */
export interface EventOrigin {
  sourceId: string;
  party: Party;
  seq: number;
}

/** `seenAt` is the time of the event that creates the profile; `now` is when it is written. */
export function newProfile(id: string, now: Date, seenAt: Date): ProfileDoc {
  return {
    _id: profileVersionId(id, 0),
    profileId: id,
    version: 0,
    identities: [],
    traits: {},
    traitOrigins: {},
    counters: {},
    consent: null,
    sources: [],
    applied: {},
    firstSeen: seenAt,
    lastSeen: seenAt,
    createdAt: now,
    updatedAt: now,
  };
}

/** Whether a profile's stored retry guard (`applied`) already covers this chunk of this source. */
export function hasApplied(applied: ProfileDoc['applied'], sourceId: string, chunkSeq: number): boolean {
  const last = applied[sourceId];
  return last !== undefined && chunkSeq <= last;
}

export function profileVersionId(profileId: string, version: number): string {
  return `${profileId}@${version.toString().padStart(8, '0')}`;
}

/** The next version of a profile: the same content under the next `_id`, to be changed and inserted. */
export function nextVersion(profile: Readonly<ProfileDoc>): ProfileDoc {
  const next = {} as ProfileDoc;
  for (const key of Object.keys(profile) as Array<keyof ProfileDoc>) {
    if (key === 'counters') next.counters = copyCounters(profile.counters);
    else (next as unknown as Record<string, unknown>)[key] = cloneData(profile[key]);
  }
  next.version = profile.version + 1;
  next._id = profileVersionId(profile.profileId, next.version);
  return next;
}

/**
 * Counters copied for a new version, sharing their recent events: those are only ever added, dropped
 * and reordered, never changed in place, and they are most of a profile's objects (copying them was
 * most of a fold's copying and of the garbage it left).
 */
function copyCounters(counters: Readonly<Record<string, EventCounter>>): Record<string, EventCounter> {
  const copies: Record<string, EventCounter> = {};
  for (const key of Object.keys(counters)) {
    const counter = counters[key];
    const copy = {} as Record<string, unknown>;
    for (const field of Object.keys(counter) as Array<keyof EventCounter>) copy[field] = field === 'recent' && counter.recent ? [...counter.recent] : cloneData(counter[field]);
    setOwn(copies, key, copy as unknown as EventCounter);
  }
  return copies;
}

const PARTY_RANK: Record<Party, number> = { first: 3, second: 2, third: 1 };

/**
 * Trait precedence, the same for one document and for a merge: first party over second over third;
 * within a party the newer value; then a fixed order of sources and values, so the outcome never
 * depends on the order events or documents are seen in.
 */
export function outranks(a: TraitOrigin, aValue: unknown, b: TraitOrigin, bValue: unknown): boolean {
  if (PARTY_RANK[a.party] !== PARTY_RANK[b.party]) return PARTY_RANK[a.party] > PARTY_RANK[b.party];
  if (a.at.getTime() !== b.at.getTime()) return a.at > b.at;
  if (a.sourceId !== b.sourceId) return a.sourceId > b.sourceId;
  return JSON.stringify(aValue) > JSON.stringify(bValue);
}

export const DAY_MS = 86_400_000;
/**
 * How far back from a type's last event its daily buckets and recent events reach: the longest
 * window a rule may name (BEHAVIOUR_DAYS) counts every UTC day it touches (domain/segmentRules
 * EvaluationTime.firstDay), BEHAVIOUR_DAYS + 1 of them, and each must still be there — also when
 * the last event is stamped up to a day ahead of the clock the window is read by (collection
 * accepts that much: a source sending local time as UTC).
 */
const BEHAVIOUR_REACH_MS = (BEHAVIOUR_DAYS + 1) * DAY_MS;
const twoDigits = (n: number) => (n < 10 ? `0${n}` : String(n));

/** The UTC day as `YYYYMMDD` (every fold counts each event under one; built from fields, not an ISO string). */
export function dayKey(at: Date): string {
  const year = at.getUTCFullYear();
  if (year < 1000 || year > 9999) return at.toISOString().slice(0, 10).replace(/-/g, '');
  return `${year}${twoDigits(at.getUTCMonth() + 1)}${twoDigits(at.getUTCDate())}`;
}

/** Drops daily buckets and recent events of days before the one BEHAVIOUR_REACH_MS before `lastSeen`. */
function pruneDays(counter: EventCounter): void {
  const oldestMs = Math.floor((counter.lastSeen.getTime() - BEHAVIOUR_REACH_MS) / DAY_MS) * DAY_MS;
  const oldest = dayKey(new Date(oldestMs));
  for (const day of Object.keys(counter.days)) if (day < oldest) delete counter.days[day];
  // At or after the oldest day's midnight is that day or later: no day key per event needed.
  if (counter.recent) counter.recent = counter.recent.filter((event) => event.at.getTime() >= oldestMs);
}

/**
 * The order of recent events: newest first, ties by their properties, so it never depends on arrival.
 * Two events alike in both are equal (0): a list holding them is in order, so a fold inserts into it
 * rather than sorting it again with every event.
 */
function recentOrder(x: RecentEvent, y: RecentEvent): number {
  const byTime = y.at.getTime() - x.at.getTime();
  if (byTime !== 0) return byTime;
  const [a, b] = [JSON.stringify(x.properties), JSON.stringify(y.properties)];
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Newest first, ties in a fixed order, at most RECENT_EVENTS_KEPT: the same whatever order events came in. */
function mergeRecent(a: RecentEvent[], b: RecentEvent[]): RecentEvent[] {
  return [...a, ...b].sort(recentOrder).slice(0, RECENT_EVENTS_KEPT);
}

/**
 * Adds one event to a counter's recent events, as mergeRecent would. A list in order (as folds keep
 * it) takes the event in its place, in place: most events of a busy type are older than all it
 * keeps and change nothing, and their properties are then never picked.
 */
function addRecent(counter: EventCounter, at: Date, properties: Record<string, unknown> | undefined): void {
  const recent = counter.recent ?? [];
  if (!isOrdered(recent)) {
    counter.recent = mergeRecent(recent, [{ at, properties: keptProperties(properties) }]);
    return;
  }
  const full = recent.length >= RECENT_EVENTS_KEPT;
  // Older than the oldest kept of a full list: it would go last and fall off (ties need its properties).
  if (full && at.getTime() < recent[recent.length - 1].at.getTime()) return;
  const event = { at, properties: keptProperties(properties) };
  const place = recent.findIndex((kept) => recentOrder(event, kept) < 0);
  if (place === -1) {
    if (!full) recent.push(event);
  } else {
    recent.splice(place, 0, event);
    if (recent.length > RECENT_EVENTS_KEPT) recent.length = RECENT_EVENTS_KEPT;
  }
  counter.recent = recent;
}

/**
 * Whether a list is newest first. Ties need no check: every list was sorted or built in place with
 * recentOrder, and events alike in time and properties are interchangeable, so comparing their
 * properties again with every event would only cost.
 */
function isOrdered(events: RecentEvent[]): boolean {
  for (let i = 1; i < events.length; i++) if (events[i - 1].at.getTime() < events[i].at.getTime()) return false;
  return true;
}

/**
 * Up to RECENT_PROPERTIES_KEPT properties within RECENT_PROPERTY_BYTES: `item` first, then the
 * others smallest first (ties by name), each that fits with those before it.
 */
function keptProperties(properties: Record<string, unknown> | undefined): Record<string, unknown> {
  if (!properties) return {};
  const sized = Object.keys(properties).map((name) => ({ name, bytes: Buffer.byteLength(name) + valueBytes(properties[name]) }));
  sized.sort((a, b) => Number(b.name === ITEM_PROPERTY) - Number(a.name === ITEM_PROPERTY) || a.bytes - b.bytes || compareText(a.name, b.name));
  const kept: Record<string, unknown> = {};
  let left = RECENT_PROPERTY_BYTES;
  let count = 0;
  for (const { name, bytes } of sized) {
    if (bytes > left) continue;
    setOwn(kept, name, properties[name]);
    left -= bytes;
    if (++count === RECENT_PROPERTIES_KEPT) break;
  }
  return kept;
}

/** About the bytes a flat value (a trait's or property's) takes as BSON: strings as UTF-8. */
function valueBytes(value: unknown): number {
  if (typeof value === 'string') return Buffer.byteLength(value) + 6;
  if (Array.isArray(value)) return value.reduce((sum: number, item) => sum + 4 + valueBytes(item), 5);
  return 9;
}

/** A trait's share of a document: its name twice (value and origin), its value, and its origin. */
function traitBytes(name: string, value: unknown): number {
  return 2 * Buffer.byteLength(name) + valueBytes(value) + 64;
}

/** The trait bytes of a traits record, kept per record object while a fold changes it (every change goes through setTrait). */
const traitBytesOf = new WeakMap<object, number>();

function traitBytesHeld(traits: Record<string, unknown>): number {
  let bytes = traitBytesOf.get(traits);
  if (bytes === undefined) {
    bytes = 0;
    for (const name of Object.keys(traits)) bytes += traitBytes(name, traits[name]);
    traitBytesOf.set(traits, bytes);
  }
  return bytes;
}

function countLimited(profile: Pick<ProfileDoc, 'limited'>, what: keyof Limited): void {
  profile.limited ??= {};
  profile.limited[what] = (profile.limited[what] ?? 0) + 1;
}

/** Whether a document counts events of a type: it holds it, or holds fewer than EVENT_TYPES_KEPT. */
function keepsType(profile: ProfileDoc, type: string): boolean {
  return Object.hasOwn(profile.counters, type) || Object.keys(profile.counters).length < EVENT_TYPES_KEPT;
}

/** Whether a trait's new value keeps the document within TRAIT_BYTES_KEPT (it is then counted as held); else counted as limited. */
function fitsTraitBytes(profile: Pick<ProfileDoc, 'traits' | 'limited'>, name: string, value: unknown, replaces: boolean): boolean {
  const held = traitBytesHeld(profile.traits);
  const grows = traitBytes(name, value) - (replaces ? traitBytes(name, profile.traits[name]) : 0);
  if (grows > 0 && held + grows > TRAIT_BYTES_KEPT) {
    countLimited(profile, 'traits');
    return false;
  }
  traitBytesOf.set(profile.traits, held + grows);
  return true;
}

function addToCounter(counters: Record<string, EventCounter>, key: string, add: EventCounter): void {
  // Own properties only: a name like `constructor` must not find Object's built-ins.
  const counter = Object.hasOwn(counters, key) ? counters[key] : undefined;
  if (!counter) {
    setOwn(counters, key, { count: add.count, firstSeen: add.firstSeen, lastSeen: add.lastSeen, days: { ...add.days }, recent: [...(add.recent ?? [])] });
    return;
  }
  counter.count += add.count;
  counter.recent = mergeRecent(counter.recent ?? [], add.recent ?? []);
  addDays(counter, add);
}

/** Counts one event of a type: addToCounter for a single event, without building a counter for it. */
function countEvent(counters: Record<string, EventCounter>, key: string, at: Date, properties: Record<string, unknown> | undefined): void {
  const counter = Object.hasOwn(counters, key) ? counters[key] : undefined;
  const day = dayKey(at);
  if (!counter) {
    const days: Record<string, number> = {};
    days[day] = 1;
    setOwn(counters, key, { count: 1, firstSeen: at, lastSeen: at, days, recent: [{ at, properties: keptProperties(properties) }] });
    return;
  }
  counter.count += 1;
  addRecent(counter, at, properties);
  const prune = widenSpan(counter, at, at);
  counter.days[day] = (counter.days[day] ?? 0) + 1;
  if (prune) pruneDays(counter);
}

/** Adds daily counts and the span they cover to a counter, dropping what falls out of its window. */
function addDays(counter: EventCounter, add: Pick<EventCounter, 'firstSeen' | 'lastSeen' | 'days'>): void {
  const prune = widenSpan(counter, add.firstSeen, add.lastSeen);
  for (const [day, count] of Object.entries(add.days)) counter.days[day] = (counter.days[day] ?? 0) + count;
  if (prune) pruneDays(counter);
}

/**
 * Widens a counter's span to cover `firstSeen`..`lastSeen`. True when days may fall out of its
 * window once added: only when the window moves, or when the added span starts before the window.
 */
function widenSpan(counter: EventCounter, firstSeen: Date, lastSeen: Date): boolean {
  if (firstSeen < counter.firstSeen) counter.firstSeen = firstSeen;
  const windowMoved = lastSeen > counter.lastSeen;
  if (windowMoved) counter.lastSeen = lastSeen;
  return windowMoved || firstSeen.getTime() < counter.lastSeen.getTime() - BEHAVIOUR_REACH_MS;
}

function addToCampaign(campaigns: Record<string, CampaignCounter>, key: string, add: CampaignCounter): void {
  const counter = Object.hasOwn(campaigns, key) ? campaigns[key] : undefined;
  if (!counter) {
    setOwn(campaigns, key, { ...add });
    return;
  }
  counter.impressions += add.impressions;
  counter.clicks += add.clicks;
  counter.conversions += add.conversions;
  counter.value += add.value;
  if (add.lastSeen > counter.lastSeen) counter.lastSeen = add.lastSeen;
}

/** Counts an impression, click or conversion of a campaign; past CAMPAIGNS_KEPT the least recently seen campaign leaves. */
function applyCampaign(profile: ProfileDoc, event: ProfileEvent): void {
  const field = Object.hasOwn(CAMPAIGN_EVENT_FIELDS, event.type) ? CAMPAIGN_EVENT_FIELDS[event.type as keyof typeof CAMPAIGN_EVENT_FIELDS] : undefined;
  const campaign = event.properties?.campaign;
  if (!field || typeof campaign !== 'string' || campaign.length === 0 || campaign.length > CAMPAIGN_NAME_MAX) return;
  const stated = field === 'conversions' ? event.properties?.value : undefined;
  const value = typeof stated === 'number' && Math.abs(stated) <= CAMPAIGN_VALUE_MAX ? stated : 0;
  profile.campaigns ??= {};
  addToCampaign(profile.campaigns, encodeFieldName(campaign), { impressions: 0, clicks: 0, conversions: 0, [field]: 1, value, lastSeen: event.timestamp });
  const keys = Object.keys(profile.campaigns);
  if (keys.length <= CAMPAIGNS_KEPT) return;
  const campaigns = profile.campaigns;
  const oldest = keys.reduce((min, key) => (campaigns[key].lastSeen < campaigns[min].lastSeen || (campaigns[key].lastSeen.getTime() === campaigns[min].lastSeen.getTime() && key < min) ? key : min));
  delete campaigns[oldest];
}

/** Adds an identity to a profile's list, or widens the time span of the entry it has. */
export function addIdentityEntry(entries: IdentityEntry[], add: IdentityEntry): void {
  // Type and value compared apart: the same as comparing identity keys, without building one per entry.
  const entry = entries.find((existing) => existing.type === add.type && existing.value === add.value);
  if (!entry) {
    entries.push({ type: add.type, value: add.value, firstSeen: add.firstSeen, lastSeen: add.lastSeen, sourceId: add.sourceId, ...(add.uid2 && { uid2: add.uid2 }), ...(add.digits && { digits: add.digits }) });
    return;
  }
  if (add.uid2 && !entry.uid2) entry.uid2 = add.uid2;
  if (add.digits && !entry.digits) entry.digits = add.digits;
  if (add.firstSeen < entry.firstSeen || (add.firstSeen.getTime() === entry.firstSeen.getTime() && add.sourceId < entry.sourceId)) {
    entry.firstSeen = add.firstSeen;
    entry.sourceId = add.sourceId;
  }
  if (add.lastSeen > entry.lastSeen) entry.lastSeen = add.lastSeen;
}

/**
 * `origin` is kept as the trait's origin when its value wins: a fresh object for each call. `bounded`
 * keeps a document within TRAIT_BYTES_KEPT; a combination of documents is not bounded.
 */
function setTrait(profile: Pick<ProfileDoc, 'traits' | 'traitOrigins' | 'limited'>, name: string, value: unknown, origin: TraitOrigin, bounded = false): void {
  const current = Object.hasOwn(profile.traitOrigins, name) ? profile.traitOrigins[name] : undefined;
  if (current && !outranks(origin, value, current, profile.traits[name])) return;
  if (bounded && !fitsTraitBytes(profile, name, value, current !== undefined)) return;
  setOwn(profile.traits, name, value);
  setOwn(profile.traitOrigins, name, origin);
}

/** Which of two consents is the newer signal: by time, then (for a fold in any order to end alike) by content. */
function newerConsent(a: ProfileConsent | null, b: ProfileConsent): boolean {
  return !a || b.at > a.at || (b.at.getTime() === a.at.getTime() && JSON.stringify(b) > JSON.stringify(a));
}

/** Whether a signal of one kind given at `at` replaces the one dated `since` (content `than`): the newer stands; at the same time, the larger `rank`, so any fold order ends alike. */
function replaces(at: Date, since: Date | undefined, rank: string, than: string): boolean {
  return since === undefined || at > since || (at.getTime() === since.getTime() && rank > than);
}

const GPP_FIELDS = ['saleOptOut', 'sharingOptOut', 'targetedAdvertisingOptOut', 'gpc'] as const;
type GppField = (typeof GPP_FIELDS)[number];

/** When a document's GPP fields were set: each that its (deciding) string holds, and `gpc`, from when that string was. */
function gppFieldsAt(gpp: StoredGpp | undefined, at: Date): Partial<Record<GppField, Date>> {
  const fields: Partial<Record<GppField, Date>> = {};
  if (gpp && gppDecides(gpp)) for (const field of GPP_FIELDS) if (gpp[field] !== undefined || field === 'gpc') fields[field] = at;
  return fields;
}

/** A document's dates, those of one folded before kinds were dated (or before GPP fields were) read from its consent's time. */
function sinceOf(consent: ProfileConsent): ConsentSince {
  if (consent.since) return consent.since.gppFields || !consent.since.gpp ? consent.since : { ...consent.since, gppFields: gppFieldsAt(consent.gpp, consent.since.gpp) };
  const purposes: Record<string, Date> = {};
  for (const flag of Object.keys(consent.purposes ?? {})) setOwn(purposes, flag, consent.at);
  const gpp = consent.gpp && gppDecides(consent.gpp);
  return {
    ...((consent.tcf || consent.tcfPending) && { tcf: consent.at }),
    ...(consent.tcfNotApplicable && { notApplicable: consent.at }),
    ...(gpp && { gpp: consent.at, gppFields: gppFieldsAt(consent.gpp, consent.at) }),
    ...(consent.gpc !== undefined && { gpc: consent.at }),
    purposes,
  };
}

/** The flag the tag and the pixel used to mark a visitor who had not decided (the sources' default purpose flag). */
const FORMER_PENDING_MARK = 'profiling';

/**
 * A document's consent as kinds read it. Before, the tag and the pixel marked a visitor who had not
 * decided with the purpose flag alone set false, and any newer signal replaced a document's whole
 * consent: such a mark, undated, is read as the TCF statement it stood for, so a TC string still ends it.
 */
function undatedAsKinds(consent: ProfileConsent): ProfileConsent {
  if (consent.since || consent.tcf || !consent.purposes) return consent;
  const flags = Object.entries(consent.purposes);
  if (flags.length !== 1 || flags[0][0] !== FORMER_PENDING_MARK || flags[0][1] !== false) return consent;
  const { purposes: _mark, ...rest } = consent;
  return { ...rest, tcfPending: true };
}

/** A TCF statement's rank at a tie: the more restrictive wins — none given yet, then fewer purposes consented; the GDPR not applying last. */
function tcfRank(consent: Pick<StoredConsent, 'tcf' | 'tcfPending'>): string {
  if (consent.tcfPending) return '~';
  if (!consent.tcf) return '';
  return `${String(99 - consent.tcf.purposeConsents.length).padStart(2, '0')}${String(99999 - consent.tcf.vendorConsents.length).padStart(5, '0')}${consent.tcf.tcString}`;
}

/** Whether a consent holds anything a document keeps: a TCF statement, a deciding GPP string, a purpose flag. */
function keepsAnything(signal: StoredConsent): boolean {
  return (
    signal.tcf !== undefined ||
    signal.tcfPending === true ||
    signal.tcfNotApplicable === true ||
    (signal.gpp !== undefined && gppDecides(signal.gpp)) ||
    signal.gpc !== undefined ||
    Object.keys(signal.purposes ?? {}).length > 0
  );
}

/**
 * A document's consent once a signal given at `at` is folded in. Each kind keeps the newest the
 * person gave (a person changing their mind): the TCF statement (a TC string, or none given yet),
 * each GPP opt-out field (and Global Privacy Control), each purpose flag. A signal replaces only what
 * it carries, so a later message holding only purpose flags, or a GPP string without a US section,
 * leaves a TCF withdrawal standing. At a tie the more restrictive wins; `sourceId` and `at` name the
 * newest signal. The same result in any fold order.
 */
export function consentAfter(current: ProfileConsent | null, signal: StoredConsent | undefined, at: Date, sourceId: string): ProfileConsent | null {
  if (!signal || !keepsAnything(signal)) return current;
  const kept = current && undatedAsKinds(current);
  // Copies, not the stored objects: the document read is the previous version's.
  const since: ConsentSince = kept ? { ...sinceOf(kept) } : {};
  const next: ProfileConsent = kept ? { ...kept, since } : { sourceId, at, since };
  // A no-decision mark ended by word that the GDPR does not apply still ranks as the mark it was (only a mark dates `since.tcf` without a TC string).
  const heldRank = next.tcf ? tcfRank(next) : since.tcf ? tcfRank({ tcfPending: true }) : '';
  if ((signal.tcf || signal.tcfPending) && replaces(at, since.tcf, tcfRank(signal), heldRank)) {
    delete next.tcf;
    delete next.tcfPending;
    if (signal.tcf) next.tcf = signal.tcf;
    else next.tcfPending = true;
    since.tcf = at;
  }
  if (signal.tcfNotApplicable && (since.notApplicable === undefined || at > since.notApplicable)) since.notApplicable = at;
  // Word that the GDPR does not apply ends a no-decision mark older than it, never a TC string the person gave (a pixel's
  // `gdpr=0` may be a server's guess). Dated on its own, so whichever order the signals fold in, the outcome is one.
  delete next.tcfNotApplicable;
  if (since.notApplicable && !next.tcf && (!next.tcfPending || since.notApplicable > (since.tcf as Date))) {
    delete next.tcfPending;
    next.tcfNotApplicable = true;
  }
  if (signal.gpp && gppDecides(signal.gpp)) {
    const gpp: StoredGpp = { ...(next.gpp ?? { gppString: '', sectionIds: [] }) };
    const fields = { ...since.gppFields };
    for (const field of GPP_FIELDS) {
      // A deciding string without Global Privacy Control says the browser sent none: gpc follows each string.
      const value = field === 'gpc' ? signal.gpp.gpc === true : signal.gpp[field];
      if (value === undefined || !replaces(at, fields[field], String(value), String(gpp[field] ?? false))) continue;
      if (field === 'gpc' && !value) delete gpp.gpc;
      else (gpp as Record<GppField, boolean | undefined>)[field] = value;
      fields[field] = at;
    }
    if (replaces(at, since.gpp, signal.gpp.gppString, gpp.gppString)) {
      gpp.gppString = signal.gpp.gppString;
      gpp.sectionIds = signal.gpp.sectionIds;
      since.gpp = at;
    }
    next.gpp = gpp;
    since.gppFields = fields;
  }
  if (signal.gpc !== undefined && replaces(at, since.gpc, String(signal.gpc), String(next.gpc ?? false))) {
    next.gpc = signal.gpc;
    since.gpc = at;
  }
  for (const [flag, granted] of Object.entries(signal.purposes ?? {})) {
    const held = next.purposes && Object.hasOwn(next.purposes, flag) ? next.purposes[flag] : undefined;
    if (!replaces(at, since.purposes && Object.hasOwn(since.purposes, flag) ? since.purposes[flag] : undefined, String(!granted), String(!held))) continue;
    next.purposes = { ...next.purposes };
    setOwn(next.purposes, flag, granted);
    since.purposes = { ...since.purposes };
    setOwn(since.purposes, flag, at);
  }
  // Every signal counts toward the newest, changed or not: which source names it must not depend on the order of the fold.
  if (current && (at > current.at || (at.getTime() === current.at.getTime() && sourceId > current.sourceId))) {
    next.sourceId = sourceId;
    next.at = at;
  }
  return next;
}

function applyConsent(profile: ProfileDoc, event: ProfileEvent, origin: EventOrigin): void {
  profile.consent = consentAfter(profile.consent, event.consent, event.timestamp, origin.sourceId);
}

/**
 * Event ids a document remembers: a repeat of one of its newest this many is dropped. A client's
 * retry lands on the document its first attempt did (same identities), within minutes; 500 ids cost
 * a busy document 6 KB.
 */
export const EVENT_IDS_KEPT = 500;
const TOKEN_CHARS = 12;

/** 9 bytes of SHA-256 over source and event id, in base64: 12 characters, collisions out of reach at 500 per document. */
export function eventIdToken(sourceId: string, eventId: string): string {
  // 9 bytes are exactly the first 12 characters of the whole digest's base64.
  return hash('sha256', `${sourceId}\0${eventId}`, 'base64').slice(0, TOKEN_CHARS);
}

/**
 * Tokens that wait in `recentEventIdsTail` before joining `recentEventIds` at once. Adding each to
 * the long string copied all of it per event (~5 µs an event at 500 ids); a short tail is copied
 * instead, and the long string once per this many events.
 */
const TAIL_TOKENS = 32;

/** Whether `token` stands in `text` at a token boundary at or after `from`. */
function holdsToken(text: string, token: string, from: number): boolean {
  for (let at = text.indexOf(token, from); at !== -1; at = text.indexOf(token, at + 1)) if (at % TOKEN_CHARS === 0) return true;
  return false;
}

/** Whether the token is among the document's newest EVENT_IDS_KEPT. */
function remembers(profile: ProfileDoc, token: string): boolean {
  const tail = profile.recentEventIdsTail ?? '';
  if (holdsToken(tail, token, 0)) return true;
  const older = profile.recentEventIds ?? '';
  const forgotten = Math.max(0, (older.length + tail.length) / TOKEN_CHARS - EVENT_IDS_KEPT);
  return holdsToken(older, token, forgotten * TOKEN_CHARS);
}

/** Adds the token as the newest; the tail joins the older ids once full, those past EVENT_IDS_KEPT leaving. */
function remember(profile: ProfileDoc, token: string): void {
  const tail = (profile.recentEventIdsTail ?? '') + token;
  if (tail.length < TAIL_TOKENS * TOKEN_CHARS) {
    profile.recentEventIdsTail = tail;
    return;
  }
  const text = (profile.recentEventIds ?? '') + tail;
  profile.recentEventIds = text.slice(Math.max(0, text.length - EVENT_IDS_KEPT * TOKEN_CHARS));
  profile.recentEventIdsTail = '';
}

/**
 * Folds one event into a profile: identities, counters with daily buckets, traits, consent, sources
 * — or, for a consent-only event (see StoredEvent.consentOnly), its consent alone. Returns false, and
 * changes nothing, for a repeat of an event the document remembers (see `recentEventIds`).
 */
export function applyEvent(profile: ProfileDoc, event: ProfileEvent, origin: EventOrigin): boolean {
  const at = event.timestamp;
  if (event.consentOnly) {
    // A consent signal applied twice changes nothing: no need to remember it.
    applyConsent(profile, event, origin);
    profile.applied[origin.sourceId] = Math.max(profile.applied[origin.sourceId] ?? -1, origin.seq);
    return true;
  }
  const token = eventIdToken(origin.sourceId, event.id);
  if (remembers(profile, token)) return false;
  remember(profile, token);
  for (const identity of event.identities) addIdentityEntry(profile.identities, { ...identity, firstSeen: at, lastSeen: at, sourceId: origin.sourceId });
  const type = encodeFieldName(event.type);
  if (keepsType(profile, type)) countEvent(profile.counters, type, at, event.properties);
  else countLimited(profile, 'eventTypes');
  applyCampaign(profile, event);
  for (const [name, value] of Object.entries(event.traits ?? {})) setTrait(profile, name, value, { at, sourceId: origin.sourceId, party: origin.party }, true);
  applyConsent(profile, event, origin);
  if (!profile.sources.includes(origin.sourceId)) profile.sources.push(origin.sourceId);
  if (at < profile.firstSeen) profile.firstSeen = at;
  if (at > profile.lastSeen) profile.lastSeen = at;
  profile.applied[origin.sourceId] = Math.max(profile.applied[origin.sourceId] ?? -1, origin.seq);
  return true;
}

/**
 * Holds back an event its document's consent refuses (a withdrawal recorded earlier): nothing of it
 * is applied but a consent signal it carries, and its id is remembered, so a retry of it is a repeat
 * — also once consent is given again. Returns false for a repeat, as applyEvent does.
 */
export function holdEvent(profile: ProfileDoc, event: ProfileEvent, origin: EventOrigin): boolean {
  const token = eventIdToken(origin.sourceId, event.id);
  if (remembers(profile, token)) return false;
  remember(profile, token);
  applyConsent(profile, event, origin);
  profile.applied[origin.sourceId] = Math.max(profile.applied[origin.sourceId] ?? -1, origin.seq);
  return true;
}

/**
 * The order events fold in: oldest first; at the same time one carrying a consent signal first (so
 * a withdrawal given with an event holds it, as the more restrictive wins a tie between signals);
 * then by id. Whether an event is held depends on the consent folded before it, so the writers'
 * folds and an unlink's rebuild, each taking events as they come, order them alike.
 */
export function foldOrder(a: Pick<ProfileEvent, 'timestamp' | 'consent' | 'id'>, b: Pick<ProfileEvent, 'timestamp' | 'consent' | 'id'>): number {
  return a.timestamp.getTime() - b.timestamp.getTime() || Number(b.consent !== undefined) - Number(a.consent !== undefined) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** What became of an event folded into a document (see foldEvent). */
export type FoldOutcome = 'applied' | 'opted-out' | 'held' | 'repeat';

/**
 * Folds one event into a document as the writers do — and unlink rebuilds, so a part holds what its
 * document did. A person who opted out gets its consent signal alone. An event is held back (its id
 * and consent signal kept, nothing else) when the document's consent, once the event's own signal is
 * in, refuses it under its source's `policy`: a withdrawal recorded earlier stands until a newer
 * signal of its kind. A document that holds no one and no consent yet takes the event its door let in.
 */
export function foldEvent(profile: ProfileDoc, event: ProfileEvent, origin: EventOrigin, policy: ConsentPolicy, optedOut: boolean): FoldOutcome {
  if (optedOut || event.consentOnly) return applyEvent(profile, { ...event, consentOnly: true }, origin) ? (event.consentOnly ? 'applied' : 'opted-out') : 'repeat';
  // A new document takes the event its door let in; one that holds only consent (a rebuild's part whose first events were consent signals) does not.
  const after = profile.identities.length === 0 && profile.consent === null ? null : consentAfter(profile.consent, event.consent, event.timestamp, origin.sourceId);
  if (after !== null && profilingRefusal(after, policy) !== null) return holdEvent(profile, event, origin) ? 'held' : 'repeat';
  return applyEvent(profile, event, origin) ? 'applied' : 'repeat';
}

const intersect = (a: number[], b: number[]) => a.filter((id) => b.includes(id));

/** A GPP opt-out across documents: recorded when any records it, else declined when any applies. */
function anyOptOut(gpps: StoredGpp[], key: 'saleOptOut' | 'sharingOptOut' | 'targetedAdvertisingOptOut'): boolean | undefined {
  return gpps.some((gpp) => gpp[key] === true) ? true : gpps.some((gpp) => gpp[key] === false) ? false : undefined;
}

/**
 * Across merged documents consent is the most restrictive: a TCF purpose or vendor counts only when
 * every document that carries a TCF signal consents to it, a GPP opt-out stands when any document
 * records it, an explicit purpose flag counts only when no document says no — whichever document's
 * signal is the newest. The newest TC and GPP strings (and the newest signal's source and time) are
 * kept for reference.
 */
export function mostRestrictiveConsent(consents: ProfileConsent[]): ProfileConsent | null {
  if (consents.length === 0) return null;
  const sorted = consents.map(undatedAsKinds).sort((a, b) => (newerConsent(a, b) ? -1 : 1));
  const { since: _dates, ...newestSignal } = sorted[sorted.length - 1];
  const result: ProfileConsent = structuredClone(newestSignal);
  const tcfs = sorted.flatMap((consent) => (consent.tcf ? [consent.tcf] : []));
  // Not decided yet, on the document whose TCF statement is the person's newest: they have not decided. A TC string given since
  // (or word that the GDPR does not apply to them), on any document, ends it.
  const tcfAt = (consent: ProfileConsent) => (consent.since?.tcf ?? consent.at).getTime();
  const notApplicableAt = (consent: ProfileConsent) => (consent.since?.notApplicable ?? consent.at).getTime();
  const newestTc = Math.max(-Infinity, ...sorted.filter((consent) => consent.tcf).map(tcfAt), ...sorted.filter((consent) => consent.tcfNotApplicable).map(notApplicableAt));
  const pending = sorted.some((consent) => consent.tcfPending && tcfAt(consent) >= newestTc);
  delete result.tcf;
  delete result.tcfPending;
  delete result.tcfNotApplicable;
  if (pending) result.tcfPending = true;
  else if (tcfs.length === 0 && sorted.some((consent) => consent.tcfNotApplicable)) result.tcfNotApplicable = true;
  else if (tcfs.length > 0) {
    result.tcf = {
      ...structuredClone(tcfs[tcfs.length - 1]),
      purposeConsents: tcfs.map((tcf) => tcf.purposeConsents).reduce(intersect),
      purposeLegitimateInterests: tcfs.map((tcf) => tcf.purposeLegitimateInterests).reduce(intersect),
      vendorConsents: tcfs.map((tcf) => tcf.vendorConsents).reduce(intersect),
    };
    const restrictions = unitedRestrictions(tcfs.map((tcf) => tcf.restrictions));
    if (restrictions.length > 0) result.tcf.restrictions = restrictions;
    else delete result.tcf.restrictions;
  }
  const gpps = sorted.flatMap((consent) => (consent.gpp ? [consent.gpp] : []));
  if (gpps.length > 0) {
    const { saleOptOut, sharingOptOut, targetedAdvertisingOptOut, gpc, ...newest } = gpps[gpps.length - 1];
    const optOuts = { saleOptOut: anyOptOut(gpps, 'saleOptOut'), sharingOptOut: anyOptOut(gpps, 'sharingOptOut'), targetedAdvertisingOptOut: anyOptOut(gpps, 'targetedAdvertisingOptOut') };
    result.gpp = { ...newest, ...Object.fromEntries(Object.entries(optOuts).filter(([, value]) => value !== undefined)) };
    if (gpps.some((one) => one.gpc)) result.gpp.gpc = true;
  }
  // Global Privacy Control from any document's browser stands, as a GPP opt-out does.
  const gpc = sorted.some((consent) => consent.gpc === true) ? true : sorted.some((consent) => consent.gpc === false) ? false : undefined;
  if (gpc === undefined) delete result.gpc;
  else result.gpc = gpc;
  const flags = sorted.flatMap((consent) => Object.entries(consent.purposes ?? {}));
  if (flags.length > 0) {
    const purposes: Record<string, boolean> = {};
    for (const [name, allowed] of flags) setOwn(purposes, name, (Object.hasOwn(purposes, name) ? purposes[name] : true) && allowed);
    result.purposes = purposes;
  }
  return result;
}

/** A merge recorded in the identity graph: the two documents an identity (or an event) joined. */
export interface ProfileLink {
  profiles: [string, string];
  via: string;
  sourceId: string;
  eventId: string;
  createdAt: Date;
}

/** A person's documents combined, keys still encoded: what segments evaluate and the profile view shows. */
export interface CombinedProfile extends SegmentSubject {
  id: string;
  profileIds: string[];
  traitOrigins: Record<string, TraitOrigin>;
  campaigns: Record<string, CampaignCounter>;
  sources: string[];
  firstSeen: Date;
  updatedAt: Date;
}

/**
 * A person: every document of their connected component combined — counters summed, traits by
 * precedence (`outranks`), consent most restrictive, identities and sources united. Its id is the
 * smallest document id, so every identity of the component finds the same profile. The result does
 * not depend on the order of `docs`.
 */
export function combineDocuments(docs: ReadonlyArray<Readonly<ProfileDoc>>): CombinedProfile {
  if (docs.length === 0) throw new Error('a profile needs at least one document');
  const ordered = [...docs].sort((a, b) => (a.profileId < b.profileId ? -1 : 1));
  const identities: IdentityEntry[] = [];
  const counters: Record<string, EventCounter> = {};
  const traits: Pick<ProfileDoc, 'traits' | 'traitOrigins'> = { traits: {}, traitOrigins: {} };
  const campaigns: Record<string, CampaignCounter> = {};
  const sources = new Set<string>();
  for (const doc of ordered) {
    for (const identity of doc.identities) addIdentityEntry(identities, identity);
    for (const [key, counter] of Object.entries(doc.counters)) addToCounter(counters, key, counter);
    for (const [key, counter] of Object.entries(doc.campaigns ?? {})) addToCampaign(campaigns, key, counter);
    for (const [name, origin] of Object.entries(doc.traitOrigins)) setTrait(traits, name, doc.traits[name], { at: origin.at, sourceId: origin.sourceId, party: origin.party });
    for (const source of doc.sources) sources.add(source);
  }
  const latest = (pick: (doc: Readonly<ProfileDoc>) => Date) => ordered.reduce((max, doc) => (pick(doc) > max ? pick(doc) : max), pick(ordered[0]));
  return {
    id: ordered[0].profileId,
    profileIds: ordered.map((doc) => doc.profileId),
    identities: identities.sort((a, b) => (identityKey(a) < identityKey(b) ? -1 : 1)),
    traits: traits.traits,
    traitOrigins: traits.traitOrigins,
    counters,
    campaigns,
    consent: mostRestrictiveConsent(ordered.flatMap((doc) => (doc.consent ? [doc.consent] : []))),
    sources: [...sources].sort(),
    firstSeen: ordered.reduce((min, doc) => (doc.firstSeen < min ? doc.firstSeen : min), ordered[0].firstSeen),
    lastSeen: latest((doc) => doc.lastSeen),
    updatedAt: latest((doc) => doc.updatedAt),
  };
}

/** The profile as the API shows it: names decoded, times as ISO strings, the merges that made it. */
export function combineProfiles(docs: ReadonlyArray<Readonly<ProfileDoc>>, links: ProfileLink[] = [], segments: string[] = []): ProfileView {
  const person = combineDocuments(docs);
  const iso = (date: Date) => date.toISOString();
  return {
    id: person.id,
    profileIds: person.profileIds,
    identities: person.identities.map((entry) => ({ type: entry.type, value: entry.value, firstSeen: iso(entry.firstSeen), lastSeen: iso(entry.lastSeen), sourceId: entry.sourceId })),
    traits: decodeKeys(person.traits),
    traitOrigins: Object.fromEntries(
      Object.entries(person.traitOrigins).map(([name, origin]) => [decodeFieldName(name), { at: iso(origin.at), sourceId: origin.sourceId, party: origin.party }]),
    ),
    counters: Object.fromEntries(
      Object.entries(person.counters).map(([key, counter]) => [
        decodeFieldName(key),
        { count: counter.count, firstSeen: iso(counter.firstSeen), lastSeen: iso(counter.lastSeen), days: counter.days },
      ]),
    ),
    consent: person.consent && { ...person.consent, at: iso(person.consent.at) },
    sources: person.sources,
    limited: {
      traits: docs.reduce((sum, doc) => sum + (doc.limited?.traits ?? 0), 0),
      eventTypes: docs.reduce((sum, doc) => sum + (doc.limited?.eventTypes ?? 0), 0),
    },
    segments,
    mergeHistory: [...links]
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .map((link) => ({ profiles: link.profiles, via: link.via, sourceId: link.sourceId, eventId: link.eventId, at: iso(link.createdAt) })),
    firstSeen: iso(person.firstSeen),
    lastSeen: iso(person.lastSeen),
    updatedAt: iso(person.updatedAt),
  };
}
