import { GppModel } from '@iabgpp/cmpapi';
import fc from 'fast-check';
import {
  cookieSyncEventId,
  expandRedirect,
  liveEntries,
  partnerRequestSchemas,
  readSyncQuery,
  syncConsentInput,
  redirectUrlPattern,
  redirectUrlProblem,
  syncAnswer,
  withSighting,
  type MatchEntry,
  type MatchLimits,
} from '../../domain/partners';
import { EventInputSchema } from '../../domain/schemas';
import { buildTcString } from './tcfFixture';

const TEMPLATE = 'https://sync.partner.example/match?dmp_uid=${DMP_UID}';
const NOONE = new Set<string>();

/** A GPP string with the given sections' fields set, encoded by the IAB's own library. */
function gppString(fields: Record<string, Record<string, unknown>>): string {
  const model = new GppModel();
  for (const [section, values] of Object.entries(fields)) for (const [field, value] of Object.entries(values)) model.setFieldValue(section, field, value);
  return model.encode();
}

function paths(result: ReturnType<typeof readSyncQuery>): string[] {
  return result.ok ? [] : result.errors.map((error) => error.path);
}

function refusal(query: Record<string, unknown>): string | null {
  const result = readSyncQuery({ puid: 'p-1', ...query });
  if (!result.ok) throw new Error(`unexpected errors: ${JSON.stringify(result.errors)}`);
  return result.sync.refused;
}

describe('partner config', () => {
  it('takes an https match URL with the macro', () => {
    expect(redirectUrlProblem(TEMPLATE, NOONE)).toBeNull();
    expect(redirectUrlProblem('https://sync.partner.example/m/${DMP_UID}?gdpr=${GDPR}&c=${GDPR_CONSENT}&g=${GPP}&s=${GPP_SID}&u=${US_PRIVACY}', NOONE)).toBeNull();
  });

  it.each([
    ['without the macro', 'https://sync.partner.example/match?uid=', /must contain \$\{DMP_UID\}/],
    ['over plain http', 'http://sync.partner.example/match?u=${DMP_UID}', /https only/],
    ['with another scheme', 'ftp://sync.partner.example/match?u=${DMP_UID}', /only https/],
    ['with an unknown macro (a typo)', 'https://sync.partner.example/match?u=${DMP_UID}&g=${GDRP}', /unknown macro \$\{GDRP\}/],
    ['with a macro in the host', 'https://${DMP_UID}.partner.example/match', /not the host/],
    ['with credentials', 'https://user:pw@sync.partner.example/match?u=${DMP_UID}', /no credentials/],
    ['that is not a URL', 'sync.partner.example/match?u=${DMP_UID}', /not a URL/],
  ])('refuses a match URL %s', (_, template, message) => {
    expect(redirectUrlProblem(template, NOONE)).toMatch(message);
  });

  it('takes plain http only for allowlisted hosts', () => {
    expect(redirectUrlProblem('http://127.0.0.1:8080/match?u=${DMP_UID}', new Set(['127.0.0.1']))).toBeNull();
    expect(redirectUrlProblem('http://127.0.0.2:8080/match?u=${DMP_UID}', new Set(['127.0.0.1']))).toMatch(/https only/);
  });

  it('states its rules as one pattern, which takes only URLs the rules take', () => {
    const allowlist = new Set(['127.0.0.1']);
    const pattern = redirectUrlPattern(allowlist);
    fc.assert(
      fc.property(fc.stringMatching(pattern), (template) => {
        expect(redirectUrlProblem(template, allowlist)).toBeNull();
      }),
      { numRuns: 2000 },
    );
    for (const template of [TEMPLATE, 'https://1.2.3.4:8443/m/${DMP_UID}?g=${GDPR}', 'http://127.0.0.1:9/sync?u=${DMP_UID}']) expect(pattern.test(template)).toBe(true);
    for (const template of ['https://sync.partner.example/match?uid=', 'http://sync.partner.example/?u=${DMP_UID}', 'https://a.example/?u=${DMP_UID}&g=${GDRP}', 'https://u:p@a.example/${DMP_UID}', 'https://1.2.3.999/${DMP_UID}']) {
      expect(pattern.test(template)).toBe(false);
    }
  });

  it('names the field of a bad id, and refuses unknown fields', () => {
    const { create: CreatePartnerRequestSchema, patch: PatchPartnerRequestSchema } = partnerRequestSchemas(NOONE);
    const parsed = CreatePartnerRequestSchema.safeParse({ id: 'The Trade Desk', name: 'TTD', redirectUrl: TEMPLATE, extra: 1 });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.map((issue) => issue.path.join('.') || issue.code).sort()).toEqual(['id', 'unrecognized_keys']);
    expect(CreatePartnerRequestSchema.safeParse({ id: 'ttd', name: 'TTD', redirectUrl: TEMPLATE }).success).toBe(true);
    expect(CreatePartnerRequestSchema.safeParse({ id: 'a:b', name: 'x', redirectUrl: TEMPLATE }).success).toBe(false);
    expect(PatchPartnerRequestSchema.safeParse({}).success).toBe(false);
    expect(PatchPartnerRequestSchema.safeParse({ sourceId: null }).success).toBe(true);
  });
});

describe('expandRedirect', () => {
  it('puts our id, URL-encoded, where the macro is, and passes the consent parameters on', () => {
    const url = expandRedirect('https://p.example/m?uid=${DMP_UID}&gdpr=${GDPR}&gc=${GDPR_CONSENT}&us=${US_PRIVACY}', 'a b&c=d/é', { gdpr: '1', gdpr_consent: 'CQ+x/y=', us_privacy: '1YNN' });
    expect(url).toBe('https://p.example/m?uid=a%20b%26c%3Dd%2F%C3%A9&gdpr=1&gc=CQ%2Bx%2Fy%3D&us=1YNN');
    expect(new URL(url).searchParams.get('uid')).toBe('a b&c=d/é');
  });

  it('leaves our id out when it may not be shared, and absent signals empty', () => {
    expect(expandRedirect('https://p.example/m?uid=${DMP_UID}&gdpr=${GDPR}&gpp=${GPP}', null, {})).toBe('https://p.example/m?uid=&gdpr=&gpp=');
  });
});

describe('readSyncQuery', () => {
  it('needs a puid, naming query.puid', () => {
    expect(paths(readSyncQuery({}))).toEqual(['query.puid']);
    expect(paths(readSyncQuery({ puid: '' }))).toEqual(['query.puid']);
    expect(paths(readSyncQuery({ puid: 'has space' }))).toEqual(['query.puid']);
    expect(paths(readSyncQuery({ puid: 'x'.repeat(257) }))).toEqual(['query.puid']);
    expect(paths(readSyncQuery({ puid: ['a', 'b'] }))).toEqual(['query.puid']);
    expect(readSyncQuery({ puid: 'AbC-123_=/+' })).toEqual({ ok: true, sync: { puid: 'AbC-123_=/+', signals: {}, refused: null } });
  });

  it('refuses a request that names where to redirect', () => {
    expect(paths(readSyncQuery({ puid: 'p', redirect: 'https://evil.example/' }))).toEqual(['query.redirect']);
    expect(paths(readSyncQuery({ puid: 'p', url: 'https://evil.example/', returnUrl: '//evil.example' }))).toEqual(['query.url', 'query.returnUrl']);
  });

  it('ignores cache busters, empty parameters and unexpanded macros', () => {
    const result = readSyncQuery({ puid: 'p', cb: '123', gdpr: '${GDPR}', gdpr_consent: '', us_privacy: '[US_PRIVACY]', gpp: '%%GPP%%' });
    expect(result).toEqual({ ok: true, sync: { puid: 'p', signals: {}, refused: null } });
  });

  it('names a bad consent parameter', () => {
    expect(paths(readSyncQuery({ puid: 'p', gdpr: '2' }))).toEqual(['query.gdpr']);
    expect(paths(readSyncQuery({ puid: 'p', gdpr: '1', gdpr_consent: 'not a tc string' }))).toEqual(['query.gdpr_consent']);
    expect(paths(readSyncQuery({ puid: 'p', gpp: 'not a gpp string' }))).toEqual(['query.gpp']);
    expect(paths(readSyncQuery({ puid: 'p', us_privacy: 'YYYY' }))).toEqual(['query.us_privacy']);
    expect(paths(readSyncQuery({ puid: 'p', gpp_sid: '7;8' }))).toEqual(['query.gpp_sid']);
  });

  it("where the GDPR applies, needs the source's own vendor consented too, when the source names its vendor id", () => {
    const others = buildTcString({ purposeConsents: [1], vendorConsents: [10], gvlVendors: [10, 755] });
    const decision = (tc: string, vendorId?: number) => {
      const read = readSyncQuery({ puid: 'p', gdpr: '1', gdpr_consent: tc }, { gpc: false }, vendorId);
      if (!read.ok) throw new Error('refused');
      return read.sync.refused;
    };
    expect(decision(others, 755)).toBe('tcf_storage');
    expect(decision(others)).toBeNull();
    expect(decision(buildTcString({ purposeConsents: [1], vendorConsents: [755] }), 755)).toBeNull();
    expect(decision(buildTcString({ purposeConsents: [1], vendorConsents: [755], publisherRestrictions: [{ purpose: 1, type: 'not_allowed', vendors: [755] }] }), 755)).toBe('tcf_storage');
  });

  it('takes a consent string that cannot be read as no consent', () => {
    expect(refusal({ gdpr: '1', gdpr_consent: 'not-a-tc-string' })).toBe('unreadable_consent');
    expect(refusal({ gdpr_consent: 'not-a-tc-string' })).toBe('unreadable_consent');
    expect(refusal({ gpp: 'DBABMA~garbage' })).toBe('unreadable_consent');
  });

  it('where the GDPR applies, needs consent to storage (TCF purpose 1)', () => {
    expect(refusal({ gdpr: '1' })).toBe('tcf_storage');
    expect(refusal({ gdpr: '1', gdpr_consent: buildTcString({ purposeConsents: [3, 4] }) })).toBe('tcf_storage');
    expect(refusal({ gdpr: '1', gdpr_consent: buildTcString({ purposeConsents: [1] }) })).toBeNull();
    // Not told whether it applies: a TC string that is there is followed.
    expect(refusal({ gdpr_consent: buildTcString({ purposeConsents: [3] }) })).toBe('tcf_storage');
    expect(refusal({})).toBeNull();
    // Told it does not apply: the TC string is not needed.
    expect(refusal({ gdpr: '0', gdpr_consent: buildTcString({ purposeConsents: [3] }) })).toBeNull();
  });

  it("reads GPP's TCF EU section like a TC string", () => {
    const model = new GppModel();
    model.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [3], isServiceSpecific: true }));
    expect(refusal({ gdpr: '1', gpp: model.encode(), gpp_sid: '2' })).toBe('tcf_storage');
    const granted = new GppModel();
    granted.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [1], isServiceSpecific: true }));
    expect(refusal({ gdpr: '1', gpp: granted.encode(), gpp_sid: '2' })).toBeNull();
    // Not in force for a US visitor: the EU section grants and refuses nothing (gdpr unknown: storage follows no TC string).
    expect(refusal({ gpp: model.encode(), gpp_sid: '7' })).toBeNull();
    expect(refusal({ gpp: model.encode() })).toBe('tcf_storage');
  });

  it('reads only the GPP sections gpp_sid says are in force, as collection does', () => {
    const optedOut = gppString({ usnat: { SaleOptOut: 1 } });
    expect(refusal({ gpp: optedOut, gpp_sid: '2' })).toBeNull();
    expect(refusal({ gpp: optedOut, gpp_sid: '-1' })).toBeNull();
    expect(refusal({ gpp: optedOut, gpp_sid: '0' })).toBe('us_opt_out');
    expect(syncConsentInput({ gpp: optedOut, gpp_sid: '7,8' })).toEqual({ gpp: optedOut, gppSid: [7, 8] });
    // Section ids without a string say nothing.
    expect(syncConsentInput({ gpp_sid: '7' })).toEqual({});
    expect(paths(readSyncQuery({ puid: 'p', gpp_sid: '256' }))).toEqual(['query.gpp_sid']);
  });

  it('honours US opt-outs of sale, sharing or targeted advertising (GPP and US Privacy)', () => {
    expect(refusal({ us_privacy: '1YYN' })).toBe('us_opt_out');
    expect(refusal({ us_privacy: '1ynn' })).toBeNull();
    expect(refusal({ us_privacy: '1---' })).toBeNull();
    expect(refusal({ gpp: gppString({ usnat: { SaleOptOut: 1 } }), gpp_sid: '7' })).toBe('us_opt_out');
    expect(refusal({ gpp: gppString({ usca: { SharingOptOut: 1 } }), gpp_sid: '8' })).toBe('us_opt_out');
    expect(refusal({ gpp: gppString({ usnat: { SaleOptOut: 2, SharingOptOut: 2, TargetedAdvertisingOptOut: 2 } }), gpp_sid: '7' })).toBeNull();
  });

  it("honours the browser's Global Privacy Control as an opt-out", () => {
    const read = readSyncQuery({ puid: 'p-1' }, { gpc: true });
    expect(read.ok && read.sync.refused).toBe('us_opt_out');
    const without = readSyncQuery({ puid: 'p-1' }, { gpc: false });
    expect(without.ok && without.sync.refused).toBeNull();
  });
});

describe('cookieSyncEventId', () => {
  const at = new Date('2026-06-30T08:00:00Z');

  it('is the same for the same partner, partner id and cookie all day, and differs otherwise', () => {
    const id = cookieSyncEventId('ttd', 'p-1', 'cookie-0000000000000001', at);
    expect(cookieSyncEventId('ttd', 'p-1', 'cookie-0000000000000001', new Date('2026-06-30T23:59:59Z'))).toBe(id);
    expect(
      new Set([
        id,
        cookieSyncEventId('ttd', 'p-1', 'cookie-0000000000000001', new Date('2026-07-01T00:00:00Z')),
        cookieSyncEventId('other', 'p-1', 'cookie-0000000000000001', at),
        cookieSyncEventId('ttd', 'p-2', 'cookie-0000000000000001', at),
        cookieSyncEventId('ttd', 'p-1', 'cookie-0000000000000002', at),
      ]).size,
    ).toBe(5);
  });

  it('is a valid event id', () => {
    const id = cookieSyncEventId('ttd', 'x'.repeat(256), 'c'.repeat(64), at);
    expect(EventInputSchema.safeParse({ id, type: 'cookie_sync', identities: { cookie_id: 'c'.repeat(64) } }).success).toBe(true);
  });
});

describe('syncAnswer', () => {
  it('gives a new cookie to the browser when anything was recorded under it, so no match or event names a cookie nobody holds', () => {
    expect(syncAnswer(false, 'done', 'done').setCookie).toBe(true);
    expect(syncAnswer(false, 'done', 'failed').setCookie).toBe(true);
    expect(syncAnswer(false, 'failed', 'done').setCookie).toBe(true);
    expect(syncAnswer(false, 'none', 'none').setCookie).toBe(true);
    expect(syncAnswer(false, 'failed', 'failed').setCookie).toBe(false);
    expect(syncAnswer(false, 'failed', 'none').setCookie).toBe(false);
    expect(syncAnswer(false, 'none', 'failed').setCookie).toBe(false);
    expect(syncAnswer(false, 'none', 'done').setCookie).toBe(true);
    expect(syncAnswer(true, 'done', 'done').setCookie).toBe(false);
  });

  it('sends the partner our id only when its match is recorded (or deliberately not: a placeholder, an erased id)', () => {
    expect(syncAnswer(false, 'done', 'failed').sendId).toBe(true);
    expect(syncAnswer(true, 'none', 'done').sendId).toBe(true);
    expect(syncAnswer(false, 'failed', 'done').sendId).toBe(false);
    expect(syncAnswer(true, 'failed', 'failed').sendId).toBe(false);
  });

  it('never sends the partner a new id the browser is not given: no match recorded (a placeholder) and the event failed', () => {
    expect(syncAnswer(false, 'none', 'failed')).toEqual({ setCookie: false, sendId: false });
    expect(syncAnswer(true, 'none', 'failed')).toEqual({ setCookie: false, sendId: true });
  });
});

describe('match entries', () => {
  const DAY = 86_400_000;
  const limits: MatchLimits = { cap: 3, ttlMs: 90 * DAY };
  const at = (day: number, hours = 0) => new Date(Date.UTC(2026, 0, 1) + day * DAY + hours * 3_600_000);
  const entry = (id: string, day: number, hours = 0): MatchEntry => ({ id, lastSeen: at(day, hours) });

  it('adds a new pair, newest first', () => {
    expect(withSighting([entry('a', 1)], 'b', at(2), limits)).toEqual([entry('b', 2), entry('a', 1)]);
    expect(withSighting([], 'a', at(2), limits)).toEqual([entry('a', 2)]);
  });

  it('writes nothing for a pair seen within the hour, and refreshes it after', () => {
    expect(withSighting([entry('a', 1)], 'a', at(1, 0.5), limits)).toBeNull();
    expect(withSighting([entry('a', 1)], 'a', at(1, 2), limits)).toEqual([entry('a', 1, 2)]);
  });

  it('keeps the newest `cap` entries', () => {
    const full = [entry('c', 3), entry('b', 2), entry('a', 1)];
    expect(withSighting(full, 'd', at(4), limits)).toEqual([entry('d', 4), entry('c', 3), entry('b', 2)]);
    // Seen again, the oldest becomes the newest, and nothing leaves.
    expect(withSighting(full, 'a', at(4), limits)).toEqual([entry('a', 4), entry('c', 3), entry('b', 2)]);
  });

  it('drops entries past the TTL when the key is written', () => {
    expect(withSighting([entry('old', 0), entry('b', 50)], 'c', at(91), limits)).toEqual([entry('c', 91), entry('b', 50)]);
    // A pair seen within the hour is still written when another entry expired meanwhile.
    expect(withSighting([entry('a', 91), entry('old', 0)], 'a', at(91, 0.5), limits)).toEqual([entry('a', 91, 0.5)]);
  });

  it('never moves a sighting back (a clock behind another process)', () => {
    expect(withSighting([entry('a', 5), entry('b', 1)], 'a', at(2), limits)).toBeNull();
    expect(withSighting([entry('a', 95), entry('old', 1)], 'a', at(93), limits)).toEqual([entry('a', 95)]);
  });

  it('reads only live entries, newest first, at most `cap`', () => {
    const entries = [entry('a', 1), entry('old', 0), entry('c', 80), entry('b', 40), entry('d', 85)];
    expect(liveEntries(entries, at(90, 12), limits).map((e) => e.id)).toEqual(['d', 'c', 'b']);
    expect(liveEntries(entries, at(200), limits)).toEqual([]);
  });
});
