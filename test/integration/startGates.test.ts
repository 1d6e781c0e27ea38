import { connectStore, type Store } from '../../store/db';
import { START_GATES, StartGates, startGateKey } from '../../store/startGates';
import { baseConfig, testStore } from '../support/services';

describe('start gates: a workflow and the API that gave its start up never both act', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('startgates');
  });
  afterAll(() => store.close());

  it('lets the first side decide, whichever it is, and repeats its answer', async () => {
    const gates = new StartGates(store);
    const begun = startGateKey.export('exp_1');
    expect(await gates.begin(begun)).toBe(true);
    expect(await gates.abandon(begun)).toBe(false);
    expect(await gates.begin(begun)).toBe(true);
    const abandoned = startGateKey.import('upl_1');
    expect(await gates.abandon(abandoned)).toBe(true);
    expect(await gates.begin(abandoned)).toBe(false);
    expect(await gates.abandon(abandoned)).toBe(true);
  });

  it('gives exactly one side each gate when both ask at once, over separate connections', async () => {
    const keys = Array.from({ length: 40 }, (_, n) => startGateKey.segmentRun(`run_${n}`));
    const apiStore = await connectStore(baseConfig.MONGODB_URI, store.db.databaseName);
    const [workflow, api] = [new StartGates(store), new StartGates(apiStore)];
    const answers = await Promise.all(keys.map((key) => Promise.all([workflow.begin(key), api.abandon(key), workflow.begin(key)]))).finally(() => apiStore.close());
    for (const [began, abandoned, beganAgain] of answers) {
      expect(began).not.toBe(abandoned);
      expect(beganAgain).toBe(began);
    }
    const stored = await store.db.collection<{ _id: string; outcome: string }>(START_GATES).find({ _id: { $in: keys } }).toArray();
    expect(stored.map((doc) => [doc._id, doc.outcome]).sort()).toEqual(keys.map((key, n) => [key, answers[n][0] ? 'begun' : 'abandoned']).sort());
  });

  it('expires gates settled before a time and keeps the rest', async () => {
    const gates = new StartGates(store);
    const collection = store.db.collection<{ _id: string; outcome: string; at: Date }>(START_GATES);
    await collection.insertOne({ _id: startGateKey.feedPull('pull_old'), outcome: 'begun', at: new Date(Date.now() - 8 * 86_400_000) });
    await gates.begin(startGateKey.feedPull('pull_new'));
    const before = await collection.countDocuments({});
    expect(await gates.expire(new Date(Date.now() - 7 * 86_400_000))).toBe(1);
    expect(await collection.findOne({ _id: startGateKey.feedPull('pull_old') })).toBeNull();
    expect(await collection.countDocuments({})).toBe(before - 1);
    expect(await gates.begin(startGateKey.feedPull('pull_new'))).toBe(true);
  });
});
