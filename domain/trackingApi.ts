import { z } from 'zod';
import { IDENTITY_TRAITS, zodIssuesToFieldErrors, type FieldError } from './collect';
import { maidProblem, sha256Hex, type InputIdentityType } from './identity';
import { redactContactText } from './contactRedaction';
import { isRecord } from './records';
import { CollectResponseSchema, ConsentInputSchema, type ConsentInput, type EventInput } from './schemas';
import { FLAT_TEXT_MAX, nameText } from './text';

/**
 * The Segment HTTP Tracking API (also RudderStack's): its message types as zod schemas, and the pure
 * mapping of one message to our EventInput, so Segment's and RudderStack's server SDKs send here unchanged.
 */

/** Segment's limits: 32 KB per message, 500 KB per batch request. */
export const MAX_MESSAGE_BYTES = 32 * 1024;
export const MAX_BATCH_BYTES = 500 * 1024;

export const MESSAGE_TYPES = ['track', 'identify', 'page', 'screen', 'alias', 'group'] as const;
export type MessageType = (typeof MESSAGE_TYPES)[number];

// ---- schemas ---------------------------------------------------------------------------------

const Iso = z.iso.datetime({ offset: true }).openapi({ format: 'date-time' });
/** SDKs have long sent numbers as ids too; they are read as strings. */
const Id = z.union([z.string().max(512), z.number().finite()]);
/**
 * A JSON object of any fields, or null: its values are checked once mapped, as the event's
 * (domain/schemas). Only its kind is checked here; a record schema would also visit and copy every
 * entry first. The document states the type itself, which the generator cannot read from a check.
 */
const Fields = z
  .custom<Record<string, unknown>>((value) => isRecord(value), { message: 'Invalid input: expected object' })
  .nullish()
  .openapi({ type: ['object', 'null'], additionalProperties: {} });

const ContextSchema = z
  .looseObject({
    traits: Fields.openapi({
      description: "The user's traits: `email` and `phone` become the identities `email` and `phone` (hashed; never kept as traits), the rest traits",
    }),
    device: z
      .looseObject({
        advertisingId: z.string().nullish().openapi({ description: 'IDFA/GAID: the `maid` identity — unless `adTrackingEnabled` is false, or it is no id (all zeros, not a UUID): then left out, the message kept' }),
        adTrackingEnabled: z.boolean().nullish().openapi({ description: 'false (the user limited ad tracking): the advertising id is not used at all' }),
      })
      .nullish(),
    page: Fields.openapi({ description: 'On page and screen messages: url, path, referrer, search, title become properties' }),
    consent: z
      .looseObject({
        categoryPreferences: z.record(z.string(), z.boolean()).nullish().openapi({
          description:
            'Consent per category, as Segment Consent Management sends it: our consent `purposes`, each name lowercased (`DataSharing` → `data_sharing`). OneTrust\'s `C0004` becomes `c0004`. A name with no Latin letter or digit, or longer than 64 characters once lowercased, ends in 8 hex digits of its SHA-256 instead (`広告` → `category_<hash>`).',
        }),
        tcf: z.string().nullish().openapi({ description: 'An IAB TCF v2 TC string the client read from its CMP' }),
        gpp: z.string().nullish().openapi({ description: 'An IAB GPP string the client read from its CMP' }),
        gppSid: z.unknown().optional().openapi({ description: 'The GPP sections in force, as the CMP said (its `applicableSections`, up to 32 ids from -1 to 255): our consent `gppSid`; anything else is ignored (every section is then read)' }),
      })
      .nullish(),
  })
  .openapi('SegmentContext', { description: 'Other context fields (library, ip, userAgent, …) are accepted and not kept' });

const common = {
  messageId: z.string().min(1).max(128).nullish().openapi({ description: 'The event id: a message sent again with the same id is a duplicate. An email address in it is stored as `(redacted:<digest of the id>)`' }),
  anonymousId: Id.nullish().openapi({ description: 'The `cookie_id` identity' }),
  userId: Id.nullish().openapi({ description: 'The `crm_id` identity (an email address is kept as the hashed email instead)' }),
  timestamp: Iso.nullish().openapi({ description: "When it happened, by the sender's clock" }),
  originalTimestamp: Iso.nullish().openapi({ description: 'Read when `timestamp` is absent' }),
  sentAt: Iso.nullish().openapi({ description: "When it was sent, by the sender's clock: with it, the time is corrected for clock skew: receivedAt − (sentAt − timestamp)" }),
  // A union, not `.nullish()`: the generator documents a named object made nullable as never null.
  context: z.union([ContextSchema, z.null()]).optional(),
};

export const TrackMessageSchema = z
  .looseObject({
    type: z.literal('track'),
    event: nameText(128).openapi({ description: 'The event type, kept as named (`Order Completed`); an email address in it is stored as `(redacted)`' }),
    properties: Fields.openapi({ description: 'Properties; nested objects flattened into dotted names' }),
    ...common,
  })
  .openapi('SegmentTrack');

export const IdentifyMessageSchema = z
  .looseObject({
    type: z.literal('identify'),
    traits: Fields.openapi({ description: 'Traits (over `context.traits`); `email`/`phone` become identities, nested objects flattened into dotted names' }),
    ...common,
  })
  .openapi('SegmentIdentify');

const pageFields = {
  name: z.string().nullish().openapi({ description: 'Kept as the property `name`' }),
  category: z.string().nullish().openapi({ description: 'Kept as the property `category`' }),
  properties: Fields.openapi({ description: 'Properties over those of `context.page`; nested objects flattened into dotted names' }),
  ...common,
};

export const PageMessageSchema = z.looseObject({ type: z.literal('page'), ...pageFields }).openapi('SegmentPage');

export const ScreenMessageSchema = z.looseObject({ type: z.literal('screen'), ...pageFields }).openapi('SegmentScreen');

export const AliasMessageSchema = z
  .looseObject({
    type: z.literal('alias'),
    ...common,
    userId: Id.openapi({ description: 'The `crm_id` identity the person is known by from now on' }),
    previousId: Id.openapi({
      description:
        'The id the person had before. With an `anonymousId` equal to it: their anonymous id (`cookie_id`). With an `anonymousId` that differs — as browser SDKs send an alias after an identify — their earlier user id (a second `crm_id`). With no `anonymousId`, as servers send it: either; the profiles holding it as a `cookie_id` or a `crm_id` are joined, and while no one holds it, it is kept as a `cookie_id`, an email address as its hash (see the Event\'s `previousId`). One alias event holds them all, which joins their profiles',
    }),
    anonymousId: Id.nullish().openapi({ description: 'The cookie id; when it differs from `previousId`, that is the earlier user id' }),
  })
  .openapi('SegmentAlias');

export const GroupMessageSchema = z
  .looseObject({
    type: z.literal('group'),
    groupId: Id.openapi({ description: 'Kept as the trait `group.id`' }),
    traits: Fields.openapi({ description: "The group's traits, kept as traits under `group.` (`group.name`); its `email`/`phone` are dropped" }),
    ...common,
  })
  .openapi('SegmentGroup');

export const SegmentMessageSchema = z.discriminatedUnion('type', [
  TrackMessageSchema,
  IdentifyMessageSchema,
  PageMessageSchema,
  ScreenMessageSchema,
  AliasMessageSchema,
  GroupMessageSchema,
]);
export type SegmentMessage = z.infer<typeof SegmentMessageSchema>;

/** The envelope is checked as a whole (1 to `maxMessages` messages); each message in it is then checked on its own. */
/** As Segment's own: as many messages as fit its 500 KB (`MAX_BATCH_BYTES`), so any batch an SDK sends is taken. */
export function segmentBatchSchema() {
  return z
    .looseObject({
      batch: z.array(z.unknown().openapi({ description: 'A message (SegmentMessage); one that is not is refused in `rejected`, naming its fields' })).min(1),
      sentAt: Iso.nullish().openapi({ description: "Send time by the sender's clock, for messages without their own" }),
      context: Fields.openapi({ description: 'Context for every message; a message\'s own context fields win (objects such as `device` merged one level deep)' }),
    })
    .openapi('SegmentBatch', { description: "Other fields (integrations, …) are accepted and ignored. `writeKey` is the source's write key when no Authorization header names a source (Segment's writeKey authentication)" });
}

export const SegmentResponseSchema = CollectResponseSchema.extend({
  success: z.literal(true).openapi({ description: 'What Segment and RudderStack SDKs look for' }),
}).openapi('SegmentResponse', { description: '`rejected` lists messages not kept, by index in the batch, with the message fields at fault' });
export type SegmentResponse = z.infer<typeof SegmentResponseSchema>;

// ---- mapping ---------------------------------------------------------------------------------

type FlatScalar = string | number | boolean | null;
type FlatValue = FlatScalar | Array<string | number | boolean>;

/** Where each field of the mapped event came from in the message, so errors name the field the sender wrote. */
export type FieldOrigins = Map<string, string>;

export type MappedMessage = { event: EventInput; errors?: undefined } | { errors: FieldError[]; event?: undefined };

/** What a message takes from the request around it. */
export interface MessageEnvelope {
  /** The endpoint's type (`/v1/track`); a batch's messages carry their own. */
  type?: MessageType;
  sentAt?: string | null;
  context?: Record<string, unknown> | null;
  /** The request body's size when known: no message in it is larger, so one within it need not be measured. */
  bodyBytes?: number;
}

/**
 * Flattens nested objects into dotted names (`{address: {city}}` → `address.city`), since our events
 * take flat values only; dots in names are encoded on the way to the store (domain/fieldNames). A list
 * of scalars stays a list; a list of objects becomes one list per field across its elements
 * (`products: [{sku: 'a'}, {sku: 'b'}]` → `products.sku: ['a', 'b']`), so a rule can ask whether it
 * contains a value. Nulls inside lists are dropped; empty objects leave nothing.
 */
export function flattenFields(record: Record<string, unknown>): Map<string, FlatValue> {
  // Most records are flat already: no two names can then meet, and every value stays as it is.
  const entries = Object.entries(record);
  if (entries.every(([, value]) => value === null || typeof value !== 'object')) return new Map(entries as Array<[string, FlatScalar]>);
  const collected = new Map<string, { values: FlatScalar[]; list: boolean }>();
  const visit = (value: unknown, name: string, inList: boolean): void => {
    if (Array.isArray(value)) {
      if (value.length === 0 && !collected.has(name)) collected.set(name, { values: [], list: true });
      for (const element of value) visit(element, name, true);
      return;
    }
    if (isRecord(value)) {
      for (const [key, inner] of Object.entries(value)) visit(inner, name === '' ? key : `${name}.${key}`, inList);
      return;
    }
    const entry = collected.get(name) ?? { values: [], list: false };
    entry.list ||= inList;
    entry.values.push(value as FlatScalar);
    collected.set(name, entry);
  };
  visit(record, '', false);
  const flat = new Map<string, FlatValue>();
  for (const [name, { values, list }] of collected) {
    flat.set(name, list ? values.filter((value): value is string | number | boolean => value !== null) : values[values.length - 1]);
  }
  return flat;
}

/** The longest purpose name a consent holds (schemas ConsentInputSchema). */
const PURPOSE_NAME_MAX = 64;

/**
 * A Segment consent category as one of our purpose names: `DataSharing` → `data_sharing`,
 * `Functional Cookies` → `functional_cookies`. A name with no Latin letter or digit (`広告`), or too
 * long for a purpose, ends in 8 hex digits of the category's SHA-256 (`category_…`, or its first
 * 55 characters and the hash): every category keeps a purpose of its own, and a site's consent
 * never costs it the message.
 */
export function purposeName(category: string): string {
  const name = category
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
  if (name.length > 0 && name.length <= PURPOSE_NAME_MAX) return name;
  const hash = sha256Hex(category).slice(0, 8);
  return `${name.slice(0, PURPOSE_NAME_MAX - hash.length - 1).replace(/_+$/, '') || 'category'}_${hash}`;
}

/** The message field an error about `path` of the mapped event is about; the longest known prefix wins. */
export function messagePath(origins: FieldOrigins, path: string): string {
  let best: string | undefined;
  for (const key of origins.keys()) {
    if ((path === key || path.startsWith(`${key}.`)) && (best === undefined || key.length > best.length)) best = key;
  }
  return best === undefined ? path : `${origins.get(best)}${path.slice(best.length)}`;
}

/** Builds flat traits or properties from sources in rising precedence, remembering where each came from. */
class FlatFields {
  // No prototype: a name such as `__proto__` stays a plain field (and plain assignment is far cheaper than defining each).
  readonly values: Record<string, FlatValue> = Object.create(null);
  isEmpty = true;

  constructor(
    private readonly origins: FieldOrigins | undefined,
    private readonly eventField: 'traits' | 'properties',
  ) {}

  add(record: Record<string, unknown> | null | undefined, messageField: string, prefix = ''): void {
    if (!record) return;
    for (const [name, value] of flattenFields(record)) {
      this.values[`${prefix}${name}`] = value;
      this.isEmpty = false;
      // Origins are asked for only to name the fields of a refused event: their names are not built otherwise.
      this.origins?.set(`${this.eventField}.${prefix}${name}`, `${messageField}.${name}`);
    }
  }

  set(name: string, value: FlatValue, messageField: string): void {
    this.values[name] = value;
    this.isEmpty = false;
    this.origins?.set(`${this.eventField}.${name}`, messageField);
  }
}

/** The page fields a browser SDK reports, in `context.page` and (analytics.js) copied into a page's `properties`. */
const PAGE_FIELDS = new Set(['url', 'path', 'referrer', 'search', 'title']);

/** A text cut to `max` characters, never through the middle of a character (a surrogate pair). */
function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  return /[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/**
 * What a browser reports of its page (URL, path, referrer, search, title) is the visitor's, not the
 * sender's to fit: a text longer than a property holds (a URL with click ids) is cut to it, as the
 * JS tag cuts it, instead of refusing the page view — all of `context.page`, and those fields of a
 * page's `properties`, where analytics.js copies them.
 */
function cutPageFields(fields: Record<string, unknown> | null | undefined, only?: ReadonlySet<string>): Record<string, unknown> | null | undefined {
  const long = (name: string, value: unknown) => typeof value === 'string' && value.length > FLAT_TEXT_MAX && (!only || only.has(name));
  if (!fields || !Object.entries(fields).some(([name, value]) => long(name, value))) return fields;
  // Addresses go before the cut: one cut through would no longer read as an address when the event's fields are redacted.
  return Object.fromEntries(Object.entries(fields).map(([name, value]) => [name, long(name, value) ? cutText(redactContactText(value as string), FLAT_TEXT_MAX) : value]));
}

/** Reserved traits that are identities (the collector's): taken out of the traits, so the raw value is never kept. */
const IDENTITY_TRAIT_NAMES = IDENTITY_TRAITS.map(([name]) => name);

function withoutIdentityTraits(traits: Record<string, unknown> | null | undefined): Record<string, unknown> | undefined {
  if (!traits || !IDENTITY_TRAIT_NAMES.some((name) => Object.hasOwn(traits, name))) return traits ?? undefined;
  return Object.fromEntries(Object.entries(traits).filter(([name]) => !(IDENTITY_TRAIT_NAMES as readonly string[]).includes(name)));
}

/** Merges the batch's context under the message's own, objects one level deep. */
function mergeContext(outer: Record<string, unknown> | null | undefined, inner: unknown): unknown {
  if (!outer) return inner;
  if (!isRecord(inner)) return inner ?? outer;
  const merged: Record<string, unknown> = { ...outer };
  for (const [key, value] of Object.entries(inner)) merged[key] = isRecord(value) && isRecord(outer[key]) ? { ...outer[key], ...value } : value;
  return merged;
}

function idText(value: string | number | null | undefined): string | undefined {
  const text = value === null || value === undefined ? '' : String(value).trim();
  return text === '' ? undefined : text;
}

/** The refusal names the message's largest top-level field, so the sender knows what to trim. */
function oversize(message: Record<string, unknown>, bytes: number): FieldError {
  let path = '(message)';
  let largest = 0;
  for (const [key, value] of Object.entries(message)) {
    const size = Buffer.byteLength(JSON.stringify(value) ?? '');
    if (size > largest) [path, largest] = [key, size];
  }
  return { path, message: `the message is ${bytes} bytes, more than ${MAX_MESSAGE_BYTES} (32 KB); this field holds ${largest} of them` };
}

/**
 * One Segment message as our event:
 * - `messageId` → `id` (a message sent again is a duplicate); `anonymousId` → `cookie_id`,
 *   `userId` → `crm_id`; the `email`/`phone` trait (identify: `traits` over `context.traits`, other
 *   types: `context.traits`) → the `email`/`phone` identity, hashed by the collector and dropped from
 *   the traits; `context.device.advertisingId` → `maid` unless `adTrackingEnabled` is false or it is no id;
 * - track: the event name is the type, `properties` the properties; page/screen: type `page`/`screen`,
 *   properties from `context.page`, then `properties`, then `name` and `category`; identify: type
 *   `identify`, the traits; alias: type `alias` holding `userId` (`crm_id`) and `previousId`
 *   (`cookie_id` when it is the `anonymousId`; when an `anonymousId` differs from it, the earlier
 *   user id, a second `crm_id`, beside that cookie id; with no `anonymousId`, as a server sends it,
 *   the event's `previousId`, joined as whichever the graph knows it as), which joins their profiles; group: type `group`, `groupId` and the group's
 *   traits as traits under `group.`; every type: `context.traits` as traits (under the message's own);
 * - time: `timestamp` (or `originalTimestamp`) corrected for the sender's clock skew when `sentAt`
 *   is known: receivedAt − (sentAt − timestamp);
 * - consent: `context.consent.categoryPreferences` → `purposes`, `context.consent.tcf`/`gpp`/`gppSid` as given.
 *
 * Given `origins`, it records which message field each event field came from. Only a refused event
 * needs them: mapping it again with them (same message, same `receivedAt`) gives the same event.
 */
export function mapSegmentMessage(raw: unknown, envelope: MessageEnvelope, receivedAt: Date, origins?: FieldOrigins): MappedMessage {
  if (!isRecord(raw)) return { errors: [{ path: '(message)', message: 'must be a JSON object' }] };
  if (envelope.bodyBytes === undefined || envelope.bodyBytes > MAX_MESSAGE_BYTES) {
    const bytes = Buffer.byteLength(JSON.stringify(raw));
    if (bytes > MAX_MESSAGE_BYTES) return { errors: [oversize(raw, bytes)] };
  }
  if (envelope.type !== undefined && raw.type !== undefined && raw.type !== envelope.type) {
    return { errors: [{ path: 'type', message: `is "${String(raw.type)}" but this endpoint takes ${envelope.type} messages` }] };
  }
  const parsed = SegmentMessageSchema.safeParse({ ...raw, type: envelope.type ?? raw.type, context: mergeContext(envelope.context, raw.context) });
  if (!parsed.success) return { errors: zodIssuesToFieldErrors(parsed.error.issues) };
  const message = parsed.data;
  const context = message.context ?? {};
  const errors: FieldError[] = [];

  // ---- identities
  const identities: EventInput['identities'] = {};
  const identify = (type: InputIdentityType, value: string | undefined, messageField: string) => {
    if (value === undefined) return;
    identities[type] = value;
    origins?.set(`identities.${type}`, messageField);
  };
  const userId = idText(message.userId);
  let previousIdOf: string | undefined;
  if (message.type === 'alias') {
    const previousId = idText(message.previousId);
    const anonymousId = idText(message.anonymousId);
    if (previousId === undefined) errors.push({ path: 'previousId', message: 'must not be empty' });
    if (userId === undefined) errors.push({ path: 'userId', message: 'must not be empty' });
    if (anonymousId !== undefined && anonymousId !== previousId) {
      // After an identify, browser SDKs alias the earlier user id to the new one, with the cookie as anonymousId: all three are one person.
      identify('cookie_id', anonymousId, 'anonymousId');
      if (previousId !== undefined && userId !== undefined && previousId !== userId) {
        identities.crm_id = [previousId, userId];
        origins?.set('identities.crm_id.0', 'previousId');
        origins?.set('identities.crm_id.1', 'userId');
      } else identify('crm_id', userId, 'userId');
    } else if (anonymousId !== undefined) {
      // The anonymousId is the previousId: an anonymous id.
      identify('cookie_id', previousId, 'previousId');
      identify('crm_id', userId, 'userId');
    } else {
      // From a server (no anonymousId): the earlier id may be an anonymous one or a user id; the drain joins whichever the graph knows.
      identify('crm_id', userId, 'userId');
      previousIdOf = previousId;
    }
  } else {
    identify('cookie_id', idText(message.anonymousId), 'anonymousId');
    identify('crm_id', userId, 'userId');
  }
  const ownTraits = message.type === 'identify' ? message.traits : undefined;
  // Blank is no value (an empty form field), as at /v1/collect: the message keeps its other ids.
  const blank = (value: unknown) => value === undefined || value === null || (typeof value === 'string' && value.trim() === '');
  for (const type of IDENTITY_TRAIT_NAMES) {
    const [value, messageField] = !blank(ownTraits?.[type]) ? [ownTraits![type], `traits.${type}`] : [context.traits?.[type], `context.traits.${type}`];
    if (blank(value)) continue;
    if (typeof value === 'string' || (type === 'phone' && typeof value === 'number')) identify(type, String(value), messageField);
    else errors.push({ path: messageField, message: 'must be a string' });
  }
  // Device context, not what the message is about: an id that is none (all zeros when ad tracking is limited) is left out, the message kept.
  const advertisingId = context.device?.adTrackingEnabled === false ? undefined : idText(context.device?.advertisingId);
  if (advertisingId !== undefined && maidProblem(advertisingId) === null) identify('maid', advertisingId, 'context.device.advertisingId');
  if (Object.keys(identities).length === 0 && errors.length === 0) {
    errors.push({ path: 'userId', message: 'a message needs a userId or an anonymousId (or an email, phone or advertising id)' });
  }

  // ---- type and time
  const event: EventInput = { type: message.type === 'track' ? message.event : message.type, identities };
  origins?.set('type', message.type === 'track' ? 'event' : 'type');
  if (previousIdOf !== undefined) {
    event.previousId = previousIdOf;
    origins?.set('previousId', 'previousId');
  }
  if (message.messageId) {
    event.id = message.messageId;
    origins?.set('id', 'messageId');
  }
  const [time, timeField] = message.timestamp ? [message.timestamp, 'timestamp'] : [message.originalTimestamp, 'originalTimestamp'];
  if (time) {
    const sentAt = message.sentAt ?? envelope.sentAt;
    const at = sentAt ? receivedAt.getTime() - (Date.parse(sentAt) - Date.parse(time)) : Date.parse(time);
    event.timestamp = new Date(at).toISOString();
    origins?.set('timestamp', timeField);
  }

  // ---- traits and properties
  const traits = new FlatFields(origins, 'traits');
  traits.add(withoutIdentityTraits(context.traits), 'context.traits');
  if (message.type === 'identify') traits.add(withoutIdentityTraits(message.traits), 'traits');
  if (message.type === 'group') {
    traits.add(withoutIdentityTraits(message.traits), 'traits', 'group.');
    traits.set('group.id', String(message.groupId), 'groupId');
  }
  if (!traits.isEmpty) event.traits = traits.values;
  const properties = new FlatFields(origins, 'properties');
  if (message.type === 'track') properties.add(message.properties, 'properties');
  if (message.type === 'page' || message.type === 'screen') {
    properties.add(cutPageFields(context.page), 'context.page');
    properties.add(cutPageFields(message.properties, PAGE_FIELDS), 'properties');
    if (message.name != null) properties.set('name', message.name, 'name');
    if (message.category != null) properties.set('category', message.category, 'category');
  }
  if (!properties.isEmpty) event.properties = properties.values;

  // ---- consent
  const consent: ConsentInput = {};
  const signals = context.consent;
  if (signals?.categoryPreferences) {
    const purposes: Record<string, boolean> = {};
    for (const [category, granted] of Object.entries(signals.categoryPreferences)) {
      const purpose = purposeName(category);
      // Two categories read as one purpose: it is granted only if both are.
      purposes[purpose] = Object.hasOwn(purposes, purpose) ? purposes[purpose] && granted : granted;
      origins?.set(`consent.purposes.${purpose}`, `context.consent.categoryPreferences.${category}`);
    }
    if (Object.keys(purposes).length > 0) consent.purposes = purposes;
  }
  if (signals?.tcf) {
    consent.tcf = signals.tcf;
    origins?.set('consent.tcf', 'context.consent.tcf');
  }
  if (signals?.gpp) {
    consent.gpp = signals.gpp;
    origins?.set('consent.gpp', 'context.consent.gpp');
    // Beside a string only: sections in force of none say nothing.
    const gppSid = ConsentInputSchema.shape.gppSid.safeParse(signals.gppSid);
    if (gppSid.success && gppSid.data) {
      consent.gppSid = gppSid.data;
      origins?.set('consent.gppSid', 'context.consent.gppSid');
    }
  }
  if (Object.keys(consent).length > 0) event.consent = consent;

  return errors.length > 0 ? { errors } : { event };
}
