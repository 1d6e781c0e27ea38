import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Client } from '@temporalio/client';
import { freePort } from '../../bench/processes';
import type { Store } from '../../store/db';
import { expectedProfiles, userEvent, type GeneratedEvent } from '../support/audience';
import { call, inParallel } from '../support/http';
import { killHard } from '../support/processes';
import { profileDifferences } from '../support/profiles';
import { baseConfig, startWorker, testStore, testTemporal, uniqueName, waitFor, type RunningWorker } from '../support/services';

const ADMIN_KEY = 'adm_cluster_0123456789abcdef';

/** The pids of the API's cluster processes: node:cluster marks each with NODE_UNIQUE_ID, and they inherit the run's tag. */
function clusterProcesses(tag: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0');
      if (environ.includes(`DMP_TEST_RUN=${tag}`) && environ.some((variable) => variable.startsWith('NODE_UNIQUE_ID='))) pids.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids.sort((a, b) => a - b);
}

/** The process among `pids` holding the connection accepted on `port` from the client port `remotePort`, if any yet. */
function holderOf(pids: number[], port: number, remotePort: number): number | undefined {
  const hex = (n: number) => `:${n.toString(16).toUpperCase().padStart(4, '0')}`;
  // A server listening on `::` holds the IPv4 connections it accepts in the IPv6 table.
  const inodes = ['/proc/net/tcp', '/proc/net/tcp6']
    .flatMap((table) => readFileSync(table, 'utf8').split('\n').slice(1))
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[1]?.endsWith(hex(port)) && fields[2]?.endsWith(hex(remotePort)) && fields[3] === '01')
    .map((fields) => fields[9]);
  return pids.find((pid) => {
    try {
      return readdirSync(`/proc/${pid}/fd`).some((fd) => inodes.includes(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: 'utf8' }))?.[1] ?? ''));
    } catch {
      return false;
    }
  });
}

/**
 * A request certainly unanswered: its headers and half its body sent, the rest held back, so the
 * process serving it is still reading it. Resolves once connected, with the client's port and how
 * the request ended (its status, or null when its connection broke).
 */
function heldRequest(port: number, key: string, body: string): Promise<{ localPort: number; ended: Promise<number | null> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/collect', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' } });
    const ended = new Promise<number | null>((done) => {
      req.on('response', (response) => {
        response.resume();
        done(response.statusCode ?? null);
      });
      req.on('error', () => done(null));
    });
    req.on('socket', (socket) => socket.once('connect', () => resolve({ localPort: socket.localPort as number, ended })));
    req.once('error', reject);
    req.write(body.slice(0, body.length / 2));
  });
}

describe('the API as several processes on one port (DMP_API_PROCESSES)', () => {
  let store: Store;
  let temporal: Client;
  let worker: RunningWorker;
  let api: ChildProcess | undefined;

  beforeAll(async () => {
    store = await testStore('cluster');
    temporal = await testTemporal();
  });
  afterAll(async () => {
    if (api) await killHard(api);
    await worker?.stop();
    await temporal.connection.close();
    await store.close();
  });

  it('takes turns at one source log; with a process killed under load, client retries add nothing twice and every acknowledged event is folded once', async () => {
    const taskQueue = uniqueName('cluster');
    worker = await startWorker({ store, temporal, taskQueue });
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const tag = uniqueName('run');
    const uri = new URL(baseConfig.MONGODB_URI);
    uri.pathname = `/${store.db.databaseName}`;
    api = spawn('npx', ['tsx', 'api/main.ts'], {
      cwd: `${__dirname}/../..`,
      env: { ...process.env, PORT: String(port), DMP_API_PROCESSES: '2', DMP_ADMIN_KEY: ADMIN_KEY, DMP_TASK_QUEUE: taskQueue, MONGODB_URI: uri.toString(), DMP_TEST_RUN: tag, LOG_LEVEL: 'warn' },
      detached: true,
      stdio: 'ignore',
    });
    await waitFor('the API to answer', async () => (await call(`${url}/healthz`).catch(() => ({ status: 0 }))).status === 200, 120_000, 500);
    const first = await waitFor('two API processes', async () => clusterProcesses(tag).length === 2 && clusterProcesses(tag));

    const source = (await call(`${url}/v1/sources`, { key: ADMIN_KEY, body: { name: 'clustered', kind: 'events', party: 'first' } })).body;
    const generated: GeneratedEvent[] = Array.from({ length: 8_000 }, (_, n) => userEvent(n % 400, Math.floor(n / 400), 'cl'));
    const requests = Array.from({ length: generated.length / 100 }, (_, k) => generated.slice(k * 100, (k + 1) * 100));
    let sent = 0;
    let killed: number | undefined;
    // A client as the SDKs are: a request without an answer within 10 s (analytics-node's default) is
    // sent again, as it was. A connection node:cluster was handing to the killed process stays open,
    // unanswered, until then. Each request has a connection of its own, so the processes share the
    // load and a killed one was serving some.
    const send = async (events: GeneratedEvent[]): Promise<{ accepted: number; duplicates: number }> => {
      for (;;) {
        const reply = await call(`${url}/v1/collect`, { key: source.writeKey, body: { events }, closeConnection: true, timeoutMs: 10_000 }).catch(() => null);
        if (reply?.status === 202) return reply.body;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    let heldEnded: number | null | undefined;
    const replies = await inParallel(
      requests.map((events) => async () => {
        // The 20th request is held half-sent, and the process reading it is killed: a request that
        // process certainly had not answered, beside whatever else it was serving.
        if (++sent !== 20) return send(events);
        const held = await heldRequest(port, source.writeKey, JSON.stringify({ events }));
        killed = await waitFor('the held request to reach an API process', async () => holderOf(first, port, held.localPort), 10_000, 20);
        process.kill(killed, 'SIGKILL');
        heldEnded = await held.ended;
        return send(events);
      }),
      8,
    );
    expect(killed).toBeDefined();
    // The held request got no answer (its client sent it again, as those of any other request in flight at the killed process did).
    expect(heldEnded).toBeNull();
    const replaced = await waitFor('a process in place of the killed one', async () => {
      const now = clusterProcesses(tag);
      return now.length === 2 && !now.includes(killed as number) && now;
    });
    expect(replaced).toContain(first.find((pid) => pid !== killed));

    const accepted = replies.reduce((sum, reply) => sum + reply.accepted, 0);
    expect(replies.every((reply) => reply.duplicates === 0)).toBe(true);
    // At least every event once; a retried request whose first attempt was stored, twice.
    expect(accepted).toBeGreaterThanOrEqual(generated.length);
    // A chunk the killed process stored but never sealed (its request unanswered, so sent again) is
    // drained like any other: its events reach their documents and are dropped there as repeats.
    // Repeats count among the events taken: a late chunk's first copies may be folded before the
    // rest, so the wait also holds out for every distinct event.
    const status = await waitFor(
      'every acknowledged event folded, and nothing left pending',
      async () => {
        const body = (await call(`${url}/v1/sources/${source.id}`, { key: ADMIN_KEY })).body;
        const folded = body.profiles?.eventsApplied >= accepted && body.profiles.eventsApplied - body.profiles.duplicatesDropped >= generated.length;
        return folded && body.pending?.chunks === 0 && body;
      },
      240_000,
      1000,
    );
    expect(status.profiles.duplicatesDropped).toBe(status.profiles.eventsApplied - generated.length);
    expect(await profileDifferences(store, expectedProfiles(generated))).toEqual([]);
    await temporal.workflow.getHandle(`source:${source.id}`).terminate('test finished').catch(() => undefined);
  }, 360_000);
});
