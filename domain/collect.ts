import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { ConsentError, decodeConsent, profilingRefusal } from './consent';
import { encodeKeys } from './fieldNames';
import { IdentityError, toStoredIdentity, type Identity, type InputIdentityType } from './identity';
import { DEFAULT_CONSENT_POLICY, EventInputSchema, type ConsentPolicy } from './schemas';
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

/**
 * Validates each event on its own and turns it into its stored form: raw emails and phones are
 * normalized and hashed here, consent is decoded and checked against the source's policy,
 * client-chosen names are encoded. Nothing raw leaves this function.
 */
export function prepareEvents(events: unknown[], options: PrepareOptions): PreparedEvents {
  const maxFutureSkewMs = options.maxFutureSkewMs ?? 24 * 3600 * 1000;
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
    for (const [type, value] of Object.entries(input.identities) as Array<[InputIdentityType, string]>) {
      try {
        const identity = toStoredIdentity(type, value, options.defaultPhoneRegion);
        // A crm_id that is an email address is stored as the email: the same one may come as both.
        if (!identities.some((known) => known.type === identity.type && known.value === identity.value)) identities.push(identity);
      } catch (error) {
        if (!(error instanceof IdentityError)) throw error;
        errors.push({ path: `identities.${type}`, message: error.message });
      }
    }
    const timestamp = input.timestamp === undefined ? options.now : new Date(input.timestamp);
    if (timestamp.getTime() - options.now.getTime() > maxFutureSkewMs) {
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
      id: input.id ?? randomUUID(),
      type: input.type,
      timestamp,
      receivedAt: options.now,
      identities,
    };
    if (input.traits) event.traits = encodeKeys(input.traits);
    if (input.properties) event.properties = encodeKeys(input.properties);
    if (consent) event.consent = consent;
    const refusal = profilingRefusal(consent, options.consentPolicy ?? DEFAULT_CONSENT_POLICY);
    if (refusal) event.nonProfiling = refusal;
    accepted.push({ index, event });
  });
  return { accepted, rejected };
}
