import { MissEstimate } from '../../activities/identityResolver';

describe('MissEstimate: whether cache misses are read from the store or left to the claims', () => {
  const limits = { horizon: 1000, evidence: 200, rare: 0.01 };

  it('reads until it has seen enough misses, as after a restart', () => {
    const misses = new MissEstimate(limits);
    expect(misses.rare).toBe(false);
    misses.observe(0, 100);
    expect(misses.rare).toBe(false);
    misses.observe(0, 150);
    expect(misses.rare).toBe(true);
  });

  it('keeps reading while many misses are in the store, and stops once they have long been new', () => {
    const misses = new MissEstimate(limits);
    misses.observe(900, 1000); // a restart: most misses were claimed before it
    expect(misses.rare).toBe(false);
    let batches = 0;
    while (!misses.rare) {
      misses.observe(0, 500);
      batches++;
    }
    // The old evidence fades with the keys seen since, not at once.
    expect(batches).toBeGreaterThan(3);
    expect(batches).toBeLessThan(30);
  });

  it('goes back to reading when claims find held keys, and tolerates a few', () => {
    const misses = new MissEstimate(limits);
    misses.observe(0, 5000);
    misses.observe(2, 1000); // 0.2 %: still rare
    expect(misses.rare).toBe(true);
    misses.observe(50, 1000); // 5 % of a batch's claims were held
    expect(misses.rare).toBe(false);
  });

  it('is not moved by batches whose keys were all cached', () => {
    const misses = new MissEstimate(limits);
    misses.observe(0, 1000);
    misses.observe(0, 0);
    expect(misses.rare).toBe(true);
  });

  it('without evidence reads all of a few misses, but only a sample spread over many; with evidence all, or none once rare', () => {
    const misses = new MissEstimate({ ...limits, sample: 4 });
    const keys = (count: number) => Array.from({ length: count }, (_, n) => `k${n}`);
    expect(misses.firstReads(keys(16))).toEqual(keys(16));
    expect(misses.firstReads(keys(40))).toEqual(['k0', 'k10', 'k20', 'k30']);
    misses.observe(150, 300); // half of them held, as after a restart
    expect(misses.firstReads(keys(40))).toEqual(keys(40));
    misses.observe(0, 100_000);
    expect(misses.firstReads(keys(40))).toEqual([]);
  });
});
