import { CronExpressionParser } from 'cron-parser';
import { cronPattern } from '../../domain/cronPattern';
import { SegmentScheduleSchema } from '../../domain/segments';

const CRON = cronPattern();

function parses(expression: string): boolean {
  try {
    CronExpressionParser.parse(expression);
    return true;
  } catch {
    return false;
  }
}

describe('the cron pattern schedules take', () => {
  it.each([
    '0 3 * * *',
    '15 */2 * * *',
    '0 8-18/2 * * mon-fri',
    '30 6 1,15 * *',
    '0 0 1 jan,jul *',
    '0 0 * * 0,6',
    '59 23 28 12 7',
    '0 1 29 feb *',
    '0 12 * JAN-MAR Mon',
  ])('takes %s, which the scheduler parses too', (expression) => {
    expect(CRON.test(expression)).toBe(true);
    expect(parses(expression)).toBe(true);
  });

  it.each([
    ['* * * * *', 'every minute'],
    ['*/5 * * * *', 'every five minutes'],
    ['0,30 * * * *', 'twice an hour'],
    ['0-10 * * * *', 'a range of minutes'],
    ['60 * * * *', 'a minute that does not exist'],
    ['0 24 * * *', 'an hour that does not exist'],
    ['0 3 * *', 'four fields'],
    ['0  3 * * *', 'a double space'],
    ['0 5-3 * * *', 'a range running backwards'],
    ['0 3 2,1 * *', 'a list out of order'],
    ['0 3 31 * *', 'a first day of month some months lack'],
    ['@hourly', 'a macro'],
  ])('refuses %s (%s)', (expression) => {
    expect(CRON.test(expression)).toBe(false);
  });

  it('refuses what the scheduler would refuse: no expression it takes fails to parse', () => {
    // Every combination of a spread of forms per field: the pattern must never take one the parser cannot.
    const hours = ['*', '*/6', '3', '3/4', '1-5', '1-5/2', '2,20'];
    const days = ['*', '1', '1-15', '1,15', '28-31', '*/10'];
    const months = ['*', '2', 'feb', 'jan-jun', '1,6,12', '*/3'];
    const weekdays = ['*', '0', '7', 'mon-fri', '0,6', '1-5/2', 'SUN'];
    let taken = 0;
    for (const hour of hours) for (const day of days) for (const month of months) for (const weekday of weekdays) {
      const expression = `0 ${hour} ${day} ${month} ${weekday}`;
      if (!CRON.test(expression)) continue;
      taken++;
      expect([expression, parses(expression)]).toEqual([expression, true]);
    }
    // Every form in the spread is one the pattern takes: each combination was checked against the parser.
    expect(taken).toBe(hours.length * days.length * months.length * weekdays.length);
  });

  it('tells the operator why a too-frequent schedule is refused', () => {
    const result = SegmentScheduleSchema.safeParse({ cron: '*/5 * * * *' });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]).toMatchObject({ path: ['cron'], message: 'runs at most hourly: the minute field is one value from 0 to 59' });
  });
});
