import { GppModel } from '@iabgpp/cmpapi';
import { ConsentError, decodeConsent, decodeGpp, decodeTcf, profilingRefusal, type StoredConsent } from '../../domain/consent';
import { prepareEvents } from '../../domain/collect';
import { ConsentPolicySchema, DEFAULT_CONSENT_POLICY, type ConsentPolicy } from '../../domain/schemas';
import { buildTcString } from './tcfFixture';

/** A GPP string with the given sections' fields set, encoded by the IAB's own library. */
function gppString(fields: Record<string, Record<string, unknown>>): string {
  const model = new GppModel();
  for (const [section, values] of Object.entries(fields)) for (const [field, value] of Object.entries(values)) model.setFieldValue(section, field, value);
  return model.encode();
}

const policy = (overrides: Partial<ConsentPolicy> = {}): ConsentPolicy => ConsentPolicySchema.parse(overrides);

describe('TCF policy version', () => {
  it('refuses a TC string issued under a policy version before TCF v2.2 (4)', () => {
    const old = buildTcString({ purposeConsents: [1, 3], policyVersion: 2 });
    expect(() => decodeTcf(old)).toThrow(ConsentError);
    expect(() => decodeTcf(old)).toThrow('TCF policy version 2 is invalid');
  });

  it('accepts policy version 4 and later', () => {
    expect(decodeTcf(buildTcString({ purposeConsents: [1], policyVersion: 4 })).policyVersion).toBe(4);
    expect(decodeTcf(buildTcString({ purposeConsents: [1], policyVersion: 5 })).policyVersion).toBe(5);
  });
});

describe('TCF publisher restrictions', () => {
  it('keeps the vendors a publisher takes consent away from, per purpose, as ranges', () => {
    const tcString = buildTcString({
      purposeConsents: [1, 3],
      vendorConsents: [5],
      gvlVendors: [5, 6, 7, 8, 10, 20],
      publisherRestrictions: [
        { purpose: 3, type: 'not_allowed', vendors: [5, 6, 7, 10] },
        { purpose: 7, type: 'require_li', vendors: [8] },
        { purpose: 7, type: 'not_allowed', vendors: [7] },
        { purpose: 2, type: 'require_consent', vendors: [20] },
      ],
    });
    expect(decodeTcf(tcString).restrictions).toEqual([
      { purpose: 3, vendors: [[5, 7], [10, 10]] },
      { purpose: 7, vendors: [[7, 8]] },
    ]);
    expect(decodeTcf(buildTcString({ purposeConsents: [1] })).restrictions).toBeUndefined();
  });
});

describe('decodeGpp', () => {
  it('reads a US National sale opt-out', () => {
    const { gpp } = decodeGpp(gppString({ usnat: { SaleOptOutNotice: 1, SaleOptOut: 1 } }));
    expect(gpp.sectionIds).toEqual([7]);
    expect(gpp.saleOptOut).toBe(true);
  });

  it('reads "did not opt out" as false and "not applicable" as absent', () => {
    const { gpp } = decodeGpp(gppString({ usnat: { SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 0 } }));
    expect(gpp.saleOptOut).toBe(false);
    expect(gpp.sharingOptOut).toBe(false);
    expect(gpp.targetedAdvertisingOptOut).toBeUndefined();
  });

  it('reads a targeted-advertising opt-out in a state section', () => {
    expect(decodeGpp(gppString({ usca: { SharingOptOut: 1 } })).gpp.sharingOptOut).toBe(true);
    expect(decodeGpp(gppString({ usva: { TargetedAdvertisingOptOut: 1 } })).gpp.targetedAdvertisingOptOut).toBe(true);
  });

  it('reads the US Privacy section as a sale opt-out', () => {
    expect(decodeGpp(gppString({ uspv1: { Notice: 'Y', OptOutSale: 'Y' } })).gpp.saleOptOut).toBe(true);
    expect(decodeGpp(gppString({ uspv1: { Notice: 'Y', OptOutSale: 'N' } })).gpp.saleOptOut).toBe(false);
  });

  it('an opt-out in any section wins over "did not opt out" in another', () => {
    expect(decodeGpp(gppString({ usnat: { SaleOptOut: 2 }, usca: { SaleOptOut: 1 } })).gpp.saleOptOut).toBe(true);
  });

  it('reads a Global Privacy Control signal as an opt-out of sale, sharing and targeted advertising', () => {
    const { gpp } = decodeGpp(gppString({ usnat: { SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 2, GpcSegmentIncluded: true, Gpc: true } }));
    expect(gpp).toMatchObject({ gpc: true, saleOptOut: true, sharingOptOut: true, targetedAdvertisingOptOut: true });
    expect(profilingRefusal({ gpp }, policy())).toBe('gpp_opt_out');
    const without = decodeGpp(gppString({ usnat: { SaleOptOut: 2, GpcSegmentIncluded: true, Gpc: false } })).gpp;
    expect(without.gpc).toBeUndefined();
    expect(without.saleOptOut).toBe(false);
  });

  it('reads the TCF EU section as a TC string', () => {
    const tcString = buildTcString({ purposeConsents: [1, 3, 4], vendorConsents: [755], isServiceSpecific: true });
    const model = new GppModel();
    model.decodeSection('tcfeuv2', tcString);
    const consent = decodeConsent({ gpp: model.encode() });
    expect(consent.tcf?.purposeConsents).toEqual([1, 3, 4]);
    expect(consent.tcf?.vendorConsents).toEqual([755]);
  });

  it('a TC string sent beside the GPP string takes precedence over its EU section', () => {
    const model = new GppModel();
    model.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [1], isServiceSpecific: true }));
    const consent = decodeConsent({ gpp: model.encode(), tcf: buildTcString({ purposeConsents: [1, 3] }) });
    expect(consent.tcf?.purposeConsents).toEqual([1, 3]);
  });

  describe('with the sections in force (gppSid)', () => {
    /** A string with both an EU section refusing everything and a US National section opting out of sale. */
    const both = () => {
      const model = new GppModel();
      model.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [], isServiceSpecific: true }));
      model.setFieldValue('usnat', 'SaleOptOutNotice', 1);
      model.setFieldValue('usnat', 'SaleOptOut', 1);
      return model.encode();
    };

    it('reads only the sections listed: a US visitor\'s EU section is no TC string, an EU visitor\'s US section no opt-out', () => {
      const us = decodeConsent({ gpp: both(), gppSid: [7] });
      expect(us.tcf).toBeUndefined();
      expect(us.gpp).toMatchObject({ sectionIds: [2, 7], applicableSections: [7], saleOptOut: true });
      const eu = decodeConsent({ gpp: both(), gppSid: [2] });
      expect(eu.tcf?.purposeConsents).toEqual([]);
      expect(eu.gpp?.saleOptOut).toBeUndefined();
      // So a US visitor on a site that reads TCF purposes is not refused by the EU section, but by the US opt-out where honoured.
      expect(profilingRefusal(us, policy({ mode: 'require', honorGppOptOuts: false }))).toBeNull();
      expect(profilingRefusal(us, policy({ mode: 'require', honorGppOptOuts: true }))).toBe('gpp_opt_out');
      expect(profilingRefusal(eu, policy({ mode: 'require', honorGppOptOuts: true }))).toBe('tcf_purpose');
    });

    it('reads none with [-1] (no section applies); every section while the tool is loading (0) or with an empty list', () => {
      const none = decodeConsent({ gpp: both(), gppSid: [-1] });
      expect(none.tcf).toBeUndefined();
      expect(none.gpp?.saleOptOut).toBeUndefined();
      for (const gppSid of [[0], [], undefined]) {
        const all = decodeConsent({ gpp: both(), ...(gppSid && { gppSid }) });
        expect({ gppSid, purposes: all.tcf?.purposeConsents, sale: all.gpp?.saleOptOut }).toEqual({ gppSid, purposes: [], sale: true });
      }
    });

    it('refuses section ids without a GPP string, naming gppSid', () => {
      expect(() => decodeConsent({ gppSid: [7] })).toThrow(expect.objectContaining({ field: 'gppSid' }));
    });
  });

  it.each([['garbage sections', 'DBABMA~garbage'], ['a truncated header', 'DBA']])('refuses %s with ConsentError naming gpp', (_, value) => {
    let error: unknown;
    try {
      decodeGpp(value);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConsentError);
    expect((error as ConsentError).field).toBe('gpp');
  });
});

describe('profilingRefusal', () => {
  const tcf = (purposeConsents: number[], extra: { li?: number[]; vendors?: number[] } = {}): StoredConsent =>
    decodeConsent({ tcf: buildTcString({ purposeConsents, purposeLegitimateInterests: extra.li, vendorConsents: extra.vendors }) });

  it('profiles an event without any signal unless the policy requires one', () => {
    expect(profilingRefusal(undefined, policy())).toBeNull();
    expect(profilingRefusal(undefined, policy({ mode: 'require' }))).toBe('no_consent_signal');
    expect(profilingRefusal({}, policy({ mode: 'require' }))).toBe('no_consent_signal');
  });

  it('needs consent to every purpose of the policy (default 1 and 3)', () => {
    expect(DEFAULT_CONSENT_POLICY.tcfPurposes).toEqual([1, 3]);
    expect(profilingRefusal(tcf([1, 3]), policy())).toBeNull();
    expect(profilingRefusal(tcf([1]), policy())).toBe('tcf_purpose');
    expect(profilingRefusal(tcf([]), policy({ mode: 'require' }))).toBe('tcf_purpose');
  });

  it('does not take legitimate interest for purposes 3 to 6, but does for others', () => {
    expect(profilingRefusal(tcf([1], { li: [3] }), policy())).toBe('tcf_purpose');
    expect(profilingRefusal(tcf([1], { li: [7] }), policy({ tcfPurposes: [1, 7] }))).toBeNull();
    expect(profilingRefusal(tcf([], { li: [1] }), policy({ tcfPurposes: [1] }))).toBe('tcf_purpose');
  });

  it('checks the vendor when the policy names one', () => {
    expect(profilingRefusal(tcf([1, 3], { vendors: [755] }), policy({ tcfVendorId: 755 }))).toBeNull();
    expect(profilingRefusal(tcf([1, 3], { vendors: [8] }), policy({ tcfVendorId: 755 }))).toBe('tcf_vendor');
  });

  it("refuses a consented vendor that a publisher restriction bars from one of the policy's purposes", () => {
    const restricted = (purpose: number, type: 'not_allowed' | 'require_consent' | 'require_li', vendors = [755]): StoredConsent =>
      decodeConsent({ tcf: buildTcString({ purposeConsents: [1, 3, 7], vendorConsents: [755, 756], publisherRestrictions: [{ purpose, type, vendors }] }) });
    expect(profilingRefusal(restricted(3, 'not_allowed'), policy({ tcfVendorId: 755 }))).toBe('tcf_vendor');
    expect(profilingRefusal(restricted(1, 'not_allowed'), policy({ tcfVendorId: 755 }))).toBe('tcf_vendor');
    // Sent to legitimate interest, consent no longer counts for the vendor; only vendor consent is read.
    expect(profilingRefusal(restricted(7, 'require_li'), policy({ tcfVendorId: 755, tcfPurposes: [1, 7] }))).toBe('tcf_vendor');
    // Requiring consent is what is checked anyway; other purposes and other vendors are not touched.
    expect(profilingRefusal(restricted(7, 'require_consent'), policy({ tcfVendorId: 755, tcfPurposes: [1, 7] }))).toBeNull();
    expect(profilingRefusal(restricted(7, 'not_allowed'), policy({ tcfVendorId: 755 }))).toBeNull();
    expect(profilingRefusal(restricted(3, 'not_allowed', [756]), policy({ tcfVendorId: 755 }))).toBeNull();
    // Without a vendor id the policy speaks for no vendor: restrictions name vendors, so none applies.
    expect(profilingRefusal(restricted(3, 'not_allowed'), policy())).toBeNull();
  });

  it('honours GPP opt-outs of sale, sharing and targeted advertising unless told not to', () => {
    const optedOut = decodeConsent({ gpp: gppString({ usnat: { SharingOptOut: 1 } }) });
    const notOptedOut = decodeConsent({ gpp: gppString({ usnat: { SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 2 } }) });
    expect(profilingRefusal(optedOut, policy())).toBe('gpp_opt_out');
    expect(profilingRefusal(notOptedOut, policy({ mode: 'require' }))).toBeNull();
    expect(profilingRefusal(optedOut, policy({ honorGppOptOuts: false }))).toBeNull();
  });

  it('takes a GPP string as a signal only where a US section decides something', () => {
    const undecided = decodeConsent({ gpp: gppString({ usnat: { SaleOptOut: 0, SharingOptOut: 0, TargetedAdvertisingOptOut: 0 } }) });
    expect(undecided.gpp).toBeDefined();
    expect(profilingRefusal(undecided, policy({ mode: 'require' }))).toBe('no_consent_signal');
    expect(profilingRefusal(undecided, policy())).toBeNull();
  });

  it('reads the explicit purpose flag', () => {
    expect(profilingRefusal({ purposes: { profiling: false } }, policy())).toBe('purpose_flag');
    expect(profilingRefusal({ purposes: { profiling: true } }, policy({ mode: 'require' }))).toBeNull();
    expect(profilingRefusal({ purposes: { analytics: true } }, policy({ mode: 'require' }))).toBe('no_consent_signal');
    expect(profilingRefusal({ purposes: { ads: false } }, policy({ purposeFlag: 'ads' }))).toBe('purpose_flag');
  });

  it('refuses a person who has not decided yet (tcfPending) whatever the mode needs, and only with a TC string beside it refuses the input', () => {
    expect(profilingRefusal({ tcfPending: true }, policy())).toBe('tcf_pending');
    expect(profilingRefusal({ tcfPending: true, purposes: { profiling: true } }, policy({ mode: 'require' }))).toBe('tcf_pending');
    expect(profilingRefusal({ tcfPending: true }, policy({ mode: 'not_required' }))).toBeNull();
    expect(() => decodeConsent({ tcf: buildTcString({ purposeConsents: [1] }), tcfPending: true })).toThrow('cannot come with a TC string');
    expect(decodeConsent({ tcfPending: true })).toEqual({ tcfPending: true });
  });

  it('refuses an event whose GPP tool had not answered where no TCF statement settles the GDPR, or where GPP opt-outs are honoured; never beside a GPP string', () => {
    const granted = decodeConsent({ tcf: buildTcString({ purposeConsents: [1, 3, 4] }) });
    expect(decodeConsent({ gppPending: true })).toEqual({ gppPending: true });
    expect(() => decodeConsent({ gppPending: true, gpp: 'DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA' })).toThrow('cannot come with a GPP string');
    expect(profilingRefusal({ gppPending: true }, policy())).toBe('gpp_pending');
    expect(profilingRefusal({ gppPending: true }, policy({ mode: 'require' }))).toBe('gpp_pending');
    expect(profilingRefusal({ gppPending: true }, policy({ mode: 'not_required' }))).toBeNull();
    expect(profilingRefusal({ gppPending: true, tcfNotApplicable: true }, policy())).toBe('gpp_pending');
    expect(profilingRefusal({ gppPending: true, tcfNotApplicable: true }, policy({ honorGppOptOuts: false }))).toBeNull();
    expect(profilingRefusal({ ...granted, gppPending: true }, policy({ honorGppOptOuts: false }))).toBeNull();
    expect(profilingRefusal({ gppPending: true }, policy({ honorGppOptOuts: false }))).toBe('gpp_pending');
  });

  it('takes word that the GDPR does not apply as a signal that refuses nothing, never beside a TC string or the no-decision mark', () => {
    expect(decodeConsent({ tcfNotApplicable: true })).toEqual({ tcfNotApplicable: true });
    expect(profilingRefusal({ tcfNotApplicable: true }, policy({ mode: 'require' }))).toBeNull();
    expect(() => decodeConsent({ tcf: buildTcString({ purposeConsents: [1] }), tcfNotApplicable: true })).toThrow('cannot come with a TC string or tcfPending');
    expect(() => decodeConsent({ tcfPending: true, tcfNotApplicable: true })).toThrow('cannot come with a TC string or tcfPending');
  });

  it("reads a browser's Global Privacy Control as an opt-out of sale, sharing and targeted advertising, and its absence as no signal", () => {
    expect(profilingRefusal({ gpc: true }, policy())).toBe('gpp_opt_out');
    expect(profilingRefusal({ gpc: true, tcf: decodeTcf(buildTcString({ purposeConsents: [1, 3] })) }, policy())).toBe('gpp_opt_out');
    expect(profilingRefusal({ gpc: true }, policy({ honorGppOptOuts: false }))).toBeNull();
    // An opt-out never stands in for consent a policy requires.
    expect(profilingRefusal({ gpc: true }, policy({ mode: 'require', honorGppOptOuts: false }))).toBe('no_consent_signal');
    expect(profilingRefusal({ gpc: false }, policy({ mode: 'require' }))).toBe('no_consent_signal');
    expect(decodeConsent({ gpc: true })).toEqual({ gpc: true });
  });

  it('reads a purpose flag named like an inherited property as absent', () => {
    expect(profilingRefusal({ purposes: {} }, policy({ purposeFlag: 'constructor' }))).toBeNull();
    expect(profilingRefusal({ purposes: {} }, policy({ mode: 'require', purposeFlag: 'constructor' }))).toBe('no_consent_signal');
  });

  it('ignores every signal when consent is not required', () => {
    expect(profilingRefusal(tcf([]), policy({ mode: 'not_required' }))).toBeNull();
  });
});

describe('prepareEvents with a consent policy', () => {
  const now = new Date('2026-06-01T00:00:00Z');
  const base = { type: 'page_view', identities: { cookie_id: 'c-1' } };

  it('marks events the policy does not allow as non-profiling, and keeps them', () => {
    const prepared = prepareEvents([base, { ...base, consent: { tcf: buildTcString({ purposeConsents: [1, 3] }) } }], {
      now,
      defaultPhoneRegion: 'US',
      consentPolicy: policy({ mode: 'require' }),
    });
    expect(prepared.rejected).toEqual([]);
    expect(prepared.accepted.map((a) => a.event.nonProfiling)).toEqual(['no_consent_signal', undefined]);
  });

  it('rejects a TC string under an old policy version, naming consent.tcf', () => {
    const prepared = prepareEvents([{ ...base, consent: { tcf: buildTcString({ purposeConsents: [1, 3], policyVersion: 3 }) } }], { now, defaultPhoneRegion: 'US' });
    expect(prepared.accepted).toEqual([]);
    expect(prepared.rejected[0].errors).toEqual([{ path: 'consent.tcf', message: expect.stringContaining('policy version 3') }]);
  });

  it('rejects an unreadable GPP string, naming consent.gpp', () => {
    const prepared = prepareEvents([{ ...base, consent: { gpp: 'DBABMA~garbage' } }], { now, defaultPhoneRegion: 'US' });
    expect(prepared.rejected[0].errors[0].path).toBe('consent.gpp');
  });

  it('rejects an all-zero mobile ad id, naming identities.maid', () => {
    const prepared = prepareEvents([{ type: 'app_open', identities: { maid: '00000000-0000-0000-0000-000000000000' } }], { now, defaultPhoneRegion: 'US' });
    expect(prepared.rejected[0].errors).toEqual([{ path: 'identities.maid', message: expect.stringContaining('all zeros') }]);
  });
});
