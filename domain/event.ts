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
}
