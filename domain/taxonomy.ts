import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { CsvError, parse } from 'csv-parse/sync';
import { z } from 'zod';
import type { FieldError } from './collect';
import { compareText } from './text';

extendZodWithOpenApi(z);

/**
 * The segment taxonomy: category trees imported from a file (the IAB Audience Taxonomy 1.1, or a
 * data provider's own), and the tree `GET /v1/taxonomy` shows, where segments sit in folders named
 * by their `taxonomyPath` beside the imported categories.
 */

export const IAB_AUDIENCE_TAXONOMY = 'iab-audience-1.1';
export const MAX_TAXONOMY_ROWS = 50_000;
/** Levels a category may sit below its root. */
export const MAX_TAXONOMY_DEPTH = 16;
/** Enough to fix a file by; a wholly wrong file would otherwise answer with 50k of them. */
const MAX_REPORTED_ERRORS = 100;
/** The longest cells a category keeps: each node also holds the names on its path, and nodes are written a thousand at a time. */
export const MAX_TAXONOMY_CELL = { id: 256, name: 1024, description: 4096 } as const;

// ---- schemas -----------------------------------------------------------------------------------

/** Taxonomy names become part of stored keys (`<taxonomy>:<generation>:<id>`), hence no `:`. */
export const TaxonomyNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, `.`, `_` and `-`, at most 64')
  .openapi({ example: 'acme-data' });

export const TAXONOMY_FORMATS = ['iab', 'provider'] as const;
export type TaxonomyFormat = (typeof TAXONOMY_FORMATS)[number];

/**
 * The import's query, one shape per format (the document's `oneOf` on `format`): `iab` imports the
 * IAB Audience Taxonomy 1.1 TSV/CSV as published, into `name` (default `iab-audience-1.1`);
 * `provider` a CSV with columns `id,parent_id,name[,description]`, into `name`, which it needs.
 */
export const TaxonomyImportQuerySchema = z
  .discriminatedUnion('format', [
    z.object({ format: z.literal('iab'), name: TaxonomyNameSchema.optional() }),
    z.object({ format: z.literal('provider'), name: TaxonomyNameSchema }),
  ])
  .transform((query) => ({ format: query.format, taxonomy: query.name ?? IAB_AUDIENCE_TAXONOMY }));

export const TaxonomyNodeSchema = z
  .object({
    id: z.string().min(1).openapi({ description: "The category's id in its file (`Unique ID` or `id`)" }),
    parentId: z.string().nullable(),
    name: z.string().min(1),
    path: z.array(z.string()).openapi({ description: 'Names from the root down to this category, itself included' }),
    source: z.string().openapi({ description: `The taxonomy it was imported into: \`${IAB_AUDIENCE_TAXONOMY}\` or a provider's name` }),
    kind: z.literal('category'),
    description: z.string().optional(),
  })
  .openapi('TaxonomyNode');
export type TaxonomyNode = z.infer<typeof TaxonomyNodeSchema>;

const TREE_NODE_KINDS = ['folder', 'category', 'segment'] as const;

export const TaxonomyTreeNodeSchema = z
  .object({
    kind: z.enum(TREE_NODE_KINDS),
    name: z.string(),
    id: z.string().optional().openapi({ description: "A segment's id, or a category's id within its taxonomy" }),
    taxonomy: z.string().optional().openapi({ description: "On a taxonomy's top-level folder and its categories: the taxonomy's name" }),
    get children() {
      return z.array(TaxonomyTreeNodeSchema).optional();
    },
  })
  .openapi('TaxonomyTreeNode');
export type TaxonomyTreeNode = z.infer<typeof TaxonomyTreeNodeSchema>;

export const TaxonomyTreeSchema = z.object({ children: z.array(TaxonomyTreeNodeSchema) }).openapi('TaxonomyTree');
export type TaxonomyTree = z.infer<typeof TaxonomyTreeSchema>;

export const TaxonomyImportResponseSchema = z
  .object({ taxonomy: z.string(), nodes: z.number().int(), importedAt: z.string().openapi({ format: 'date-time' }) })
  .openapi('TaxonomyImportResponse');
export type TaxonomyImportResponse = z.infer<typeof TaxonomyImportResponseSchema>;

// ---- parsing -----------------------------------------------------------------------------------

export type TaxonomyParseResult = { ok: true; nodes: TaxonomyNode[] } | { ok: false; errors: FieldError[] };

/** A category as read from its row, before its parent is checked and its path known. */
interface CategoryRow {
  row: number;
  id: string;
  parentId: string | null;
  name: string;
  description?: string;
}

/** Headers compare without case, whitespace or underscores: `Unique ID` = `uniqueid`, `parent_id` = `Parent ID`. */
function headerKey(header: string): string {
  return header.toLowerCase().replace(/[\s_]+/g, '');
}

interface Table {
  headers: string[];
  /** Data rows; `rows[i]` is spreadsheet row `i + 2` (the header is row 1). */
  rows: string[][];
}

/** Reads comma- or tab-separated text (whichever the header line uses) with csv-parse. */
function readTable(text: string): Table | FieldError[] {
  const firstLine = text.replace(/^\uFEFF/, '').split(/\r?\n/, 1)[0] ?? '';
  let records: string[][];
  try {
    records = parse(text, {
      bom: true,
      delimiter: firstLine.includes('\t') ? '\t' : ',',
      relax_column_count: true,
      relax_quotes: true,
      skip_empty_lines: true,
      skip_records_with_empty_values: true,
      // One past the limit is enough to know the file is too long, without reading the rest.
      to: MAX_TAXONOMY_ROWS + 2,
    }) as string[][];
  } catch (error) {
    if (!(error instanceof CsvError)) throw error;
    // `records` counts the records read before the one that failed (the header included).
    return [{ path: `row ${((error as CsvError & { records?: number }).records ?? 0) + 1}`, message: error.message }];
  }
  if (records.length === 0) return [{ path: '(body)', message: 'empty file: expected a header row' }];
  if (records.length - 1 > MAX_TAXONOMY_ROWS) return [{ path: '(body)', message: `more than ${MAX_TAXONOMY_ROWS} rows` }];
  return { headers: records[0].map((header) => header.trim()), rows: records.slice(1) };
}

/** Finds each wanted column by its header key; a missing one is an error naming it. */
function findColumns<K extends string>(headers: string[], wanted: Record<K, string>, errors: FieldError[]): Record<K, number> {
  const keys = headers.map(headerKey);
  const found = {} as Record<K, number>;
  for (const [column, label] of Object.entries(wanted) as Array<[K, string]>) {
    found[column] = keys.indexOf(headerKey(label));
    if (found[column] < 0) errors.push({ path: `header.${label}`, message: `missing column "${label}"` });
  }
  return found;
}

function cell(row: string[], column: number): string {
  return column >= 0 ? (row[column] ?? '').trim() : '';
}

/**
 * The IAB Audience Taxonomy 1.1 as the IAB Tech Lab publishes it (TSV, also under a `.csv` name):
 * `Unique ID`, `Parent ID`, `Condensed Name (1st, 2nd, Last Tier)`, `Tier 1` … `Tier 6`, and
 * columns we ignore (the leading unnamed one, `*Extension Notes`). A category's name is a `Name`
 * column if the file has one, else its deepest non-empty tier, else the last part of the condensed
 * name. `Parent ID` decides where it sits: the tiers disagree with it on a few published rows.
 */
export function parseIabAudienceTaxonomy(text: string, taxonomy: string = IAB_AUDIENCE_TAXONOMY): TaxonomyParseResult {
  const table = readTable(text);
  if (Array.isArray(table)) return { ok: false, errors: table };
  const errors: FieldError[] = [];
  const columns = findColumns(table.headers, { id: 'Unique ID', parentId: 'Parent ID' }, errors);
  const keys = table.headers.map(headerKey);
  const nameColumn = keys.indexOf('name');
  const condensedColumn = keys.findIndex((key) => key.startsWith('condensedname'));
  const tierColumns = keys
    .map((key, index) => ({ tier: /^tier(\d+)$/.exec(key)?.[1], index }))
    .filter((column) => column.tier !== undefined)
    .sort((a, b) => Number(a.tier) - Number(b.tier))
    .map((column) => column.index);
  const nameLabel = nameColumn >= 0 ? table.headers[nameColumn] : tierColumns.length > 0 ? table.headers[tierColumns[0]] : table.headers[condensedColumn];
  if (nameColumn < 0 && condensedColumn < 0 && tierColumns.length === 0) {
    errors.push({ path: 'header.Name', message: 'missing column: expected "Name", "Condensed Name (1st, 2nd, Last Tier)" or "Tier 1" … "Tier 6"' });
  }
  if (errors.length > 0) return { ok: false, errors };

  const nameOf = (row: string[]): string => {
    if (nameColumn >= 0) return cell(row, nameColumn);
    const tiers = tierColumns.map((column) => cell(row, column)).filter(Boolean);
    if (tiers.length > 0) return tiers[tiers.length - 1];
    return cell(row, condensedColumn).split('|').map((part) => part.trim()).filter(Boolean).pop() ?? '';
  };
  const rows = table.rows.map((row, index) => ({
    row: index + 2,
    id: cell(row, columns.id),
    parentId: cell(row, columns.parentId) || null,
    name: nameOf(row),
  }));
  return buildNodes(rows, taxonomy, { id: table.headers[columns.id], parentId: table.headers[columns.parentId], name: nameLabel });
}

/**
 * A data provider's own taxonomy: a CSV (or TSV) with the header `id,parent_id,name` and optionally
 * `description`; `parent_id` is empty for a top-level category. Other columns are ignored.
 */
export function parseProviderTaxonomy(text: string, taxonomy: string): TaxonomyParseResult {
  const table = readTable(text);
  if (Array.isArray(table)) return { ok: false, errors: table };
  const errors: FieldError[] = [];
  const columns = findColumns(table.headers, { id: 'id', parentId: 'parent_id', name: 'name' }, errors);
  if (errors.length > 0) return { ok: false, errors };
  const descriptionColumn = table.headers.map(headerKey).indexOf('description');
  const rows = table.rows.map((row, index) => {
    const description = cell(row, descriptionColumn);
    return {
      row: index + 2,
      id: cell(row, columns.id),
      parentId: cell(row, columns.parentId) || null,
      name: cell(row, columns.name),
      ...(description && { description }),
    };
  });
  return buildNodes(rows, taxonomy, { id: table.headers[columns.id], parentId: table.headers[columns.parentId], name: table.headers[columns.name] });
}

export function parseTaxonomyFile(format: TaxonomyFormat, text: string, taxonomy: string): TaxonomyParseResult {
  return format === 'iab' ? parseIabAudienceTaxonomy(text, taxonomy) : parseProviderTaxonomy(text, taxonomy);
}

/**
 * Checks the rows as a whole (ids present and unique, names present, every parent a row, no cycle)
 * and gives each category its path. Any error rejects the file: an import is all or nothing.
 */
function buildNodes(rows: CategoryRow[], taxonomy: string, labels: { id: string; parentId: string; name: string }): TaxonomyParseResult {
  const errors: FieldError[] = [];
  const byId = new Map<string, CategoryRow>();
  for (const row of rows) {
    // The store holds no NUL, and a category longer than these would make its node, or a batch of them, too large to store.
    for (const [field, label] of [['id', labels.id], ['parentId', labels.parentId], ['name', labels.name], ['description', 'description']] as const) {
      const text = row[field];
      const max = MAX_TAXONOMY_CELL[field === 'parentId' ? 'id' : field];
      if (text && text.length > max) errors.push({ path: `row ${row.row}.${label}`, message: `longer than ${max} characters` });
      else if (text?.includes('\u0000')) errors.push({ path: `row ${row.row}.${label}`, message: 'must not hold the NUL character' });
    }
    if (!row.id) errors.push({ path: `row ${row.row}.${labels.id}`, message: 'empty id' });
    else if (byId.has(row.id)) errors.push({ path: `row ${row.row}.${labels.id}`, message: `duplicate id "${row.id}" (first on row ${byId.get(row.id)!.row})` });
    else byId.set(row.id, row);
    if (!row.name) errors.push({ path: `row ${row.row}.${labels.name}`, message: 'empty name' });
  }
  for (const row of rows) {
    if (row.parentId !== null && !byId.has(row.parentId)) errors.push({ path: `row ${row.row}.${labels.parentId}`, message: `unknown parent "${row.parentId}"` });
  }
  if (errors.length === 0) errors.push(...findCycles(byId, labels.parentId));
  if (errors.length === 0) {
    // Taxonomies are a few levels deep (IAB's has 6); a far deeper chain is a broken file, and its paths would cost quadratic memory.
    for (const row of rows) {
      let depth = 0;
      for (let at: CategoryRow | undefined = row; at && depth <= MAX_TAXONOMY_DEPTH; at = at.parentId === null ? undefined : byId.get(at.parentId)) depth++;
      if (depth > MAX_TAXONOMY_DEPTH) {
        errors.push({ path: `row ${row.row}.${labels.parentId}`, message: `more than ${MAX_TAXONOMY_DEPTH} levels deep` });
        break;
      }
    }
  }
  if (errors.length > 0) {
    const shown = errors.slice(0, MAX_REPORTED_ERRORS);
    if (errors.length > shown.length) shown.push({ path: '(body)', message: `and ${errors.length - shown.length} more errors` });
    return { ok: false, errors: shown };
  }

  const paths = new Map<string, string[]>();
  const pathOf = (row: CategoryRow): string[] => {
    // Iterative, parents first: a deep chain must not exhaust the stack.
    const chain: CategoryRow[] = [];
    for (let at: CategoryRow | undefined = row; at && !paths.has(at.id); at = at.parentId === null ? undefined : byId.get(at.parentId)) chain.push(at);
    for (const at of chain.reverse()) paths.set(at.id, [...(at.parentId === null ? [] : paths.get(at.parentId)!), at.name]);
    return paths.get(row.id)!;
  };
  const nodes = rows.map((row): TaxonomyNode => ({
    id: row.id,
    parentId: row.parentId,
    name: row.name,
    path: pathOf(row),
    source: taxonomy,
    kind: 'category',
    ...(row.description && { description: row.description }),
  }));
  return { ok: true, nodes };
}

/** Every parent chain must end at a top-level category; one error per cycle, on its first row. */
function findCycles(byId: Map<string, CategoryRow>, parentLabel: string): FieldError[] {
  const errors: FieldError[] = [];
  const state = new Map<string, 'walking' | 'done'>();
  for (const start of byId.values()) {
    const walked: CategoryRow[] = [];
    let at: CategoryRow | undefined = start;
    while (at && !state.has(at.id)) {
      state.set(at.id, 'walking');
      walked.push(at);
      at = at.parentId === null ? undefined : byId.get(at.parentId);
    }
    if (at && state.get(at.id) === 'walking') {
      const cycle = walked.slice(walked.indexOf(at));
      const first = cycle.reduce((a, b) => (b.row < a.row ? b : a));
      errors.push({ path: `row ${first.row}.${parentLabel}`, message: `cycle: ${[...cycle, at].map((row) => row.id).join(' → ')}` });
    }
    for (const row of walked) state.set(row.id, 'done');
  }
  return errors;
}

// ---- the tree ----------------------------------------------------------------------------------

export interface SegmentPlacement {
  id: string;
  name: string;
  taxonomyPath: string | null;
}

const KIND_ORDER: Record<TaxonomyTreeNode['kind'], number> = { folder: 0, category: 1, segment: 2 };

function compareTreeNodes(a: TaxonomyTreeNode, b: TaxonomyTreeNode): number {
  return KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || compareText(a.name, b.name) || compareText(a.taxonomy ?? '', b.taxonomy ?? '') || compareText(a.id ?? '', b.id ?? '');
}

function sortTree(nodes: TaxonomyTreeNode[]): TaxonomyTreeNode[] {
  for (const node of nodes) if (node.children) sortTree(node.children);
  return nodes.sort(compareTreeNodes);
}

/** `"Interests/ Sports//Running"` → `["Interests", "Sports", "Running"]`; blank parts are dropped. */
export function taxonomyFolders(taxonomyPath: string | null): string[] {
  return (taxonomyPath ?? '').split('/').map((part) => part.trim()).filter(Boolean);
}

/**
 * The tree `GET /v1/taxonomy` answers: segments in the folders their `taxonomyPath` names, and each
 * imported taxonomy as a top-level folder (carrying `taxonomy`) of its categories. A segment with no
 * `taxonomyPath` sits at the root itself: an invented "Unfiled" folder could collide with a real
 * one. Children are sorted folders, categories, then segments, each by name, so the same input
 * always gives the same tree. A category whose parent is missing (impossible for a checked import)
 * sits at its taxonomy's top.
 */
export function buildTaxonomyTree(nodes: TaxonomyNode[], segments: SegmentPlacement[]): TaxonomyTree {
  const root: TaxonomyTreeNode[] = [];

  for (const segment of segments) {
    let children = root;
    for (const name of taxonomyFolders(segment.taxonomyPath)) {
      let folder = children.find((child) => child.kind === 'folder' && child.name === name && child.taxonomy === undefined);
      if (!folder) children.push((folder = { kind: 'folder', name, children: [] }));
      children = folder.children!;
    }
    children.push({ kind: 'segment', name: segment.name, id: segment.id });
  }

  const byTaxonomy = new Map<string, TaxonomyNode[]>();
  for (const node of nodes) {
    if (!byTaxonomy.has(node.source)) byTaxonomy.set(node.source, []);
    byTaxonomy.get(node.source)!.push(node);
  }
  for (const [taxonomy, categories] of byTaxonomy) {
    const treeNodes = new Map(categories.map((node) => [node.id, { kind: 'category', name: node.name, id: node.id, taxonomy, children: [] } as TaxonomyTreeNode]));
    const top: TaxonomyTreeNode[] = [];
    for (const node of categories) {
      const parent = node.parentId === null ? undefined : treeNodes.get(node.parentId);
      (parent ? parent.children! : top).push(treeNodes.get(node.id)!);
    }
    root.push({ kind: 'folder', name: taxonomy, taxonomy, children: top });
  }

  return { children: sortTree(root) };
}
