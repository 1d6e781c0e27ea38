import { SourceWaker } from '../../api/sourceWaker';

describe('SourceWaker', () => {
  it('sends one wake-up per burst of seals, and one more for seals that came while it was in flight', async () => {
    const sent: string[] = [];
    let release: () => void = () => {};
    const waker = new SourceWaker(
      async (sourceId) => {
        sent.push(sourceId);
        await new Promise<void>((resolve) => (release = resolve));
      },
      () => {},
      0,
    );
    waker.notify('a');
    waker.notify('a');
    waker.notify('a');
    expect(sent).toEqual(['a']);
    release();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(sent).toEqual(['a', 'a']); // the seals during the first wake-up need one more
    release();
    await waker.idle();
    expect(sent).toEqual(['a', 'a']);
  });

  it('sends the wake-up for seals that came meanwhile no sooner than the interval after the one before', async () => {
    const sentAt: number[] = [];
    const waker = new SourceWaker(async () => void sentAt.push(Date.now()), () => {}, 200);
    waker.notify('a');
    waker.notify('a'); // while the first is in flight
    await waker.idle();
    expect(sentAt).toHaveLength(2);
    expect(sentAt[1] - sentAt[0]).toBeGreaterThanOrEqual(195);
    // A seal after a quiet spell is sent at once.
    await new Promise((resolve) => setTimeout(resolve, 250));
    const before = Date.now();
    waker.notify('a');
    await waker.idle();
    expect(sentAt).toHaveLength(3);
    expect(sentAt[2] - before).toBeLessThan(50);
  });

  it('wakes different sources independently', async () => {
    const sent: string[] = [];
    const waker = new SourceWaker(async (sourceId) => void sent.push(sourceId), () => {});
    waker.notify('a');
    waker.notify('b');
    await waker.idle();
    expect(sent.sort()).toEqual(['a', 'b']);
  });

  it('reports a failed wake-up and keeps working for the next seal', async () => {
    const errors: string[] = [];
    let fail = true;
    const sent: string[] = [];
    const waker = new SourceWaker(
      async (sourceId) => {
        if (fail) throw new Error('temporal down');
        sent.push(sourceId);
      },
      (sourceId, error) => errors.push(`${sourceId}: ${(error as Error).message}`),
    );
    waker.notify('a');
    await waker.idle();
    expect(errors).toEqual(['a: temporal down']);
    fail = false;
    waker.notify('a');
    await waker.idle();
    expect(sent).toEqual(['a']);
  });
});
