import {
  collectRequestSchema,
  ConsentInputSchema,
  CreateSourceRequestSchema,
  EventInputSchema,
  LookupQuerySchema,
} from '../../domain/schemas';

function issuePaths(result: { success: boolean; error?: { issues: Array<{ path: PropertyKey[] }> } }): string[] {
  return (result.error?.issues ?? []).map((issue) => issue.path.map(String).join('.'));
}

describe('CreateSourceRequestSchema', () => {
  const valid = { name: 'Web shop', kind: 'events', party: 'first' };

  it('accepts a valid request and defaults labels to an empty list and consent to the default policy', () => {
    const result = CreateSourceRequestSchema.safeParse(valid);
    expect(result.success).toBe(true);
    expect(result.data).toEqual({ ...valid, labels: [], consent: { mode: 'when_present', tcfPurposes: [1, 3], honorGppOptOuts: true, purposeFlag: 'profiling' } });
  });

  it('needs a mapping for a crm source and refuses one on an events source, naming mapping', () => {
    const crm = CreateSourceRequestSchema.safeParse({ ...valid, kind: 'crm' });
    expect(crm.error?.issues.map((issue) => issue.path.join('.'))).toEqual(['mapping']);
    const mapping = { identities: { crm_id: 'customer_id' } };
    expect(CreateSourceRequestSchema.safeParse({ ...valid, kind: 'crm', mapping }).success).toBe(true);
    const events = CreateSourceRequestSchema.safeParse({ ...valid, mapping });
    expect(events.error?.issues.map((issue) => issue.path.join('.') || (issue as { keys?: string[] }).keys?.join())).toEqual(['mapping']);
  });

  it('names the field of an invalid consent policy', () => {
    const result = CreateSourceRequestSchema.safeParse({ ...valid, consent: { mode: 'always', tcfPurposes: [12] } });
    expect(result.success).toBe(false);
    expect(result.error?.issues.map((issue) => issue.path.join('.')).sort()).toEqual(['consent.mode', 'consent.tcfPurposes.0']);
  });

  it('keeps valid labels', () => {
    const labels = ['no_third_party_export', 'gdpr:art6-1a', '0day'];
    expect(CreateSourceRequestSchema.parse({ ...valid, labels }).labels).toEqual(labels);
  });

  it('trims the name', () => {
    expect(CreateSourceRequestSchema.parse({ ...valid, name: '  Web shop  ' }).name).toBe('Web shop');
  });

  it('accepts each party', () => {
    for (const party of ['first', 'second', 'third']) {
      expect(CreateSourceRequestSchema.safeParse({ ...valid, party }).success).toBe(true);
    }
  });

  it.each([['fourth'], ['First'], [''], [1]])('rejects the unknown party %j', (party) => {
    const result = CreateSourceRequestSchema.safeParse({ ...valid, party });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['party']);
  });

  it.each([['files'], ['Events'], ['']])('rejects the unknown kind %j', (kind) => {
    const result = CreateSourceRequestSchema.safeParse({ ...valid, kind });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['kind']);
  });

  it('rejects extra keys', () => {
    const result = CreateSourceRequestSchema.safeParse({ ...valid, writeKey: 'wk_mine' });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0].code).toBe('unrecognized_keys');
  });

  it.each([
    ['upper case', 'NoExport'],
    ['a space', 'no export'],
    ['a leading underscore', '_private'],
    ['a leading dash', '-x'],
    ['a dot', 'a.b'],
    ['65 characters', 'a'.repeat(65)],
    ['nothing', ''],
  ])('rejects a label with %s', (_, label) => {
    const result = CreateSourceRequestSchema.safeParse({ ...valid, labels: ['ok', label] });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['labels.1']);
  });

  it('accepts a label of exactly 64 characters', () => {
    expect(CreateSourceRequestSchema.safeParse({ ...valid, labels: ['a'.repeat(64)] }).success).toBe(true);
  });

  it('rejects more than 32 labels', () => {
    const labels = Array.from({ length: 33 }, (_, i) => `l${i}`);
    expect(CreateSourceRequestSchema.safeParse({ ...valid, labels }).success).toBe(false);
    expect(CreateSourceRequestSchema.safeParse({ ...valid, labels: labels.slice(0, 32) }).success).toBe(true);
  });

  it('rejects a missing, blank or overlong name', () => {
    const { name: _name, ...withoutName } = valid;
    expect(CreateSourceRequestSchema.safeParse(withoutName).success).toBe(false);
    expect(CreateSourceRequestSchema.safeParse({ ...valid, name: '   ' }).success).toBe(false);
    expect(CreateSourceRequestSchema.safeParse({ ...valid, name: 'n'.repeat(201) }).success).toBe(false);
    expect(CreateSourceRequestSchema.safeParse({ ...valid, name: 'n'.repeat(200) }).success).toBe(true);
  });
});

describe('EventInputSchema', () => {
  const valid = { type: 'page_view', identities: { cookie_id: 'c-1' } };

  it('accepts a minimal event', () => {
    expect(EventInputSchema.safeParse(valid).success).toBe(true);
  });

  it('accepts flat trait values: strings, finite numbers, booleans, null, and flat arrays', () => {
    const traits = { s: 'x', n: -1.5, z: 0, b: false, nil: null, arr: ['a', 2, true] };
    expect(EventInputSchema.parse({ ...valid, traits }).traits).toEqual(traits);
  });

  it.each([
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['NaN', NaN],
  ])('rejects the non-finite number %s as a trait', (_, value) => {
    const result = EventInputSchema.safeParse({ ...valid, traits: { score: value } });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['traits.score']);
  });

  it('rejects a non-finite number inside a trait array', () => {
    expect(EventInputSchema.safeParse({ ...valid, traits: { scores: [1, Infinity] } }).success).toBe(false);
  });

  it('rejects a non-finite number as a property', () => {
    const result = EventInputSchema.safeParse({ ...valid, properties: { price: NaN } });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['properties.price']);
  });

  it('rejects nested arrays in traits', () => {
    const result = EventInputSchema.safeParse({ ...valid, traits: { matrix: [[1, 2], [3]] } });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['traits.matrix']);
  });

  it('rejects null inside a trait array', () => {
    expect(EventInputSchema.safeParse({ ...valid, traits: { tags: ['a', null] } }).success).toBe(false);
  });

  it('rejects objects as trait values', () => {
    const result = EventInputSchema.safeParse({ ...valid, traits: { address: { city: 'Berlin' } } });
    expect(result.success).toBe(false);
    expect(issuePaths(result)).toEqual(['traits.address']);
  });

  it('rejects a trait array of more than 100 values', () => {
    expect(EventInputSchema.safeParse({ ...valid, traits: { tags: Array(101).fill('t') } }).success).toBe(false);
    expect(EventInputSchema.safeParse({ ...valid, traits: { tags: Array(100).fill('t') } }).success).toBe(true);
  });

  it('rejects an empty or overlong trait name', () => {
    expect(EventInputSchema.safeParse({ ...valid, traits: { '': 1 } }).success).toBe(false);
    expect(EventInputSchema.safeParse({ ...valid, traits: { ['n'.repeat(129)]: 1 } }).success).toBe(false);
  });

  it.each([['userId'], ['anonymousId'], ['context']])('rejects the unknown top-level key %j', (key) => {
    const result = EventInputSchema.safeParse({ ...valid, [key]: 'x' });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0].code).toBe('unrecognized_keys');
  });

  it('rejects an unknown identity type', () => {
    expect(EventInputSchema.safeParse({ ...valid, identities: { idfa: 'x' } }).success).toBe(false);
  });

  it('rejects an empty identity value', () => {
    expect(EventInputSchema.safeParse({ ...valid, identities: { cookie_id: '' } }).success).toBe(false);
  });

  it('rejects an empty or overlong type', () => {
    expect(EventInputSchema.safeParse({ ...valid, type: '' }).success).toBe(false);
    expect(EventInputSchema.safeParse({ ...valid, type: 't'.repeat(129) }).success).toBe(false);
  });

  it('accepts ISO timestamps with an offset and non-negative integer epoch milliseconds only', () => {
    for (const timestamp of ['2025-06-14T08:30:00Z', '2025-06-14T08:30:00.5-05:00', 0, 1_750_000_000_000]) {
      expect(EventInputSchema.safeParse({ ...valid, timestamp }).success).toBe(true);
    }
    for (const timestamp of ['2025-06-14', '2025-06-14T08:30:00', 'June 14', -1, 1.5, null]) {
      expect(EventInputSchema.safeParse({ ...valid, timestamp }).success).toBe(false);
    }
  });
});

describe('ConsentInputSchema', () => {
  it('accepts TCF, GPP and purpose flags', () => {
    expect(
      ConsentInputSchema.safeParse({ tcf: 'CQ', gpp: 'DBABMA~CPXxRfA', purposes: { analytics: true, ad_storage: false } })
        .success,
    ).toBe(true);
  });

  it('rejects a GPP string that does not start with "D"', () => {
    expect(ConsentInputSchema.safeParse({ gpp: 'CBABMA' }).success).toBe(false);
  });

  it('rejects purpose names outside lowercase letters and "_"', () => {
    expect(ConsentInputSchema.safeParse({ purposes: { Analytics: true } }).success).toBe(false);
    expect(ConsentInputSchema.safeParse({ purposes: { 'ads-1': true } }).success).toBe(false);
  });

  it('rejects unknown consent keys', () => {
    expect(ConsentInputSchema.safeParse({ usp: '1YNN' }).success).toBe(false);
  });
});

describe('collectRequestSchema', () => {
  it('requires one to the most events allowed and no other keys', () => {
    const CollectRequestSchema = collectRequestSchema(2);
    expect(CollectRequestSchema.safeParse({ events: [{}] }).success).toBe(true);
    expect(CollectRequestSchema.safeParse({ events: [] }).success).toBe(false);
    expect(CollectRequestSchema.safeParse({ events: [{}, {}, {}] }).success).toBe(false);
    expect(CollectRequestSchema.safeParse({ events: [{}], batch: 1 }).success).toBe(false);
  });
});

describe('LookupQuerySchema', () => {
  it('accepts input identity types, including raw email', () => {
    expect(LookupQuerySchema.safeParse({ type: 'email', value: 'jane@example.com' }).success).toBe(true);
    expect(LookupQuerySchema.safeParse({ type: 'fingerprint', value: 'x' }).success).toBe(false);
  });
});
