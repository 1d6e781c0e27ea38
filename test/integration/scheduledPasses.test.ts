import { createSegmentationActivities } from '../../activities/segmentation';
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

  it('go once per nominal time, to the firing that claimed it (again on its retry), and never while the firing whose pass went last still runs, whatever its time', async () => {
    const { claimScheduledPass } = createSegmentationActivities({ store, temporal, config: baseConfig });
    const hour = (n: number) => Date.UTC(2026, 11, 7, n);
    const claim = (nominalTime: number, by: string) => claimScheduledPass({ nominalTime, by });
    /** A schedule's firing: its workflow runs from before its claim until its pass ends (here on a queue no worker takes). */
    const firing = (name: string) => temporal.workflow.start('segmentRun', { workflowId: uniqueName(name), taskQueue: uniqueName('idle'), args: [] });
    const daily = await firing('daily-0');
    expect(await claim(hour(0), daily.workflowId)).toBe(true);
    // Another schedule firing for the same time meets the first's pass; the first's retry still goes.
    expect(await claim(hour(0), uniqueName('hourly-0'))).toBe(false);
    expect(await claim(hour(0), daily.workflowId)).toBe(true);
    // The midnight pass runs on: the 1 o'clock firing skips, on its retry too, and so does a firing for an earlier time come late.
    const hourly = await firing('hourly-1');
    expect(await claim(hour(1), hourly.workflowId)).toBe(false);
    expect(await claim(hour(1), hourly.workflowId)).toBe(false);
    expect(await claim(hour(0) - 1_800_000, uniqueName('late'))).toBe(false);
    // Once it ended, the next firing goes: a skipped turn is no pass to wait for.
    await daily.terminate('the pass ended');
    const next = await firing('hourly-2');
    expect(await claim(hour(2), next.workflowId)).toBe(true);
    // Two firings of different times deciding at once: one goes.
    await next.terminate('the pass ended');
    const [a, b] = await Promise.all([firing('a'), firing('b')]);
    const went = await Promise.all([claim(hour(3), a.workflowId), claim(hour(3) + 60_000, b.workflowId)]);
    expect(went.filter(Boolean)).toHaveLength(1);
    await Promise.all([hourly, a, b].map((handle) => handle.terminate('done')));
  });
});
