/** Unit tests need nothing; integration and e2e tests expect the services from scripts/services.sh. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testTimeout: 120000,
  maxWorkers: 1,
  globalSetup: '<rootDir>/test/support/globalSetup.ts',
};
