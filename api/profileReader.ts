import { combineDocuments, combineProfiles, type ProfileLink } from '../domain/profile';
import { EvaluationTime, SegmentEvaluator } from '../domain/segmentRules';
import type { ProfileView } from '../domain/schemas';
import type { Store } from '../store/db';
import { ProfileEventLog } from '../store/profileEvents';
import { ProfileGraph } from '../store/profileGraph';
import type { StoredVersion } from '../store/profiles';
import { definitionsOf, SegmentStore } from '../store/segments';

/**
 * Reads profiles as people see them: a profile is the connected component of live profile documents
 * in the identity graph, combined on read (domain/profile `combineProfiles`), so any identity or any
 * merged document id finds the same profile.
 */
export class ProfileReader {
  private readonly graph: ProfileGraph;
  private readonly events: ProfileEventLog;

  private readonly segments: SegmentStore;

  constructor(store: Store) {
    this.graph = ProfileGraph.open(store);
    this.events = new ProfileEventLog(store);
    this.segments = new SegmentStore(store);
  }

  /** The view, with the segments the profile is a member of now: the rules evaluated on it as it is. */
  private async view(docs: StoredVersion[], links: ProfileLink[]): Promise<ProfileView> {
    const definitions = definitionsOf(await this.segments.list());
    const segments = definitions.length > 0 ? new SegmentEvaluator(definitions).evaluate(combineDocuments(docs), new EvaluationTime(new Date())) : [];
    return combineProfiles(docs, links, segments);
  }

  /**
   * The profile holding a document id, or null when no such document has been written yet — or it
   * was split by an unlink (its id no longer names one person; look its identities up instead).
   */
  async byId(profileId: string): Promise<ProfileView | null> {
    const doc = await this.graph.profiles.get(profileId);
    if (!doc || doc.retired) return null;
    const component = await this.graph.component(profileId);
    return this.view(component.docs, component.links);
  }

  /** The profile holding an identity (`<type>:<value>`), or null. */
  async byIdentity(key: string): Promise<ProfileView | null> {
    // The owner may not be written (see ProfileGraph.live): the profile is its component all the same.
    const owner = await this.graph.ownerOf(key);
    if (!owner) return null;
    const component = await this.graph.component(owner.id);
    return component.docs.length === 0 ? null : this.view(component.docs, component.links);
  }

  /** The retained events of a profile (all its documents), newest first; null when there is no such profile. */
  async eventsOf(profileId: string) {
    const doc = await this.graph.profiles.get(profileId);
    if (!doc || doc.retired) return null;
    const component = await this.graph.component(profileId);
    // Evidence copies a split left in other sides' documents are not events of theirs.
    return (await this.events.eventsOf(component.docs.map((d) => d.profileId))).filter((event) => !event.evidenceOnly);
  }
}
