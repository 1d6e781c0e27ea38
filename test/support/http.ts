/** A small JSON client for the API under test. */
export async function call(
  url: string,
  options: { method?: string; key?: string; body?: unknown; rawBody?: string; contentType?: string; closeConnection?: boolean; timeoutMs?: number; headers?: Record<string, string> } = {},
): Promise<{ status: number; contentType: string; body: any }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key) headers.authorization = `Bearer ${options.key}`;
  const payload = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  if (payload !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
  // A connection for this request alone, not one kept alive for the next.
  if (options.closeConnection) headers.connection = 'close';
  const signal = options.timeoutMs === undefined ? undefined : AbortSignal.timeout(options.timeoutMs);
  const response = await fetch(url, { method: options.method ?? (payload === undefined ? 'GET' : 'POST'), headers, body: payload, signal });
  const text = await response.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: response.status, contentType: response.headers.get('content-type') ?? '', body };
}

/** Runs `tasks` with at most `concurrency` in flight; results in task order. */
export async function inParallel<T>(tasks: Array<() => Promise<T>>, concurrency: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < tasks.length) {
        const index = next++;
        results[index] = await tasks[index]();
      }
    }),
  );
  return results;
}
