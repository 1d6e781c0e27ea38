import { call } from './http';
import { waitFor, type RunningApi } from './services';

/** One new source on the API under test, and what the tests do with it: send events, look profiles up, wait for folds. */
export async function newSource(api: RunningApi, name = 'web', options: { party?: 'first' | 'second' | 'third'; labels?: string[]; consent?: object } = {}) {
  const body = { name, kind: 'events', party: options.party ?? 'first', labels: options.labels ?? [], ...(options.consent && { consent: options.consent }) };
  const { id: sourceId, writeKey } = (await call(`${api.url}/v1/sources`, { key: api.adminKey, body })).body;
  return {
    sourceId,
    writeKey: writeKey as string,
    send: (events: unknown[]) => call(`${api.url}/v1/collect`, { key: writeKey, body: { events } }),
    lookup: (type: string, value: string) => call(`${api.url}/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`, { key: api.adminKey }),
    /** Waits until the partitions have folded at least `count` of this source's events. */
    folded: (count: number) =>
      waitFor(`${count} events folded`, async () => (await call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey })).body.profiles?.eventsApplied >= count),
    /** Events the partition writers dropped as repeats of events already folded. */
    duplicatesDropped: async (): Promise<number> => (await call(`${api.url}/v1/sources/${sourceId}`, { key: api.adminKey })).body.profiles.duplicatesDropped,
  };
}

export type SourceClient = Awaited<ReturnType<typeof newSource>>;
