import type { Store } from '../../store/db';
import { FeedStore, feedFileDigest, filesFetched, FILES_LISTED, importedFileDigests, newFeedPull, packFileDigests, pulledFileDigests, type FeedFile } from '../../store/feeds';
import { testStore, uniqueName } from '../support/services';

/**
 * A folder feed remembers every file it imported that is still in its folder, and a pull every new
 * file it read. Kept as names, a folder of per-minute drops outgrew a document within months
 * (~100 bytes a file, names up to 255): they are kept as 16-byte digests.
 */
describe("a folder feed's imported files", () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('feed_files');
  });
  afterAll(() => store.close());

  const fileOf = (n: number): FeedFile => ({ name: `audience-export-${'x'.repeat(120)}-${String(n).padStart(7, '0')}.csv.gz`, size: 1000 + n, modifiedAt: new Date(1_767_225_600_000 + n * 60_000) });

  it('keeps 400,000 imported files (60 MB of names) in one state, and tells each apart from a file changed since', async () => {
    const feeds = new FeedStore(store);
    const sourceId = uniqueName('src');
    const files = Array.from({ length: 400_000 }, (_, n) => fileOf(n));
    const state = await feeds.state(sourceId);
    await feeds.saveState({ ...state, fileDigests: packFileDigests(files.map(feedFileDigest)) });
    const imported = new Set(importedFileDigests(await feeds.state(sourceId)));
    expect(imported.size).toBe(400_000);
    expect(files.every((file) => imported.has(feedFileDigest(file)))).toBe(true);
    // The same name grown, or touched, is a new file.
    expect(imported.has(feedFileDigest({ ...files[7], size: files[7].size + 1 }))).toBe(false);
    expect(imported.has(feedFileDigest({ ...files[7], modifiedAt: new Date(files[7].modifiedAt.getTime() + 1) }))).toBe(false);
  });

  it('records a pull of 150,000 new files: every digest, the first 1,000 by name, and how many', async () => {
    const feeds = new FeedStore(store);
    const sourceId = uniqueName('src');
    const pullId = uniqueName('pul');
    await feeds.createPull(newFeedPull(pullId, sourceId, 'api', { from: null, to: null }, new Date()));
    const by = { runId: 'run', attempt: 1 };
    expect(await feeds.claimFetch(pullId, by)).toBe(true);
    const files = Array.from({ length: 150_000 }, (_, n) => fileOf(n));
    expect(await feeds.recordFetched(pullId, by, { ...filesFetched(files), uploadId: null, cursor: null })).toBe(true);
    const pull = (await feeds.getPull(pullId))!;
    expect(pull.filesRead).toBe(150_000);
    expect(pull.files).toEqual(files.slice(0, FILES_LISTED));
    expect(pulledFileDigests(pull)).toEqual(files.map(feedFileDigest));
  });

  it('reads the files of a state and a pull saved before digests', async () => {
    const files = [fileOf(1), fileOf(2)];
    expect(importedFileDigests({ files })).toEqual(files.map(feedFileDigest));
    expect(pulledFileDigests({ files })).toEqual(files.map(feedFileDigest));
  });
});
