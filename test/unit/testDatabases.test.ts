import { isFinishedTestDatabase } from '../support/globalSetup';
import { uniqueName } from '../support/services';

describe('test databases left by earlier runs', () => {
  const hour = 3_600_000;

  it('counts a database a test made as finished once its run is six hours old', () => {
    const name = uniqueName('dmp_test_profile_groups');
    expect(isFinishedTestDatabase(name, Date.now())).toBe(false);
    expect(isFinishedTestDatabase(name, Date.now() + 7 * hour)).toBe(true);
  });

  it('never counts a database no test made', () => {
    const later = Date.now() + 1000 * hour;
    for (const name of ['dmp', 'dmp_bench_privacy_1796228849839', 'dmp_test', 'shop_test_a_mx5y162g_a5qwb']) expect(isFinishedTestDatabase(name, later)).toBe(false);
  });
});
