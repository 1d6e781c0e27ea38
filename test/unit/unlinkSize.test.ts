import { oversized, type UnlinkDoc } from '../../store/identityUnlinks';

const request = (keys: number): UnlinkDoc => ({
  _id: 'ul_1',
  keys: ['cookie_id:a', 'crm_id:b'],
  state: 'pending',
  requestedAt: new Date(0),
  plan: {
    sides: 2,
    sideOf: Array.from({ length: keys }, (_, n) => ({ key: `cookie_id:${n.toString().padStart(60, '0')}`, side: n % 2 })),
    docs: [{ profileId: 'p1', partition: 0 }],
    links: [],
  },
});

describe('an unlink too large to store', () => {
  it('is told apart before anything is recorded: by its plan, or by a severance naming too many events', () => {
    const severance = { keys: ['cookie_id:a', 'crm_id:b'] as [string, string], eventIds: ['e1', 'e2'] };
    expect(oversized(request(1_000), [severance])).toBeNull();
    // An over-merged profile: 250,000 identities take some 23 MiB as a plan.
    expect(oversized(request(250_000), [severance])).toBeGreaterThan(15 * 2 ** 20);
    const everyEvent = { ...severance, eventIds: Array.from({ length: 1_000_000 }, (_, n) => `evt_${n.toString().padStart(20, '0')}`) };
    expect(oversized(request(1_000), [severance, everyEvent])).toBeGreaterThan(15 * 2 ** 20);
  });
});
