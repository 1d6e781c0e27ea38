import { TCString } from '@iabtcf/core';
import { ConsentError, decodeConsent, decodeTcf } from '../../domain/consent';
import { buildTcString } from './tcfFixture';

describe('decodeTcf', () => {
  const tcString = buildTcString({
    cmpId: 31,
    purposeConsents: [1, 3, 4, 10],
    purposeLegitimateInterests: [2, 7],
    vendorConsents: [8, 755, 12],
  });

  it('reads the purpose consents of a TCF v2 string', () => {
    expect(decodeTcf(tcString).purposeConsents).toEqual([1, 3, 4, 10]);
  });

  it('reads the purpose legitimate interests', () => {
    expect(decodeTcf(tcString).purposeLegitimateInterests).toEqual([2, 7]);
  });

  it('reads the vendor consents in ascending id order', () => {
    expect(decodeTcf(tcString).vendorConsents).toEqual([8, 12, 755]);
  });

  it('reads the CMP id and policy version and keeps the original string', () => {
    const tcf = decodeTcf(tcString);
    expect(tcf.cmpId).toBe(31);
    expect(tcf.policyVersion).toBe(4);
    expect(tcf.tcString).toBe(tcString);
  });

  it('reads the creation date as a Date', () => {
    const tcf = decodeTcf(tcString);
    expect(tcf.created).toBeInstanceOf(Date);
    expect(tcf.created.getTime()).toBe(TCString.decode(tcString).created.getTime());
  });

  it('reads a string that grants nothing as empty lists', () => {
    const tcf = decodeTcf(buildTcString({ gvlVendors: [1] }));
    expect(tcf.purposeConsents).toEqual([]);
    expect(tcf.purposeLegitimateInterests).toEqual([]);
    expect(tcf.vendorConsents).toEqual([]);
  });

  it('distinguishes two strings with different vendor consents', () => {
    const one = decodeTcf(buildTcString({ purposeConsents: [1], vendorConsents: [8] }));
    const other = decodeTcf(buildTcString({ purposeConsents: [1], vendorConsents: [9] }));
    expect(one.vendorConsents).toEqual([8]);
    expect(other.vendorConsents).toEqual([9]);
  });

  it.each([
    ['a word', 'garbage'],
    ['characters outside base64url', 'not-a-tc-string!!'],
    ['a space-separated phrase', 'hello world'],
    ['a truncated string', tcString.slice(0, 10)],
    ['four zero characters', 'AAAA'],
    ['a TCF v1 string', 'BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA'],
    ['an empty string', ''],
  ])('refuses %s with ConsentError', (_, garbage) => {
    expect(() => decodeTcf(garbage)).toThrow(ConsentError);
  });

  it('refuses a readable string whose version is not 2', () => {
    // The first six bits of the core segment are the version: "C" is 2, "B" is 1.
    const core = buildTcString({ gvlVendors: [1] }).split('.')[0];
    expect(core[0]).toBe('C');
    const versionOne = `B${core.slice(1)}`;
    expect(TCString.decode(versionOne).version).toBe(1);
    expect(() => decodeTcf(versionOne)).toThrow(ConsentError);
    expect(() => decodeTcf(versionOne)).toThrow('TCF version 1 is not supported');
  });
});

describe('decodeConsent', () => {
  it('decodes only the signals present', () => {
    expect(decodeConsent({})).toEqual({});
    expect(decodeConsent({ purposes: { analytics: true, ads: false } })).toEqual({ purposes: { analytics: true, ads: false } });
  });

  it('decodes a TCF string alongside other signals', () => {
    const tcString = buildTcString({ purposeConsents: [1, 2], vendorConsents: [8] });
    const consent = decodeConsent({ tcf: tcString, purposes: { analytics: true } });
    expect(consent.tcf?.purposeConsents).toEqual([1, 2]);
    expect(consent.tcf?.vendorConsents).toEqual([8]);
    expect(consent.purposes).toEqual({ analytics: true });
    expect(consent.gpp).toBeUndefined();
  });

  it('refuses an unreadable TCF string with ConsentError', () => {
    expect(() => decodeConsent({ tcf: 'garbage' })).toThrow(ConsentError);
  });
});
