import { proxyActivities, upsertMemo } from '@temporalio/workflow';
import type { ItemModelActivities, ItemModelResult } from '../activities/itemModel';

const { updateItemModel } = proxyActivities<ItemModelActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute' },
});

/**
 * Keeps the item model recommendations are served from: on the store's schedule, the interactions
 * folded since the last update are applied (a full pass when one is due); an operator may ask for a full build.
 */
export async function itemModel(input: { full?: boolean } = {}): Promise<ItemModelResult> {
  const result = await updateItemModel({ at: Date.now(), full: input.full });
  upsertMemo({ result });
  return result;
}
