import { ALL_PROFILES, AudienceTally, CampaignTally, FeatureDictionary, trendPointOf, type AudienceReport } from '../domain/audienceReports';
import { isHeldOut } from '../domain/destinations';
import { dayKey } from '../domain/profile';
import type { SubjectNeeds } from '../domain/segmentRules';
import { AudienceReportStore } from '../store/audienceReports';
import type { Store } from '../store/db';
import { DestinationStore } from '../store/destinations';
import { decodeForReports } from '../store/profiles';
import { SegmentMembership } from '../store/segmentMembership';
import { SegmentStore } from '../store/segments';
import { heartbeat, withHeartbeats } from './heartbeat';
import { passPeople, peoplePassStores } from './peoplePass';

export interface AudienceReportDeps {
  store: Store;
}

/** The pass reads whole documents itself: nothing is decoded for rules. */
const NO_RULE_NEEDS: SubjectNeeds = { traits: false, identities: false, consent: false, events: new Map() };

export interface AudienceReportsResult {
  at: string;
  profiles: number;
  segments: number;
  documentsScanned: number;
}

/** The activities of an audience report: one pass over every person counts what every segment's members hold. */
export function createAudienceReportActivities(deps: AudienceReportDeps) {
  const stores = peoplePassStores(deps.store);
  const segments = new SegmentStore(deps.store);
  const reports = new AudienceReportStore(deps.store);
  const destinations = new DestinationStore(deps.store);

  /**
   * Reads every person once, keeping each one's features (a few small integers), then walks each
   * segment's members as they stand (snapshot and real-time changes) and counts their features.
   * Safe to retry: a retry counts again and writes the same documents; a report never replaces a
   * newer one (store/audienceReports).
   */
  async function writeAudienceReports(at: Date): Promise<AudienceReportsResult> {
    const dictionary = new FeatureDictionary();
    // Analysing people is profiling them: those who opted out, or whose consent refuses it under
    // their sources' policies, are counted nowhere — in segments they are no member either.
    const { people, documentsScanned } = await passPeople(
      stores,
      NO_RULE_NEEDS,
      {
        document: (stored) => dictionary.features(decodeForReports(stored)),
        person: (person) => dictionary.features(person),
      },
      { skipOptedOut: true, skipRefused: true },
    );
    const all = new AudienceTally();
    for (const features of people.values()) all.add(features);
    const written: AudienceReport[] = [all.report(dictionary, ALL_PROFILES, at, null)];

    // Segments are read after the pass: one whose first run completed meanwhile is counted too.
    const evaluated = (await segments.list()).filter((segment) => segment.current);
    const withHoldouts = (await destinations.list()).filter((destination) => (destination.holdoutShare ?? 0) > 0);
    const membership = new SegmentMembership(deps.store);
    const states = await membership.realTime(evaluated);
    for (const segment of evaluated) {
      const tally = new AudienceTally();
      // Each destination holding out members of the segment splits them in two: held out, and exported.
      const splits = withHoldouts
        .filter((destination) => destination.segments.includes(segment._id))
        .map((destination) => ({ destinationId: destination._id, share: destination.holdoutShare as number, held: new CampaignTally(), treated: new CampaignTally() }));
      for await (const page of membership.pages(segment, states)) {
        for (const id of page) {
          const features = people.get(id);
          if (!features) continue;
          tally.add(features);
          for (const split of splits) (isHeldOut(split.destinationId, id, split.share) ? split.held : split.treated).add(features);
        }
        heartbeat({ phase: 'segments', segment: segment._id, counted: tally.size });
      }
      const holdouts = splits.map((split) => ({
        destinationId: split.destinationId,
        share: split.share,
        held: { size: split.held.size, campaigns: split.held.figures(dictionary) },
        treated: { size: split.treated.size, campaigns: split.treated.figures(dictionary) },
      }));
      written.push(tally.report(dictionary, segment._id, at, segment.current?.runId ?? null, holdouts));
    }
    const day = dayKey(at);
    await reports.write(written, written.filter((report) => report._id !== ALL_PROFILES).map((report) => trendPointOf(report, day)));
    return { at: at.toISOString(), profiles: people.size, segments: evaluated.length, documentsScanned };
  }

  return {
    /** See writeAudienceReports; `at` (ms) is the report's time, fixed by its workflow. */
    writeAudienceReports(input: { at: number }): Promise<AudienceReportsResult> {
      return withHeartbeats(() => writeAudienceReports(new Date(input.at)));
    },
  };
}

export type AudienceReportActivities = ReturnType<typeof createAudienceReportActivities>;
