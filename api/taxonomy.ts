import express, { type RequestHandler, type Router } from 'express';
import {
  buildTaxonomyTree,
  parseTaxonomyFile,
  TaxonomyImportQuerySchema,
  type SegmentPlacement,
  type TaxonomyImportResponse,
  type TaxonomyTree,
} from '../domain/taxonomy';
import { logger } from '../logger';
import type { Store } from '../store/db';
import { TaxonomyImportSuperseded, TaxonomyStore } from '../store/taxonomy';
import { parseOr400, ProblemError } from './problem';

export const TAXONOMY_FILE_TYPES = ['text/csv', 'text/tab-separated-values', 'text/plain'];
export const TAXONOMY_FILE_LIMIT = '20mb';

export interface TaxonomyRouterDeps {
  store: Store;
  listSegments: () => Promise<SegmentPlacement[]>;
  admin: RequestHandler;
}

/** The segment taxonomy: the tree of segment folders and imported categories, and category imports. */
export function taxonomyRouter({ store, listSegments, admin }: TaxonomyRouterDeps): Router {
  const taxonomies = new TaxonomyStore(store);
  const router = express.Router();

  router.get('/v1/taxonomy', admin, async (_req, res) => {
    const [nodes, segments] = await Promise.all([taxonomies.list(), listSegments()]);
    const tree: TaxonomyTree = buildTaxonomyTree(nodes, segments);
    res.json(tree);
  });

  // The file is parsed as text on this route only, after the admin check: nobody else uploads 20 MB.
  router.post('/v1/taxonomy/imports', admin, express.text({ type: TAXONOMY_FILE_TYPES, limit: TAXONOMY_FILE_LIMIT }), async (req, res) => {
    const { format, taxonomy } = parseOr400(TaxonomyImportQuerySchema, req.query, 'taxonomy import query');
    if (typeof req.body !== 'string') {
      throw new ProblemError(415, 'unsupported-media-type', 'Send the taxonomy file as text', [
        { path: 'headers.content-type', message: `expected one of ${TAXONOMY_FILE_TYPES.join(', ')}` },
      ]);
    }
    // The document requires a file of at least one character: nothing at all is a bad request, not a file of no rows.
    if (req.body.length === 0) throw new ProblemError(400, 'validation', 'A taxonomy file is required', [{ path: '(body)', message: 'empty file: expected a header row' }]);
    const parsed = parseTaxonomyFile(format, req.body, taxonomy);
    if (!parsed.ok) {
      // The request is as documented; what its rows say cannot be imported (and the taxonomy stays as it was).
      throw new ProblemError(422, 'taxonomy-file-refused', 'The taxonomy file was refused: nothing of it was imported', parsed.errors);
    }
    let imported;
    try {
      imported = await taxonomies.replace(taxonomy, parsed.nodes);
    } catch (error) {
      if (!(error instanceof TaxonomyImportSuperseded)) throw error;
      throw new ProblemError(409, 'import-superseded', 'A later import of this taxonomy replaced this one', [{ path: 'name', message: error.message }]);
    }
    logger.info({ taxonomy, format, nodes: imported.nodes, generation: imported.generation }, 'taxonomy imported');
    const body: TaxonomyImportResponse = { taxonomy, nodes: imported.nodes, importedAt: imported.importedAt.toISOString() };
    res.status(201).json(body);
  });

  return router;
}
