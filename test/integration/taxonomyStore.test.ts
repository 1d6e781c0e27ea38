import type { TaxonomyNode } from '../../domain/taxonomy';
import type { Store } from '../../store/db';
import { TAXONOMY_IMPORTS, TAXONOMY_NODES, TaxonomyImportSuperseded, TaxonomyStore } from '../../store/taxonomy';
import { testStore } from '../support/services';

/** A flat taxonomy of `count` top-level categories named `<label> <n>`. */
function categories(taxonomy: string, label: string, count: number): TaxonomyNode[] {
  return Array.from({ length: count }, (_, index) => ({
    id: String(index + 1),
    parentId: null,
    name: `${label} ${index + 1}`,
    path: [`${label} ${index + 1}`],
    source: taxonomy,
    kind: 'category' as const,
  }));
}

const labelsOf = (nodes: TaxonomyNode[]) => new Set(nodes.map((node) => node.name.split(' ')[0]));

describe('taxonomy store: a taxonomy is replaced whole, and readers only ever see a complete one', () => {
  let store: Store;
  let taxonomies: TaxonomyStore;
  beforeAll(async () => {
    store = await testStore('taxonomy');
    taxonomies = new TaxonomyStore(store);
  });
  afterAll(() => store.close());

  const storedGenerations = async (taxonomy: string) =>
    new Set((await store.db.collection(TAXONOMY_NODES).find({ taxonomy }).toArray()).map((doc) => doc.generation as string));

  it('a second import replaces the first: list returns only the latest generation, and the first is removed', async () => {
    const first = await taxonomies.replace('iab-audience-1.1', categories('iab-audience-1.1', 'Old', 2500));
    expect(first.nodes).toBe(2500);
    expect(await taxonomies.list()).toHaveLength(2500);

    const second = await taxonomies.replace('iab-audience-1.1', categories('iab-audience-1.1', 'New', 1200));
    const listed = await taxonomies.list();
    expect(listed).toHaveLength(1200);
    expect(labelsOf(listed)).toEqual(new Set(['New']));
    expect(listed.find((node) => node.id === '1')).toEqual({ id: '1', parentId: null, name: 'New 1', path: ['New 1'], source: 'iab-audience-1.1', kind: 'category' });
    expect(await storedGenerations('iab-audience-1.1')).toEqual(new Set([second.generation]));
    expect(await taxonomies.listImports()).toEqual([{ taxonomy: 'iab-audience-1.1', generation: second.generation, nodes: 1200, importedAt: second.importedAt }]);
  });

  it('a reader polling during a replace sees the old taxonomy or the new one, never a mix or a part', async () => {
    await taxonomies.replace('provider-a', categories('provider-a', 'Before', 3000));
    const seen: string[] = [];
    let replacing = true;
    const replace = taxonomies.replace('provider-a', categories('provider-a', 'After', 2000)).finally(() => (replacing = false));
    while (replacing) {
      const nodes = (await taxonomies.list()).filter((node) => node.source === 'provider-a');
      seen.push(`${[...labelsOf(nodes)].join('+')}:${nodes.length}`);
    }
    await replace;
    seen.push(`${[...labelsOf((await taxonomies.list()).filter((node) => node.source === 'provider-a'))].join('+')}`);
    // Read more than once while the replace was under way (the last view is read after it).
    expect(seen.length - 1).toBeGreaterThan(1);
    expect(seen.slice(0, -1).every((view) => view === 'Before:3000' || view === 'After:2000')).toBe(true);
    expect(seen[seen.length - 1]).toBe('After');
  });

  it('a reader that read the import record just before a replace committed reads the new generation, not the removed one', async () => {
    await taxonomies.replace('provider-e', categories('provider-e', 'Stale', 4));
    const staleImports = await taxonomies.listImports();
    await taxonomies.replace('provider-e', categories('provider-e', 'Fresh', 3));
    jest.spyOn(taxonomies, 'listImports').mockResolvedValueOnce(staleImports);
    const nodes = (await taxonomies.list()).filter((node) => node.source === 'provider-e');
    expect(nodes.map((node) => node.name).sort()).toEqual(['Fresh 1', 'Fresh 2', 'Fresh 3']);
  });

  it('nodes of an import that crashed before its commit are never listed, and the next import removes them', async () => {
    const committed = await taxonomies.replace('provider-b', categories('provider-b', 'Kept', 3));
    // What a crash between writing the nodes and committing leaves behind: a newer, uncommitted generation.
    const crashed = `${committed.generation}z`;
    await store.db.collection(TAXONOMY_NODES).insertMany(
      categories('provider-b', 'Crashed', 5).map((node) => ({ _id: `provider-b:${crashed}:${node.id}`, taxonomy: 'provider-b', generation: crashed, ...node })) as never[],
    );
    expect(labelsOf((await taxonomies.list()).filter((node) => node.source === 'provider-b'))).toEqual(new Set(['Kept']));

    const next = await taxonomies.replace('provider-b', categories('provider-b', 'Next', 4), new Date(Date.now() + 1000));
    expect(labelsOf((await taxonomies.list()).filter((node) => node.source === 'provider-b'))).toEqual(new Set(['Next']));
    expect(await storedGenerations('provider-b')).toEqual(new Set([next.generation]));
  });

  it('an import that started before the committed one is discarded instead of going back in time', async () => {
    const later = await taxonomies.replace('provider-c', categories('provider-c', 'Later', 3), new Date(Date.now() + 60_000));
    await expect(taxonomies.replace('provider-c', categories('provider-c', 'Earlier', 3), new Date())).rejects.toBeInstanceOf(TaxonomyImportSuperseded);
    expect(labelsOf((await taxonomies.list()).filter((node) => node.source === 'provider-c'))).toEqual(new Set(['Later']));
    expect(await storedGenerations('provider-c')).toEqual(new Set([later.generation]));
  });

  it('taxonomies are independent: replacing one leaves the others whole', async () => {
    const before = (await taxonomies.list()).filter((node) => node.source !== 'provider-d');
    await taxonomies.replace('provider-d', categories('provider-d', 'D', 2));
    await taxonomies.replace('provider-d', []);
    expect(await taxonomies.list()).toEqual(before);
    expect((await taxonomies.listImports()).find((doc) => doc.taxonomy === 'provider-d')).toMatchObject({ nodes: 0 });
  });

  it('of imports of one taxonomy committing at once, the one started last stands, whole', async () => {
    const base = Date.now() + 120_000;
    const attempts = await Promise.allSettled(Array.from({ length: 6 }, (_, k) => taxonomies.replace('provider-f', categories('provider-f', `Run${k}`, 50 + k), new Date(base + k))));
    expect(attempts[5].status).toBe('fulfilled');
    for (const attempt of attempts) if (attempt.status === 'rejected') expect(attempt.reason).toBeInstanceOf(TaxonomyImportSuperseded);
    const nodes = (await taxonomies.list()).filter((node) => node.source === 'provider-f');
    expect(labelsOf(nodes)).toEqual(new Set(['Run5']));
    expect(nodes).toHaveLength(55);
    const winner = (attempts[5] as PromiseFulfilledResult<{ generation: string }>).value.generation;
    expect(await storedGenerations('provider-f')).toEqual(new Set([winner]));
    expect(await store.db.collection(TAXONOMY_IMPORTS).countDocuments({ taxonomy: 'provider-f' })).toBe(1);
  });

  it('reads and replaces a taxonomy imported before imports were kept apart', async () => {
    const generation = '000000001legacy00';
    await store.db.collection(TAXONOMY_NODES).insertMany(categories('provider-g', 'Legacy', 2).map((node) => ({ _id: `provider-g:${generation}:${node.id}`, taxonomy: 'provider-g', generation, ...node })) as never[]);
    await store.db.collection(TAXONOMY_IMPORTS).insertOne({ _id: 'provider-g', generation, nodes: 2, importedAt: new Date() } as never);
    expect(labelsOf((await taxonomies.list()).filter((node) => node.source === 'provider-g'))).toEqual(new Set(['Legacy']));
    await taxonomies.replace('provider-g', categories('provider-g', 'Current', 3));
    expect(labelsOf((await taxonomies.list()).filter((node) => node.source === 'provider-g'))).toEqual(new Set(['Current']));
    expect(await store.db.collection(TAXONOMY_IMPORTS).findOne({ _id: 'provider-g' as never })).toBeNull();
  });
});
