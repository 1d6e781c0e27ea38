/** A path item of the OpenAPI document: its operations by method. */
export type DocumentedOperations = Record<string, unknown>;

/**
 * The document's operations for a request path: those of the templates it matches with the fewest
 * parameters, since a path matching a literal template (`/v1/segments/estimate`) is that path, not
 * an id of a parameterized one (`/v1/segments/{id}`). Null when no template matches.
 */
export function documentedRoutes(document: { paths?: Record<string, object> }): (path: string) => DocumentedOperations[] | null {
  const routes = Object.entries(document.paths ?? {}).map(([template, operations]) => ({
    pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}/]+\}/g, '[^/]+')}$`),
    operations: operations as DocumentedOperations,
    parameters: (template.match(/\{/g) ?? []).length,
  }));
  return (path) => {
    const matching = routes.filter(({ pattern }) => pattern.test(path));
    if (matching.length === 0) return null;
    const fewest = Math.min(...matching.map((route) => route.parameters));
    return matching.filter((route) => route.parameters === fewest).map((route) => route.operations);
  };
}
