import { randomBytes } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { TaxonomyNode } from '../domain/taxonomy';
import { insertKeyed, type Store } from './db';

/** Imported taxonomy categories, one document per category and import generation. */
export const TAXONOMY_NODES = 'taxonomy_nodes';
/**
 * One per committed import (`<taxonomy>:<generation>`), inserted once all its nodes are in: readers
 * see a taxonomy's newest. (Taxonomies imported before kept one document named by the taxonomy.)
 */
export const TAXONOMY_IMPORTS = 'taxonomy_imports';

const INSERT_BATCH = 1000;
/** A reader that raced a replace's cleanup reads again; more than this many races in a row is a bug. */
const READ_ATTEMPTS = 3;

/** `_id` = `<taxonomy>:<generation>:<id>`, so a new generation never collides with the one it replaces. */
interface TaxonomyNodeDoc extends TaxonomyNode {
  _id: string;
  taxonomy: string;
  generation: string;
}

interface TaxonomyImportDoc {
  _id: string;
  /** Absent on a taxonomy's document from before imports were kept apart (its `_id` names it). */
  taxonomy?: string;
  generation: string;
  nodes: number;
  importedAt: Date;
}

export interface TaxonomyImport {
  taxonomy: string;
  generation: string;
  nodes: number;
  importedAt: Date;
}

/** Another import of the same taxonomy, started later, was committed first; this one was discarded. */
export class TaxonomyImportSuperseded extends Error {
  constructor(readonly taxonomy: string) {
    super(`a later import of ${taxonomy} replaced this one`);
  }
}

/**
 * Generations sort by time (zero-padded base-36 milliseconds, then randomness), so of two imports
 * of one taxonomy the later-started wins, and cleanup only removes generations older than its own.
 */
function newGeneration(now: Date): string {
  return `${now.getTime().toString(36).padStart(9, '0')}${randomBytes(4).toString('hex')}`;
}

/**
 * Taxonomies are replaced whole and readers never see half an import, without transactions: the
 * new generation's nodes are written first, then its import document is inserted (the commit), and
 * only then are older generations removed. Commits are inserts, never updates of one shared
 * document (the store's updates read, change and write back, so of two concurrent imports the
 * earlier could win), and readers take a taxonomy's newest. Nodes of a crashed import are never
 * pointed at and go with the next import's cleanup. The cleanup and the readers filter on
 * `taxonomy`/`generation`, which scans on FerretDB; imports are rare, so that is fine.
 */
export class TaxonomyStore {
  private readonly nodes: Collection<TaxonomyNodeDoc>;
  private readonly imports: Collection<TaxonomyImportDoc>;

  constructor(store: Store) {
    this.nodes = store.db.collection<TaxonomyNodeDoc>(TAXONOMY_NODES);
    this.imports = store.db.collection<TaxonomyImportDoc>(TAXONOMY_IMPORTS);
  }

  async replace(taxonomy: string, nodes: TaxonomyNode[], now = new Date()): Promise<TaxonomyImport> {
    const generation = newGeneration(now);
    const docs = nodes.map((node): TaxonomyNodeDoc => ({ _id: `${taxonomy}:${generation}:${node.id}`, taxonomy, generation, ...node }));
    for (let from = 0; from < docs.length; from += INSERT_BATCH) {
      await this.nodes.insertMany(docs.slice(from, from + INSERT_BATCH), { ordered: false });
    }
    // Only moves forward: an import that started before the committed one is discarded.
    const superseded = async () => ((await this.current(taxonomy))?.generation ?? '') > generation;
    if (await superseded()) return this.discard(taxonomy, generation);
    await insertKeyed(this.imports, [{ _id: `${taxonomy}:${generation}`, taxonomy, generation, nodes: docs.length, importedAt: now }]);
    // A later import committed at the same time: it stands, and removes what this one wrote.
    if (await superseded()) return this.discard(taxonomy, generation);
    await this.nodes.deleteMany({ taxonomy, generation: { $lt: generation } });
    await this.imports.deleteMany({ taxonomy, generation: { $lt: generation } });
    await this.imports.deleteOne({ _id: taxonomy, taxonomy: { $exists: false } });
    return { taxonomy, generation, nodes: docs.length, importedAt: now };
  }

  private async discard(taxonomy: string, generation: string): Promise<never> {
    await this.nodes.deleteMany({ taxonomy, generation });
    await this.imports.deleteOne({ _id: `${taxonomy}:${generation}` });
    throw new TaxonomyImportSuperseded(taxonomy);
  }

  /** A taxonomy's newest committed import. */
  private async current(taxonomy: string): Promise<TaxonomyImport | null> {
    const [docs, legacy] = await Promise.all([this.imports.find({ taxonomy }).toArray(), this.imports.findOne({ _id: taxonomy, taxonomy: { $exists: false } })]);
    return newestByTaxonomy(legacy ? [...docs, legacy] : docs)[0] ?? null;
  }

  /** The committed imports, by taxonomy name. */
  async listImports(): Promise<TaxonomyImport[]> {
    return newestByTaxonomy(await this.imports.find({}).toArray()).sort((a, b) => (a.taxonomy < b.taxonomy ? -1 : a.taxonomy > b.taxonomy ? 1 : 0));
  }

  /** Every taxonomy's nodes of its committed generation, taxonomy by taxonomy. */
  async list(): Promise<TaxonomyNode[]> {
    const all: TaxonomyNode[] = [];
    for (const current of await this.listImports()) all.push(...(await this.readGeneration(current)));
    return all;
  }

  /**
   * A reader that saw the import document just before a replace committed may find its generation
   * half removed; the count recorded with the commit tells, and the reader starts over.
   */
  private async readGeneration(current: TaxonomyImport): Promise<TaxonomyNode[]> {
    let seen = current;
    for (let attempt = 1; ; attempt++) {
      const docs = await this.nodes.find({ taxonomy: seen.taxonomy, generation: seen.generation }).toArray();
      if (docs.length === seen.nodes) return docs.map(({ _id, taxonomy, generation, ...node }) => node);
      const latest = await this.current(seen.taxonomy);
      if (!latest) return [];
      if (attempt >= READ_ATTEMPTS) throw new Error(`taxonomy ${seen.taxonomy}: generation ${latest.generation} has ${docs.length} of its ${latest.nodes} nodes`);
      seen = latest;
    }
  }
}

function newestByTaxonomy(docs: TaxonomyImportDoc[]): TaxonomyImport[] {
  const newest = new Map<string, TaxonomyImport>();
  for (const { _id, taxonomy = _id, generation, nodes, importedAt } of docs) {
    if ((newest.get(taxonomy)?.generation ?? '') < generation) newest.set(taxonomy, { taxonomy, generation, nodes, importedAt });
  }
  return [...newest.values()];
}
