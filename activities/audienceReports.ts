import { ALL_PROFILES, AudienceTally, CampaignTally, FeatureDictionary, trendPointOf, type AudienceReport, type PersonFeatures } from '../domain/audienceReports';
import { compareText } from '../domain/text';
import type { Config } from '../config';
import { decide, exportFacts, exportPolicyOf, HELD_PARTNER_ID, isHeldOut, partnerOfIdType, type ExportFacts } from '../domain/destinations';
import { matchLimits } from '../domain/partners';
import { dayKey } from '../domain/profile';
import type { SubjectNeeds } from '../domain/segmentRules';
import { AudienceReportStore } from '../store/audienceReports';
import type { Store } from '../store/db';
import { DestinationStore } from '../store/destinations';
import { MatchTableStore } from '../store/matchTables';
import { decodeForExport, decodeForReports } from '../store/profiles';
import { SegmentMembership } from '../store/segmentMembership';
import { SegmentStore } from '../store/segments';
import { heartbeat, withHeartbeats } from './heartbeat';
import { passPeople, peoplePassStores } from './peoplePass';

export interface AudienceReportDeps {
  store: Store;
  config: Pick<Config, 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP'>;
}

/** Per destination with a holdout (in their order), whether it would send a person: bits of a number, or bytes past MASK_BITS destinations. */
type Sendable = number | Uint8Array;
const MASK_BITS = 30;

/**
 * Destinations of a sync partner's ids that would send a person if the match table maps one of
 * their cookie ids to that partner (looked up once the person turns up as a member), and those ids.
 */
interface AwaitingMatch {
  indexes: number[];
  cookies: string[];
}

/** What the pass keeps of a person: what reports count, and which destinations with a holdout would send them. */
interface Counted {
  features: PersonFeatures;
  sendable: Sendable;
  awaiting?: AwaitingMatch;
}

const withSent = (sendable: Sendable, index: number): Sendable => {
  if (typeof sendable === 'number') return sendable | (1 << index);
  sendable[index] = 1;
  return sendable;
};

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
    // its consent settings, export controls and id type let through, decided as its exports decide,
    // on the documents as the pass reads them (a partner's ids: one the person holds, or a cookie id
    // the match table maps as the report is written).
    const holdoutsNow = async () => (await destinations.list()).filter((destination) => (destination.holdoutShare ?? 0) > 0);
    const withHoldouts = await holdoutsNow();
    const runsBefore = new Map((await segments.list()).map((segment) => [segment._id, segment.current?.runId ?? null]));
    const labels = new Map((await stores.sources.list()).map((source) => [source._id, source.labels]));
    const policies = withHoldouts.map((destination) => exportPolicyOf(destination, labels));
    const partners = policies.map((policy) => partnerOfIdType(policy.idType));
    const sendable = (facts: () => ExportFacts): Pick<Counted, 'sendable' | 'awaiting'> => {
      if (policies.length === 0) return { sendable: 0 };
      const read = facts();
      let awaiting: AwaitingMatch | undefined;
      const sends = policies.map((policy, index) => {
        const decision = decide(read, policy);
        if (decision.withheld !== null || decision.ids.length === 0) return false;
        if (partners[index] === null || decision.ids.some((id) => id.startsWith(HELD_PARTNER_ID))) return true;
        // Only cookie ids (the same for every partner): sent if the match table maps one.
        awaiting ??= { indexes: [], cookies: decision.ids };
        awaiting.indexes.push(index);
        return false;
      });
      // A bit each, in a number kept inline (a million typed arrays would take ~100 MB), unless there are more destinations than bits.
      const mask = sends.length <= MASK_BITS ? sends.reduce((bits, sent, index) => (sent ? bits | (1 << index) : bits), 0) : Uint8Array.from(sends, Number);
      return awaiting ? { sendable: mask, awaiting } : { sendable: mask };
    };
    const matches = new MatchTableStore(deps.store, matchLimits(deps.config), () => at);
    /** Settles, for a page of members, whether the partner-id destinations `indexes` send them: one match-table read per cookie id, once per person. */
    const settleMatches = async (page: string[], indexes: number[]) => {
      for (const partner of new Set(indexes.map((index) => partners[index]))) {
        if (partner === null) continue;
        const waiting = page.flatMap((id) => {
          const person = people.get(id);
          return person?.awaiting?.indexes.some((index) => partners[index] === partner) ? [person] : [];
        });
        if (waiting.length === 0) continue;
        const found = await matches.partnerIdsOf(partner, waiting.flatMap((person) => person.awaiting!.cookies));
        for (const person of waiting) {
          const { indexes: pending, cookies } = person.awaiting!;
          const matched = cookies.some((cookie) => found.has(cookie));
          const rest = pending.filter((index) => partners[index] !== partner);
          if (matched) for (const index of pending) if (partners[index] === partner) person.sendable = withSent(person.sendable, index);
          if (rest.length > 0) person.awaiting = { indexes: rest, cookies };
          else delete person.awaiting;
        }
      }
    };
    const sends = (person: Counted, index: number) => (typeof person.sendable === 'number' ? (person.sendable & (1 << index)) !== 0 : person.sendable[index] === 1);
    // Analysing people is profiling them: those who opted out, or whose consent refuses it under
    // their sources' policies, are counted nowhere — in segments they are no member either.
    const { people, documentsScanned } = await passPeople<Counted>(
      stores,
      NO_RULE_NEEDS,
      {
        document: (stored) => ({ features: dictionary.features(decodeForReports(stored)), ...sendable(() => exportFacts(decodeForExport(stored))) }),
        person: (person) => ({ features: dictionary.features(person), ...sendable(() => exportFacts(person)) }),
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
    // By run: a run's chunks, read once for all its segments, are let go before the next run's are read.
    evaluated.sort((a, b) => compareText(a.current?.runId ?? '', b.current?.runId ?? ''));
    for (const [k, segment] of evaluated.entries()) {
      const previousRun = evaluated[k - 1]?.current?.runId;
      if (previousRun && previousRun !== segment.current?.runId) membership.forget(previousRun);
      // Walked again from the segment's current snapshot if the one read is let go meanwhile (a run completed during the pass).
      const { tally, splits, walked } = await membership.walkCurrent(segment, states, (id) => segments.get(id), async (doc, docStates) => {
        const tally = new AudienceTally();
        // Each destination holding out members of the segment splits those it would send in two: held out, and exported.
        const splits = withHoldouts.flatMap((destination, index) =>
          destination.segments.includes(doc._id) ? [{ index, destinationId: destination._id, share: destination.holdoutShare as number, held: new CampaignTally(), treated: new CampaignTally() }] : [],
        );
        for await (const page of membership.pages(doc, docStates, { keepRun: true })) {
          await settleMatches(page, splits.map((split) => split.index));
          for (const id of page) {
            const person = people.get(id);
            if (!person) continue;
            tally.add(person.features);
            for (const split of splits) {
              if (!sends(person, split.index)) continue;
              (isHeldOut(split.destinationId, id, split.share) ? split.held : split.treated).add(person.features);
            }
          }
          heartbeat({ phase: 'segments', segment: doc._id, counted: tally.size });
        }
        return { tally, splits, walked: doc };
      });
      const runId = missed.has(segment._id) ? (runsBefore.get(segment._id) ?? null) : (walked.current?.runId ?? null);
      written.push(tally.report(dictionary, segment._id, at, runId, splits));
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
