import { runStateOf, type RunStateDoc } from '../../store/segments';
import { segmentDoc } from '../support/segmentFixtures';

const at = (second: number) => new Date(Date.UTC(2026, 4, 2, 10, 0, second));

function state(runId: string, startedSecond: number, runState: RunStateDoc['state'], version = 1, size = 0): RunStateDoc {
  const ended = runState !== 'running';
  return {
    _id: `s:${runId}`,
    segment: 's',
    runId,
    version,
    state: runState,
    startedAt: at(startedSecond),
    finishedAt: ended ? at(startedSecond + 30) : null,
    ...(runState === 'completed' && { size, now: at(startedSecond) }),
  };
}

describe('a segment’s run state, derived from the states its runs recorded', () => {
  const doc = (version = 1) => segmentDoc('s', { event: 'purchase' }, version);

  it('shows the run started last as its last run, whatever order the runs ended in', () => {
    const shown = runStateOf(doc(), [state('run_b', 2, 'running'), state('run_a', 1, 'completed', 1, 5)]);
    expect(shown.lastRun).toEqual({ runId: 'run_b', state: 'running', startedAt: at(2), finishedAt: null, version: 1 });
    expect(shown.current).toMatchObject({ runId: 'run_a', version: 1, size: 5, startedAt: at(1) });
  });

  it('reads the snapshot of the completed run started last, not the one that completed last', () => {
    const shown = runStateOf(doc(), [state('run_later', 5, 'completed', 1, 2), state('run_earlier', 4, 'completed', 1, 1)]);
    expect(shown.current?.runId).toBe('run_later');
    expect(shown.lastRun?.runId).toBe('run_later');
  });

  it('reads a newer version’s snapshot over any of an older version, and keeps the older one until the new version completes', () => {
    const oldVersion = state('run_v1', 8, 'completed', 1, 3);
    expect(runStateOf(doc(2), [oldVersion, state('run_v2', 7, 'completed', 2, 9)]).current?.runId).toBe('run_v2');
    const editing = runStateOf(doc(2), [oldVersion, state('run_v2', 9, 'running', 2)]);
    expect(editing.current).toMatchObject({ runId: 'run_v1', version: 1 });
    expect(editing.lastRun).toMatchObject({ runId: 'run_v2', state: 'running' });
  });

  it('never reads a superseded or failed run, and breaks a tie of start times by run id', () => {
    const shown = runStateOf(doc(), [state('run_a', 3, 'completed', 1, 1), state('run_c', 6, 'superseded'), state('run_d', 6, 'failed')]);
    expect(shown.current?.runId).toBe('run_a');
    expect(shown.lastRun).toMatchObject({ runId: 'run_d', state: 'failed' });
  });

  it('keeps what a segment stored before run states were kept apart while it has none', () => {
    const stored = { ...doc(), current: { runId: 'run_old', version: 1, size: 4, now: at(0), startedAt: at(0), finishedAt: at(1) }, lastRun: { runId: 'run_old', state: 'completed' as const, startedAt: at(0), finishedAt: at(1) } };
    expect(runStateOf(stored, [])).toBe(stored);
    // A run prepared since: shown as the last run; the stored snapshot is read until it completes.
    const shown = runStateOf(stored, [state('run_new', 9, 'running')]);
    expect(shown.lastRun?.runId).toBe('run_new');
    expect(shown.current?.runId).toBe('run_old');
  });
});
