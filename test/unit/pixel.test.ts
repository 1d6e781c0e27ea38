import { GppModel } from '@iabgpp/cmpapi';
import { prepareEvents } from '../../domain/collect';
import { sha256Hex } from '../../domain/identity';
import { pixelParamOf, PIXEL_DEFAULT_EVENT_TYPE, readPixelQuery, type PixelQuery, type PixelRequest } from '../../domain/pixel';
import { buildTcString } from './tcfFixture';

const read = (query: PixelQuery) => readPixelQuery(query);

function accepted(request: PixelRequest) {
  if (!request.ok) throw new Error(`refused: ${JSON.stringify(request.errors)}`);
  return request;
}

function refusedPaths(request: PixelRequest): string[] {
  if (request.ok) throw new Error('accepted');
  return request.errors.map((error) => error.path);
}

const EMAIL_HASH = sha256Hex('jane@example.com');

describe('readPixelQuery: the event', () => {
  it('defaults the event type to pixel and carries no identity of its own', () => {
    const { event } = accepted(read({ writeKey: 'wk', cb: '12345' }));
    expect(event).toEqual({ type: PIXEL_DEFAULT_EVENT_TYPE, identities: {} });
  });

  it('maps e, id, uid, em and ph', () => {
    const { event } = accepted(read({ e: 'impression', id: 'imp-1', uid: 'crm-9', em: EMAIL_HASH, ph: sha256Hex('+15551234567') }));
    expect(event.type).toBe('impression');
    expect(event.id).toBe('imp-1');
    expect(event.identities).toEqual({ crm_id: 'crm-9', email_sha256: EMAIL_HASH, phone_sha256: sha256Hex('+15551234567') });
  });

  it('maps p.<name> to properties and t.<name> to traits, a repeated name to a list, names with dots kept whole', () => {
    const { event } = accepted(read({ 'p.campaign': 'spring', 'p.tags': ['a', 'b'], 'p.page.section': 'news', 't.tier': 'gold' }));
    expect(event.properties).toEqual({ campaign: 'spring', tags: ['a', 'b'], 'page.section': 'news' });
    expect(event.traits).toEqual({ tier: 'gold' });
  });

  it('keeps a property named __proto__ as a plain property', () => {
    const { event } = accepted(read({ 'p.__proto__': ['a', 'b'] }));
    expect(Object.getPrototypeOf(event.properties)).toBe(Object.prototype);
    expect(Object.entries(event.properties ?? {})).toEqual([['__proto__', ['a', 'b']]]);
  });

  it('ignores cb, gpp_sid without a GPP string, and parameters it does not know', () => {
    const { event } = accepted(read({ cb: '1', gpp_sid: '7', utm_source: 'x', writeKey: 'wk' }));
    expect(event).toEqual({ type: 'pixel', identities: {} });
  });

  it('treats empty values and unexpanded ad-server macros as absent', () => {
    const { event, storageAllowed } = accepted(read({ uid: '', gdpr: '${GDPR}', gdpr_consent: '${GDPR_CONSENT_755}', gpp: '[GPP_STRING]', e: '%%EVENT%%' }));
    expect(event).toEqual({ type: 'pixel', identities: {} });
    expect(storageAllowed).toBe(true);
  });

  it('produces an event collection accepts once it has its cookie', () => {
    const { event } = accepted(read({ e: 'conversion', uid: 'crm-9', em: EMAIL_HASH, 'p.value': '12.5', 't.tier': 'gold' }));
    const prepared = prepareEvents([{ ...event, identities: { ...event.identities, cookie_id: 'cookie-0123456789abcdef' } }], { now: new Date(), defaultPhoneRegion: 'US' });
    expect(prepared.rejected).toEqual([]);
    expect(prepared.accepted[0].event.identities.map((identity) => identity.type).sort()).toEqual(['cookie_id', 'crm_id', 'email_sha256']);
  });
});

describe('readPixelQuery: bad parameters name the parameter', () => {
  it('refuses a parameter given twice', () => {
    expect(refusedPaths(read({ uid: ['a', 'b'] }))).toEqual(['uid']);
    expect(refusedPaths(read({ e: ['a', 'b'] }))).toEqual(['e']);
  });

  it('refuses a gdpr other than 0 or 1', () => {
    expect(refusedPaths(read({ gdpr: 'yes' }))).toEqual(['gdpr']);
  });

  it('refuses an unreadable TC string under gdpr_consent and an unreadable GPP string under gpp', () => {
    expect(refusedPaths(read({ gdpr: '1', gdpr_consent: 'not-a-tc-string!!' }))).toEqual(['gdpr_consent']);
    expect(refusedPaths(read({ gpp: 'DBABMA~garbage' }))).toEqual(['gpp']);
  });

  it('refuses a property that is neither a string nor repeated strings', () => {
    expect(refusedPaths(read({ 'p.x': { nested: 'object' } }))).toEqual(['p.x']);
  });

  it('reports every bad parameter at once', () => {
    expect(refusedPaths(read({ gdpr: '2', uid: ['a', 'b'] })).sort()).toEqual(['gdpr', 'uid']);
  });
});

describe('readPixelQuery: consent and the cookie', () => {
  const consented = buildTcString({ purposeConsents: [1, 3, 4] });
  const refused = buildTcString({ purposeConsents: [3] });

  it('attaches the TC string and the GPP string as consent', () => {
    const model = new GppModel();
    model.setFieldValue('usnat', 'SaleOptOut', 2);
    const gpp = model.encode();
    const { event } = accepted(read({ gdpr: '1', gdpr_consent: consented, gpp }));
    expect(event.consent).toEqual({ tcf: consented, gpp });
  });

  it('allows the cookie where the GDPR does not apply, or is not said to', () => {
    expect(accepted(read({ gdpr: '0' })).storageAllowed).toBe(true);
    expect(accepted(read({})).storageAllowed).toBe(true);
    // Told the GDPR does not apply: said on the event, where it ends an earlier hit's no-decision mark.
    expect(accepted(read({ gdpr: '0' })).event.consent).toEqual({ tcfNotApplicable: true });
    expect(accepted(read({})).event.consent).toBeUndefined();
  });

  it('allows the cookie where the GDPR applies only with consent to purpose 1', () => {
    expect(accepted(read({ gdpr: '1', gdpr_consent: consented })).storageAllowed).toBe(true);
    expect(accepted(read({ gdpr: '1', gdpr_consent: refused })).storageAllowed).toBe(false);
  });

  it("needs the source's own vendor consented too, when the source names its vendor id", () => {
    const ours = buildTcString({ purposeConsents: [1, 3], vendorConsents: [755] });
    const others = buildTcString({ purposeConsents: [1, 3], vendorConsents: [10], gvlVendors: [10, 755] });
    expect(accepted(readPixelQuery({ gdpr: '1', gdpr_consent: ours }, 755)).storageAllowed).toBe(true);
    expect(accepted(readPixelQuery({ gdpr: '1', gdpr_consent: others }, 755)).storageAllowed).toBe(false);
    expect(accepted(readPixelQuery({ gdpr: '1', gdpr_consent: others })).storageAllowed).toBe(true);
    // The publisher may bar the vendor from purpose 1 though it consented.
    const barred = buildTcString({ purposeConsents: [1, 3], vendorConsents: [755], publisherRestrictions: [{ purpose: 1, type: 'not_allowed', vendors: [755] }] });
    expect(accepted(readPixelQuery({ gdpr: '1', gdpr_consent: barred }, 755)).storageAllowed).toBe(false);
  });

  it('follows a TC string that refuses purpose 1 even without gdpr, but not when gdpr=0', () => {
    expect(accepted(read({ gdpr_consent: refused })).storageAllowed).toBe(false);
    expect(accepted(read({ gdpr: '0', gdpr_consent: refused })).storageAllowed).toBe(true);
  });

  it("reads purpose 1 from a GPP string's EU section when no TC string is sent", () => {
    const model = new GppModel();
    model.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [2], isServiceSpecific: true }));
    expect(accepted(read({ gdpr: '1', gpp: model.encode() })).storageAllowed).toBe(false);
  });

  it('reads only the GPP sections gpp_sid says are in force, and every section when it cannot read the list', () => {
    const model = new GppModel();
    model.decodeSection('tcfeuv2', buildTcString({ purposeConsents: [2], isServiceSpecific: true }));
    model.setFieldValue('usnat', 'SaleOptOut', 2);
    const gpp = model.encode();
    // A US visitor: the EU section refusing storage is not in force.
    const us = accepted(read({ gpp, gpp_sid: '7' }));
    expect(us.storageAllowed).toBe(true);
    expect(us.event.consent).toEqual({ gpp, gppSid: [7] });
    expect(accepted(read({ gpp, gpp_sid: '2,6' })).storageAllowed).toBe(false);
    expect(accepted(read({ gpp, gpp_sid: '${GPP_SID}' })).storageAllowed).toBe(false);
    for (const bad of ['7;8', '300', '-2', 'x', ['7', '8'], Array(33).fill('7').join(',')]) {
      const kept = accepted(read({ gpp, gpp_sid: bad }));
      expect({ bad, consent: kept.event.consent, storageAllowed: kept.storageAllowed }).toEqual({ bad, consent: { gpp }, storageAllowed: false });
    }
  });

  it('where the GDPR applies without a TC string: no cookie, and the event says the visitor has not decided', () => {
    const request = accepted(read({ gdpr: '1' }));
    expect(request.storageAllowed).toBe(false);
    expect(request.event.consent).toEqual({ tcfPending: true });
  });

  it('adds nothing beside a TC string: it speaks for itself', () => {
    expect(accepted(read({ gdpr: '1', gdpr_consent: refused })).event.consent).toEqual({ tcf: refused });
  });
});

describe('pixelParamOf', () => {
  it.each([
    ['identities.crm_id', 'uid'],
    ['identities.email_sha256', 'em'],
    ['identities.phone_sha256', 'ph'],
    ['consent.tcf', 'gdpr_consent'],
    ['consent.gpp', 'gpp'],
    ['type', 'e'],
    ['id', 'id'],
    ['properties.campaign', 'p.campaign'],
    ['properties.tags.3', 'p.tags.3'],
    ['traits.tier', 't.tier'],
    ['timestamp', 'timestamp'],
  ])('names %s as %s', (path, param) => {
    expect(pixelParamOf(path)).toBe(param);
  });

  it('names what collection refuses in a mapped event by its parameter', () => {
    const { event } = accepted(read({ em: 'jane@example.com', 'p.long': 'x'.repeat(2000) }));
    const prepared = prepareEvents([{ ...event, identities: { ...event.identities, cookie_id: 'cookie-0123456789abcdef' } }], { now: new Date(), defaultPhoneRegion: 'US' });
    expect(prepared.rejected[0].errors.map((error) => pixelParamOf(error.path)).sort()).toEqual(['p.long']);
    const second = accepted(read({ em: 'jane@example.com' })).event;
    const again = prepareEvents([{ ...second, identities: { ...second.identities, cookie_id: 'cookie-0123456789abcdef' } }], { now: new Date(), defaultPhoneRegion: 'US' });
    expect(again.rejected[0].errors.map((error) => pixelParamOf(error.path))).toEqual(['em']);
  });
});
