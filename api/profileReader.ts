import { combineProfiles } from '../domain/profile';
import type { ProfileView } from '../domain/schemas';
import type { Store } from '../store/db';
import { IdentityIndex } from '../store/identities';
import { ProfileEventLog } from '../store/profileEvents';
import { ProfileStore } from '../store/profiles';

/**
 * Reads profiles as people see them: a profile is the connected component of profile documents in
 * the identity graph, combined on read (domain/profile `combineProfiles`), so any identity or any
 * merged document id finds the same profile.
 */
export class ProfileReader {
  private readonly identities: IdentityIndex;
  private readonly profiles: ProfileStore;
  private readonly events: ProfileEventLog;

  constructor(store: Store) {
    this.identities = new IdentityIndex(store);
    // No cache: the API is not the writer, so only the store knows the newest versions.
    this.profiles = new ProfileStore(store, 0);
    this.events = new ProfileEventLog(store);
  }

  /** The profile holding a document id, or null when no such document has been written yet. */
  async byId(profileId: string): Promise<ProfileView | null> {
    const component = await this.identities.componentOf(profileId);
    const docs = [...(await this.profiles.load(component.profileIds)).values()];
    return docs.length === 0 ? null : combineProfiles(docs, component.links);
  }

  /** The profile holding an identity (`<type>:<value>`), or null. */
  async byIdentity(key: string): Promise<ProfileView | null> {
    const profileId = await this.identities.profileIdFor(key);
    return profileId ? this.byId(profileId) : null;
  }

  /** The retained events of a profile (all its documents), newest first. */
  async eventsOf(profileId: string) {
    const component = await this.identities.componentOf(profileId);
    return this.events.eventsOf(component.profileIds);
  }
}
