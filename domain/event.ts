import type { NonProfilingReason, StoredConsent } from './consent';
import type { Identity } from './identity';

/** An accepted event as the log keeps it: identities already normalized and hashed, names encoded. */
export interface StoredEvent {
  id: string;
  type: string;
  timestamp: Date;
  receivedAt: Date;
  identities: Identity[];
  traits?: Record<string, unknown>;
  properties?: Record<string, unknown>;
  consent?: StoredConsent;
  /** Set when the source's consent policy does not allow profiling it: kept in the log, never applied. */
  nonProfiling?: NonProfilingReason;
  /**
   * Only on the routed copy of a non-profiling event: its consent signal reaches the profile its
   * identities already belong to (a withdrawal must), and nothing else does — no identity, count or
   * trait. Its identities travel as `evidence` only, so a split still knows whose it is.
   */
  consentOnly?: true;
  /** Where an erased subject's event stood in a raw chunk (domain/erasure `erasedPlaceholder`): skipped by drains. */
  erased?: true;
}
