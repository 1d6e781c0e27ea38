import { profilingRefusal, type StoredConsent } from './consent';
import { DEFAULT_CONSENT_POLICY, type ConsentPolicy } from './schemas';

/**
 * What the gate reads of a profile: its consent (most restrictive over its documents; `sourceId`,
 * the source of its newest signal) and the sources its data came from.
 */
export interface GatedSubject {
  consent: (StoredConsent & { sourceId?: string }) | null;
  sources?: readonly string[];
}

/**
 * The sources' consent policies as segments (and so the insights and exports of their members),
 * lookalikes and the item model read a profile's consent. The door keeps events a policy refuses out
 * of profiles, and a withdrawal given later folds into the profile's consent: from then on the
 * profile is in none of those (`refuses`) until a newer signal allows it again.
 */
export class ConsentPolicies {
  /** Per source, its policy as the gate applies it; null for a source that enforces none. */
  private readonly bySource = new Map<string, ConsentPolicy | null>();
  private readonly fallback = ConsentPolicies.asGate(DEFAULT_CONSENT_POLICY);

  constructor(policies: Iterable<readonly [sourceId: string, policy: ConsentPolicy | undefined]>) {
    for (const [sourceId, policy] of policies) this.bySource.set(sourceId, ConsentPolicies.asGate(policy ?? DEFAULT_CONSENT_POLICY));
  }

  /**
   * A policy as the gate applies it: `not_required` (data with a legal basis of its own, e.g. a CRM)
   * enforces nothing; the others enforce the signals the profile holds (its events brought them).
   */
  private static asGate(policy: ConsentPolicy): ConsentPolicy | null {
    return policy.mode === 'not_required' ? null : { ...policy, mode: 'when_present' };
  }

  /** Whether the policies were read with this source among them. */
  knows(sourceId: string): boolean {
    return this.bySource.has(sourceId);
  }

  /**
   * Whether a profile's consent forbids using it: refused under the policy of any source its data
   * came from, or of the source of its newest signal (a withdrawal on a channel that brought nothing
   * else of the person), that enforces one (a source no longer there, under the default policy).
   */
  refuses(subject: GatedSubject): boolean {
    const consent = subject.consent;
    if (!consent) return false;
    const refusedBy = (sourceId: string) => {
      const policy = this.bySource.has(sourceId) ? this.bySource.get(sourceId) : this.fallback;
      return !!policy && profilingRefusal(consent, policy) !== null;
    };
    return (subject.sources ?? []).some(refusedBy) || (consent.sourceId !== undefined && !(subject.sources ?? []).includes(consent.sourceId) && refusedBy(consent.sourceId));
  }
}

/** The sources whose policies the gate reads for these subjects (see `refuses`). */
export function gatedSources(subjects: Iterable<GatedSubject>): Set<string> {
  const ids = new Set<string>();
  for (const subject of subjects) {
    for (const id of subject.sources ?? []) ids.add(id);
    if (subject.consent?.sourceId) ids.add(subject.consent.sourceId);
  }
  return ids;
}
