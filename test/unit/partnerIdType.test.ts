import { CONNECTORS } from '../../connectors/registry';
import {
  cookieIdsAmong,
  CreateDestinationRequestSchema,
  decide,
  flattenFacts,
  HELD_PARTNER_ID,
  IdTypeSchema,
  ID_TYPES,
  PackedDecisions,
  packFacts,
  partnerIdsOf,
  partnerOfIdType,
  takesIdType,
  type ExportFacts,
  type ExportPolicy,
  type IdType,
} from '../../domain/destinations';

const policy = (idType: IdType, overrides: Partial<ExportPolicy> = {}): ExportPolicy => ({
  idType,
  consent: { tcfPurposes: [1, 3, 4], requireTcf: false, honorGppOptOuts: true, purposeFlags: [] },
  labelsAllowed: [],
  labelsOf: () => [],
  ...overrides,
});

const member: ExportFacts = { ids: ['cookie_id:ck-1', 'cookie_id:ck-2', 'maid:m-1', 'email_sha256:ab12'], tcf: null, sources: ['src_a'] };

describe('the partner id type', () => {
  it('is `partner:<partner id>` beside our own id types', () => {
    expect(IdTypeSchema.parse('partner:ttd')).toBe('partner:ttd');
    expect(IdTypeSchema.parse('partner:dsp_2-eu')).toBe('partner:dsp_2-eu');
    for (const idType of ID_TYPES) expect(IdTypeSchema.parse(idType)).toBe(idType);
    for (const bad of ['partner:', 'partner:TTD', 'partner:a:b', 'partner:a b', 'ttd', 'cookie']) {
      const parsed = IdTypeSchema.safeParse(bad);
      expect({ bad, success: parsed.success }).toEqual({ bad, success: false });
      expect(parsed.error?.issues[0].message).toMatch(/partner:<partner id>/);
    }
  });

  it('names idType when a destination gives a bad one', () => {
    const base = { name: 'x', connector: 'webhook', config: {}, segments: ['seg_1'] };
    expect(CreateDestinationRequestSchema.safeParse({ ...base, idType: 'partner:ttd' }).success).toBe(true);
    const parsed = CreateDestinationRequestSchema.safeParse({ ...base, idType: 'partner:Not A Slug' });
    expect(parsed.error?.issues.map((issue) => issue.path.join('.'))).toEqual(['idType']);
  });

  it('knows its partner', () => {
    expect(partnerOfIdType('partner:ttd')).toBe('ttd');
    expect(partnerOfIdType('cookie_id')).toBeNull();
  });

  it('goes to connectors that name the id type with each batch, not to those with formats of fixed id types', () => {
    expect(takesIdType(CONNECTORS.webhook, 'partner:ttd')).toBe(true);
    expect(takesIdType(CONNECTORS.segment_file, 'partner:ttd')).toBe(true);
    expect(takesIdType(CONNECTORS.dsp_segments, 'partner:ttd')).toBe(true);
    expect(takesIdType(CONNECTORS.people_list, 'partner:ttd')).toBe(false);
    // Our own id types as before.
    expect(takesIdType(CONNECTORS.dsp_segments, 'maid')).toBe(true);
    expect(takesIdType(CONNECTORS.dsp_segments, 'email_sha256')).toBe(false);
  });
});

describe('deciding a member for partner ids', () => {
  it("gives the member's cookie ids, which the export maps through the match table", () => {
    expect(decide(member, policy('partner:ttd'))).toEqual({ withheld: null, ids: ['ck-1', 'ck-2'] });
    expect(decide(member, policy('maid'))).toEqual({ withheld: null, ids: ['m-1'] });
    expect(decide({ ...member, ids: ['maid:m-1'] }, policy('partner:ttd'))).toEqual({ withheld: null, ids: [] });
  });

  it("adds the partner's ids the member holds itself (from cookie syncs), and resolves both kinds to the partner's ids", () => {
    const synced: ExportFacts = { ...member, ids: [...member.ids, 'partner_uid:ttd:T-9', 'partner_uid:lotame:L-1'] };
    const decision = decide(synced, policy('partner:ttd'));
    expect(decision).toEqual({ withheld: null, ids: ['ck-1', 'ck-2', `${HELD_PARTNER_ID}T-9`] });
    const ids = decision.withheld === null ? decision.ids : [];
    // Only the cookie ids are looked up; a held id and a matched one that agree count once.
    expect(cookieIdsAmong(ids)).toEqual(['ck-1', 'ck-2']);
    expect(partnerIdsOf(ids, new Map([['ck-1', ['T-9', 'T-3']]]))).toEqual(['T-9', 'T-3']);
    // A member known to the partner only by its sync still reaches it.
    expect(decide({ ...member, ids: ['partner_uid:ttd:T-9'] }, policy('partner:ttd'))).toEqual({ withheld: null, ids: [`${HELD_PARTNER_ID}T-9`] });
    expect(decide(synced, policy('cookie_id'))).toEqual({ withheld: null, ids: ['ck-1', 'ck-2'] });
    const packed = new PackedDecisions(packFacts([flattenFacts(synced), flattenFacts({ ...member, ids: ['partner_uid:ttd:T-9'] })]), policy('partner:ttd'));
    expect(packed.decide(0)).toEqual(decision);
    expect(packed.decide(1)).toEqual({ withheld: null, ids: [`${HELD_PARTNER_ID}T-9`] });
  });

  it('applies consent and export controls first, as for any id type', () => {
    expect(decide({ ...member, tcf: { purposes: [1, 3], vendors: [] } }, policy('partner:ttd'))).toEqual({ withheld: 'consent' });
    expect(decide(member, policy('partner:ttd', { labelsOf: () => ['partner_data'] }))).toEqual({ withheld: 'label', label: 'partner_data' });
  });

  it('reads the same from packed snapshot facts', () => {
    const packed = packFacts([flattenFacts(member), null, flattenFacts({ ...member, tcf: { purposes: [1], vendors: [] } })]);
    const decisions = new PackedDecisions(packed, policy('partner:ttd'));
    expect(decisions.decide(0)).toEqual({ withheld: null, ids: ['ck-1', 'ck-2'] });
    expect(decisions.decide(1)).toBeNull();
    expect(decisions.decide(2)).toEqual({ withheld: 'consent' });
  });
});
