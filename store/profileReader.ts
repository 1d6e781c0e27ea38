import { combineDocuments, combineProfiles, type CombinedProfile, type ProfileLink } from '../domain/profile';
import { decodeKeys } from '../domain/fieldNames';
import type { HeldEvent } from '../domain/identitySplit';
import { withOptOut } from '../domain/privacy';
import { EvaluationTime, SegmentEvaluator } from '../domain/segmentRules';
import type { ProfileView } from '../domain/schemas';
import type { Store } from './db';
import { ProfileEventLog } from './profileEvents';
import { PrivacyMarks } from './privacyMarks';
import { ProfileGraph } from './profileGraph';
import type { StoredVersion } from './profiles';
import { definitionsOf, SegmentStore } from './segments';
import { policiesOf } from './sourcePolicies';
import { SourceStore } from './sources';

/** A retained event as the API shows it: its names as collected, without the log position and party it was folded with. */
export function collectedEvent({ seq: _seq, party: _party, traits, properties, ...event }: HeldEvent) {
  return {
    ...event,
    ...(traits && { traits: decodeKeys(traits) }),
    ...(properties && { properties: decodeKeys(properties) }),
  };
}

/**
 * Reads profiles as people see them: a profile is the connected component of live profile documents
 * in the identity graph, combined on read (domain/profile `combineProfiles`), so any identity or any
 * merged document id finds the same profile.
 */
export class ProfileReader {
  private readonly graph: ProfileGraph;
  private readonly events: ProfileEventLog;

  private readonly segments: SegmentStore;
  private readonly sources: SourceStore;
  private readonly marks: PrivacyMarks;

  constructor(store: Store) {
    this.marks = new PrivacyMarks(store);
    this.graph = ProfileGraph.open(store);
    this.events = new ProfileEventLog(store);
    this.segments = new SegmentStore(store);
    this.sources = new SourceStore(store);
  }

  /**
   * The view, with the segments the profile is a member of now (the rules evaluated on it as it is)
   * and each trait's usage labels: its source's labels as they stand, so a relabelled source's
   * declared data (a survey's answers, a partner's traits) shows what it may be used for today.
   */
  private async view(docs: StoredVersion[], links: ProfileLink[]): Promise<ProfileView> {
    const [list, sources] = await Promise.all([this.segments.list(), this.sources.list()]);
    const definitions = definitionsOf(list);
    const segments = definitions.length > 0 ? new SegmentEvaluator(definitions, policiesOf(sources)).evaluate(await this.combined(docs), new EvaluationTime(new Date())) : [];
    const view = combineProfiles(docs, links, segments);
    const labels = new Map(sources.map((source) => [source._id, source.labels]));
    for (const origin of Object.values(view.traitOrigins)) origin.labels = labels.get(origin.sourceId) ?? [];
    return view;
  }

  /**
   * The profile holding a document id, or null when no such document has been written yet — or it
   * was split by an unlink (its id no longer names one person; look its identities up instead).
   */
  async byId(profileId: string): Promise<ProfileView | null> {
    const component = await this.graph.component(profileId);
    return component.docs.some((doc) => doc.profileId === profileId) ? this.view(component.docs, component.links) : null;
  }

  /** A profile's documents combined (what rules and recommendations read), without building its view; null as for `byId`. */
  async person(profileId: string): Promise<CombinedProfile | null> {
    const component = await this.graph.component(profileId);
    return component.docs.some((doc) => doc.profileId === profileId) ? this.combined(component.docs) : null;
  }

  /** Documents combined into their person, marked when the person opted out (rules then place them in no segment). */
  private async combined(docs: StoredVersion[]): Promise<CombinedProfile> {
    await this.marks.refresh();
    const person = combineDocuments(docs);
    return withOptOut(person, this.marks.optedOut({ profileIds: person.profileIds, ancestors: docs.flatMap((doc) => doc.ancestors ?? []) }));
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
    const component = await this.graph.component(profileId);
    if (!component.docs.some((doc) => doc.profileId === profileId)) return null;
    return this.eventsOfDocuments(component.docs.map((d) => d.profileId));
  }

  /** The retained events routed to these documents (expired ones too), newest first. */
  async eventsOfDocuments(ids: string[]) {
    // Evidence copies a split left in other sides' documents are not events of theirs, nor are the
    // consent signals of events that were not profiled.
    return (await this.events.eventsOf(ids)).filter((event) => !event.evidenceOnly && !event.consentOnly);
  }
}
