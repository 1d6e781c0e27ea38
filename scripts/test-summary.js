// Prints the plain closing line `<n> passed, <m> failed` from jest's JSON results.
const fs = require('node:fs');
const file = process.argv[2];
let passed = 0;
let failed = 0;
try {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'));
  passed = results.numPassedTests;
  failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
} catch {
  failed = 1; // no results at all: the run itself failed
}
console.log(`${passed} passed, ${failed} failed`);
