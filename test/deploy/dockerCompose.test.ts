/**
 * Static checks of the container deployment (docker-compose.yml + Dockerfile).
 * The stack is not started here; the files are parsed and cross-checked so a
 * renamed service, a wrong address or a missing search attribute fails fast.
 */
import * as fs from 'fs';
import * as path from 'path';
import { parse } from 'yaml';

const repoRoot = path.resolve(__dirname, '..', '..');

type Dict = Record<string, unknown>;

interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Dict | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  ports?: Array<string | number | { target?: number | string; published?: number | string }>;
  healthcheck?: { test?: string | string[]; disable?: boolean };
  volumes?: Array<string | { type?: string; source?: string; target?: string }>;
  restart?: string;
}

interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

function loadCompose(): Compose {
  const text = fs.readFileSync(path.join(repoRoot, 'docker-compose.yml'), 'utf8');
  const doc = parse(text) as Compose;
  if (!doc || typeof doc !== 'object' || !doc.services) {
    throw new Error('docker-compose.yml has no services');
  }
  return doc;
}

const compose = loadCompose();

function service(name: string): Service {
  const svc = compose.services[name];
  if (!svc) throw new Error(`docker-compose.yml has no service "${name}"`);
  return svc;
}

/** environment as a map, whichever of the two compose syntaxes is used. */
function env(svc: Service): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(svc.environment)) {
    for (const entry of svc.environment) {
      const i = entry.indexOf('=');
      if (i > 0) out[entry.slice(0, i)] = entry.slice(i + 1);
    }
  } else if (svc.environment) {
    for (const [k, v] of Object.entries(svc.environment)) out[k] = v === null || v === undefined ? '' : String(v);
  }
  return out;
}

/** depends_on as { service: condition }, list syntax meaning service_started. */
function dependsOn(svc: Service): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(svc.depends_on)) {
    for (const name of svc.depends_on) out[name] = 'service_started';
  } else if (svc.depends_on) {
    for (const [name, spec] of Object.entries(svc.depends_on)) out[name] = spec?.condition ?? 'service_started';
  }
  return out;
}

function asText(value: string | string[] | undefined): string {
  if (value === undefined) return '';
  return Array.isArray(value) ? value.join(' ') : value;
}

function argv(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : value.trim().split(/\s+/);
}

/** Container-side ports a service publishes. */
function publishedContainerPorts(svc: Service): number[] {
  return (svc.ports ?? []).map((p) => {
    if (typeof p === 'number') return p;
    if (typeof p === 'string') {
      const target = p.split(':').pop() ?? '';
      return Number(target.split('/')[0]);
    }
    return Number(p.target);
  });
}

/** host:port → [host, port]; the host must be a compose service name to be reachable. */
function hostPort(address: string): [string, number] {
  const m = /^([^:/]+):(\d+)$/.exec(address);
  if (!m) throw new Error(`not a host:port address: "${address}"`);
  return [m[1], Number(m[2])];
}

/** The port the Temporal frontend listens on inside the temporal container. */
const TEMPORAL_FRONTEND_PORT = 7233;

const REQUIRED_SERVICES = ['postgresql', 'temporal', 'temporal-setup', 'temporal-ui', 'mongodb', 'worker', 'api'];

/** Custom search attributes the workflows set and the API queries by. */
const SEARCH_ATTRIBUTES: Array<[string, string]> = [
  ['DmpSourceId', 'Keyword'],
  ['DmpSourceKind', 'Keyword'],
  ['DmpParty', 'Keyword'],
  ['DmpState', 'Keyword'],
  ['DmpEventsProcessed', 'Int'],
  ['DmpSegmentId', 'Keyword'],
  ['DmpDestinationId', 'Keyword'],
];

describe('docker-compose.yml', () => {
  test('defines every service the stack needs', () => {
    const missing = REQUIRED_SERVICES.filter((name) => !compose.services[name]);
    expect(missing).toEqual([]);
  });

  test('pins every third-party image to an explicit tag', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (svc.build) continue;
      expect({ name, image: svc.image }).toEqual({ name, image: expect.stringMatching(/^[^:\s]+:(?!latest$)[\w.-]+$/) });
    }
    expect(service('postgresql').image).toMatch(/^postgres:16/);
    expect(service('mongodb').image).toMatch(/^mongo:7/);
    expect(service('temporal').image).toMatch(/^temporalio\/auto-setup:/);
    expect(service('temporal-setup').image).toMatch(/^temporalio\/admin-tools:/);
    expect(service('temporal-ui').image).toMatch(/^temporalio\/ui:/);
  });

  test('temporal stores its data in the postgresql service and waits for it to be healthy', () => {
    const temporal = service('temporal');
    const e = env(temporal);
    expect(e.DB).toBe('postgres12');
    expect(e.POSTGRES_SEEDS).toBe('postgresql');
    expect(Number(e.DB_PORT)).toBe(5432);
    expect(e.POSTGRES_USER).toBe(env(service('postgresql')).POSTGRES_USER);
    expect(e.POSTGRES_PWD).toBe(env(service('postgresql')).POSTGRES_PASSWORD);
    expect(dependsOn(temporal).postgresql).toBe('service_healthy');
  });

  test('every service_healthy dependency has a healthcheck to satisfy it', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      for (const [dep, condition] of Object.entries(dependsOn(svc))) {
        expect({ name, dep, exists: Boolean(compose.services[dep]) }).toEqual({ name, dep, exists: true });
        if (condition !== 'service_healthy') continue;
        const hc = compose.services[dep].healthcheck;
        expect({ dep, healthcheck: Boolean(hc?.test) && !hc?.disable }).toEqual({ dep, healthcheck: true });
      }
    }
  });

  test('databases keep their data in named volumes', () => {
    const declared = Object.keys(compose.volumes ?? {});
    const mounts: Array<[string, string]> = [
      ['postgresql', '/var/lib/postgresql/data'],
      ['mongodb', '/data/db'],
    ];
    for (const [name, target] of mounts) {
      const vol = (service(name).volumes ?? []).find((v) =>
        typeof v === 'string' ? v.split(':')[1] === target : v.target === target,
      );
      expect({ name, mounted: vol !== undefined }).toEqual({ name, mounted: true });
      const source = typeof vol === 'string' ? vol.split(':')[0] : vol?.source;
      expect(declared).toContain(source);
    }
  });

  test('temporal publishes the frontend port and reports health', () => {
    const temporal = service('temporal');
    expect(publishedContainerPorts(temporal)).toContain(TEMPORAL_FRONTEND_PORT);
    expect(asText(temporal.healthcheck?.test)).toMatch(/cluster health/);
  });

  test('temporal-ui points at the temporal service', () => {
    const ui = service('temporal-ui');
    const [host, port] = hostPort(env(ui).TEMPORAL_ADDRESS ?? '');
    expect(host).toBe('temporal');
    expect(port).toBe(TEMPORAL_FRONTEND_PORT);
    expect(publishedContainerPorts(ui)).toContain(8080);
    expect(Object.keys(dependsOn(ui))).toContain('temporal');
  });

  test('mongodb runs as a replica set that its healthcheck initiates', () => {
    const mongo = service('mongodb');
    const args = argv(mongo.command);
    const i = args.indexOf('--replSet');
    expect(i).toBeGreaterThanOrEqual(0);
    expect(args[i + 1]).toBe('rs0');
    const check = asText(mongo.healthcheck?.test);
    expect(check).toMatch(/mongosh/);
    expect(check).toMatch(/rs\.initiate\(/);
    expect(check).toMatch(/_id:\s*'rs0'/);
    expect(check).toMatch(/host:\s*'mongodb:27017'/);
  });

  describe.each(['api', 'worker'])('%s', (name) => {
    test('reaches Temporal at the temporal service and MongoDB at the mongodb replica set', () => {
      const svc = service(name);
      const e = env(svc);

      const [temporalHost, temporalPort] = hostPort(e.TEMPORAL_ADDRESS ?? '');
      expect(temporalHost).toBe('temporal');
      expect(temporalPort).toBe(TEMPORAL_FRONTEND_PORT);

      const uri = new URL(e.MONGODB_URI ?? '');
      expect(uri.protocol).toBe('mongodb:');
      expect(uri.hostname).toBe('mongodb');
      expect(uri.port === '' ? 27017 : Number(uri.port)).toBe(27017);
      const mongoArgs = argv(service('mongodb').command);
      expect(uri.searchParams.get('replicaSet')).toBe(mongoArgs[mongoArgs.indexOf('--replSet') + 1]);

      expect(e.DMP_TASK_QUEUE).toBe('dmp');
    });

    test('starts only after temporal and mongodb are healthy and search attributes are registered', () => {
      const deps = dependsOn(service(name));
      expect(deps.temporal).toBe('service_healthy');
      expect(deps.mongodb).toBe('service_healthy');
      expect(deps['temporal-setup']).toBe('service_completed_successfully');
    });

    test('is built from the repository Dockerfile', () => {
      const build = service(name).build;
      expect(build).toBeDefined();
      const context = typeof build === 'string' ? build : (build?.context ?? '.');
      const dockerfile = typeof build === 'string' ? 'Dockerfile' : (build?.dockerfile ?? 'Dockerfile');
      expect(path.resolve(repoRoot, context)).toBe(repoRoot);
      expect(fs.existsSync(path.resolve(repoRoot, context, dockerfile))).toBe(true);
    });

    test('restarts unless stopped', () => {
      expect(service(name).restart).toBe('unless-stopped');
    });
  });

  test('api and worker run the same image with different entry points', () => {
    const api = service('api');
    const worker = service('worker');
    expect(api.image).toBeDefined();
    expect(api.image).toBe(worker.image);
    expect(argv(api.command)).toEqual(['node', 'dist/api/main.js']);
    expect(argv(worker.command)).toEqual(['node', 'dist/workers/main.js']);
  });

  test('api publishes its HTTP port and has a healthcheck on /healthz', () => {
    const api = service('api');
    const e = env(api);
    const port = Number(e.PORT);
    expect(Number.isInteger(port)).toBe(true);
    expect(publishedContainerPorts(api)).toContain(port);
    const check = asText(api.healthcheck?.test);
    expect(check).toContain(`:${port}/healthz`);
  });

  test('api refuses to start without an admin key', () => {
    // ${VAR:?message} makes compose abort when VAR is unset or empty.
    expect(env(service('api')).DMP_ADMIN_KEY).toMatch(/^\$\{DMP_ADMIN_KEY:\?.+\}$/);
  });

  test('temporal-setup registers every search attribute the platform needs', () => {
    const setup = service('temporal-setup');
    const script = asText(setup.command);
    for (const [attr, type] of SEARCH_ATTRIBUTES) {
      const line = script
        .split('\n')
        .find((l) => /temporal operator search-attribute create\b/.test(l) && new RegExp(`--name ${attr}(\\s|$)`).test(l));
      expect({ attr, registered: line !== undefined }).toEqual({ attr, registered: true });
      expect(line).toMatch(new RegExp(`--type ${type}(\\s|$)`));
      expect(line).toMatch(/--address temporal:7233(\s|$)/);
      expect(line).toMatch(/--namespace default(\s|$)/);
    }
    // Re-running the stack must not fail on attributes that already exist.
    expect(script).toMatch(/already exists/);
    expect(dependsOn(setup).temporal).toBe('service_healthy');
    expect(setup.restart ?? 'no').toBe('no');
  });
});

describe('Dockerfile', () => {
  const dockerfile = fs.readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8');
  const instructions = dockerfile
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const stages = instructions.reduce<string[][]>((acc, line) => {
    if (/^FROM\s/i.test(line)) acc.push([]);
    if (acc.length > 0) acc[acc.length - 1].push(line);
    return acc;
  }, []);

  test('builds in one stage and ships production dependencies plus dist/ in a non-root runtime stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    // Global ARG defaults, which FROM lines may reference as ${NAME}.
    const argDefaults: Record<string, string> = {};
    for (const l of instructions) {
      const m = /^ARG\s+(\w+)=(\S+)$/i.exec(l);
      if (m) argDefaults[m[1]] = m[2];
    }
    for (const stage of stages) {
      const from = stage[0].split(/\s+/)[1].replace(/\$\{(\w+)\}/g, (_, n: string) => argDefaults[n] ?? '');
      expect(from).toBe('node:20-bookworm-slim');
    }
    const build = stages[0].join('\n');
    expect(build).toMatch(/RUN npm ci(\s|$)/);
    expect(build).toMatch(/RUN npm run build/);
    const runtime = stages[stages.length - 1].join('\n');
    expect(runtime).toMatch(/npm ci --omit=dev/);
    expect(runtime).toMatch(/COPY --from=\S+ \/app\/dist \.\/dist/);
    const user = stages[stages.length - 1].filter((l) => /^USER\s/i.test(l)).pop();
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^USER\s+(root|0)(:|$)/i);
  });

  test('npm run build is the TypeScript compiler writing to dist/', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
    expect(pkg.scripts?.build).toMatch(/^tsc\b/);
    const tsconfig = JSON.parse(fs.readFileSync(path.join(repoRoot, 'tsconfig.json'), 'utf8')) as { compilerOptions?: { outDir?: string } };
    expect(path.normalize(tsconfig.compilerOptions?.outDir ?? '')).toBe('dist');
  });

  test('.dockerignore keeps local state out of the build context', () => {
    const ignored = fs
      .readFileSync(path.join(repoRoot, '.dockerignore'), 'utf8')
      .split(/\r?\n/)
      .map((l) => l.trim().replace(/^\/|\/$/g, ''));
    for (const entry of ['node_modules', 'dist', '.data', '.tools', '.git']) expect(ignored).toContain(entry);
  });
});

describe('container commands', () => {
  const tsconfig = JSON.parse(fs.readFileSync(path.join(repoRoot, 'tsconfig.json'), 'utf8')) as {
    include?: string[];
    compilerOptions?: { outDir?: string; rootDir?: string };
  };
  const outDir = tsconfig.compilerOptions?.outDir ?? 'dist';
  const rootDir = tsconfig.compilerOptions?.rootDir ?? '.';
  const include = tsconfig.include ?? [];

  /** Every `node <script>.js` run by a compose service or by the Dockerfile CMD. */
  function nodeTargets(): Array<[string, string]> {
    const targets: Array<[string, string]> = [];
    for (const [name, svc] of Object.entries(compose.services)) {
      if (!svc.build) continue;
      const args = argv(svc.command);
      if (args[0] === 'node' && args[1]) targets.push([`service ${name}`, args[1]]);
    }
    const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(fs.readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8'));
    if (cmd) {
      const args = JSON.parse(cmd[1]) as string[];
      if (args[0] === 'node' && args[1]) targets.push(['Dockerfile CMD', args[1]]);
    }
    return targets;
  }

  test('run files tsc emits from sources that exist in the repository', () => {
    const targets = nodeTargets();
    expect(targets.map(([, t]) => t)).toEqual(expect.arrayContaining(['dist/api/main.js', 'dist/workers/main.js']));
    const problems: string[] = [];
    for (const [where, target] of targets) {
      const inOut = path.relative(outDir, path.normalize(target));
      if (inOut.startsWith('..') || !target.endsWith('.js')) {
        problems.push(`${where}: ${target} is not under ${outDir}/`);
        continue;
      }
      const source = path.join(rootDir, inOut.replace(/\.js$/, '.ts'));
      const compiled = include.some((inc) => source === path.normalize(inc) || source.startsWith(path.normalize(inc) + path.sep));
      if (!compiled) problems.push(`${where}: ${source} is not in tsconfig include`);
      if (!fs.existsSync(path.join(repoRoot, source))) problems.push(`${where}: ${source} does not exist (needed for ${target})`);
    }
    expect(problems).toEqual([]);
  });
});
