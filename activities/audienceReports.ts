import { ALL_PROFILES, AudienceTally, CampaignTally, FeatureDictionary, trendPointOf, type AudienceReport, type PersonFeatures } from '../domain/audienceReports';
import { decide, exportFacts, exportPolicyOf, isHeldOut, type ExportFacts } from '../domain/destinations';
import { dayKey } from '../domain/profile';
import type { SubjectNeeds } from '../domain/segmentRules';
import { AudienceReportStore } from '../store/audienceReports';
import type { Store } from '../store/db';
import { DestinationStore } from '../store/destinations';
import { decodeForExport, decodeForReports } from '../store/profiles';
import { SegmentMembership } from '../store/segmentMembership';
import { SegmentStore } from '../store/segments';
import { heartbeat, withHeartbeats } from './heartbeat';
import { passPeople, peoplePassStores } from './peoplePass';

export interface AudienceReportDeps {
  store: Store;
}

/** Per destination with a holdout (in their order), whether it would send a person: bits of a number, or bytes past MASK_BITS destinations. */
type Sendable = number | Uint8Array;
const MASK_BITS = 30;

/** What the pass keeps of a person: what reports count, and which destinations with a holdout would send them. */
interface Counted {
  features: PersonFeatures;
  sendable: Sendable;
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
    // A holdout compares those a destination sends with those it holds out, and it would send: whom
    // its consent settings, export controls and id type let through (partner ids: a cookie id to
    // match), decided as its exports decide, on the documents as the pass reads them.
    const holdoutsNow = async () => (await destinations.list()).filter((destination) => (destination.holdoutShare ?? 0) > 0);
    const withHoldouts = await holdoutsNow();
    const runsBefore = new Map((await segments.list()).map((segment) => [segment._id, segment.current?.runId ?? null]));
    const labels = new Map((await stores.sources.list()).map((source) => [source._id, source.labels]));
    const policies = withHoldouts.map((destination) => exportPolicyOf(destination, labels));
    const sendable = (facts: () => ExportFacts): Sendable => {
      if (policies.length === 0) return 0;
      const read = facts();
      const sends = policies.map((policy) => {
        const decision = decide(read, policy);
        return decision.withheld === null && decision.ids.length > 0;
      });
      // A bit each, in a number kept inline (a million typed arrays would take ~100 MB), unless there are more destinations than bits.
      return sends.length <= MASK_BITS ? sends.reduce((mask, sent, index) => (sent ? mask | (1 << index) : mask), 0) : Uint8Array.from(sends, Number);
    };
    const sends = (person: Counted, index: number) => (typeof person.sendable === 'number' ? (person.sendable & (1 << index)) !== 0 : person.sendable[index] === 1);
    // Analysing people is profiling them: those who opted out, or whose consent refuses it under
    // their sources' policies, are counted nowhere — in segments they are no member either.
    const { people, documentsScanned } = await passPeople<Counted>(
      stores,
      NO_RULE_NEEDS,
      {
        document: (stored) => ({ features: dictionary.features(decodeForReports(stored)), sendable: sendable(() => exportFacts(decodeForExport(stored))) }),
        person: (person) => ({ features: dictionary.features(person), sendable: sendable(() => exportFacts(person)) }),
      },
      { skipOptedOut: true, skipRefused: true },
    );
    const all = new AudienceTally();
    for (const { features } of people.values()) all.add(features);
    const written: AudienceReport[] = [all.report(dictionary, ALL_PROFILES, at, null)];

    // Segments are read after the pass: one whose first run completed meanwhile is counted too.
    const evaluated = (await segments.list()).filter((segment) => segment.current);
    // A destination with a holdout made or changed during the pass is not in it: the reports of its
    // segments are written as of the run before the pass, so one whose run completed meanwhile reads
    // as stale and is counted again.
    const holdoutsAfter = await holdoutsNow();
    const editedAt = (list: typeof withHoldouts) => new Map(list.map((destination) => [destination._id, destination.updatedAt.getTime()]));
    const [before, after] = [editedAt(withHoldouts), editedAt(holdoutsAfter)];
    const changed = [...holdoutsAfter.filter((d) => before.get(d._id) !== d.updatedAt.getTime()), ...withHoldouts.filter((d) => after.get(d._id) !== d.updatedAt.getTime())];
    const missed = new Set(changed.flatMap((destination) => destination.segments));
    const membership = new SegmentMembership(deps.store);
    const states = await membership.realTime(evaluated);
    for (const segment of evaluated) {
      const tally = new AudienceTally();
      // Each destination holding out members of the segment splits those it would send in two: held out, and exported.
      const splits = withHoldouts.flatMap((destination, index) =>
        destination.segments.includes(segment._id) ? [{ index, destinationId: destination._id, share: destination.holdoutShare as number, held: new CampaignTally(), treated: new CampaignTally() }] : [],
      );
      for await (const page of membership.pages(segment, states)) {
        for (const id of page) {
          const person = people.get(id);
          if (!person) continue;
          tally.add(person.features);
          for (const split of splits) {
            if (!sends(person, split.index)) continue;
            (isHeldOut(split.destinationId, id, split.share) ? split.held : split.treated).add(person.features);
          }
        }
        heartbeat({ phase: 'segments', segment: segment._id, counted: tally.size });
      }
      const holdouts = splits.map((split) => ({
        destinationId: split.destinationId,
        share: split.share,
        held: { size: split.held.size, campaigns: split.held.figures(dictionary) },
        treated: { size: split.treated.size, campaigns: split.treated.figures(dictionary) },
      }));
      const runId = missed.has(segment._id) ? (runsBefore.get(segment._id) ?? null) : (segment.current?.runId ?? null);
      written.push(tally.report(dictionary, segment._id, at, runId, holdouts));
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
