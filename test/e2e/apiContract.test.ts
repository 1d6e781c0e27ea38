import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { call } from '../support/http';
import { startPlatform, type RunningPlatform } from '../support/services';

/** Installed by scripts/install.sh into the project's tool folder. */
const SCHEMATHESIS = path.resolve(__dirname, '../../.data/tools/venv/bin/st');
/** Where the run's full output is kept, to read after a failure. */
const OUTPUT_DIR = path.resolve(__dirname, '../../.data/apiContract');
/**
 * Generated cases per operation in the fuzzing phase, and the seed that makes the run repeatable.
 * The examples, coverage and stateful phases run whole.
 */
const MAX_EXAMPLES = '5';
/** The coverage phase sends ~12.8k requests (~800 valid segments among them): 5–8 minutes on 2 cores (13–18 before change records were stored as one value). */
const RUN_LIMIT_MS = 30 * 60_000;
const SEED = '1';

/**
 * What a request the document calls valid may be answered with: schemathesis's defaults, and 422.
 * A schema says what is well formed, not what a file's rows turn out to hold: a taxonomy file with
 * a cycle, CSV text with an unclosed quote are answered 422 (Unprocessable Content), while a request
 * the document itself refuses is a 400.
 */
const ACCEPTED_VALID_DATA = `[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
`;

interface SecurityScheme {
  type: string;
  scheme?: string;
}

/** Valid credentials for every security scheme the document declares: the admin key for the admin scheme, a source's write key for the others. */
function authConfig(schemes: Record<string, SecurityScheme>, adminScheme: string, adminKey: string, writeKey: string): string {
  return Object.entries(schemes)
    .map(([name, scheme]) => {
      const key = name === adminScheme ? adminKey : writeKey;
      if (scheme.type === 'http' && scheme.scheme === 'basic') return `[auth.openapi.${name}]\nusername = "${key}"\npassword = ""\n`;
      if (scheme.type === 'http') return `[auth.openapi.${name}]\nbearer = "${key}"\n`;
      return `[auth.openapi.${name}]\napi_key = "${key}"\n`;
    })
    .join('\n');
}

function run(command: string, args: string[], cwd: string, timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, NO_COLOR: '1' } });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** What a reader needs from a failed run: each failure's operation and check, and the summary. */
function failureSummary(output: string): string {
  const lines = output.split('\n');
  const failures = lines.filter((line) => /^_{3,} .+ _{3,}$/.test(line) || /^- ST\d+ /.test(line) || /^\[\d{3}\] /.test(line));
  const summary = output.slice(output.lastIndexOf('= SUMMARY ='));
  return [...failures, '', summary].join('\n');
}

describe('the API contract under fuzzing', () => {
  let platform: RunningPlatform;

  beforeAll(async () => {
    // An insight waits for the audience report it starts only briefly: fuzzed segments change all the time.
    platform = await startPlatform('contract', { DMP_DESTINATION_ALLOWLIST: ['127.0.0.1'], DMP_REPORT_WAIT_SECONDS: 2 });
    mkdirSync(OUTPUT_DIR, { recursive: true });
  });
  afterAll(async () => {
    await platform?.stop();
  });

  it('holds for every route with valid admin and write keys: schemathesis with all checks and all phases finds no failure', async () => {
    expect(existsSync(SCHEMATHESIS)).toBe(true);
    const { api } = platform;
    const source = await call(`${api.url}/v1/sources`, { key: api.adminKey, body: { name: 'fuzzed', kind: 'events', party: 'first' } });
    expect(source.status).toBe(201);
    const document = (await call(`${api.url}/openapi.json`)).body;
    writeFileSync(path.join(OUTPUT_DIR, 'schemathesis.toml'), `${authConfig(document.components.securitySchemes, 'adminKey', api.adminKey, source.body.writeKey)}\n${ACCEPTED_VALID_DATA}`);

    const started = Date.now();
    const args = ['run', `${api.url}/openapi.json`, '--checks', 'all', '--max-examples', MAX_EXAMPLES, '--seed', SEED, '--workers', '1', '--request-timeout', '30', '--no-color'];
    const { code, output } = await run(SCHEMATHESIS, args, OUTPUT_DIR, RUN_LIMIT_MS);
    const file = path.join(OUTPUT_DIR, 'schemathesis.txt');
    writeFileSync(file, `$ st ${args.join(' ')}\n(in ${Math.round((Date.now() - started) / 1000)} s, exit code ${code})\n\n${output}`);

    // The failures named in the assertion's message; the whole output is in the file.
    expect({ exitCode: code, output: file, failures: code === 0 ? '' : failureSummary(output) }).toEqual({ exitCode: 0, output: file, failures: '' });
  }, RUN_LIMIT_MS + 120_000);
});
