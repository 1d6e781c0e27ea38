import { PurposeRestriction, RestrictionType, TCString, type PurposeRestrictionVector } from '@iabtcf/core';
import { GppModel, Sections } from '@iabgpp/cmpapi';
import { z } from 'zod';
import type { ConsentInput, ConsentPolicy } from './schemas';

/** Consent as stored on an event and a profile: what the signal said, decoded once at the edge. */
export interface StoredConsent {
  tcf?: {
    tcString: string;
    policyVersion: number;
    cmpId: number;
    created: Date;
    purposeConsents: number[];
    purposeLegitimateInterests: number[];
    vendorConsents: number[];
    /** The publisher's restrictions that take consent away as a vendor's basis for a purpose (absent: none). */
    restrictions?: TcfRestriction[];
  };
  /**
   * The GDPR applies and the person has not decided yet: no TC string (a consent tool still loading,
   * a pixel without one). A TCF statement of its own — consent to nothing — that a later TC string
   * replaces; never beside one.
   */
  tcfPending?: true;
  /** The GDPR does not apply to the person, as their consent tool said: a TCF statement of its own that ends `tcfPending`; never beside a TC string. */
  tcfNotApplicable?: true;
  /** A GPP consent tool had not answered: refuses this event alone (see `profilingRefusal`); never beside a GPP string, never kept on a profile. */
  gppPending?: true;
  gpp?: StoredGpp;
  /**
   * Global Privacy Control as the browser sent it with the request (`Sec-GPC: 1`): true is an opt-out
   * of sale, sharing and targeted advertising, as California and the states with universal opt-out
   * mechanisms require; false, that a browser request came without it.
   */
  gpc?: boolean;
  purposes?: Record<string, boolean>;
}

/**
 * A GPP string with what its US sections say about selling, sharing and targeted advertising:
 * true when any applicable section records the person's opt-out (US National, a state section, or
 * the older US Privacy string), false when sections apply and none does, absent when none applies.
 */
export interface StoredGpp {
  gppString: string;
  sectionIds: number[];
  /** The sections in force, as the consent tool said (`gppSid`); absent: all of the string's. */
  applicableSections?: number[];
  saleOptOut?: boolean;
  sharingOptOut?: boolean;
  targetedAdvertisingOptOut?: boolean;
  /**
   * A US section's `Gpc` field: the browser sent a Global Privacy Control signal, which California
   * and the states with universal opt-out mechanisms treat as an opt-out of sale, sharing and
   * targeted advertising — so all three read as opted out, whatever the section's own fields say.
   */
  gpc?: true;
}

/**
 * Vendors a publisher does not let rely on consent for one purpose: "not allowed" at all, or "require
 * legitimate interest" (the platform reads a vendor's consent only, so such a vendor counts as not
 * consented for that purpose). Vendor ids as inclusive ranges, sorted: a restriction may cover
 * thousands of ids.
 */
export interface TcfRestriction {
  purpose: number;
  vendors: Array<[number, number]>;
}

export class ConsentError extends Error {
  constructor(
    message: string,
    /** The input field the problem is in. */
    readonly field: 'tcf' | 'gpp' | 'gppSid' | 'tcfPending' | 'tcfNotApplicable' | 'gppPending' = 'tcf',
  ) {
    super(message);
  }
}

/** TCF 2.2 strings carry policy version 4; older ones were issued under rules the IAB has retired. */
const MIN_TCF_POLICY_VERSION = 4;

/** The restrictions of a TC string that take consent away, per purpose (see `TcfRestriction`). */
function consentRestrictions(vector: PurposeRestrictionVector): TcfRestriction[] {
  return vector.getPurposes().flatMap((purpose) => {
    const vendors = [RestrictionType.NOT_ALLOWED, RestrictionType.REQUIRE_LI].flatMap((type) => vector.getVendors(new PurposeRestriction(purpose, type)));
    return vendors.length > 0 ? [{ purpose, vendors: mergedRanges(vendors.map((id): [number, number] => [id, id])) }] : [];
  });
}

/** Several TC strings' restrictions as one: a vendor restricted for a purpose by any of them is restricted. */
export function unitedRestrictions(lists: ReadonlyArray<TcfRestriction[] | undefined>): TcfRestriction[] {
  const byPurpose = new Map<number, Array<[number, number]>>();
  for (const restriction of lists.flatMap((list) => list ?? [])) byPurpose.set(restriction.purpose, [...(byPurpose.get(restriction.purpose) ?? []), ...restriction.vendors]);
  return [...byPurpose.entries()]
    .sort(([a], [b]) => a - b)
    .map(([purpose, ranges]) => ({ purpose, vendors: mergedRanges(ranges) }));
}

/** Ranges sorted, with overlapping and adjacent ones joined. */
function mergedRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const merged: Array<[number, number]> = [];
  for (const [from, to] of [...ranges].sort(([a], [b]) => a - b)) {
    const last = merged[merged.length - 1];
    if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
    else merged.push([from, to]);
  }
  return merged;
}

/**
 * Whether a vendor may rely on a TC string's consent for every purpose given: it is consented, and no
 * publisher restriction takes consent away from it for one of them.
 */
export function vendorConsented(tcf: { vendors: readonly number[]; restrictions?: readonly TcfRestriction[] }, vendorId: number, purposes: readonly number[]): boolean {
  if (!tcf.vendors.includes(vendorId)) return false;
  return !tcf.restrictions?.some((restriction) => purposes.includes(restriction.purpose) && restriction.vendors.some(([from, to]) => vendorId >= from && vendorId <= to));
}

function idsOf(vector: { forEach(cb: (value: boolean, id: number) => void): void }): number[] {
  const ids: number[] = [];
  vector.forEach((value, id) => {
    if (value) ids.push(id);
  });
  return ids;
}

/** Decodes a TCF v2 string with the IAB's library; a string it cannot read is refused, not guessed at. */
export function decodeTcf(tcString: string): NonNullable<StoredConsent['tcf']> {
  let model;
  try {
    model = TCString.decode(tcString);
  } catch (error) {
    throw new ConsentError(`not a readable TCF string: ${(error as Error).message}`);
  }
  if (model.version !== 2) throw new ConsentError(`TCF version ${model.version} is not supported`);
  const policyVersion = Number(model.policyVersion);
  if (policyVersion < MIN_TCF_POLICY_VERSION) throw new ConsentError(`TCF policy version ${policyVersion} is invalid; TCF v2.2 needs ${MIN_TCF_POLICY_VERSION} or later`);
  const restrictions = consentRestrictions(model.publisherRestrictions);
  return {
    tcString,
    policyVersion,
    cmpId: Number(model.cmpId),
    created: model.created,
    purposeConsents: idsOf(model.purposeConsents),
    purposeLegitimateInterests: idsOf(model.purposeLegitimateInterests),
    vendorConsents: idsOf(model.vendorConsents),
    ...(restrictions.length > 0 && { restrictions }),
  };
}

/** GPP's US opt-out fields: 0 not applicable, 1 opted out, 2 did not opt out. */
const US_OPT_OUT_FIELDS = { saleOptOut: 'SaleOptOut', sharingOptOut: 'SharingOptOut', targetedAdvertisingOptOut: 'TargetedAdvertisingOptOut' } as const;
const TCF_EU_SECTION = 'tcfeuv2';
const TCF_EU_SECTION_ID = 2;
const US_PRIVACY_SECTION = 'uspv1';

/** A list of GPP section ids as URL macros expand it (`${GPP_SID}`: `7` or `2,6`). */
const GPP_SID_LIST = /^-?\d{1,3}(,-?\d{1,3})*$/;

/** The GPP sections in force (consent `gppSid`): the GPP CMP API's section ids, -1 to 255. */
export const GppSidSchema = z.array(z.number().int().min(-1).max(255)).max(32);

/** A `gpp_sid` query value as `gppSid`; null when it is not a list the consent input takes. */
export function parseGppSid(text: string): number[] | null {
  if (!GPP_SID_LIST.test(text)) return null;
  const ids = GppSidSchema.safeParse(text.split(',').map(Number));
  return ids.success ? ids.data : null;
}

/** GPP section names as the IAB's library has them, to their ids. */
const SECTION_IDS = new Map([...Sections.SECTION_ID_NAME_MAP].map(([id, name]) => [name, id]));

/**
 * Whether a section is in force for the event: every section is when the consent tool did not say
 * which (no `applicable`, an empty list, or 0: a tool still loading); otherwise those it listed
 * (-1, the GPP CMP API's "no section applies", is none).
 */
function inForce(name: string, applicable: readonly number[] | undefined): boolean {
  if (applicable === undefined || applicable.length === 0 || applicable.includes(0)) return true;
  const id = SECTION_IDS.get(name);
  return id !== undefined && applicable.includes(id);
}

/**
 * Decodes a GPP string with the IAB's library (every section, so a corrupt one is refused here, not
 * later), reading only the sections in force (see inForce).
 */
export function decodeGpp(gppString: string, applicable?: readonly number[]): { gpp: StoredGpp; tcfString?: string } {
  let sections: Record<string, Record<string, unknown>>;
  let model: GppModel;
  try {
    model = new GppModel(gppString);
    sections = model.toObject() as Record<string, Record<string, unknown>>;
  } catch (error) {
    throw new ConsentError(`not a readable GPP string: ${(error as Error).message}`, 'gpp');
  }
  const gpp: StoredGpp = { gppString, sectionIds: model.getSectionIds() as number[], ...(applicable !== undefined && { applicableSections: [...applicable] }) };
  for (const [name, section] of Object.entries(sections)) {
    if (!inForce(name, applicable)) continue;
    for (const [key, field] of Object.entries(US_OPT_OUT_FIELDS) as Array<[keyof typeof US_OPT_OUT_FIELDS, string]>) {
      const value = section[field];
      if (value === 1) gpp[key] = true;
      else if (value === 2 && gpp[key] === undefined) gpp[key] = false;
    }
    if (name === US_PRIVACY_SECTION && (section.OptOutSale === 'Y' || section.OptOutSale === 'N')) {
      gpp.saleOptOut = gpp.saleOptOut === true || section.OptOutSale === 'Y';
    }
    if (section.Gpc === true) gpp.gpc = true;
  }
  if (gpp.gpc) for (const key of Object.keys(US_OPT_OUT_FIELDS) as Array<keyof typeof US_OPT_OUT_FIELDS>) gpp[key] = true;
  // The EU section is a TC string in its own right: read it (as sent) as one, so both signals mean the same.
  const tcfIndex = gpp.sectionIds.indexOf(TCF_EU_SECTION_ID);
  const tcfString = sections[TCF_EU_SECTION] && tcfIndex !== -1 && inForce(TCF_EU_SECTION, applicable) ? gppString.split('~')[tcfIndex + 1] : undefined;
  return tcfString ? { gpp, tcfString } : { gpp };
}

export function decodeConsent(input: ConsentInput): StoredConsent {
  if (input.gppPending && input.gpp !== undefined) throw new ConsentError('cannot come with a GPP string', 'gppPending');
  if (input.gppSid !== undefined && input.gpp === undefined) throw new ConsentError('names the sections in force of a GPP string, and none came', 'gppSid');
  const consent: StoredConsent = {};
  if (input.gpp !== undefined) {
    const { gpp, tcfString } = decodeGpp(input.gpp, input.gppSid);
    consent.gpp = gpp;
    if (tcfString && input.tcf === undefined) {
      try {
        consent.tcf = decodeTcf(tcfString);
      } catch (error) {
        if (!(error instanceof ConsentError)) throw error;
        throw new ConsentError(`its TCF EU section: ${error.message}`, 'gpp');
      }
    }
  }
  if (input.tcf !== undefined) consent.tcf = decodeTcf(input.tcf);
  if (input.tcfPending) {
    if (input.tcf !== undefined) throw new ConsentError('cannot come with a TC string', 'tcfPending');
    // A GPP string's TCF EU section is the decision the mark says is missing: it stands.
    if (!consent.tcf) consent.tcfPending = true;
  }
  if (input.tcfNotApplicable) {
    if (input.tcf !== undefined || input.tcfPending) throw new ConsentError('cannot come with a TC string or tcfPending', 'tcfNotApplicable');
    // A GPP string's TCF EU section says the GDPR applies after all: it stands.
    if (!consent.tcf) consent.tcfNotApplicable = true;
  }
  if (input.gppPending) consent.gppPending = true;
  if (input.gpc !== undefined) consent.gpc = input.gpc;
  if (input.purposes !== undefined) consent.purposes = input.purposes;
  return consent;
}

/** Whether a consent records a US opt-out of sale, sharing or targeted advertising: in its GPP string, or by Global Privacy Control. */
export function usOptedOut(consent: Pick<StoredConsent, 'gpp' | 'gpc'> | null | undefined): boolean {
  const gpp = consent?.gpp;
  return consent?.gpc === true || gpp?.saleOptOut === true || gpp?.sharingOptOut === true || gpp?.targetedAdvertisingOptOut === true;
}

/** A purpose flag's answer, reading only the record's own fields (a flag named `constructor` is no inherited one). */
export function purposeAnswer(consent: Pick<StoredConsent, 'purposes'> | undefined, flag: string): boolean | undefined {
  return consent?.purposes && Object.hasOwn(consent.purposes, flag) ? consent.purposes[flag] : undefined;
}

/** Whether a GPP string is a signal: only where a US section applies (its TCF EU section comes as `tcf`); one with none decides nothing. */
export function gppDecides(gpp: StoredGpp): boolean {
  return gpp.saleOptOut !== undefined || gpp.sharingOptOut !== undefined || gpp.targetedAdvertisingOptOut !== undefined;
}

/** Whether a consent says anything a source's policy reads: a TC string (or that none was given yet, or that none applies), a deciding GPP string, Global Privacy Control, or the policy's purpose flag. */
function carriesSignal(consent: StoredConsent | undefined, policy: ConsentPolicy): boolean {
  return (
    consent !== undefined &&
    (consent.tcf !== undefined ||
      consent.tcfPending === true ||
      consent.tcfNotApplicable === true ||
      consent.gppPending === true ||
      (consent.gpp !== undefined && gppDecides(consent.gpp)) ||
      // An opt-out, never a permission: a signal only where the policy honours it.
      (consent.gpc === true && policy.honorGppOptOuts) ||
      purposeAnswer(consent, policy.purposeFlag) !== undefined)
  );
}

/** Whether a TC string lets the platform store and read its cookie: purpose 1, and our vendor id for it when the source names one. */
export function storageConsented(tcf: NonNullable<StoredConsent['tcf']>, vendorId?: number): boolean {
  return tcf.purposeConsents.includes(1) && (vendorId === undefined || vendorConsented({ vendors: tcf.vendorConsents, restrictions: tcf.restrictions }, vendorId, [1]));
}

/** Purposes a vendor may only base on consent under TCF 2.2 (storage, and building or using profiles). */
const CONSENT_ONLY_PURPOSES = new Set([1, 3, 4, 5, 6]);

/** Why an event may not be profiled under its source's policy; the values are stable, counted per source. */
export type NonProfilingReason = 'no_consent_signal' | 'tcf_pending' | 'gpp_pending' | 'tcf_purpose' | 'tcf_vendor' | 'gpp_opt_out' | 'purpose_flag';

/**
 * Whether an event with this consent may build a profile under its source's policy; null when it
 * may, else the reason. `not_required` sources (e.g. a CRM with its own legal basis) skip the check;
 * `when_present` checks the signals an event carries; `require` also refuses events that carry none.
 */
export function profilingRefusal(consent: StoredConsent | undefined, policy: ConsentPolicy): NonProfilingReason | null {
  if (policy.mode === 'not_required') return null;
  const tcf = consent?.tcf;
  if (!carriesSignal(consent, policy)) {
    return policy.mode === 'require' ? 'no_consent_signal' : null;
  }
  if (purposeAnswer(consent, policy.purposeFlag) === false) return 'purpose_flag';
  if (consent?.tcfPending) return 'tcf_pending';
  // A GPP tool that has not answered may hold an EU decision (its TCF section) or a US opt-out.
  if (consent?.gppPending && ((!tcf && !consent.tcfNotApplicable) || policy.honorGppOptOuts)) return 'gpp_pending';
  if (tcf) {
    for (const purpose of policy.tcfPurposes) {
      const granted = tcf.purposeConsents.includes(purpose) || (!CONSENT_ONLY_PURPOSES.has(purpose) && tcf.purposeLegitimateInterests.includes(purpose));
      if (!granted) return 'tcf_purpose';
    }
    if (policy.tcfVendorId !== undefined && !vendorConsented({ vendors: tcf.vendorConsents, restrictions: tcf.restrictions }, policy.tcfVendorId, policy.tcfPurposes)) return 'tcf_vendor';
  }
  if (policy.honorGppOptOuts && usOptedOut(consent)) return 'gpp_opt_out';
  return null;
}
