import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildTaxonomyTree,
  IAB_AUDIENCE_TAXONOMY,
  MAX_TAXONOMY_CELL,
  MAX_TAXONOMY_DEPTH,
  MAX_TAXONOMY_ROWS,
  parseIabAudienceTaxonomy,
  parseProviderTaxonomy,
  TaxonomyImportQuerySchema,
  TaxonomyTreeSchema,
  type TaxonomyNode,
  type TaxonomyParseResult,
} from '../../domain/taxonomy';

/** 40 rows copied verbatim from InteractiveAdvertisingBureau/Taxonomies "Audience Taxonomies/Audience Taxonomy 1.1.tsv". */
const iabExcerpt = readFileSync(join(__dirname, '../fixtures/iab-audience-taxonomy-1.1-excerpt.tsv'), 'utf8');

function nodesOf(result: TaxonomyParseResult): TaxonomyNode[] {
  if (!result.ok) throw new Error(`expected a valid file: ${JSON.stringify(result.errors)}`);
  return result.nodes;
}

function errorsOf(result: TaxonomyParseResult) {
  if (result.ok) throw new Error('expected the file to be rejected');
  return result.errors;
}

const byId = (nodes: TaxonomyNode[], id: string) => nodes.find((node) => node.id === id)!;

describe('parseIabAudienceTaxonomy: the file as the IAB Tech Lab publishes it', () => {
  it('reads every row of the real TSV, names each category by its deepest tier and paths it through Parent ID', () => {
    const nodes = nodesOf(parseIabAudienceTaxonomy(iabExcerpt));
    expect(nodes).toHaveLength(40);
    expect(byId(nodes, '1')).toEqual({ id: '1', parentId: null, name: 'Demographic', path: ['Demographic'], source: IAB_AUDIENCE_TAXONOMY, kind: 'category' });
    expect(byId(nodes, '3')).toMatchObject({ parentId: '2', name: '18-20', path: ['Demographic', 'Age Range', '18-20'] });
    expect(byId(nodes, '22')).toMatchObject({
      name: 'Postgraduate Education',
      path: ['Demographic', 'Education & Occupation', 'Education (Highest Level)', 'College Education', 'Postgraduate Education'],
    });
    expect(byId(nodes, '56').name).toBe('*Region / State Extension');
    expect(byId(nodes, '659').path).toEqual(['Interest', 'Sports', 'Rugby', 'Rugby Union']);
  });

  it('takes the same file comma-separated, with headers in any case and spacing, and a taxonomy name of its own', () => {
    const csv = [
      'unique id,PARENT  ID,"Condensed Name (1st, 2nd, Last Tier)",tier 1,Tier2,TIER 3',
      '206,,Interest,Interest,,',
      '607,206,Interest | Sports,Interest,Sports,',
      '608,607,Interest | Sports | American Football |,Interest,Sports,American Football',
      '"1000","607","Interest | Sports | Running, Jogging |","Interest","Sports","Running, Jogging"',
    ].join('\r\n');
    const nodes = nodesOf(parseIabAudienceTaxonomy(csv, 'iab-copy'));
    expect(nodes.map((node) => node.path.join(' > '))).toEqual(['Interest', 'Interest > Sports', 'Interest > Sports > American Football', 'Interest > Sports > Running, Jogging']);
    expect(new Set(nodes.map((node) => node.source))).toEqual(new Set(['iab-copy']));
  });

  it('falls back to the condensed name when there are no tier columns, and prefers a Name column over both', () => {
    const condensed = 'Unique ID\tParent ID\tCondensed Name (1st, 2nd, Last Tier)\n1\t\tDemographic\n3\t1\tDemographic | Age Range | 18-20 |\n';
    expect(nodesOf(parseIabAudienceTaxonomy(condensed)).map((node) => node.name)).toEqual(['Demographic', '18-20']);
    const named = 'Unique ID,Parent ID,Name,Tier 1\n1,,Demo,Demographic\n';
    expect(nodesOf(parseIabAudienceTaxonomy(named))[0].name).toBe('Demo');
  });

  describe('rejects the whole file, naming the row and column of each problem', () => {
    const header = 'Unique ID\tParent ID\tTier 1\tTier 2';
    const file = (...rows: string[]) => [header, ...rows].join('\n');

    it('a missing column', () => {
      expect(errorsOf(parseIabAudienceTaxonomy('Unique ID\tTier 1\n1\tDemographic\n'))).toEqual([{ path: 'header.Parent ID', message: 'missing column "Parent ID"' }]);
      expect(errorsOf(parseIabAudienceTaxonomy('Unique ID\tParent ID\n1\t\n'))).toEqual([expect.objectContaining({ path: 'header.Name' })]);
    });

    it('a duplicate id', () => {
      expect(errorsOf(parseIabAudienceTaxonomy(file('1\t\tDemographic\t', '2\t1\tDemographic\tAge Range', '2\t1\tDemographic\tGender')))).toEqual([
        { path: 'row 4.Unique ID', message: 'duplicate id "2" (first on row 3)' },
      ]);
    });

    it('an unknown parent', () => {
      expect(errorsOf(parseIabAudienceTaxonomy(file('1\t\tDemographic\t', '2\t9\tDemographic\tAge Range')))).toEqual([{ path: 'row 3.Parent ID', message: 'unknown parent "9"' }]);
    });

    it('a cycle, once, on its first row', () => {
      const errors = errorsOf(parseIabAudienceTaxonomy(file('1\t\tDemographic\t', '2\t3\tDemographic\tA', '3\t4\tDemographic\tB', '4\t2\tDemographic\tC', '5\t5\tDemographic\tD')));
      expect(errors).toEqual([
        { path: 'row 3.Parent ID', message: 'cycle: 2 → 3 → 4 → 2' },
        { path: 'row 6.Parent ID', message: 'cycle: 5 → 5' },
      ]);
    });

    it('an empty name or id', () => {
      expect(errorsOf(parseIabAudienceTaxonomy(file('1\t\tDemographic\t', '2\t1\t\t', '\t1\tDemographic\tGender')))).toEqual([
        { path: 'row 3.Tier 1', message: 'empty name' },
        { path: 'row 4.Unique ID', message: 'empty id' },
      ]);
    });

    it(`more than ${MAX_TAXONOMY_ROWS} rows`, () => {
      const rows = Array.from({ length: MAX_TAXONOMY_ROWS + 1 }, (_, index) => `${index + 1}\t\tCategory ${index + 1}\t`);
      expect(errorsOf(parseIabAudienceTaxonomy(file(...rows)))).toEqual([{ path: '(body)', message: `more than ${MAX_TAXONOMY_ROWS} rows` }]);
      expect(nodesOf(parseIabAudienceTaxonomy(file(...rows.slice(1))))).toHaveLength(MAX_TAXONOMY_ROWS);
    });

    it('an empty file and a malformed quote', () => {
      expect(errorsOf(parseIabAudienceTaxonomy(''))).toEqual([{ path: '(body)', message: 'empty file: expected a header row' }]);
      expect(errorsOf(parseProviderTaxonomy('id,parent_id,name\n1,,"Sports\n', 'acme'))[0].path).toBe('row 2');
    });

    it('at most 100 errors, and how many more', () => {
      const rows = Array.from({ length: 150 }, (_, index) => `${index + 1}\tnope\tX\t`);
      const errors = errorsOf(parseIabAudienceTaxonomy(file(...rows)));
      expect(errors).toHaveLength(101);
      expect(errors[100]).toEqual({ path: '(body)', message: 'and 50 more errors' });
    });
  });
});

describe('parseProviderTaxonomy: id,parent_id,name[,description]', () => {
  it('reads a provider file into the same node model, keeping descriptions', () => {
    const csv = 'id,parent_id,name,description\nauto,,Automotive,\nauto.intender,auto,In-market: cars,"Looked at 3+ car listings, last 30 days"\n';
    expect(nodesOf(parseProviderTaxonomy(csv, 'acme-data'))).toEqual([
      { id: 'auto', parentId: null, name: 'Automotive', path: ['Automotive'], source: 'acme-data', kind: 'category' },
      {
        id: 'auto.intender',
        parentId: 'auto',
        name: 'In-market: cars',
        path: ['Automotive', 'In-market: cars'],
        source: 'acme-data',
        kind: 'category',
        description: 'Looked at 3+ car listings, last 30 days',
      },
    ]);
  });

  it('names the missing column and the offending row by its header', () => {
    expect(errorsOf(parseProviderTaxonomy('id,name\n1,A\n', 'acme'))).toEqual([{ path: 'header.parent_id', message: 'missing column "parent_id"' }]);
    expect(errorsOf(parseProviderTaxonomy('ID,Parent_ID,Name\n1,,A\n2,1, \n', 'acme'))).toEqual([{ path: 'row 3.Name', message: 'empty name' }]);
  });

  it('refuses a cell longer than a category keeps, or holding a NUL, naming its row and column', () => {
    const long = (n: number) => 'x'.repeat(n);
    const csv = ['id,parent_id,name,description', `a,,${long(MAX_TAXONOMY_CELL.name)},${long(MAX_TAXONOMY_CELL.description)}`, `${long(MAX_TAXONOMY_CELL.id + 1)},a,B,`, `c,a,${long(9_000_000)},`, 'd,a,D\u0000E,', `e,a,E,${long(MAX_TAXONOMY_CELL.description + 1)}`].join('\n');
    expect(errorsOf(parseProviderTaxonomy(csv, 'acme'))).toEqual([
      { path: 'row 3.id', message: `longer than ${MAX_TAXONOMY_CELL.id} characters` },
      { path: 'row 4.name', message: `longer than ${MAX_TAXONOMY_CELL.name} characters` },
      { path: 'row 5.name', message: 'must not hold the NUL character' },
      { path: 'row 6.description', message: `longer than ${MAX_TAXONOMY_CELL.description} characters` },
    ]);
  });

  it('refuses a chain deeper than any taxonomy, naming the first row too deep', () => {
    const chain = (levels: number) => ['id,parent_id,name', ...Array.from({ length: levels }, (_, k) => `${k},${k === 0 ? '' : k - 1},level ${k}`)].join('\n');
    expect(parseProviderTaxonomy(chain(MAX_TAXONOMY_DEPTH), 'acme').ok).toBe(true);
    expect(errorsOf(parseProviderTaxonomy(chain(MAX_TAXONOMY_DEPTH + 1), 'acme'))).toEqual([{ path: `row ${MAX_TAXONOMY_DEPTH + 2}.parent_id`, message: `more than ${MAX_TAXONOMY_DEPTH} levels deep` }]);
  });
});

describe('TaxonomyImportQuerySchema', () => {
  it('defaults an IAB import to iab-audience-1.1 and requires a name for a provider one', () => {
    expect(TaxonomyImportQuerySchema.parse({ format: 'iab' })).toEqual({ format: 'iab', taxonomy: IAB_AUDIENCE_TAXONOMY });
    expect(TaxonomyImportQuerySchema.parse({ format: 'provider', name: 'acme' })).toEqual({ format: 'provider', taxonomy: 'acme' });
    const paths = (query: unknown) => TaxonomyImportQuerySchema.safeParse(query).error?.issues.map((issue) => issue.path.join('.'));
    expect(paths({ format: 'provider' })).toEqual(['name']);
    expect(paths({ format: 'xml', name: 'acme' })).toEqual(['format']);
    expect(paths({ format: 'provider', name: 'a:b' })).toEqual(['name']);
  });
});

describe('buildTaxonomyTree', () => {
  const nodes = nodesOf(parseIabAudienceTaxonomy(iabExcerpt)).filter((node) => node.path[0] === 'Interest' && node.path.length <= 3);
  const segments = [
    { id: 'seg_run', name: 'Runners', taxonomyPath: 'Interests/Sports/Running' },
    { id: 'seg_b', name: 'Buyers', taxonomyPath: null },
    { id: 'seg_fan', name: 'Fans', taxonomyPath: 'Interests/Sports' },
    { id: 'seg_a', name: 'All visitors', taxonomyPath: '' },
    { id: 'seg_x', name: 'Alumni', taxonomyPath: 'Interests' },
  ];

  it('puts segments in their folders, unfiled ones at the root, and each taxonomy in a folder of its categories', () => {
    expect(buildTaxonomyTree(nodes, segments)).toEqual({
      children: [
        {
          kind: 'folder',
          name: 'Interests',
          children: [
            {
              kind: 'folder',
              name: 'Sports',
              children: [
                { kind: 'folder', name: 'Running', children: [{ kind: 'segment', name: 'Runners', id: 'seg_run' }] },
                { kind: 'segment', name: 'Fans', id: 'seg_fan' },
              ],
            },
            { kind: 'segment', name: 'Alumni', id: 'seg_x' },
          ],
        },
        {
          kind: 'folder',
          name: IAB_AUDIENCE_TAXONOMY,
          taxonomy: IAB_AUDIENCE_TAXONOMY,
          children: [
            {
              kind: 'category',
              name: 'Interest',
              id: '206',
              taxonomy: IAB_AUDIENCE_TAXONOMY,
              children: [
                { kind: 'category', name: 'Academic Interests', id: '207', taxonomy: IAB_AUDIENCE_TAXONOMY, children: [expect.objectContaining({ name: 'Arts and Humanities', children: [] })] },
                {
                  kind: 'category',
                  name: 'Sports',
                  id: '607',
                  taxonomy: IAB_AUDIENCE_TAXONOMY,
                  children: ['American Football', 'Auto Racing', 'College Sports', 'Rugby'].map((name) => expect.objectContaining({ kind: 'category', name, children: [] })),
                },
              ],
            },
          ],
        },
        { kind: 'segment', name: 'All visitors', id: 'seg_a' },
        { kind: 'segment', name: 'Buyers', id: 'seg_b' },
      ],
    });
  });

  it('gives the same tree whatever order its input comes in, and a tree the schema accepts', () => {
    const tree = buildTaxonomyTree(nodes, segments);
    expect(buildTaxonomyTree([...nodes].reverse(), [...segments].reverse())).toEqual(tree);
    expect(JSON.stringify(buildTaxonomyTree([...nodes].reverse(), [...segments].reverse()))).toBe(JSON.stringify(tree));
    expect(TaxonomyTreeSchema.parse(tree)).toEqual(tree);
  });

  it('is empty with nothing to show', () => {
    expect(buildTaxonomyTree([], [])).toEqual({ children: [] });
  });
});
