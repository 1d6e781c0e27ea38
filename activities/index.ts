import { createCollectionActivities, type CollectionDeps } from './collection';

/** Every activity the worker registers, built over the dependencies it is given. */
export function createActivities(deps: CollectionDeps) {
  return { ...createCollectionActivities(deps) };
}
