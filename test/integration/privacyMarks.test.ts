import type { Store } from '../../store/db';
import { PRIVACY_MARK_COLLECTIONS, PrivacyMarks } from '../../store/privacyMarks';
import { testStore } from '../support/services';

describe('privacy marks written by many requests at once', () => {
  let store: Store;
  beforeAll(async () => {
    store = await testStore('privacy_marks');
  });
  afterAll(() => store.close());

  it('forgets every erased request’s documents when requests sharing a slot forget theirs at once, each in a worker of its own', async () => {
    const slots = () => store.db.collection<{ entries?: Array<{ requestId: string; documents: string[] }> }>(PRIVACY_MARK_COLLECTIONS.marks).find({}).toArray();
    for (let round = 0; round < 3; round++) {
      const requests = Array.from({ length: 40 }, (_, n) => `pr_erase_${round}_${n}`);
      // Requests of one process marked together share its slots.
      const marking = new PrivacyMarks(store, 'marks-test-salt');
      await Promise.all(requests.map((requestId) => marking.add(requestId, [`p_doc_${requestId}`])));
      expect((await slots()).length).toBeLessThan(requests.length * (round + 1));

      await Promise.all(requests.map((requestId) => new PrivacyMarks(store, 'marks-test-salt').forgetDocumentsOf(requestId)));
      const left = (await slots()).flatMap((slot) => slot.entries ?? []).filter((entry) => entry.documents.length > 0);
      expect(left).toEqual([]);
    }
  });

  it('counts every late event a process counts for a request, however many count at once', async () => {
    const marks = new PrivacyMarks(store, 'marks-test-salt');
    await Promise.all(Array.from({ length: 40 }, () => marks.countLate(new Map([['pr_late', 1]]))));
    expect(await marks.lateEventsOf('pr_late')).toBe(40);
  });
});
