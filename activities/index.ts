import { createCollectionActivities, type CollectionDeps } from './collection';
import { createUnlinkActivities, type UnlinkDeps } from './identityUnlink';
import { createProfileWriterActivities, type ProfileWriterDeps } from './profileWriter';
import { createRetentionActivities, type RetentionDeps } from './retention';

export type ActivityDeps = CollectionDeps & ProfileWriterDeps & RetentionDeps & UnlinkDeps;

/** Every activity the worker registers, built over the dependencies it is given. */
export function createActivities(deps: ActivityDeps) {
  return { ...createCollectionActivities(deps), ...createProfileWriterActivities(deps), ...createUnlinkActivities(deps), ...createRetentionActivities(deps) };
}
