import { ConsentPolicies } from '../domain/consentGate';
import type { Store } from './db';
import { SourceStore, type SourceDoc } from './sources';

/** The consent policies of these sources (one without a policy of its own has the default). */
export function policiesOf(sources: readonly SourceDoc[]): ConsentPolicies {
  return new ConsentPolicies(sources.map((source) => [source._id, source.consent] as const));
}

/**
 * Every source's consent policy, read together and kept a while: a change reaches readers within
 * `keptMs`, and a source not among those read (one made since) brings the next read forward.
 */
export class SourcePolicies {
  private readonly sources: SourceStore;
  private current: { policies: ConsentPolicies; at: number } | null = null;

  constructor(
    store: Store,
    private readonly keptMs = 60_000,
    private readonly unknownMs = 1_000,
  ) {
    this.sources = new SourceStore(store);
  }

  /** The policies, known to include `sourceIds` unless read within the last `unknownMs` (a source removed reads as the default). */
  async read(sourceIds: Iterable<string> = []): Promise<ConsentPolicies> {
    const age = this.current ? Date.now() - this.current.at : Infinity;
    const unknown = this.current !== null && [...sourceIds].some((id) => !this.current?.policies.knows(id));
    if (age >= this.keptMs || (unknown && age >= this.unknownMs)) {
      this.current = { policies: policiesOf(await this.sources.list()), at: Date.now() };
    }
    return (this.current as { policies: ConsentPolicies }).policies;
  }
}
