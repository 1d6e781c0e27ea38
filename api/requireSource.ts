import type { SourceDoc, SourceStore } from '../store/sources';
import { ProblemError } from './problem';

/** The source a route's `:id` names, or a 404 naming it. */
export async function requireSource(sources: SourceStore, id: string): Promise<SourceDoc> {
  const source = await sources.get(id);
  if (!source) throw new ProblemError(404, 'source-not-found', 'No such source', [{ path: 'params.id', message: `no source ${id}` }]);
  return source;
}
