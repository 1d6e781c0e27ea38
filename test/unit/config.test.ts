import { loadConfig } from '../../config';

describe('configuration', () => {
  it('reads the identity blocklist as comma-separated keys, or as a JSON array for keys that hold commas', () => {
    expect(loadConfig({ DMP_IDENTITY_BLOCKLIST: ' cookie_id:kiosk , maid:abc,' }).DMP_IDENTITY_BLOCKLIST).toEqual(['cookie_id:kiosk', 'maid:abc']);
    expect(loadConfig({ DMP_IDENTITY_BLOCKLIST: '["partner_uid:ttd:a,b", "cookie_id:kiosk"]' }).DMP_IDENTITY_BLOCKLIST).toEqual(['partner_uid:ttd:a,b', 'cookie_id:kiosk']);
    expect(loadConfig({}).DMP_IDENTITY_BLOCKLIST).toEqual([]);
    for (const bad of ['[cookie_id:kiosk]', '["cookie_id:kiosk", 3]', '[""]']) {
      expect(() => loadConfig({ DMP_IDENTITY_BLOCKLIST: bad })).toThrow('a JSON array of identity keys (strings), or keys separated by commas');
    }
  });
});
