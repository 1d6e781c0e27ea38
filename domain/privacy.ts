import { createHmac } from 'node:crypto';
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import type { SegmentSubject } from './profile';
import { IdentityRefSchema, ProfileEventSchema, ProfileSchema } from './schemas';

extendZodWithOpenApi(z);

/**
 * Privacy requests of data subjects (GDPR Art. 15 and 17, CCPA/CPRA "do not sell or share"): each is
 * one durable workflow, named by the subject's salted identity hash and the request type, whose every
 * step leaves an audit entry. The subject's identity is kept only as that hash.
 */

export const PRIVACY_REQUEST_TYPES = ['erase', 'access', 'opt_out'] as const;
export type PrivacyRequestType = (typeof PRIVACY_REQUEST_TYPES)[number];

export const PRIVACY_STATES = ['received', 'running', 'completed', 'failed'] as const;
export type PrivacyState = (typeof PRIVACY_STATES)[number];

/** What the law allows (one month from receipt) and what the platform aims for. */
export const TARGET_HOURS = 72;

/** The statutory deadline: the same day of the next month (its last day when that month is shorter). */
export function deadlineOf(received: Date): Date {
  const deadline = new Date(received);
  deadline.setUTCDate(1);
  deadline.setUTCMonth(deadline.getUTCMonth() + 1);
  const lastDay = new Date(Date.UTC(deadline.getUTCFullYear(), deadline.getUTCMonth() + 1, 0)).getUTCDate();
  deadline.setUTCDate(Math.min(received.getUTCDate(), lastDay));
  return deadline;
}

export function targetOf(received: Date): Date {
  return new Date(received.getTime() + TARGET_HOURS * 3_600_000);
}

/**
 * A subject's identity key (`<type>:<value>`, as stored) salted and hashed: what names the subject
 * in request ids, audit entries and tombstones. The salt is the store's own, so the hash cannot be
 * recomputed from a list of emails without it.
 */
export function subjectHash(salt: string, key: string): string {
  return createHmac('sha256', salt).update(key).digest('base64url').slice(0, 22);
}

/** The n-th request (from 1) of one type about one subject: deterministic, so a repeat finds the open one. */
export function privacyRequestId(type: PrivacyRequestType, subject: string, n: number): string {
  return `pr_${type}_${subject}_${n}`;
}

export const PrivacyRequestSchema = z
  .object({
    type: z.enum(PRIVACY_REQUEST_TYPES).openapi({
      description: '`access`: a JSON export of everything held about the subject; `opt_out`: no profiling, segments or exports of them from now on, and a removal at every partner holding them; `erase`: removed from every collection and every partner holding them, a salted tombstone of each identity kept so late events are dropped',
    }),
    identity: IdentityRefSchema.openapi({ description: 'One identity of the subject; the request covers the whole profile it belongs to. Raw `email`/`phone` values are normalized and hashed as at collection, never stored.' }),
    requestedBy: z.string().trim().min(1).max(200).optional().openapi({ description: 'Who asked, for the audit trail (an operator, a ticket)' }),
  })
  .strict()
  .openapi('PrivacyRequest');
export type PrivacyRequestInput = z.infer<typeof PrivacyRequestSchema>;

export const PRIVACY_STEPS = ['resolve', 'collect', 'mark', 'tombstone', 'erase', 'verify', 'remove', 'complete'] as const;
export type PrivacyStepName = (typeof PRIVACY_STEPS)[number];

/** The steps of each type of request, in order. */
export const STEPS_OF: Record<PrivacyRequestType, readonly PrivacyStepName[]> = {
  access: ['resolve', 'collect', 'complete'],
  opt_out: ['resolve', 'mark', 'remove', 'complete'],
  erase: ['resolve', 'tombstone', 'erase', 'verify', 'remove', 'complete'],
};

/**
 * Where a partner's removal of the subject stands: planned, sent in an export, confirmed, failed and
 * to be tried again — or given up because the destination was deleted (its partner cannot be told).
 */
export const REMOVAL_STATES = ['pending', 'sent', 'acknowledged', 'failed_retrying', 'destination_deleted'] as const;
export type RemovalState = (typeof REMOVAL_STATES)[number];

export const RemovalSchema = z
  .object({
    destinationId: z.string(),
    name: z.string(),
    state: z.enum(REMOVAL_STATES),
    round: z.number().int().openapi({ description: 'Exports sent for the removal so far' }),
    exportId: z.string().nullable().openapi({ description: 'The export of the last round' }),
    lastError: z.string().nullable(),
    updatedAt: z.string().openapi({ format: 'date-time' }),
  })
  .openapi('PrivacyRemoval', { description: "One partner's removal of the subject: the request's ledger holds one per destination that held them" });
export type Removal = z.infer<typeof RemovalSchema>;

export const PrivacyStepSchema = z
  .object({
    name: z.enum(PRIVACY_STEPS),
    state: z.enum(['pending', 'done']),
    at: z.string().openapi({ format: 'date-time' }).nullable(),
    touched: z.record(z.string(), z.number().int()).openapi({ description: 'Per collection, the documents the step read or wrote (counts only, never values)' }),
  })
  .openapi('PrivacyStep');
export type PrivacyStep = z.infer<typeof PrivacyStepSchema>;

export const PrivacyResultSchema = z
  .object({
    found: z.boolean().openapi({ description: 'Whether any profile holds the identity, or a profile that expired for inactivity held it (its events are still kept)' }),
    profiles: z.number().int().openapi({ description: 'Profile documents of the subject' }),
    identities: z.number().int(),
    events: z.number().int(),
    segments: z.number().int(),
    destinations: z.number().int().openapi({ description: 'Destinations whose partner holds (or may hold) the subject; for an opt-out, those that held them' }),
    exportUrl: z.string().nullable().openapi({ description: 'Where the access export downloads from' }),
  })
  .openapi('PrivacyResult');
export type PrivacyResult = z.infer<typeof PrivacyResultSchema>;

export const PrivacyRequestViewSchema = z
  .object({
    id: z.string(),
    type: z.enum(PRIVACY_REQUEST_TYPES),
    state: z.enum(PRIVACY_STATES),
    subject: z.string().openapi({ description: "The subject's identity type and salted hash: the only name the request keeps" }),
    requestedBy: z.string().nullable(),
    receivedAt: z.string().openapi({ format: 'date-time' }),
    deadline: z.string().openapi({ format: 'date-time', description: 'The statutory deadline: one month from receipt' }),
    target: z.string().openapi({ format: 'date-time', description: `Our target: ${TARGET_HOURS} hours from receipt` }),
    steps: z.array(PrivacyStepSchema),
    destinations: z.array(RemovalSchema).openapi({ description: 'The ledger: per destination whose partner held the subject, where its removal stands' }),
    completedAt: z.string().openapi({ format: 'date-time' }).nullable(),
    error: z.string().nullable(),
    result: PrivacyResultSchema.nullable(),
    lateEventsDropped: z.number().int().openapi({ description: "An erasure's late events: sent after it, naming an erased identity, counted and dropped, never stored (counted on the request's own view; 0 in lists)" }),
    statusUrl: z.string(),
  })
  .openapi('PrivacyRequestView');
export type PrivacyRequestView = z.infer<typeof PrivacyRequestViewSchema>;

export const PrivacyListQuerySchema = z.object({
  state: z.enum(PRIVACY_STATES).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});

/** Everything held about a subject, as the access export gives it. */
export const AccessExportSchema = z
  .object({
    request: z.object({ id: z.string(), receivedAt: z.string(), subject: z.string().openapi({ description: "The subject's salted identity hash" }) }),
    generatedAt: z.string(),
    profile: ProfileSchema.nullable().openapi({ description: 'The profile as GET /v1/profiles/:id shows it (identities with their sources, traits with theirs, consent, counters); null when none holds the identity' }),
    expired: z
      .array(z.object({ profileId: z.string(), expiredAt: z.string() }))
      .openapi({ description: 'Documents of the subject that expired for inactivity (DMP_INACTIVE_PROFILE_DAYS): no profile any more, but their events are kept for the history window' }),
    events: z.array(ProfileEventSchema).openapi({ description: 'The retained events of every document of the profile and of the expired ones, newest first' }),
    segments: z.array(z.object({ id: z.string(), name: z.string() })).openapi({ description: 'Segments the profile is a member of now' }),
    destinations: z
      .array(
        z.object({
          id: z.string(),
          name: z.string(),
          connector: z.string(),
          idType: z.string(),
          segments: z.array(z.object({ segmentId: z.string(), exportId: z.string(), state: z.enum(['held', 'uncertain']) })),
        }),
      )
      .openapi({ description: "Partners that hold (or may hold) the subject's ids, per segment, and the export that last sent them" }),
  })
  .openapi('AccessExport');
/** As the activity builds it: events carry Dates, which the export's JSON writes as the schema's strings. */
export type AccessExport = Omit<z.infer<typeof AccessExportSchema>, 'events'> & { events: unknown[] };

/** The document ids a subject stands for: a combined person's documents, or one document and those it was split from. */
export function documentIdsOf(subject: { profileId?: string; profileIds?: string[]; ancestors?: string[] }): string[] {
  return [...(subject.profileIds ?? (subject.profileId ? [subject.profileId] : [])), ...(subject.ancestors ?? [])];
}

/** A subject as rules read it: marked opted out (rules then place it in no segment) when `optedOut` says so. */
export function withOptOut<T extends SegmentSubject>(subject: T, optedOut: boolean): T {
  return optedOut ? { ...subject, optOut: true } : subject;
}
