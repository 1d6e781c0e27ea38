import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { Client } from '@temporalio/client';
import { Binary, BSON } from 'mongodb';
import { sha256Hex } from '../../domain/identity';
import { crmImportWorkflowId } from '../../domain/workflowIds';
import type { Store } from '../../store/db';
import { COLLECTIONS } from '../../store/db';
import { decodeEvents, storedBytes } from '../../store/deflatedBson';
import { UploadStore } from '../../store/uploads';
import { call } from '../support/http';
import { settledRequest } from '../support/privacyRequests';
import { latestProfiles } from '../support/profiles';
import { sourceLogEventIds } from '../support/sourceLog';
import { startApi, startWorker, testStore, testTemporal, uniqueName, waitFor, type RunningApi, type RunningWorker } from '../support/services';

const MAPPING = { identities: { crm_id: 'customer_id', email: 'Email' }, traits: { Tier: 'loyalty_tier', City: 'city' } };
const HEADER = 'customer_id,Email,Tier,City';
const ROWS = 3_000;

/** Row `i` of the customer file (file row `i + 2`): some with a bad email, some with no identity, one cut short. */
function customerRow(i: number, tier = i % 3 === 0 ? 'gold' : 'silver'): string {
  if (i % 500 === 99) return `,,${tier},Lyon`;
  if (i === 1500) return `c-${i},Person${i}@Example.com`;
  const email = i % 250 === 17 ? 'not-an-email' : `Person${i}@Example.com`;
  return `c-${i},${email},${tier},"Paris, ${i % 7}"`;
}
const BAD_EMAIL = Array.from({ length: ROWS }, (_, i) => i).filter((i) => i % 250 === 17);
const NO_IDENTITY = Array.from({ length: ROWS }, (_, i) => i).filter((i) => i % 500 === 99);
const VALID = ROWS - BAD_EMAIL.length - NO_IDENTITY.length - 1;
const customerFile = (rows: (i: number) => string = (i) => customerRow(i)) => [HEADER, ...Array.from({ length: ROWS }, (_, i) => rows(i))].join('\n') + '\n';

/** A value's binary values as written: deflated values (event batches, change records) inflated (see store/deflatedBson). */
const binaryContents = (value: unknown): Uint8Array[] =>
  value instanceof Binary
    ? [storedBytes(value)]
    : Array.isArray(value)
      ? value.flatMap(binaryContents)
      : value && typeof value === 'object' && !(value instanceof Date)
        ? Object.values(value).flatMap(binaryContents)
        : [];

/** Every document of the store (the log, staged rows, profiles, identities, …) that holds `needle` in its BSON bytes or the contents of its binary values. */
async function documentsHolding(store: Store, needles: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const { name } of await store.db.listCollections({}, { nameOnly: true }).toArray()) {
    for await (const doc of store.db.collection(name).find({})) {
      const bytes = [BSON.serialize(doc), ...binaryContents(doc)].map((part) => Buffer.from(part).toString('latin1').toLowerCase()).join('\n');
      if (needles.some((needle) => bytes.includes(needle))) found.push(`${name}/${String(doc._id)}`);
    }
  }
  return found;
}

describe('CRM uploads: a CSV into a crm source, hashed at the edge, imported by a workflow', () => {
  let store: Store;
  let temporal: Client;
  let api: RunningApi;
  let worker: RunningWorker | null = null;
  let taskQueue: string;
  let sourceId: string;
  const admin = (path: string, options: Parameters<typeof call>[1] = {}) => call(`${api.url}${path}`, { key: api.adminKey, ...options });
  const upload = (id: string, csv: string, contentType = 'text/csv') => admin(`/v1/sources/${id}/uploads`, { method: 'POST', rawBody: csv, contentType });
  const finished = (uploadId: string) =>
    waitFor(
      `upload ${uploadId} to finish`,
      async () => {
        const view = (await admin(`/v1/sources/${sourceId}/uploads/${uploadId}`)).body;
        return view.state === 'completed' || view.state === 'failed' ? view : null;
      },
      180_000,
      500,
    );
  const eventsApplied = async () => (await admin(`/v1/sources/${sourceId}`)).body.profiles.eventsApplied as number;

  beforeAll(async () => {
    taskQueue = uniqueName('uploads');
    store = await testStore('uploads');
    temporal = await testTemporal();
    api = await startApi({ store, temporal, taskQueue });
    const created = await admin('/v1/sources', { body: { name: 'CRM', kind: 'crm', party: 'first', mapping: MAPPING, consent: { mode: 'not_required' } } });
    expect(created.status).toBe(201);
    sourceId = created.body.id;
  });
  afterAll(async () => {
    await api.close();
    await worker?.stop();
    await temporal.connection.close();
    await store.close();
  });

  it('stages hashed rows, imports every good row once, reports the bad ones, and builds profiles with hashed emails and traits', async () => {
    // No worker yet: the staged rows can be read before the import takes them.
    const answer = await upload(sourceId, customerFile());
    expect(answer.status).toBe(202);
    const uploadId = answer.body.uploadId as string;
    expect(answer.body).toMatchObject({ sourceId, state: 'importing', rowsReceived: ROWS, rowsImported: 0, rowsRejected: ROWS - VALID, rowsNonProfiling: 0, finishedAt: null, error: null });
    expect(answer.body.workflowId).toBe(crmImportWorkflowId(store.db.databaseName, uploadId));
    const expectedRejections = [
      ...BAD_EMAIL.map((i) => ({ row: i + 2, errors: [{ path: 'Email', message: 'not a valid email address' }] })),
      ...NO_IDENTITY.map((i) => ({ row: i + 2, errors: [{ path: '(row)', message: 'no identity: "customer_id", "Email" are all empty' }] })),
      { row: 1502, errors: [{ path: '(row)', message: 'has 2 fields; the header has 4' }] },
    ].sort((a, b) => a.row - b.row);
    expect(answer.body.rejections).toEqual(expectedRejections);

    const staged = await store.db.collection(COLLECTIONS.uploadRows).find({ uploadId }).toArray();
    const stagedEvents = staged.flatMap((doc) => decodeEvents<{ id: string; identities: Array<{ type: string; value: string }> }>(doc.events));
    expect(stagedEvents).toHaveLength(VALID);
    expect(stagedEvents.find((event) => event.id === `${uploadId}:2`)?.identities).toEqual([
      { type: 'crm_id', value: 'c-0' },
      { type: 'email_sha256', value: sha256Hex('person0@example.com') },
    ]);
    expect(await documentsHolding(store, ['@example.com'])).toEqual([]);

    worker = await startWorker({ store, temporal, taskQueue });
    const done = await finished(uploadId);
    expect(done).toMatchObject({ state: 'completed', rowsReceived: ROWS, rowsImported: VALID, rowsRejected: ROWS - VALID, error: null });
    expect(done.finishedAt).not.toBeNull();
    const logged = await sourceLogEventIds(store, sourceId);
    expect(logged).toHaveLength(VALID);
    expect(new Set(logged).size).toBe(VALID);
    // Staged rows leave once imported.
    expect(await store.db.collection(COLLECTIONS.uploadRows).countDocuments({ uploadId })).toBe(0);

    await waitFor('the rows folded into profiles', async () => (await eventsApplied()) >= VALID, 180_000, 500);
    expect(await eventsApplied()).toBe(VALID);
    const profiles = await latestProfiles(store);
    expect(profiles).toHaveLength(VALID);
    const ada = await admin(`/v1/profiles/lookup?type=email&value=${encodeURIComponent(' PERSON3@example.com')}`);
    expect(ada.status).toBe(200);
    expect(ada.body.traits).toEqual({ loyalty_tier: 'gold', city: 'Paris, 3' });
    expect(ada.body.traitOrigins.loyalty_tier).toMatchObject({ sourceId, party: 'first' });
    expect(ada.body.identities.map(({ type, value }: { type: string; value: string }) => `${type}:${value}`).sort()).toEqual([`crm_id:c-3`, `email_sha256:${sha256Hex('person3@example.com')}`]);
    expect((await admin('/v1/profiles/lookup?type=crm_id&value=c-3')).body.id).toBe(ada.body.id);
    expect((await admin(`/v1/profiles/lookup?type=crm_id&value=c-${BAD_EMAIL[0]}`)).status).toBe(404);
    // Nothing raw anywhere: the log, the routed events, profiles, identities, the upload records.
    expect(await documentsHolding(store, ['@example.com', 'not-an-email'])).toEqual([]);
  }, 300_000);

  it('takes the same file again as a new upload: its rows imported again into the same profiles, none added, and a later file\'s traits win', async () => {
    const before = (await latestProfiles(store)).length;
    const applied = await eventsApplied();
    const first = (await admin(`/v1/sources/${sourceId}/uploads`)).body.uploads[0];
    // A CRM sends its full file again: a fresh set of records, not duplicates of the first.
    const again = await upload(sourceId, customerFile());
    expect(again.status).toBe(202);
    expect(again.body.uploadId).not.toBe(first.uploadId);
    const done = await finished(again.body.uploadId);
    expect(done).toMatchObject({ state: 'completed', rowsImported: VALID, rowsRejected: ROWS - VALID });
    const logged = await sourceLogEventIds(store, sourceId);
    expect(logged).toHaveLength(2 * VALID);
    expect(new Set(logged).size).toBe(2 * VALID);
    await waitFor('the second file folded', async () => (await eventsApplied()) >= applied + VALID, 180_000, 500);
    expect(await latestProfiles(store)).toHaveLength(before);
    const person = (await admin('/v1/profiles/lookup?type=crm_id&value=c-4')).body;
    expect(person.profileIds).toHaveLength(1);
    expect(person.traits.loyalty_tier).toBe('silver');
    // One record per file that listed the person: the event count says how many files did.
    expect(person.counters.crm_record.count).toBe(2);

    // The next day's file moves one customer up a tier.
    const moved = await upload(sourceId, `${HEADER}\n${customerRow(4, 'platinum')}\n`);
    expect(await finished(moved.body.uploadId)).toMatchObject({ state: 'completed', rowsImported: 1 });
    await waitFor('the third file folded', async () => (await eventsApplied()) >= applied + VALID + 1, 60_000, 500);
    const after = (await admin('/v1/profiles/lookup?type=crm_id&value=c-4')).body;
    expect(after).toMatchObject({ id: person.id, traits: { loyalty_tier: 'platinum', city: 'Paris, 4' } });
    expect(await latestProfiles(store)).toHaveLength(before);

    const list = await admin(`/v1/sources/${sourceId}/uploads`);
    expect(list.status).toBe(200);
    expect(list.body.uploads.map((view: { uploadId: string }) => view.uploadId)).toEqual([moved.body.uploadId, again.body.uploadId, first.uploadId]);
  }, 300_000);

  it('reads a gzip-compressed file as it streams in', async () => {
    const csv = `${HEADER}\nz-1,zed1@example.com,gold,Oslo\nz-2,zed2@example.com,silver,Oslo\n`;
    const response = await fetch(`${api.url}/v1/sources/${sourceId}/uploads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${api.adminKey}`, 'content-type': 'text/csv; charset=utf-8', 'content-encoding': 'gzip' },
      body: gzipSync(csv),
    });
    expect(response.status).toBe(202);
    const done = await finished(((await response.json()) as { uploadId: string }).uploadId);
    expect(done).toMatchObject({ state: 'completed', rowsReceived: 2, rowsImported: 2, rowsRejected: 0 });
  });

  it('names what is wrong with a bad request, and keeps nothing of it', async () => {
    const { id: eventsSource } = (await admin('/v1/sources', { body: { name: 'web', kind: 'events', party: 'first' } })).body;
    const uploadsBefore = (await admin(`/v1/sources/${sourceId}/uploads?limit=200`)).body.uploads.length;
    const stagedBefore = await store.db.collection(COLLECTIONS.uploadRows).countDocuments({});

    const unknown = await upload('src_nope', customerFile());
    expect(unknown.status).toBe(404);
    expect(unknown.contentType).toContain('application/problem+json');
    expect(unknown.body.errors).toEqual([{ path: 'params.id', message: 'no source src_nope' }]);

    const notCrm = await upload(eventsSource, customerFile());
    expect(notCrm.status).toBe(409);
    expect(notCrm.body.errors).toEqual([{ path: 'kind', message: `source ${eventsSource} is of kind "events"; uploads go to sources of kind "crm"` }]);

    const json = await upload(sourceId, JSON.stringify({ rows: [] }), 'application/json');
    expect(json.status).toBe(415);
    expect(json.body.errors).toEqual([{ path: 'headers.content-type', message: 'expected text/csv' }]);
    const latin1 = await upload(sourceId, customerFile(), 'text/csv; charset=iso-8859-1');
    expect(latin1.status).toBe(415);

    const noEmailColumn = await upload(sourceId, 'customer_id,E-mail,Tier,City\nc-1,a@example.com,gold,Rome\n');
    expect(noEmailColumn.status).toBe(409);
    expect(noEmailColumn.body.errors).toEqual([{ path: 'mapping.identities.email', message: 'column "Email" is not in the header' }]);

    const empty = await upload(sourceId, '');
    expect(empty.status).toBe(400);
    expect(empty.body.errors).toEqual([{ path: '(body)', message: 'empty file: expected a header row' }]);
    // Nor any body at all: no type to check, an empty file all the same.
    const none = await call(`${api.url}/v1/sources/${sourceId}/uploads`, { method: 'POST', key: api.adminKey });
    expect({ status: none.status, errors: none.body.errors }).toEqual({ status: 400, errors: empty.body.errors });

    const noKey = await call(`${api.url}/v1/sources/${sourceId}/uploads`, { method: 'POST', rawBody: customerFile(), contentType: 'text/csv' });
    expect(noKey.status).toBe(401);

    expect((await admin(`/v1/sources/${sourceId}/uploads/upl_nope`)).status).toBe(404);
    expect((await admin(`/v1/sources/src_nope/uploads`)).status).toBe(404);
    expect((await admin(`/v1/sources/${sourceId}/uploads?limit=0`)).body.errors).toEqual([{ path: 'limit', message: expect.any(String) }]);
    const rawTrait = await admin('/v1/sources', { body: { name: 'leaky', kind: 'crm', party: 'first', mapping: { identities: { email: 'Email' }, traits: { Email: 'email' } } } });
    expect(rawTrait.status).toBe(400);
    expect(rawTrait.body.errors).toEqual([{ path: 'mapping.traits.Email', message: 'column "Email" holds raw emails (identities.email); it cannot also be a trait' }]);
    // None of these left an upload or a staged row behind, at either source.
    expect((await admin(`/v1/sources/${sourceId}/uploads?limit=200`)).body.uploads).toHaveLength(uploadsBefore);
    expect((await admin(`/v1/sources/${eventsSource}/uploads`)).body.uploads).toEqual([]);
    expect(await store.db.collection(COLLECTIONS.uploadRows).countDocuments({})).toBe(stagedBefore);
  });

  it('fails an upload whose text stops being CSV, naming the row, with nothing staged and nothing imported', async () => {
    const logged = (await sourceLogEventIds(store, sourceId)).length;
    const broken = `${HEADER}\nq-1,q1@example.com,gold,Rome\nq-2,q2@example.com,gold,"Rome\n`;
    const answer = await upload(sourceId, broken);
    expect(answer.status).toBe(422);
    expect(answer.body.errors).toEqual([{ path: 'row 3', message: 'not valid CSV (CSV_QUOTE_NOT_CLOSED)' }]);
    const failed = (await admin(`/v1/sources/${sourceId}/uploads`)).body.uploads[0];
    expect(failed).toMatchObject({ state: 'failed', error: 'row 3: not valid CSV (CSV_QUOTE_NOT_CLOSED)', rowsImported: 0 });
    expect(await store.db.collection(COLLECTIONS.uploadRows).countDocuments({ uploadId: failed.uploadId })).toBe(0);
    expect(await sourceLogEventIds(store, sourceId)).toHaveLength(logged);
    // A line of delimiters alone (which the parser's record bound does not see) is refused too, not read into memory.
    const commas = await upload(sourceId, `${HEADER}\nq-3,q3@example.com,gold,Rome\n${','.repeat(600_000)}\n`);
    expect({ status: commas.status, errors: commas.body.errors }).toEqual({ status: 422, errors: [{ path: 'line 3', message: 'longer than 524288 bytes' }] });
    expect(await sourceLogEventIds(store, sourceId)).toHaveLength(logged);
  });

  it('fails an upload whose sender hangs up half-way, its staged rows removed, and goes on answering', async () => {
    const logged = (await sourceLogEventIds(store, sourceId)).length;
    const sender = request(`${api.url}/v1/sources/${sourceId}/uploads`, { method: 'POST', headers: { authorization: `Bearer ${api.adminKey}`, 'content-type': 'text/csv' } });
    sender.on('error', () => undefined); // the hang-up is the point
    sender.write(`${HEADER}\n${Array.from({ length: 5_000 }, (_, i) => customerRow(i)).join('\n')}\n`);
    const receiving = await waitFor('rows staged', async () => {
      const doc = await store.db.collection(COLLECTIONS.uploads).findOne({ sourceId, state: 'receiving' });
      return doc && (await store.db.collection(COLLECTIONS.uploadRows).countDocuments({ uploadId: doc._id })) > 0 ? String(doc._id) : null;
    }, 30_000, 20);
    sender.destroy();
    const failed = await waitFor('the upload failed', async () => {
      const doc = await new UploadStore(store).get(receiving);
      return doc?.state === 'failed' ? doc : null;
    }, 30_000, 100);
    expect(failed).toMatchObject({ error: '(body): the upload was interrupted', imported: { rows: 0 } });
    expect(await store.db.collection(COLLECTIONS.uploadRows).countDocuments({ uploadId: receiving })).toBe(0);
    expect(await sourceLogEventIds(store, sourceId)).toHaveLength(logged);
    expect((await call(`${api.url}/healthz`)).status).toBe(200);
  });

  it('refuses a body that says gzip but is not, naming the body', async () => {
    const response = await fetch(`${api.url}/v1/sources/${sourceId}/uploads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${api.adminKey}`, 'content-type': 'text/csv', 'content-encoding': 'gzip' },
      body: `${HEADER}\nz-1,zed1@example.com,gold,Oslo\n`,
    });
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { errors: Array<{ path: string; message: string }> };
    expect(problem.errors).toEqual([{ path: '(body)', message: expect.stringMatching(/^the body could not be decompressed: /) }]);
    const unknown = await fetch(`${api.url}/v1/sources/${sourceId}/uploads`, {
      method: 'POST',
      headers: { authorization: `Bearer ${api.adminKey}`, 'content-type': 'text/csv', 'content-encoding': 'zstd' },
      body: 'x',
    });
    expect(unknown.status).toBe(415);
    expect(((await unknown.json()) as { errors: unknown[] }).errors).toEqual([{ path: 'headers.content-encoding', message: 'zstd; expected gzip, deflate, br or none' }]);
  });

  describe('under an Idempotency-Key', () => {
    const keyed = (key: string, csv: string, headers: Record<string, string> = {}) =>
      admin(`/v1/sources/${sourceId}/uploads`, { method: 'POST', rawBody: csv, contentType: 'text/csv', headers: { 'idempotency-key': key, ...headers } });
    const keyFile = (prefix: string, rows = 20) => [HEADER, ...Array.from({ length: rows }, (_, i) => `${prefix}-${i},${prefix}${i}@example.com,gold,Oslo`)].join('\n') + '\n';
    const loggedOf = async (uploadId: string) => (await sourceLogEventIds(store, sourceId)).filter((id) => id.startsWith(`${uploadId}:`)).length;
    const uploadCount = async () => (await admin(`/v1/sources/${sourceId}/uploads?limit=200`)).body.uploads.length as number;
    /** A sender that writes the first rows of `csv` under `key`, and waits; the upload is receiving once this resolves. */
    async function hangingSender(key: string, csv: string) {
      const sender = request(`${api.url}/v1/sources/${sourceId}/uploads`, { method: 'POST', headers: { authorization: `Bearer ${api.adminKey}`, 'content-type': 'text/csv', 'idempotency-key': key } });
      sender.on('error', () => undefined); // hanging up is the point
      sender.write(csv.slice(0, csv.length - 40));
      const uploadId = await waitFor('rows staged', async () => {
        const doc = await store.db.collection(COLLECTIONS.uploads).findOne({ sourceId, state: 'receiving', keyId: { $exists: true } });
        return doc && (await store.db.collection(COLLECTIONS.uploadRows).countDocuments({ uploadId: doc._id })) > 0 ? String(doc._id) : null;
      }, 30_000, 20);
      return { sender, uploadId };
    }

    it('answers the same file sent again (inflated or not) with the upload it made, importing its rows once; another file under the key is a 409', async () => {
      const csv = keyFile('k1');
      const before = await uploadCount();
      const first = await keyed('crm-file-k1', csv);
      expect(first.status).toBe(202);
      const again = await keyed('crm-file-k1', csv);
      expect(again.status).toBe(202);
      expect(again.body.uploadId).toBe(first.body.uploadId);
      expect(await finished(first.body.uploadId)).toMatchObject({ state: 'completed', rowsImported: 20 });
      const gzipped = await fetch(`${api.url}/v1/sources/${sourceId}/uploads`, {
        method: 'POST',
        headers: { authorization: `Bearer ${api.adminKey}`, 'content-type': 'text/csv', 'content-encoding': 'gzip', 'idempotency-key': 'crm-file-k1' },
        body: gzipSync(csv),
      });
      expect(gzipped.status).toBe(202);
      expect(((await gzipped.json()) as { uploadId: string; state: string })).toMatchObject({ uploadId: first.body.uploadId, state: 'completed' });
      const other = await keyed('crm-file-k1', keyFile('k1-other'));
      expect(other.status).toBe(409);
      expect(other.body).toMatchObject({ type: '/problems/idempotency-key-reused', errors: [{ path: 'headers.idempotency-key', message: expect.stringContaining('another file') }] });
      expect(await loggedOf(first.body.uploadId)).toBe(20);
      expect(await uploadCount()).toBe(before + 1);
      const badKey = await keyed('two words', csv);
      expect(badKey.status).toBe(400);
      expect(badKey.body.errors).toEqual([{ path: 'headers.idempotency-key', message: 'visible ASCII characters, no spaces' }]);
    }, 120_000);

    it('passes the key of an upload whose sender hung up half-way to the file sent again, which imports every row once', async () => {
      const csv = keyFile('k2', 5_000);
      const { sender, uploadId: interrupted } = await hangingSender('crm-file-k2', csv);
      // Still receiving: the same key is busy.
      const busy = await keyed('crm-file-k2', csv);
      expect(busy.status).toBe(409);
      expect(busy.body).toMatchObject({ type: '/problems/upload-in-progress', errors: [{ path: 'headers.idempotency-key', message: expect.stringContaining(interrupted) }] });
      sender.destroy();
      await waitFor('the interrupted upload failed', async () => (await new UploadStore(store).get(interrupted))?.state === 'failed', 30_000, 100);
      const retried = await keyed('crm-file-k2', csv);
      expect(retried.status).toBe(202);
      expect(retried.body.uploadId).not.toBe(interrupted);
      expect(await finished(retried.body.uploadId)).toMatchObject({ state: 'completed', rowsImported: 5_000 });
      expect(await loggedOf(retried.body.uploadId)).toBe(5_000);
      expect(await loggedOf(interrupted)).toBe(0);
      expect((await keyed('crm-file-k2', csv)).body.uploadId).toBe(retried.body.uploadId);
    }, 120_000);

    it('makes one upload of the same file sent twice at once', async () => {
      const csv = keyFile('k3', 3_000);
      const before = await uploadCount();
      const answers = await Promise.all([keyed('crm-file-k3', csv), keyed('crm-file-k3', csv)]);
      const made = answers.filter((answer) => answer.status === 202).map((answer) => answer.body.uploadId as string);
      expect(answers.map((answer) => answer.status).every((status) => status === 202 || status === 409)).toBe(true);
      expect(new Set(made).size).toBe(1);
      expect(await finished(made[0])).toMatchObject({ state: 'completed', rowsImported: 3_000 });
      expect(await loggedOf(made[0])).toBe(3_000);
      expect(await uploadCount()).toBe(before + 1);
    }, 120_000);
  });

  it("drops and counts the rows of an erased subject: never appended, and not counted as imported", async () => {
    // The first test starts the worker once its rows are staged; alone, this one starts it.
    worker ??= await startWorker({ store, temporal, taskQueue });
    const erasure = await admin('/v1/privacy/requests', { body: { type: 'erase', identity: { type: 'email', value: 'Erased.Person@Example.com' } } });
    expect(erasure.status).toBe(202);
    expect((await settledRequest(admin, erasure.body.id, 120_000)).state).toBe('completed');
    const response = await upload(sourceId, `${HEADER}\nc-erased,Erased.Person@Example.com,gold,Oslo\nc-kept,Kept.Person@Example.com,gold,Oslo\n`);
    expect(response.status).toBe(202);
    expect(await finished(response.body.uploadId)).toMatchObject({ state: 'completed', rowsReceived: 2, rowsImported: 1, rowsDuplicate: 0, rowsErased: 1, rowsRejected: 0 });
    expect((await admin(`/v1/privacy/requests/${erasure.body.id}`)).body.lateEventsDropped).toBe(1);
    expect(await documentsHolding(store, ['c-erased', sha256Hex('erased.person@example.com')])).toEqual([]);
  });

  it('documents the upload routes with a text/csv body and every status', async () => {
    const doc = (await call(`${api.url}/openapi.json`)).body;
    const post = doc.paths['/v1/sources/{id}/uploads'].post;
    expect(Object.keys(post.requestBody.content)).toEqual(['text/csv']);
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['202', '400', '401', '403', '404', '409', '415', '503']));
    expect(post.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ in: 'header', name: 'idempotency-key', required: false })]));
    expect(Object.keys(doc.paths['/v1/sources/{id}/uploads'].get.responses)).toEqual(expect.arrayContaining(['200', '400', '401', '403', '404']));
    expect(Object.keys(doc.paths['/v1/sources/{id}/uploads/{uploadId}'].get.responses)).toEqual(expect.arrayContaining(['200', '401', '403', '404']));
    expect(doc.components.schemas.Upload.properties.rejections).toBeDefined();
  });
});
