import { GVL, PurposeRestriction, RestrictionType, TCModel, TCString, type Purpose, type Vendor, type VendorList } from '@iabtcf/core';

/**
 * Builds real TCF v2 TC strings for unit tests. Encoding needs a Global Vendor List; a small one is
 * built in memory so nothing is fetched.
 */
export interface TcfFixtureOptions {
  cmpId?: number;
  cmpVersion?: number;
  purposeConsents?: number[];
  purposeLegitimateInterests?: number[];
  vendorConsents?: number[];
  /** Vendors present in the vendor list; vendors absent from it are dropped by the encoder. */
  gvlVendors?: number[];
  /** The TCF policy version the string is issued under (4 is TCF v2.2). */
  policyVersion?: number;
  /** Service-specific strings are what GPP's TCF EU section carries. */
  isServiceSpecific?: boolean;
  /** Publisher restrictions: each vendor listed (it must be in the vendor list) restricted for the purpose. */
  publisherRestrictions?: Array<{ purpose: number; type: 'not_allowed' | 'require_consent' | 'require_li'; vendors: number[] }>;
}

const RESTRICTION_TYPES = { not_allowed: RestrictionType.NOT_ALLOWED, require_consent: RestrictionType.REQUIRE_CONSENT, require_li: RestrictionType.REQUIRE_LI } as const;

function vendor(id: number): Vendor {
  return {
    id,
    name: `Vendor ${id}`,
    purposes: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    legIntPurposes: [2, 7, 8, 9, 10],
    // A publisher may only switch the legal basis of flexible purposes.
    flexiblePurposes: [2, 7, 8, 9, 10],
    specialPurposes: [],
    features: [],
    specialFeatures: [],
    policyUrl: 'https://vendor.example/privacy',
    usesCookies: false,
    cookieMaxAgeSeconds: null,
    cookieRefresh: false,
    usesNonCookieAccess: false,
  };
}

function inMemoryGvl(vendorIds: number[], policyVersion: number): GVL {
  const purposes: Record<number, Purpose> = {};
  for (let id = 1; id <= 11; id++) purposes[id] = { id, name: `Purpose ${id}`, description: '', descriptionLegal: '' };
  const vendors: Record<number, Vendor> = {};
  for (const id of vendorIds) vendors[id] = vendor(id);
  const list: VendorList = {
    gvlSpecificationVersion: 3,
    vendorListVersion: 150,
    tcfPolicyVersion: policyVersion,
    lastUpdated: '2024-01-01T00:00:00Z',
    purposes,
    specialPurposes: {},
    features: {},
    specialFeatures: {},
    stacks: {},
    vendors,
  };
  return new GVL(list);
}

export function buildTcString(options: TcfFixtureOptions = {}): string {
  const vendorConsents = options.vendorConsents ?? [];
  const model = new TCModel(inMemoryGvl(options.gvlVendors ?? vendorConsents, options.policyVersion ?? 4));
  model.cmpId = options.cmpId ?? 10;
  model.cmpVersion = options.cmpVersion ?? 2;
  model.publisherCountryCode = 'DE';
  model.isServiceSpecific = options.isServiceSpecific ?? false;
  model.purposeConsents.set(options.purposeConsents ?? []);
  model.purposeLegitimateInterests.set(options.purposeLegitimateInterests ?? []);
  model.vendorConsents.set(vendorConsents);
  for (const restriction of options.publisherRestrictions ?? []) {
    for (const vendorId of restriction.vendors) model.publisherRestrictions.add(vendorId, new PurposeRestriction(restriction.purpose, RESTRICTION_TYPES[restriction.type]));
  }
  return TCString.encode(model);
}
