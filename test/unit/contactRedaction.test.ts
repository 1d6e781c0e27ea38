import { createHash } from 'node:crypto';
import { REDACTED, redactContactData, redactContactId, redactContactText } from '../../domain/contactRedaction';

describe('redactContactData', () => {
  it('replaces every email address inside a text, its @ also percent-encoded', () => {
    const fields = {
      url: 'https://shop.example/confirm?email=jane.doe%40example.com&step=2',
      referrer: 'mailto:O\'Brien+news@mail.example.co.uk',
      note: 'from a@b.io and c.d@e-f.example.org',
    };
    expect(redactContactData(fields)).toEqual({
      url: `https://shop.example/confirm?email=${REDACTED}&step=2`,
      referrer: `mailto:${REDACTED}`,
      note: `from ${REDACTED} and ${REDACTED}`,
    });
  });

  it('replaces addresses in lists and in field names', () => {
    expect(redactContactData({ invited: ['ann@example.com', 'bob'], 'ann@example.com': true })).toEqual({ invited: [REDACTED, 'bob'], [REDACTED]: true });
  });

  it('replaces phone numbers under phone-named fields, text or number, and in URL parameters named so', () => {
    const fields = { phone_number: '+1 (650) 555-1234', mobilePhone: 4915123456789, 'company.tel': '030 1234567', fax: ['0800 123 4567'], workTel: '555-123-4567', homeFax: '030/1234567' };
    expect(redactContactData(fields)).toEqual({ phone_number: REDACTED, mobilePhone: REDACTED, 'company.tel': REDACTED, fax: [REDACTED], workTel: REDACTED, homeFax: REDACTED });
    expect(redactContactData({ url: 'https://x.example/call?phone=%2B1%20650%20555%201234&ref=ad&mobile_number=07700900123' })).toEqual({
      url: `https://x.example/call?phone=${REDACTED}&ref=ad&mobile_number=${REDACTED}`,
    });
  });

  it('finds an address at the end of a run of address characters longer than a local part: a nested percent-encoded URL, a form-encoded sentence', () => {
    const nested = 'https://shop.example/login?return_to=https%3A%2F%2Fshop.example%2Faccount%2Fnewsletter%3Fsource%3Dfooter%26email%3Djane.doe%40example.com';
    const sentence = '?q=please+send+the+quote+for+the+order+to+my+work+address+which+is+jane.doe@example.com&x=1';
    for (const text of [nested, sentence]) {
      const redacted = redactContactText(text);
      expect(redacted).toContain(REDACTED);
      expect(redacted).not.toContain('jane.doe');
      expect(redacted).not.toContain('example.com');
    }
    // At most a local part's length of what precedes it goes along.
    expect(redactContactText(sentence).length).toBeGreaterThanOrEqual(sentence.length - 'jane.doe@example.com'.length - 64);
    // Chained, and each with what is its own.
    expect(redactContactText('a@x.example-b@y.example c@z.example')).toBe(`${REDACTED}${REDACTED} ${REDACTED}`);
    expect(redactContactText(`${'x'.repeat(100)}@example.com`)).toBe(`${'x'.repeat(36)}${REDACTED}`);
  });

  it('replaces a phone number in a URL parameter whatever phone word names it', () => {
    for (const name of ['telephone', 'mobileNumber', 'userPhone', 'cell', 'whatsapp', 'fax', 'x_phone', 'tel', 'phonenumber', 'PHONENUMBER', 'x_phoneno']) {
      expect(redactContactText(`https://x.example/?${name}=%2B4915112345678&ref=1`)).toBe(`https://x.example/?${name}=${REDACTED}&ref=1`);
    }
    expect(redactContactText('https://x.example/?hotel=4915112345678&order=4915112345678')).toBe('https://x.example/?hotel=4915112345678&order=4915112345678');
  });

  it('keeps what only looks close: short numbers, phone-less names, dates, device ids, image names, text without an address', () => {
    const fields = {
      isMobile: true,
      mobileOs: 'iOS 17.2',
      phoneVerified: false,
      phone_verified_at: '2026-01-05T10:00:00Z',
      mobile_device_id: '6d92078a-8246-4ba4-ae5b-76104861e7dc',
      hotel: '1234567',
      order: 'A-1234567',
      title: 'Contact us @ the shop',
      handle: '@jane',
      image: 'https://cdn.example/img/logo@2x.png',
      telemetry: 'https://x.example/?telemetry=1234567',
    };
    expect(redactContactData(fields)).toBe(fields);
  });

  it('returns the same record when nothing is redacted, a new one when something is', () => {
    const clean = { a: 'x', b: 1 };
    expect(redactContactData(clean)).toBe(clean);
    const leaky = { a: 'x', b: 'x@y.example' };
    const redacted = redactContactData(leaky);
    expect(redacted).not.toBe(leaky);
    expect(leaky.b).toBe('x@y.example');
    expect(Object.keys(redacted)).toEqual(['a', 'b']);
  });

  it('keeps a __proto__ field a plain field', () => {
    const fields = JSON.parse('{"__proto__": "x", "e": "me@example.com"}') as Record<string, unknown>;
    const redacted = redactContactData(fields);
    expect(Object.keys(redacted)).toEqual(['__proto__', 'e']);
    expect(Object.getPrototypeOf(redacted)).toBe(Object.prototype);
  });
});

describe('redactContactText and redactContactId', () => {
  it('replaces an address in a text, and leaves a text without one as it is', () => {
    expect(redactContactText('Newsletter for ann@example.com')).toBe(`Newsletter for ${REDACTED}`);
    expect(redactContactText('Order Completed')).toBe('Order Completed');
  });

  it('replaces an address in an id by a digest, the same for the same id and another for another, and keeps file names', () => {
    const id = redactContactId('msg:ann@example.com:7');
    expect(id).toMatch(/^msg:\(redacted:[0-9a-f]{16}\):7$/);
    expect(redactContactId('msg:ann@example.com:7')).toBe(id);
    expect(redactContactId('msg:bob@example.com:7')).not.toBe(id);
    expect(redactContactId('msg:ann%40example.com:7')).toMatch(/^msg:\(redacted:[0-9a-f]{16}\):7$/);
    expect(redactContactId('banner-logo@2x.png')).toBe('banner-logo@2x.png');
    expect(redactContactId('banner-logo@2x.png-ann@example.com')).toMatch(/^banner-logo@2x\.png\(redacted:[0-9a-f]{16}\)$/);
  });

  it("digests the whole id, not the address alone: the digest is not the start of the address's hashed-email identity", () => {
    const id = redactContactId('msg:ann@example.com:7');
    expect(id).not.toContain(createHash('sha256').update('ann@example.com').digest('hex').slice(0, 16));
    expect(redactContactId('msg:ANN@example.com:7')).not.toBe(id);
  });

  it('finds each of several addresses chained by a hyphen, a plus, a dot or an encoded comma, and one followed by a hyphen', () => {
    expect(redactContactText('ref:alice@x.com-bob@y.com')).toBe(`ref:${REDACTED}${REDACTED}`);
    expect(redactContactText('?to=a@x.com%2Cb@y.com&cc=c@z.org+d@w.org.e@v.net')).toBe(`?to=${REDACTED}${REDACTED}&cc=${REDACTED}${REDACTED}${REDACTED}`);
    expect(redactContactText('jane@mail.example-shop.de-3 and admin@corp.host-01')).toBe(`${REDACTED}-3 and ${REDACTED}-01`);
    expect(redactContactText(Array.from({ length: 200 }, (_, n) => `u${n}@x${n}.com`).join('-'))).toBe(REDACTED.repeat(200));
  });
});
