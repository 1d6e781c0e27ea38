import { ConsentPolicies } from '../domain/consentGate';
import type { Store } from './db';
import { SourceStore, type SourceDoc } from './sources';

/** The consent policies of these sources (one without a policy of its own has the default). */
export function policiesOf(sources: readonly SourceDoc[]): ConsentPolicies {
  return new ConsentPolicies(sources.map((source) => [source._id, source.consent] as const));
}

/**
 * Every source's consent policy, read together and kept a while: a change reaches readers within
 * `keptMs`, and a source not among those read (one made since) brings the next read forward — once:
 * a removed source, which profiles still name, is not looked for again until the next full read.
 */
export class SourcePolicies {
  private readonly sources: SourceStore;
  private current: { policies: ConsentPolicies; at: number; missing: Set<string> } | null = null;

  constructor(
    store: Store,
    private readonly keptMs = 60_000,
    private readonly unknownMs = 1_000,
  ) {
    this.sources = new SourceStore(store);
  }

  /** The policies, known to include `sourceIds` unless read within the last `unknownMs` (a source removed reads as the default). */
  async read(sourceIds: Iterable<string> = []): Promise<ConsentPolicies> {
    const current = this.current;
    const age = current ? Date.now() - current.at : Infinity;
    const unknown = current ? [...sourceIds].filter((id) => !current.policies.knows(id) && !current.missing.has(id)) : [];
    if (age >= this.keptMs) {
      this.current = { policies: policiesOf(await this.sources.list()), at: Date.now(), missing: new Set() };
    } else if (current && unknown.length > 0 && age >= this.unknownMs) {
      const policies = policiesOf(await this.sources.list());
      this.current = { policies, at: current.at, missing: new Set([...current.missing, ...unknown.filter((id) => !policies.knows(id))]) };
    }
    return (this.current as { policies: ConsentPolicies }).policies;
  }
}
