import type { Collection } from 'mongodb';
import type { AudienceReport, TrendPoint } from '../domain/audienceReports';
import { findByIds, forEachConcurrently, replaceUnlessNewer, type Store } from './db';
import { VersionClaims } from './versionClaims';

export const REPORT_COLLECTIONS = {
  /** The latest report of each segment (and of all profiles), by segment id: replaced by each pass. */
  reports: 'audience_reports',
  /** A segment's size and coverage per day (`<segmentId>:<YYYYMMDD>`), for its trend. */
  trend: 'audience_trend',
} as const;

/** Reports and trend points are read and written by `_id`: one indexed operation each (a deleted segment's leave by one scan). */
export class AudienceReportStore {
  readonly reports: Collection<AudienceReport>;
  readonly trend: Collection<TrendPoint>;
  private readonly claims: VersionClaims;

  constructor(store: Store) {
    this.reports = store.db.collection<AudienceReport>(REPORT_COLLECTIONS.reports);
    this.trend = store.db.collection<TrendPoint>(REPORT_COLLECTIONS.trend);
    this.claims = new VersionClaims(store);
  }

  get(id: string): Promise<AudienceReport | null> {
    return this.reports.findOne({ _id: id });
  }

  /**
   * Replaces each report and its day's trend point, unless a report counted later is there already
   * (two passes may overlap: a scheduled one and one asked for): repeating it writes the same documents.
   */
  async write(reports: AudienceReport[], points: TrendPoint[]): Promise<void> {
    await forEachConcurrently(reports, 8, (report) => replaceUnlessNewer(this.reports, report, this.claims));
    await forEachConcurrently(points, 8, (point) => replaceUnlessNewer(this.trend, point, this.claims));
  }

  /** Removes a deleted segment's report and every trend point of it (one scan of the trend: deletions are rare). */
  async remove(segmentId: string): Promise<void> {
    await this.reports.deleteOne({ _id: segmentId });
    // Its points' ids run from `<id>:` up to `<id>;` (the next character).
    await this.trend.deleteMany({ _id: { $gte: `${segmentId}:`, $lt: `${segmentId};` } });
  }

  /** A segment's trend points for the given days (`YYYYMMDD`), by day. */
  async points(segmentId: string, days: string[]): Promise<Map<string, TrendPoint>> {
    const found = await findByIds(this.trend, days.map((day) => `${segmentId}:${day}`), 8);
    return new Map([...found].map(([id, point]) => [id.slice(segmentId.length + 1), point]));
  }
}

