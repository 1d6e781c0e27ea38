import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { z } from 'zod';
import { BSON } from 'mongodb';
import { linesNotApplied, type ExportBatch } from '../../connectors/connector';
import { dspSegments } from '../../connectors/dspSegments';
import { DeliveryError, Outbound, retryAfterMs, urlRefusal } from '../../connectors/outbound';
import { CONNECTORS } from '../../connectors/registry';
import { peopleList } from '../../connectors/peopleList';
import { fileContent, segmentFile } from '../../connectors/segmentFile';
import { signature, webhook } from '../../connectors/webhook';
import {
  changedConsent,
  CreateDestinationRequestSchema,
  DEFAULT_PURPOSE_FLAGS,
  DestinationConsentSchema,
  decide,
  delta,
  exportFacts,
  ExportListQuerySchema,
  ExportRequestSchema,
  exportIdFor,
  failedExportRetryAt,
  factsChanged,
  flattenFacts,
  nextState,
  PackedDecisions,
  packFacts,
  PatchDestinationRequestSchema,
  toBatches,
  BATCH_ID_BYTES,
  type ExportFacts,
  type ExportPolicy,
} from '../../domain/destinations';
import type { ProfileConsent, ProfileDoc } from '../../domain/profile';

const AT = new Date('2026-06-30T12:00:00Z');

function issuePaths(result: { success: boolean; error?: { issues: Array<{ path: PropertyKey[] }> } }): string[] {
  return (result.error?.issues ?? []).map((issue) => issue.path.map(String).join('.'));
}

// ---- delta ------------------------------------------------------------------------------------

describe('delta', () => {
  it('adds the targeted ids the partner does not hold, and removes the held ones no longer targeted', () => {
    expect(delta(['a', 'b', 'c'], { held: ['b', 'd'], uncertain: [] }, false)).toEqual({ adds: ['a', 'c'], removes: ['d'] });
  });

  it('adds targeted ids that are uncertain, and removes uncertain ids that are not targeted', () => {
    // An unconfirmed batch may or may not have landed: the next export resends it whichever way the target says.
    expect(delta(['a', 'u1'], { held: [], uncertain: ['u1', 'u2'] }, false)).toEqual({ adds: ['a', 'u1'], removes: ['u2'] });
  });

  it('with `full`, adds every targeted id again, held ones included, and still removes', () => {
    expect(delta(['a', 'b', 'c'], { held: ['b', 'x'], uncertain: ['c', 'y'] }, true)).toEqual({ adds: ['a', 'b', 'c'], removes: ['x', 'y'] });
  });

  it('is empty when the partner already holds exactly the target', () => {
    expect(delta(['a', 'b'], { held: ['a', 'b'], uncertain: [] }, false)).toEqual({ adds: [], removes: [] });
    expect(delta([], { held: [], uncertain: [] }, false)).toEqual({ adds: [], removes: [] });
    expect(delta([], { held: [], uncertain: [] }, true)).toEqual({ adds: [], removes: [] });
  });

  it('removes everything when the target is empty', () => {
    expect(delta([], { held: ['a', 'c'], uncertain: ['b'] }, false)).toEqual({ adds: [], removes: ['a', 'b', 'c'] });
  });

  it('returns sorted, unique lists when the inputs interleave', () => {
    // Code-unit order, as Array.prototype.sort gives: 'B' < 'a' < 'a1' < 'b'.
    const { adds, removes } = delta(['B', 'a1', 'c', 'e'], { held: ['a', 'c', 'd'], uncertain: ['B', 'b', 'f'] }, false);
    expect(adds).toEqual(['B', 'a1', 'e']);
    expect(removes).toEqual(['a', 'b', 'd', 'f']);
  });
});

// ---- nextState --------------------------------------------------------------------------------

describe('nextState', () => {
  it('holds confirmed adds and drops confirmed removes', () => {
    expect(nextState({ held: ['a', 'x'], uncertain: [] }, [{ adds: ['b'], removes: ['x'], confirmed: true }])).toEqual({ held: ['a', 'b'], uncertain: [] });
  });

  it('makes every id of an unconfirmed batch uncertain, adds and removes alike', () => {
    expect(nextState({ held: ['x'], uncertain: [] }, [{ adds: ['b', 'c'], removes: ['x'], confirmed: false }])).toEqual({ held: [], uncertain: ['b', 'c', 'x'] });
  });

  it('resolves uncertain ids once a batch touching them is confirmed', () => {
    const state = { held: [], uncertain: ['u1', 'u2'] };
    expect(nextState(state, [{ adds: ['u1'], removes: ['u2'], confirmed: true }])).toEqual({ held: ['u1'], uncertain: [] });
  });

  it('keeps the state of ids no batch touched', () => {
    const state = { held: ['h1', 'h2'], uncertain: ['u1'] };
    expect(nextState(state, [])).toEqual(state);
    expect(nextState(state, [{ adds: ['n'], removes: [], confirmed: false }])).toEqual({ held: ['h1', 'h2'], uncertain: ['n', 'u1'] });
  });

  it('returns sorted, disjoint lists whatever order the batches came in', () => {
    const next = nextState({ held: ['m'], uncertain: ['k'] }, [
      { adds: ['z', 'c'], removes: [], confirmed: true },
      { adds: ['b', 'y'], removes: [], confirmed: false },
      { adds: [], removes: ['m'], confirmed: false },
      { adds: [], removes: ['k'], confirmed: true },
    ]);
    expect(next).toEqual({ held: ['c', 'z'], uncertain: ['b', 'm', 'y'] });
  });
});

// ---- toBatches --------------------------------------------------------------------------------

describe('toBatches', () => {
  it('cuts removes then adds into batches of at most `size`, never mixing the two (who left goes first)', () => {
    expect(toBatches(['a', 'b', 'c'], ['x', 'y'], 2)).toEqual([
      { adds: [], removes: ['x', 'y'] },
      { adds: ['a', 'b'], removes: [] },
      { adds: ['c'], removes: [] },
    ]);
  });

  it('makes no batch of nothing', () => {
    expect(toBatches([], [], 10)).toEqual([]);
    expect(toBatches([], ['x'], 10)).toEqual([{ adds: [], removes: ['x'] }]);
  });

  it('keeps a batch of long ids within BATCH_ID_BYTES, so a stored batch and a partner request stay bounded', () => {
    // 50,000 ids of 512 characters, a webhook's largest batch: 25 MB of ids in one batch before.
    const adds = Array.from({ length: 50_000 }, (_, n) => `${String(n).padStart(6, '0')}${'x'.repeat(506)}`);
    const batches = toBatches(adds, [], 50_000);
    expect(batches.length).toBeGreaterThan(1);
    for (const batch of batches) expect(BSON.calculateObjectSize(batch)).toBeLessThanOrEqual(BATCH_ID_BYTES + 1024);
    expect(batches.flatMap((batch) => batch.adds)).toEqual(adds);
    // Multi-byte characters count as their UTF-8 bytes.
    const wide = Array.from({ length: 10 }, (_, n) => `${n}${'é'.repeat(99)}`);
    expect(toBatches(wide, [], 10, 1000).map((batch) => batch.adds.length)).toEqual([4, 4, 2]);
    // Ids of characters JSON escapes (a control character takes six bytes there) keep the request within bounds too.
    const escaped = Array.from({ length: 20_000 }, (_, n) => `${String(n).padStart(6, '0')}${'\u0001"\\'.repeat(168)}`);
    const requests = toBatches(escaped, [], 50_000);
    for (const batch of requests) expect(Buffer.byteLength(JSON.stringify(batch))).toBeLessThanOrEqual(BATCH_ID_BYTES + 1024);
    expect(requests.flatMap((batch) => batch.adds)).toEqual(escaped);
  });
});

// ---- consent and export controls --------------------------------------------------------------

describe('decide', () => {
  const LABELS: Record<string, string[]> = { src_shop: [], src_crm: ['crm'], src_broker: ['partner_data', 'crm'] };
  const policy = (overrides: Partial<Omit<ExportPolicy, 'consent'>> & { consent?: Partial<ExportPolicy['consent']> } = {}): ExportPolicy => ({
    idType: 'cookie_id',
    labelsAllowed: [],
    labelsOf: (source) => LABELS[source] ?? [],
    ...overrides,
    consent: { tcfPurposes: [1, 3, 4], requireTcf: false, honorGppOptOuts: true, purposeFlags: [...DEFAULT_PURPOSE_FLAGS], ...overrides.consent },
  });
  const facts = (overrides: Partial<ExportFacts> = {}): ExportFacts => ({
    ids: ['cookie_id:ck1', 'email_sha256:abc', 'cookie_id:ck2', 'maid:m1'],
    tcf: null,
    sources: ['src_shop'],
    ...overrides,
  });

  it('lets a profile without a TC string pass unless the destination requires one', () => {
    expect(decide(facts(), policy())).toEqual({ withheld: null, ids: ['ck1', 'ck2'] });
    expect(decide(facts(), policy({ consent: { requireTcf: true } }))).toEqual({ withheld: 'consent' });
  });

  it('withholds a profile whose TC string lacks any required purpose', () => {
    expect(decide(facts({ tcf: { purposes: [1, 4, 7], vendors: [] } }), policy())).toEqual({ withheld: 'consent' });
    expect(decide(facts({ tcf: { purposes: [], vendors: [] } }), policy())).toEqual({ withheld: 'consent' });
    expect(decide(facts({ tcf: { purposes: [4, 3, 2, 1], vendors: [] } }), policy())).toMatchObject({ withheld: null });
  });

  it('requires no purpose when the destination lists none', () => {
    expect(decide(facts({ tcf: { purposes: [], vendors: [] } }), policy({ consent: { tcfPurposes: [] } }))).toMatchObject({ withheld: null });
  });

  it("withholds a profile whose TC string does not consent to the partner's vendor id", () => {
    const tcf = { purposes: [1, 3, 4], vendors: [10, 20] };
    expect(decide(facts({ tcf }), policy({ consent: { tcfVendorId: 30 } }))).toEqual({ withheld: 'consent' });
    expect(decide(facts({ tcf }), policy({ consent: { tcfVendorId: 20 } }))).toMatchObject({ withheld: null });
    // Without a TC string there is no vendor to check: the vendor id alone does not require one.
    expect(decide(facts(), policy({ consent: { tcfVendorId: 30 } }))).toMatchObject({ withheld: null });
  });

  it("withholds a profile whose publisher restrictions bar the partner's vendor from a required purpose", () => {
    const tcf = (purpose: number) => ({ purposes: [1, 3, 4, 7], vendors: [10, 20], restrictions: [{ purpose, vendors: [[15, 25]] as Array<[number, number]> }] });
    expect(decide(facts({ tcf: tcf(4) }), policy({ consent: { tcfVendorId: 20 } }))).toEqual({ withheld: 'consent' });
    expect(decide(facts({ tcf: tcf(7) }), policy({ consent: { tcfVendorId: 20 } }))).toMatchObject({ withheld: null });
    expect(decide(facts({ tcf: tcf(4) }), policy({ consent: { tcfVendorId: 10 } }))).toMatchObject({ withheld: null });
  });

  it('withholds a profile whose GPP string records a US opt-out, unless the destination does not honour them', () => {
    const granted = { purposes: [1, 3, 4], vendors: [] };
    expect(decide(facts({ tcf: granted, usOptOut: true }), policy())).toEqual({ withheld: 'consent' });
    expect(decide(facts({ usOptOut: true }), policy())).toEqual({ withheld: 'consent' });
    expect(decide(facts({ usOptOut: true }), policy({ consent: { honorGppOptOuts: false } }))).toMatchObject({ withheld: null });
    // Destinations made before the setting existed honour opt-outs.
    expect(decide(facts({ usOptOut: true }), { ...policy(), consent: { tcfPurposes: [], requireTcf: false } as never })).toEqual({ withheld: 'consent' });
  });

  it('withholds a profile that declined a purpose flag the destination names, and only those', () => {
    expect(decide(facts({ declined: ['advertising'] }), policy())).toEqual({ withheld: 'consent' });
    expect(decide(facts({ declined: ['data_sharing'] }), policy())).toEqual({ withheld: 'consent' });
    expect(decide(facts({ declined: ['analytics'] }), policy())).toMatchObject({ withheld: null });
    expect(decide(facts({ declined: ['advertising'] }), policy({ consent: { purposeFlags: [] } }))).toMatchObject({ withheld: null });
    expect(decide(facts({ declined: ['analytics'] }), policy({ consent: { purposeFlags: ['analytics'] } }))).toEqual({ withheld: 'consent' });
    // Not decided yet: nothing leaves, whatever the destination asks.
    expect(decide(facts({ tcfPending: true }), policy({ consent: { purposeFlags: [] } }))).toEqual({ withheld: 'consent' });
  });

  it('withholds a profile holding data of a source with a label not allowed, naming that label', () => {
    expect(decide(facts({ sources: ['src_shop', 'src_crm'] }), policy())).toEqual({ withheld: 'label', label: 'crm' });
    expect(decide(facts({ sources: ['src_shop', 'src_broker'] }), policy({ labelsAllowed: ['crm'] }))).toEqual({ withheld: 'label', label: 'partner_data' });
    expect(decide(facts({ sources: ['src_broker', 'src_crm'] }), policy({ labelsAllowed: ['crm', 'partner_data'] }))).toMatchObject({ withheld: null });
    // A source the policy knows no labels of carries none.
    expect(decide(facts({ sources: ['src_gone'] }), policy())).toMatchObject({ withheld: null });
  });

  it('checks consent before labels', () => {
    expect(decide(facts({ tcf: { purposes: [1], vendors: [] }, sources: ['src_crm'] }), policy())).toEqual({ withheld: 'consent' });
  });

  it("sends only ids of the destination's id type, without the type prefix", () => {
    expect(decide(facts(), policy({ idType: 'email_sha256' }))).toEqual({ withheld: null, ids: ['abc'] });
    expect(decide(facts(), policy({ idType: 'maid' }))).toEqual({ withheld: null, ids: ['m1'] });
    expect(decide(facts(), policy({ idType: 'crm_id' }))).toEqual({ withheld: null, ids: [] });
    // Only the prefix goes: a value holding colons itself keeps them.
    expect(decide(facts({ ids: ['crm_id:acme:42'] }), policy({ idType: 'crm_id' }))).toEqual({ withheld: null, ids: ['acme:42'] });
  });
});

// ---- export facts -----------------------------------------------------------------------------

describe('packed export facts', () => {
  const policy: ExportPolicy = {
    idType: 'cookie_id',
    labelsAllowed: [],
    labelsOf: (source) => (source === 'src_broker' ? ['partner_data'] : []),
    consent: { tcfPurposes: [1, 3, 4], requireTcf: false, honorGppOptOuts: true, purposeFlags: ['advertising'] },
  };
  const members: Array<ExportFacts | null> = [
    { ids: ['cookie_id:a', 'email_sha256:e1'], tcf: { purposes: [1, 3, 4], vendors: [] }, sources: ['src_shop'] },
    null,
    { ids: ['cookie_id:b', 'cookie_id:c'], tcf: { purposes: [1, 3, 4], vendors: [] }, sources: ['src_shop'] },
    { ids: ['cookie_id:d'], tcf: { purposes: [1, 4], vendors: [] }, sources: ['src_shop'] },
    { ids: ['cookie_id:e'], tcf: null, sources: ['src_broker', 'src_shop'] },
    { ids: ['maid:m'], tcf: null, sources: ['src_shop'] },
    { ids: ['cookie_id:f'], tcf: { purposes: [1, 3, 4], vendors: [] }, usOptOut: true, sources: ['src_shop'] },
    { ids: ['cookie_id:g'], tcf: null, declined: ['advertising'], sources: ['src_shop'] },
    { ids: ['cookie_id:h'], tcf: null, declined: ['analytics'], sources: ['src_shop'] },
  ];

  it('keeps each distinct consent and source list once, and -1 for ids without facts', () => {
    const packed = packFacts(members.map((facts) => facts && flattenFacts(facts)));
    expect(packed.consents).toHaveLength(6);
    expect(packed.sources).toHaveLength(2);
    expect([...packed.consentOf]).toEqual([0, -1, 0, 1, 2, 2, 3, 4, 5]);
    expect(packed.ids[1]).toBe('');
  });

  it('decides every member as decide does on its unpacked facts', () => {
    const decisions = new PackedDecisions(packFacts(members.map((facts) => facts && flattenFacts(facts))), policy);
    members.forEach((facts, i) => expect(decisions.decide(i)).toEqual(facts && decide(facts, policy)));
    expect(decisions.decide(6)).toEqual({ withheld: 'consent' });
    expect(decisions.decide(7)).toEqual({ withheld: 'consent' });
    expect(decisions.decide(8)).toEqual({ withheld: null, ids: ['h'] });
  });

  it('reads consents packed by runs made before opt-outs were kept (the bare TCF facts)', () => {
    const old = { consents: [JSON.stringify({ purposes: [1, 3, 4], vendors: [] }), 'null'], sources: ['["src_shop"]'], consentOf: Int32Array.from([0, 1]), sourcesOf: Int32Array.from([0, 0]), ids: ['cookie_id:a', 'cookie_id:b'] };
    const decisions = new PackedDecisions(old, policy);
    expect(decisions.decide(0)).toEqual({ withheld: null, ids: ['a'] });
    expect(decisions.decide(1)).toEqual({ withheld: null, ids: ['b'] });
  });
});

describe('exportFacts and factsChanged', () => {
  const tcf = (tcString: string): NonNullable<ProfileConsent['tcf']> => ({
    tcString,
    policyVersion: 4,
    cmpId: 7,
    created: AT,
    purposeConsents: [1, 3, 4],
    purposeLegitimateInterests: [2],
    vendorConsents: [755],
  });
  const consent = (extra: Partial<ProfileConsent> = {}): ProfileConsent => ({ sourceId: 'src_shop', at: AT, ...extra });
  type FactFields = Pick<ProfileDoc, 'identities' | 'consent' | 'sources'>;
  const doc = (overrides: Partial<FactFields> = {}): FactFields => ({
    identities: [{ type: 'cookie_id', value: 'ck1', firstSeen: AT, lastSeen: AT, sourceId: 'src_shop' }],
    consent: consent({ tcf: tcf('TC-A'), purposes: { analytics: true } }),
    sources: ['src_shop'],
    ...overrides,
  });

  it('keeps identity keys, the TCF purposes and vendors, and the sources', () => {
    expect(exportFacts(doc())).toEqual({ ids: ['cookie_id:ck1'], tcf: { purposes: [1, 3, 4], vendors: [755] }, sources: ['src_shop'] });
  });

  it("carries a phone's digits-only hash and an email's UID2 hash as id types of their own, beside ours", () => {
    const identities = [
      { type: 'phone_sha256' as const, value: 'e164hash', digits: 'digitshash', firstSeen: AT, lastSeen: AT, sourceId: 'src_shop' },
      { type: 'phone_sha256' as const, value: 'sentHashed', firstSeen: AT, lastSeen: AT, sourceId: 'src_shop' },
      { type: 'email_sha256' as const, value: 'ab', firstSeen: AT, lastSeen: AT, sourceId: 'src_shop' },
    ];
    expect(exportFacts(doc({ identities })).ids).toEqual(['phone_sha256:e164hash', 'phone_sha256_digits:digitshash', 'phone_sha256:sentHashed', 'email_sha256:ab', 'email_uid2:qw==']);
  });

  it("counts a platform's hashed form learned for an identity already held (its raw value came later) as changed facts", () => {
    const phone = { type: 'phone_sha256' as const, value: 'e164hash', firstSeen: AT, lastSeen: AT, sourceId: 'src_shop' };
    const email = { type: 'email_sha256' as const, value: 'ab', firstSeen: AT, lastSeen: AT, sourceId: 'src_shop' };
    expect(factsChanged(doc({ identities: [phone, email] }), doc({ identities: [{ ...phone, digits: 'digitshash' }, email] }))).toBe(true);
    expect(factsChanged(doc({ identities: [phone, email] }), doc({ identities: [phone, { ...email, uid2: 'uid2hash' }] }))).toBe(true);
    expect(factsChanged(doc({ identities: [phone, { ...email, uid2: 'uid2hash' }] }), doc({ identities: [{ ...phone, lastSeen: new Date(AT.getTime() + 1) }, { ...email, uid2: 'uid2hash' }] }))).toBe(false);
  });

  it('marks a US opt-out of sale, sharing or targeted advertising from the GPP string, and nothing else', () => {
    const gpp = (extra: object) => consent({ tcf: tcf('TC-A'), gpp: { gppString: 'DBABL~x', sectionIds: [7], ...extra } });
    expect(exportFacts(doc({ consent: gpp({ saleOptOut: true }) })).usOptOut).toBe(true);
    expect(exportFacts(doc({ consent: gpp({ targetedAdvertisingOptOut: true }) })).usOptOut).toBe(true);
    expect(exportFacts(doc({ consent: gpp({ saleOptOut: false, sharingOptOut: false }) }))).not.toHaveProperty('usOptOut');
    expect(exportFacts(doc({ consent: consent({ gpc: true }) })).usOptOut).toBe(true);
    expect(factsChanged(doc({ consent: consent({ gpc: false }) }), doc({ consent: consent({ gpc: true }) }))).toBe(true);
    expect(factsChanged(doc({ consent: gpp({}) }), doc({ consent: consent({ tcf: tcf('TC-A'), gpp: { gppString: 'DBABL~y', sectionIds: [7], saleOptOut: true } }) }))).toBe(true);
  });

  it('lists the purpose flags the consent declines, sorted, and nothing when none is declined', () => {
    expect(exportFacts(doc({ consent: consent({ purposes: { profiling: true, data_sharing: false, advertising: false } }) })).declined).toEqual(['advertising', 'data_sharing']);
    expect(exportFacts(doc())).not.toHaveProperty('declined');
    expect(factsChanged(doc(), doc({ consent: consent({ tcf: tcf('TC-A'), purposes: { analytics: true, advertising: false } }) }))).toBe(true);
  });

  it('has no TCF facts when the profile never sent a TC string', () => {
    expect(exportFacts(doc({ consent: null })).tcf).toBeNull();
    expect(exportFacts(doc({ consent: consent({ purposes: { ads: true } }) })).tcf).toBeNull();
  });

  it('is false for a document that did not exist before', () => {
    expect(factsChanged(null, doc())).toBe(false);
  });

  it('is false when nothing an export reads changed', () => {
    expect(factsChanged(doc(), doc())).toBe(false);
    // A newer copy of the same consent (same TC string, same purposes) is not a change.
    expect(factsChanged(doc(), doc({ consent: consent({ at: new Date(AT.getTime() + 1000), tcf: tcf('TC-A'), purposes: { analytics: true } }) }))).toBe(false);
  });

  it('is true when an identity or a source was added', () => {
    const more = [...doc().identities, { type: 'maid' as const, value: 'm1', firstSeen: AT, lastSeen: AT, sourceId: 'src_app' }];
    expect(factsChanged(doc(), doc({ identities: more }))).toBe(true);
    expect(factsChanged(doc(), doc({ sources: ['src_shop', 'src_app'] }))).toBe(true);
  });

  it('is true when the TC string changed, appeared or went', () => {
    expect(factsChanged(doc(), doc({ consent: consent({ tcf: tcf('TC-B'), purposes: { analytics: true } }) }))).toBe(true);
    expect(factsChanged(doc({ consent: null }), doc())).toBe(true);
    expect(factsChanged(doc(), doc({ consent: consent({ purposes: { analytics: true } }) }))).toBe(true);
  });

  it('is true when the purposes map changed', () => {
    expect(factsChanged(doc(), doc({ consent: consent({ tcf: tcf('TC-A'), purposes: { analytics: false } }) }))).toBe(true);
    expect(factsChanged(doc(), doc({ consent: consent({ tcf: tcf('TC-A'), purposes: { analytics: true, ads: true } }) }))).toBe(true);
    expect(factsChanged(doc(), doc({ consent: consent({ tcf: tcf('TC-A') }) }))).toBe(true);
  });
});

// ---- export ids -------------------------------------------------------------------------------

describe('exportIdFor', () => {
  const window = new Date('2026-01-02T03:04:05.678Z');

  it('is deterministic, and carries no colons', () => {
    const id = exportIdFor('dst_x', window);
    expect(id).toBe(exportIdFor('dst_x', new Date(window.getTime())));
    expect(id).not.toContain(':');
    expect(id.startsWith('dst_x')).toBe(true);
  });

  it('is the same within one second and differs across seconds and destinations', () => {
    const id = exportIdFor('dst_x', window);
    expect(exportIdFor('dst_x', new Date('2026-01-02T03:04:05.000Z'))).toBe(id);
    expect(exportIdFor('dst_x', new Date('2026-01-02T03:04:05.999Z'))).toBe(id);
    expect(exportIdFor('dst_x', new Date('2026-01-02T03:04:06.000Z'))).not.toBe(id);
    expect(exportIdFor('dst_y', window)).not.toBe(id);
  });
});

// ---- API schemas ------------------------------------------------------------------------------

describe('destination request schemas', () => {
  const valid = { name: 'CRM webhook', connector: 'webhook', config: { url: 'https://crm.example.com/dmp', secret: 'a-long-shared-secret' }, segments: ['seg_1'], idType: 'crm_id' };

  it('accepts a valid creation request, and fills the consent defaults', () => {
    expect(CreateDestinationRequestSchema.safeParse({ ...valid, schedule: { every: 'PT1H' } }).success).toBe(true);
    expect(CreateDestinationRequestSchema.parse({ ...valid, consent: {} }).consent).toEqual({ tcfPurposes: [1, 3, 4], requireTcf: false, honorGppOptOuts: true, purposeFlags: ['profiling', 'advertising', 'data_sharing'] });
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, consent: { purposeFlags: ['Ads'] } }))).toEqual(['consent.purposeFlags.0']);
  });

  it('refuses unknown fields, at the top and in consent', () => {
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, extra: 1 }))).toEqual(['']);
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, consent: { purposes: [1] } }))).toEqual(['consent']);
  });

  it('refuses a segment listed twice, no segment, and an unknown id type', () => {
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, segments: ['seg_1', 'seg_1'] }))).toEqual(['segments']);
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, segments: [] }))).toEqual(['segments']);
    // Raw emails never leave: only their hashes are an id type.
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, idType: 'email' }))).toEqual(['idType']);
  });

  it('refuses TCF purposes outside 1–24, a vendor id of 0 and a malformed label', () => {
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, consent: { tcfPurposes: [25] } }))).toEqual(['consent.tcfPurposes.0']);
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, consent: { tcfVendorId: 0 } }))).toEqual(['consent.tcfVendorId']);
    expect(issuePaths(CreateDestinationRequestSchema.safeParse({ ...valid, labelsAllowed: ['Partner Data'] }))).toEqual(['labelsAllowed.0']);
  });

  it('refuses an empty patch and unknown patch fields; a null schedule clears it', () => {
    expect(PatchDestinationRequestSchema.safeParse({}).success).toBe(false);
    expect(PatchDestinationRequestSchema.safeParse({ connector: 'webhook' }).success).toBe(false);
    expect(PatchDestinationRequestSchema.parse({ schedule: null })).toEqual({ schedule: null });
  });

  it('reads export requests and list queries', () => {
    expect(ExportRequestSchema.parse({})).toEqual({});
    expect(ExportRequestSchema.parse({ full: true })).toEqual({ full: true });
    expect(ExportRequestSchema.safeParse({ full: 'yes' }).success).toBe(false);
    expect(ExportRequestSchema.safeParse({ full: true, dryRun: true }).success).toBe(false);
    expect(ExportListQuerySchema.parse({})).toEqual({ limit: 50 });
    expect(ExportListQuerySchema.parse({ limit: '10' })).toEqual({ limit: 10 });
    expect(ExportListQuerySchema.safeParse({ limit: '0' }).success).toBe(false);
    expect(ExportListQuerySchema.safeParse({ limit: '201' }).success).toBe(false);
  });
});

// ---- connectors: registry ---------------------------------------------------------------------

describe('connector registry', () => {
  /** A minimal valid config of each connector: the unknown-field check must fail on that field alone. */
  const VALID: Record<string, Record<string, unknown>> = {
    webhook: { url: 'https://crm.example.com/dmp', secret: 'a-long-shared-secret' },
    dsp_segments: { url: 'https://dsp.example.com/data/advertiser', token: 't', advertiserId: 'adv1' },
    people_list: { url: 'https://people.example.com', token: 't', listId: 'list_1' },
    segment_file: { folder: 'exchange/out' },
  };

  it('registers the four connectors under their own names', () => {
    expect(Object.keys(CONNECTORS).sort()).toEqual(['dsp_segments', 'people_list', 'segment_file', 'webhook']);
    for (const [name, connector] of Object.entries(CONNECTORS)) expect(connector.name).toBe(name);
  });

  it.each(Object.keys(VALID))('%s: accepts its minimal config and refuses an unknown field', (name) => {
    const schema = CONNECTORS[name].config;
    expect(schema.safeParse(VALID[name]).success).toBe(true);
    const result = schema.safeParse({ ...VALID[name], surprise: true });
    expect(result.success).toBe(false);
    expect(result.error?.issues).toEqual([expect.objectContaining({ code: 'unrecognized_keys', keys: ['surprise'] })]);
  });

  it.each(Object.keys(VALID))('%s: names as secrets only fields of its config', (name) => {
    const connector = CONNECTORS[name];
    const shape = (connector.config as unknown as z.ZodObject).shape;
    expect(connector.secrets.length).toBeGreaterThan(0);
    for (const secret of connector.secrets) expect(Object.keys(shape)).toContain(secret);
  });
});

// ---- connectors: formats ----------------------------------------------------------------------

describe('webhook signature', () => {
  it('is sha256= and the hex HMAC-SHA256 of the raw body under the secret', () => {
    const body = JSON.stringify({ segment: { id: 'seg_1', name: 'Gold' }, adds: ['ä', 'b'], removes: [] });
    const secret = 'a-long-shared-secret';
    expect(signature(secret, body)).toBe(`sha256=${createHmac('sha256', secret).update(Buffer.from(body, 'utf8')).digest('hex')}`);
    expect(signature(secret, body)).not.toBe(signature(`${secret}x`, body));
  });

  it('matches a fixed vector (RFC 4231 test case 2)', () => {
    expect(signature('Jefe', 'what do ya want for nothing?')).toBe('sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  });
});

describe('segment file content', () => {
  const batch = (adds: string[], removes: string[], segmentId = 'seg_1'): ExportBatch => ({
    destinationId: 'dst_x',
    exportId: 'dst_x-20260102T030405Z',
    batchId: 'dst_x-20260102T030405Z-seg_1-0',
    segment: { id: segmentId, name: 'Gold, "best"' },
    idType: 'cookie_id',
    adds,
    removes,
  });

  it('writes a CSV header then one row per id, adds before removes', () => {
    expect(fileContent(batch(['a1', 'a2'], ['r1']), 'csv')).toBe('id,id_type,segment,action\na1,cookie_id,seg_1,add\na2,cookie_id,seg_1,add\nr1,cookie_id,seg_1,remove\n');
    expect(fileContent(batch([], []), 'csv')).toBe('id,id_type,segment,action\n');
  });

  it('quotes CSV cells holding commas, quotes or line breaks, doubling the quotes', () => {
    expect(fileContent(batch(['a,b', 'say "hi"', 'two\nlines'], [], 'seg,1'), 'csv')).toBe(
      'id,id_type,segment,action\n"a,b",cookie_id,"seg,1",add\n"say ""hi""",cookie_id,"seg,1",add\n"two\nlines",cookie_id,"seg,1",add\n',
    );
  });

  it('writes one JSON object per line in NDJSON', () => {
    const text = fileContent(batch(['a"1'], ['r1']), 'ndjson');
    expect(text.endsWith('\n')).toBe(true);
    expect(text.trimEnd().split('\n').map((line) => JSON.parse(line))).toEqual([
      { id: 'a"1', idType: 'cookie_id', segment: 'seg_1', action: 'add' },
      { id: 'r1', idType: 'cookie_id', segment: 'seg_1', action: 'remove' },
    ]);
    expect(fileContent(batch([], []), 'ndjson')).toBe('');
  });
});

// ---- connectors: outbound HTTP ----------------------------------------------------------------

describe('retryAfterMs', () => {
  const now = Date.parse('2026-06-30T12:00:00Z');

  it('reads seconds', () => {
    expect(retryAfterMs('3', now)).toBe(3000);
    expect(retryAfterMs(' 120 ', now)).toBe(120_000);
    expect(retryAfterMs('0', now)).toBe(0);
  });

  it('reads an HTTP date as the time left, and a past date as no wait', () => {
    expect(retryAfterMs('Tue, 30 Jun 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Tue, 30 Jun 2026 11:00:00 GMT', now)).toBe(0);
  });

  it("reads the obsolete forms RFC 9110 has recipients accept: RFC 850's (two-digit year) and asctime's (GMT without saying so)", () => {
    expect(retryAfterMs('Tuesday, 30-Jun-26 12:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('Tue Jun 30 12:01:00 2026', now)).toBe(60_000);
    expect(retryAfterMs('Wed Jul  1 12:00:00 2026', now)).toBe(86_400_000);
    // More than 50 years ahead is the century before: long past, no wait.
    expect(retryAfterMs('Sunday, 06-Nov-94 08:49:37 GMT', now)).toBe(0);
  });

  it('is null when absent or unreadable', () => {
    expect(retryAfterMs(null, now)).toBeNull();
    expect(retryAfterMs('Tue, 31 Foo 2026 12:00:30 GMT', now)).toBeNull();
    expect(retryAfterMs('', now)).toBeNull();
    expect(retryAfterMs('soon', now)).toBeNull();
  });
});

describe('urlRefusal', () => {
  const none = new Set<string>();
  const refuseUrl = async (url: string, allowlist: Set<string>) => (await urlRefusal(url, allowlist))?.message ?? null;

  it('tells a malformed URL from an unresolved host and an address that may not be reached', async () => {
    expect((await urlRefusal('ftp://8.8.8.8/file', none))?.kind).toBe('malformed');
    expect((await urlRefusal('https://no-such-host.invalid/', none))?.kind).toBe('unresolved');
    expect((await urlRefusal('https://10.1.2.3/', none))?.kind).toBe('forbidden');
    expect((await urlRefusal('http://8.8.8.8/', none))?.kind).toBe('forbidden');
  });

  it('allows https URLs of public addresses, and plain http only for allowlisted hosts', async () => {
    expect(await refuseUrl('https://8.8.8.8/hook', none)).toBeNull();
    expect(await refuseUrl('https://[2606:4700:4700::1111]:8080/', none)).toBeNull();
    expect(await refuseUrl('http://[2606:4700:4700::1111]:8080/', none)).toMatch(/^https only/);
    expect(await refuseUrl('http://8.8.8.8/hook', new Set(['8.8.8.8']))).toBeNull();
  });

  it('refuses what is not an http(s) URL, and credentials in the URL', async () => {
    expect(await refuseUrl('not a url', none)).toBe('not a URL');
    expect(await refuseUrl('ftp://8.8.8.8/file', none)).toBe('only http and https URLs');
    expect(await refuseUrl('file:///etc/passwd', none)).toBe('only http and https URLs');
    expect(await refuseUrl('https://user:pw@8.8.8.8/', none)).toBe('credentials belong in the config, not the URL');
  });

  it.each([
    ['a loopback address', 'http://127.0.0.1:8080/'],
    ['a loopback address spelled as one number', 'http://2130706433/'],
    ['the IPv6 loopback', 'http://[::1]/'],
    ['an IPv4-mapped loopback', 'http://[::ffff:127.0.0.1]/'],
    ['a private address', 'http://10.1.2.3/'],
    ['a private address', 'https://192.168.0.10/'],
    ['the cloud metadata address (link-local)', 'http://169.254.169.254/latest/meta-data'],
    ['the unspecified address', 'http://0.0.0.0/'],
    ['an IPv6 unique local address', 'http://[fd00::1]/'],
    ['localhost (resolved from the hosts file)', 'http://localhost:3000/'],
  ])('refuses %s: %s', async (_kind, url) => {
    expect(await refuseUrl(url, none)).toMatch(/private, loopback or link-local/);
  });

  it('allows an allowlisted host, and only that host', async () => {
    expect(await refuseUrl('http://127.0.0.1:8080/', new Set(['127.0.0.1']))).toBeNull();
    expect(await refuseUrl('http://LOCALHOST:8080/', new Set(['localhost']))).toBeNull();
    expect(await refuseUrl('http://[::1]:8080/', new Set(['::1']))).toBeNull();
    expect(await refuseUrl('http://10.0.0.1/', new Set(['127.0.0.1']))).toMatch(/10\.0\.0\.1/);
  });
});

describe('Outbound.send against a local partner', () => {
  let server: Server;
  let base: string;
  const received: Array<{ url: string; method: string; headers: IncomingMessage['headers']; body: string }> = [];
  const allowed = new Outbound(new Set(['127.0.0.1']), 2000);
  const impatient = new Outbound(new Set(['127.0.0.1']), 300);
  const guarded = new Outbound(new Set(), 1000);

  const handle = (req: IncomingMessage, res: ServerResponse, body: string) => {
    received.push({ url: req.url ?? '', method: req.method ?? '', headers: req.headers, body });
    const reply = (status: number, headers: Record<string, string> = {}, text = '') => res.writeHead(status, headers).end(text);
    if (req.url?.startsWith('/drop/')) return reply(201);
    // A list platform that counts one member of an add invalid, without naming it.
    if (req.url?.startsWith('/list-invalid/')) return reply(200, { 'content-type': 'application/json' }, JSON.stringify({ invalid: req.url.endsWith(':add') ? 1 : 0 }));
    switch (req.url) {
      case '/ok':
        return reply(200, { 'content-type': 'application/json' }, '{"FailedLines":[]}');
      case '/accepted':
        return reply(202);
      case '/dsp-failed':
        // The Trade Desk's shape: each failed line names its id as the item did.
        return reply(200, { 'content-type': 'application/json' }, JSON.stringify({ FailedLines: [{ DAID: 'm-2', ErrorCode: 'InvalidId', Message: 'bad id', ItemNumber: '2' }] }));
      case '/dsp-unnamed':
        return reply(200, { 'content-type': 'application/json' }, JSON.stringify({ FailedLines: [{ ErrorCode: 'MissingData', ItemNumber: '1' }, { DAID: 'm-3', ErrorCode: 'InvalidId' }] }));
      case '/echo':
        // A partner that answers with far more than a report: read only so far, and the connection let go.
        return reply(200, { 'content-type': 'application/json' }, JSON.stringify({ echoed: 'x'.repeat(3 << 20) }));
      case '/huge-refusal':
        return reply(500, {}, `${'e'.repeat(400)}${'f'.repeat(8 << 20)}`);
      case '/busy':
        return reply(429, { 'retry-after': '3' }, 'slow down');
      case '/broken':
        return reply(500, {}, 'oops');
      case '/refused':
        return reply(400, {}, 'bad ids');
      case '/moved':
        // A redirect into our own network must not be followed.
        return reply(302, { location: 'http://10.0.0.1/' });
      case '/hang':
        return; // never answers
      default:
        return reply(404);
    }
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => handle(req, res, body));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await Promise.all([allowed.close(), impatient.close(), guarded.close()]);
  });

  const failure = async (promise: Promise<unknown>): Promise<DeliveryError> => {
    const error = await promise.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DeliveryError);
    return error as DeliveryError;
  };

  it('resolves with the status and the JSON answer on a 2xx, sending the method, headers and body given', async () => {
    const response = await allowed.send(`${base}/ok`, { method: 'POST', headers: { 'x-test': 'yes' }, body: 'payload' });
    expect(response).toEqual({ status: 200, answer: { FailedLines: [] }, complete: true });
    expect(received.at(-1)).toMatchObject({ url: '/ok', method: 'POST', headers: expect.objectContaining({ 'x-test': 'yes' }), body: 'payload' });
    expect(await allowed.send(`${base}/accepted`, { method: 'PUT', body: 'x' })).toEqual({ status: 202, answer: null, complete: true });
  });

  it("sends a segment file and a list's members under the partner's URL, keeping its query and dropping its fragment", async () => {
    const batch: ExportBatch = { destinationId: 'dst_u', exportId: 'exp_u', batchId: 'exp_u:0', segment: { id: 'seg_1', name: 'S' }, idType: 'email_sha256', adds: ['a'.repeat(64)], removes: [] };
    await segmentFile.deliver(batch, segmentFile.config.parse({ url: `${base}/drop/in/?sig=abc%2B1&se=2030#frag`, format: 'csv' }), { http: allowed, exportDir: '' });
    expect(received.at(-1)?.url).toBe('/drop/in/exp_u%3A0.csv?sig=abc%2B1&se=2030');
    await peopleList.deliver(batch, peopleList.config.parse({ url: `${base}/drop/v1?key=k#x`, token: 'tok', listId: 'list-1' }), { http: allowed, exportDir: '' });
    expect(received.at(-1)?.url).toBe('/drop/v1/audiences/list-1/members:add?key=k');
  });

  it('reads no more of an answer than a report takes: a larger 2xx is applied with no answer, and says so; a larger refusal keeps its start', async () => {
    expect(await allowed.send(`${base}/echo`, { method: 'POST', body: '{}' })).toEqual({ status: 200, answer: null, complete: false });
    const error = await failure(allowed.send(`${base}/huge-refusal`, { method: 'POST', body: '{}' }));
    expect(error.message).toBe(`HTTP 500: ${'e'.repeat(300)}`);
  });

  it("takes the ids a DSP names in its FailedLines as refused; a line naming none, or an answer too large to read, leaves the batch's every id in doubt", async () => {
    const batch: ExportBatch = { destinationId: 'dst_d', exportId: 'exp_d', batchId: 'exp_d:0', segment: { id: 'seg_1', name: 'S' }, idType: 'maid', adds: ['m-1', 'm-2'], removes: ['m-3'] };
    const config = (path: string) => dspSegments.config.parse({ url: `${base}${path}`, token: 't', advertiserId: 'adv1' });
    const context = { http: allowed, exportDir: '' };
    const named = await dspSegments.deliver(batch, config('/dsp-failed'), context);
    expect(named).toEqual({ rejected: 1, refused: ['m-2'] });
    expect(linesNotApplied(batch, named)).toEqual([1]);
    const unnamed = await dspSegments.deliver(batch, config('/dsp-unnamed'), context);
    expect(unnamed).toEqual({ rejected: 2 });
    expect(linesNotApplied(batch, unnamed)).toEqual([0, 1, 2]);
    const unread = await dspSegments.deliver(batch, config('/echo'), context);
    expect(unread).toEqual({ rejected: 0, unread: true });
    expect(linesNotApplied(batch, unread)).toEqual([0, 1, 2]);
    expect(linesNotApplied(batch, await dspSegments.deliver(batch, config('/ok'), context))).toEqual([]);
  });

  it("leaves in doubt every member of a list request the platform counted invalid members in, and only those", async () => {
    const batch: ExportBatch = { destinationId: 'dst_l', exportId: 'exp_l', batchId: 'exp_l:0', segment: { id: 'seg_1', name: 'S' }, idType: 'email_sha256', adds: ['a'.repeat(64), 'b'.repeat(64)], removes: ['c'.repeat(64)] };
    const delivered = await peopleList.deliver(batch, peopleList.config.parse({ url: `${base}/list-invalid/v1`, token: 'tok', listId: 'list-1' }), { http: allowed, exportDir: '' });
    expect(delivered).toEqual({ rejected: 1, refused: batch.adds });
    expect(linesNotApplied(batch, delivered)).toEqual([0, 1]);
  });

  it('leaves every line of a batch in doubt when the partner names ids the batch does not hold, or fewer than it refused', () => {
    const batch = { adds: ['a', 'b'], removes: ['c'] };
    expect(linesNotApplied(batch, { rejected: 1, refused: ['c'] })).toEqual([2]);
    expect(linesNotApplied(batch, { rejected: 1, refused: ['z'] })).toEqual([0, 1, 2]);
    expect(linesNotApplied(batch, { rejected: 2, refused: ['a'] })).toEqual([0, 1, 2]);
    expect(linesNotApplied(batch, { rejected: 0 })).toEqual([]);
  });

  it("makes a 429 retryable, with the partner's Retry-After", async () => {
    const error = await failure(allowed.send(`${base}/busy`, { method: 'POST', body: '{}' }));
    expect(error).toMatchObject({ retryable: true, status: 429, retryAfterMs: 3000 });
    expect(error.message).toContain('slow down');
  });

  it('makes a 5xx retryable', async () => {
    expect(await failure(allowed.send(`${base}/broken`, { method: 'POST', body: '{}' }))).toMatchObject({ retryable: true, status: 500, retryAfterMs: null });
  });

  it('makes a 400 a refusal, not retryable', async () => {
    const error = await failure(allowed.send(`${base}/refused`, { method: 'POST', body: '{}' }));
    expect(error).toMatchObject({ retryable: false, status: 400 });
    expect(error.message).toBe('HTTP 400: bad ids');
  });

  it('does not follow redirects', async () => {
    expect(await failure(allowed.send(`${base}/moved`, { method: 'POST', body: '{}' }))).toMatchObject({ retryable: false, status: 302 });
  });

  it('abandons a partner that never answers, as retryable', async () => {
    const started = Date.now();
    const error = await failure(impatient.send(`${base}/hang`, { method: 'POST', body: '{}' }));
    expect(error).toMatchObject({ retryable: true, status: null });
    expect(error.message).toBe('no response within 300 ms');
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('refuses a private address not allowlisted before connecting, not retryable', async () => {
    const before = received.length;
    const error = await failure(guarded.send(`${base}/ok`, { method: 'POST', body: '{}' }));
    expect(error).toMatchObject({ retryable: false, status: null });
    expect(error.message).toContain('private address');
    expect(received.length).toBe(before);
  });

  it('refuses a host name that resolves to a private address not allowlisted, not retryable', async () => {
    // `localhost` is not on the allowlist even though 127.0.0.1 is: the check runs on the name dialled.
    const before = received.length;
    const error = await failure(allowed.send(`${base.replace('127.0.0.1', 'localhost')}/ok`, { method: 'POST', body: '{}' }));
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('may not reach');
    expect(received.length).toBe(before);
  });

  it('delivers a webhook batch whose signature verifies against the bytes received', async () => {
    const secret = 'a-long-shared-secret';
    const batch: ExportBatch = { destinationId: 'dst_x', exportId: 'exp_1', batchId: 'exp_1-0', segment: { id: 'seg_1', name: 'Gold' }, idType: 'crm_id', adds: ['crm-é'], removes: ['crm-2'] };
    const config = webhook.config.parse({ url: `${base}/ok`, secret });
    expect(await webhook.deliver(batch, config, { http: allowed, exportDir: '/nonexistent' })).toEqual({ rejected: 0 });
    const request = received.at(-1)!;
    expect(request.headers['idempotency-key']).toBe('exp_1-0');
    expect(request.headers['x-dmp-signature']).toBe(`sha256=${createHmac('sha256', secret).update(request.body, 'utf8').digest('hex')}`);
    expect(JSON.parse(request.body)).toMatchObject({ destinationId: 'dst_x', exportId: 'exp_1', batchId: 'exp_1-0', adds: ['crm-é'], removes: ['crm-2'] });
  });
});

describe('a change of a destination\'s consent settings', () => {
  const stored = DestinationConsentSchema.parse({ tcfPurposes: [1, 3, 4, 7], tcfVendorId: 755, requireTcf: false });

  it('replaces the fields sent and keeps the others (a PATCH no longer resets them to their defaults)', () => {
    const change = PatchDestinationRequestSchema.parse({ consent: { requireTcf: true } }).consent!;
    expect(change).toEqual({ requireTcf: true });
    expect(changedConsent(stored, change)).toEqual({ tcfPurposes: [1, 3, 4, 7], tcfVendorId: 755, requireTcf: true, honorGppOptOuts: true, purposeFlags: [...DEFAULT_PURPOSE_FLAGS] });
    expect(changedConsent(stored, { purposeFlags: ['marketing'] }).purposeFlags).toEqual(['marketing']);
    expect(changedConsent(stored, { tcfPurposes: [1] })).toEqual({ ...stored, tcfPurposes: [1] });
  });

  it('stops checking a vendor id when sent null', () => {
    expect(changedConsent(stored, { tcfVendorId: null })).toEqual({ tcfPurposes: [1, 3, 4, 7], requireTcf: false, honorGppOptOuts: true, purposeFlags: [...DEFAULT_PURPOSE_FLAGS] });
    expect(changedConsent(stored, { tcfVendorId: 8 }).tcfVendorId).toBe(8);
    expect(PatchDestinationRequestSchema.safeParse({ consent: { tcfVendorId: 0 } }).success).toBe(false);
    expect(PatchDestinationRequestSchema.safeParse({ consent: { unknown: true } }).success).toBe(false);
  });
});

describe('failedExportRetryAt', () => {
  const started = new Date('2026-12-01T10:00:00Z');
  const finished = new Date('2026-12-01T10:00:30Z');
  const after = (last: Parameters<typeof failedExportRetryAt>[0]) => failedExportRetryAt(last).getTime() - (last.finishedAt ?? last.startedAt).getTime();

  it('waits a minute after a first failure, however long it ran', () => {
    expect(after({ startedAt: new Date(finished.getTime() - 20 * 60_000), finishedAt: finished, failingSince: finished })).toBe(60_000);
    expect(after({ startedAt: started, finishedAt: finished })).toBe(60_000);
    expect(after({ startedAt: started, finishedAt: null })).toBe(60_000);
  });

  it('waits as long as the exports have been failing, at most an hour', () => {
    expect(after({ startedAt: started, finishedAt: finished, failingSince: new Date(finished.getTime() - 7 * 60_000) })).toBe(7 * 60_000);
    expect(after({ startedAt: started, finishedAt: finished, failingSince: new Date(finished.getTime() - 86_400_000) })).toBe(3_600_000);
  });
});
