import { proxyActivities, upsertMemo } from '@temporalio/workflow';
import type { ItemModelActivities, ItemModelResult } from '../activities/itemModel';

const { buildItemModel } = proxyActivities<ItemModelActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '1 minute' },
});

/** Builds the item model recommendations are served from: on the store's schedule, or when an operator asks. */
export async function itemModel(): Promise<ItemModelResult> {
  const result = await buildItemModel({ at: Date.now() });
  upsertMemo({ result });
  return result;
}
