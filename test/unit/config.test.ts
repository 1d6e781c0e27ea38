import { loadConfig } from '../../config';

describe('configuration', () => {
  it('reads the identity blocklist as comma-separated keys, or as a JSON array for keys that hold commas', () => {
    const maid = '6D92078A-8246-4BA4-AE5B-76104861E7DC';
    expect(loadConfig({ DMP_IDENTITY_BLOCKLIST: ` cookie_id:kiosk , maid:${maid},` }).DMP_IDENTITY_BLOCKLIST).toEqual(['cookie_id:kiosk', `maid:${maid}`]);
    expect(loadConfig({ DMP_IDENTITY_BLOCKLIST: '["partner_uid:ttd:a,b", "cookie_id:kiosk"]' }).DMP_IDENTITY_BLOCKLIST).toEqual(['partner_uid:ttd:a,b', 'cookie_id:kiosk']);
    expect(loadConfig({}).DMP_IDENTITY_BLOCKLIST).toEqual([]);
    for (const bad of ['[cookie_id:kiosk]', '["cookie_id:kiosk", 3]', '[""]']) {
      expect(() => loadConfig({ DMP_IDENTITY_BLOCKLIST: bad })).toThrow('a JSON array of identity keys (strings), or keys separated by commas');
    }
  });

  it('refuses a blocklist entry that names no identity type, naming it; values collection refuses are taken as written', () => {
    expect(() => loadConfig({ DMP_IDENTITY_BLOCKLIST: 'cookie_id:kiosk,kiosk' })).toThrow('kiosk: not <type>:<value>');
    expect(loadConfig({ DMP_IDENTITY_BLOCKLIST: 'maid:abc,maid:00000000-0000-0000-0000-000000000000' }).DMP_IDENTITY_BLOCKLIST).toEqual(['maid:abc', 'maid:00000000-0000-0000-0000-000000000000']);
  });
});
