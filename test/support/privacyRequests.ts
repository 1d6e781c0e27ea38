import type { call } from './http';
import { waitFor } from './services';

/** A privacy request's view once it has ended (completed or failed), asked for through the API. */
export function settledRequest(admin: (path: string) => ReturnType<typeof call>, id: string, timeoutMs = 60_000) {
  return waitFor(
    `privacy request ${id}`,
    async () => {
      const view = (await admin(`/v1/privacy/requests/${id}`)).body;
      return view.state === 'completed' || view.state === 'failed' ? view : null;
    },
    timeoutMs,
  );
}
