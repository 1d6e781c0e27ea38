import { createSegmentationActivities } from '../../activities/segmentation';
import { scheduledSegmentRunWorkflowId } from '../../domain/workflowIds';
import type { Client } from '@temporalio/client';
import type { Store } from '../../store/db';
import { baseConfig, testStore, testTemporal, uniqueName } from '../support/services';

/**
 * Segment schedules share one pass of every segment per nominal time, and take turns: a daily
 * schedule's pass still running when an hourly one fires makes that firing skip its turn.
 */
describe('scheduled passes of every segment', () => {
  let store: Store;
  let temporal: Client;
  beforeAll(async () => {
    store = await testStore('scheduledpasses');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    await temporal.connection.close();
    await store.close();
  });

  it('go once per nominal time, to the firing that claimed it (again on its retry), and never while the last one that went still runs', async () => {
    const { claimScheduledPass } = createSegmentationActivities({ store, temporal, config: baseConfig });
    const hour = (n: number) => Date.UTC(2026, 11, 7, n);
    const claim = (nominalTime: number, by: string) => claimScheduledPass({ nominalTime, by });
    expect(await claim(hour(0), 'daily-0')).toBe(true);
    // Another schedule firing for the same time meets the first's pass; the first's retry still goes.
    expect(await claim(hour(0), 'hourly-0')).toBe(false);
    expect(await claim(hour(0), 'daily-0')).toBe(true);
    // The midnight pass runs on (its workflow started, on a queue no worker takes): the 1 o'clock firing skips.
    const midnight = await temporal.workflow.start('segmentRun', { workflowId: scheduledSegmentRunWorkflowId(store.db.databaseName, new Date(hour(0))), taskQueue: uniqueName('idle'), args: [] });
    expect(await claim(hour(1), 'hourly-1')).toBe(false);
    expect(await claim(hour(1), 'hourly-1')).toBe(false);
    // Once it ended, the next firing goes: a skipped turn is no pass to wait for.
    await midnight.terminate('the pass ended');
    expect(await claim(hour(2), 'hourly-2')).toBe(true);
  });
});
