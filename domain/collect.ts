import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { ConsentError, decodeConsent, profilingRefusal } from './consent';
import { redactContactData, redactContactId, redactContactText } from './contactRedaction';
import { encodeKeys } from './fieldNames';
import { IdentityError, previousIdReadings, toStoredIdentity, type Identity, type InputIdentityType } from './identity';
import { DEFAULT_CONSENT_POLICY, EventInputSchema, type ConsentPolicy, type EventInput } from './schemas';
import type { StoredEvent } from './event';

export interface FieldError {
  path: string;
  message: string;
}

export interface RejectedEvent {
  index: number;
  errors: FieldError[];
}

export interface PreparedEvents {
  /** Valid events in request order, each with its index in the request. */
  accepted: Array<{ index: number; event: StoredEvent }>;
  rejected: RejectedEvent[];
}

export interface PrepareOptions {
  now: Date;
  defaultPhoneRegion: string;
  /** When the sender sent the events, by the clock their timestamps are read on: timestamps are corrected by `now − sentAt`. */
  sentAt?: Date;
  /** Events stamped further in the future than this are refused as a clock error. */
  maxFutureSkewMs?: number;
  /** The source's consent policy: events it does not allow to be profiled are marked so. */
  consentPolicy?: ConsentPolicy;
}

export function zodIssuesToFieldErrors(issues: z.core.$ZodIssue[], prefix: string[] = []): FieldError[] {
  return issues.map((issue) => ({
    path: [...prefix, ...issue.path.map(String)].join('.') || '(body)',
    message: issue.message,
  }));
}

/** The traits that name the person's contact: identities, as in the Segment spec, never kept as traits. */
export const IDENTITY_TRAITS = [
  ['email', ['email', 'email_sha256']],
  ['phone', ['phone', 'phone_sha256']],
] as const satisfies ReadonlyArray<readonly [InputIdentityType, readonly InputIdentityType[]]>;

/**
 * The traits without `email` and `phone`; each becomes the identity of its name unless the event
 * names one of that kind itself (a trait then never overrides it).
 */
function withIdentityTraitsTaken(
  traits: NonNullable<EventInput['traits']>,
  given: EventInput['identities'],
  identify: (type: InputIdentityType, value: string, path: string) => void,
): NonNullable<EventInput['traits']> {
  if (!IDENTITY_TRAITS.some(([name]) => Object.hasOwn(traits, name))) return traits;
  const rest = { ...traits };
  for (const [name, kinds] of IDENTITY_TRAITS) {
    if (!Object.hasOwn(rest, name)) continue;
    const value = rest[name];
    delete rest[name];
    // Blank is no value (an empty form field): nothing to take.
    if (kinds.some((kind) => given[kind] !== undefined) || value === null || (typeof value === 'string' && value.trim() === '')) continue;
    identify(name, Array.isArray(value) ? '' : String(value), `traits.${name}`);
  }
  return rest;
}

/**
 * Validates each event on its own and turns it into its stored form: raw emails and phones are
 * normalized and hashed here (contact data outside the identity fields redacted), consent is
 * decoded and checked against the source's policy, client-chosen names are encoded. Nothing raw
 * leaves this function.
 */
export function prepareEvents(events: unknown[], options: PrepareOptions): PreparedEvents {
  const maxFutureSkewMs = options.maxFutureSkewMs ?? 24 * 3600 * 1000;
  const skewMs = options.sentAt ? options.now.getTime() - options.sentAt.getTime() : 0;
  const accepted: PreparedEvents['accepted'] = [];
  const rejected: RejectedEvent[] = [];
  events.forEach((raw, index) => {
    const parsed = EventInputSchema.safeParse(raw);
    if (!parsed.success) {
      rejected.push({ index, errors: zodIssuesToFieldErrors(parsed.error.issues) });
      return;
    }
    const input = parsed.data;
    const errors: FieldError[] = [];
    const identities: Identity[] = [];
    const named = (identity: Identity) => identities.some((known) => known.type === identity.type && known.value === identity.value);
    const identified = (read: () => Identity[], path: string) => {
      try {
        // A crm_id that is an email address is stored as the email: the same one may come as both.
        for (const identity of read()) if (!named(identity)) identities.push(identity);
      } catch (error) {
        if (!(error instanceof IdentityError)) throw error;
        errors.push({ path, message: error.message });
      }
    };
    const identify = (type: InputIdentityType, value: string, path: string) => identified(() => [toStoredIdentity(type, value, options.defaultPhoneRegion)], path);
    for (const [type, value] of Object.entries(input.identities) as Array<[InputIdentityType, string | string[]]>) {
      if (Array.isArray(value)) value.forEach((one, i) => identify(type, one, `identities.${type}.${i}`));
      else identify(type, value, `identities.${type}`);
    }
    const traits = input.traits && withIdentityTraitsTaken(input.traits, input.identities, identify);
    // After the named identities: an id of unknown type that is one of them is that identity, and none of its other readings.
    if (input.previousId !== undefined) {
      identified(() => {
        const readings = previousIdReadings(input.previousId as string, options.defaultPhoneRegion);
        return readings.some(named) ? [] : readings;
      }, 'previousId');
    }
    const timestamp = input.timestamp === undefined ? options.now : new Date(new Date(input.timestamp).getTime() + skewMs);
    // A time moved by the batch's sentAt may leave the range of dates: no date at all, stored as 1970 if let through.
    if (!Number.isFinite(timestamp.getTime())) errors.push({ path: 'timestamp', message: 'is outside the range of dates once corrected by sentAt' });
    else if (timestamp.getTime() - options.now.getTime() > maxFutureSkewMs) {
      errors.push({ path: 'timestamp', message: 'is too far in the future' });
    }
    let consent: StoredEvent['consent'];
    if (input.consent) {
      try {
        consent = decodeConsent(input.consent);
      } catch (error) {
        if (!(error instanceof ConsentError)) throw error;
        errors.push({ path: `consent.${error.field}`, message: error.message });
      }
    }
    if (errors.length > 0) {
      rejected.push({ index, errors });
      return;
    }
    const event: StoredEvent = {
      id: input.id === undefined ? randomUUID() : redactContactId(input.id),
      type: redactContactText(input.type),
      timestamp,
      receivedAt: options.now,
      identities,
    };
    if (traits && Object.keys(traits).length > 0) event.traits = encodeKeys(redactContactData(traits));
    if (input.properties) event.properties = encodeKeys(redactContactData(input.properties));
    if (consent) event.consent = consent;
    const refusal = profilingRefusal(consent, options.consentPolicy ?? DEFAULT_CONSENT_POLICY);
    if (refusal) event.nonProfiling = refusal;
    accepted.push({ index, event });
  });
  return { accepted, rejected };
}
