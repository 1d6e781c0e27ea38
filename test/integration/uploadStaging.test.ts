import { newUpload, UploadStaging, UploadSuperseded, type NumberedRow, type PreparedRows } from '../../activities/uploadStaging';
import type { StoredEvent } from '../../domain/event';
import type { Store } from '../../store/db';
import { UploadStore } from '../../store/uploads';
import { testStore } from '../support/services';

describe('staging an upload', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('uploadstaging');
  });
  afterAll(() => store.close());

  it('writes no further chunk once a reader that hung a while finds its upload taken over', async () => {
    const uploads = new UploadStore(store);
    const upload = newUpload('upl_hung', 'src_hung', new Date());
    await uploads.create(upload);
    const staging = new UploadStaging(uploads, upload, 1);
    const reader = {
      prepare: (rows: NumberedRow[]): PreparedRows => ({
        events: rows.map(({ fields }) => ({ id: fields[0], type: 'page_view', timestamp: new Date(), receivedAt: new Date(), identities: [{ type: 'cookie_id', value: `c-${fields[0]}` }] }) as StoredEvent),
        rejections: [],
        nonProfiling: 0,
      }),
    };
    let release!: () => void;
    const hung = new Promise<void>((resolve) => (release = resolve));
    async function* records() {
      yield ['id'];
      yield ['r1'];
      yield ['r2'];
      await hung; // the reader hangs here
      yield ['r3'];
    }
    const reading = staging.readFile(records(), () => reader).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Meanwhile a later attempt failed the upload; the reader comes back past the time it checks after.
    expect(await uploads.failUnfinished(upload._id, 'a later attempt of its pull read the file again', new Date())).toBe(true);
    const clock = jest.spyOn(Date, 'now').mockReturnValue(Date.now() + 31_000);
    try {
      release();
      expect(await reading).toBeInstanceOf(UploadSuperseded);
    } finally {
      clock.mockRestore();
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    // r1 and r2 were staged before it hung; r3, read after, is not.
    expect(await uploads.readChunk(upload._id, 1)).not.toBeNull();
    expect(await uploads.readChunk(upload._id, 2)).toBeNull();
  });

  it('stages wide rows in chunks a stored document can hold, cutting by text as well as by rows', async () => {
    const uploads = new UploadStore(store);
    const upload = newUpload('upl_wide', 'src_wide', new Date());
    await uploads.create(upload);
    const staging = new UploadStaging(uploads, upload, 2000);
    // Ten trait cells of 1,000 CJK characters a row: 2,000 rows of them would be some 60 MB in one chunk.
    const wide = '\u4e2d'.repeat(1_000);
    const reader = {
      prepare: (rows: NumberedRow[]): PreparedRows => ({
        events: rows.map(({ fields }) => ({ id: fields[0], type: 'crm_record', timestamp: new Date(), receivedAt: new Date(), identities: [{ type: 'crm_id', value: fields[0] }], traits: Object.fromEntries(fields.slice(1).map((cell, i) => [`t${i}`, cell])) }) as StoredEvent),
        rejections: [],
        nonProfiling: 0,
      }),
    };
    async function* records() {
      yield ['id', ...Array.from({ length: 10 }, (_, i) => `t${i}`)];
      for (let row = 0; row < 2000; row++) yield [`w-${row}`, ...Array.from({ length: 10 }, () => wide)];
    }
    await staging.readFile(records(), () => reader);
    const done = await staging.complete();
    expect(done.rowsReceived).toBe(2000);
    expect(done.chunks).toBeGreaterThan(1);
    let staged = 0;
    for (let n = 0; n < done.chunks; n++) staged += (await uploads.readChunk(upload._id, n))?.length ?? 0;
    expect(staged).toBe(2000);
  });
});
