import { ApplicationFailure } from '@temporalio/activity';
import type { Config } from '../config';
import { exportFacts, memberKeyPrefix, partnerOfIdType } from '../domain/destinations';
import { decodeKeys } from '../domain/fieldNames';
import { matchLimits } from '../domain/partners';
import type { AccessExport, PrivacyResult, PrivacyStepName } from '../domain/privacy';
import type { Store } from '../store/db';
import { DestinationStore, type DestinationDoc } from '../store/destinations';
import { MatchTableStore } from '../store/matchTables';
import { PrivacyStore, type PrivacyRequestDoc } from '../store/privacy';
import { ProfileGraph } from '../store/profileGraph';
import { ProfileReader } from '../store/profileReader';
import { SegmentStore } from '../store/segments';
import { withHeartbeats } from './heartbeat';

export interface PrivacyDeps {
  store: Store;
  config: Pick<Config, 'DMP_MATCH_TTL_DAYS' | 'DMP_MATCH_CAP'>;
}

/** The steps of a privacy request: each reads the request, does its part, and records itself done with an audit entry. */
export function createPrivacyActivities(deps: PrivacyDeps) {
  const requests = new PrivacyStore(deps.store);
  const graph = ProfileGraph.open(deps.store);
  const reader = new ProfileReader(deps.store);
  const segments = new SegmentStore(deps.store);
  const destinations = new DestinationStore(deps.store);
  const matches = new MatchTableStore(deps.store, matchLimits(deps.config));

  const actorOf = (request: PrivacyRequestDoc) => `admin${request.requestedBy ? ` for ${request.requestedBy}` : ''}`;

  async function open(requestId: string): Promise<{ request: PrivacyRequestDoc; key: string }> {
    const request = await requests.get(requestId);
    if (!request) throw ApplicationFailure.nonRetryable(`no privacy request ${requestId}`);
    const key = await requests.keyOf(requestId);
    if (!key) throw ApplicationFailure.nonRetryable(`the subject of ${requestId} is no longer held`);
    return { request, key };
  }

  async function done(request: PrivacyRequestDoc, step: PrivacyStepName, touched: Record<string, number>): Promise<void> {
    await requests.stepDone(request, step, touched, new Date(), actorOf(request));
  }

  /**
   * The partners that hold, or may hold, the subject: per destination, the segments whose confirmed
   * (or unconfirmed) partner state holds one of the subject's ids of the destination's id type.
   */
  async function heldBy(facts: ReturnType<typeof exportFacts>): Promise<{ held: AccessExport['destinations']; read: number }> {
    const held: AccessExport['destinations'] = [];
    let read = 0;
    for (const destination of await destinations.list()) {
      const ids = await idsAt(destination, facts);
      if (ids.size === 0) continue;
      const segmentsHeld: AccessExport['destinations'][number]['segments'] = [];
      for (const [segmentId, state] of Object.entries(destination.held ?? {})) {
        const partner = await destinations.readState(destination._id, segmentId, state);
        read += state.chunks;
        const where = partner.held.some((id) => ids.has(id)) ? 'held' : partner.uncertain.some((id) => ids.has(id)) ? 'uncertain' : null;
        if (where) segmentsHeld.push({ segmentId, exportId: state.exportId, state: where });
      }
      if (segmentsHeld.length > 0) held.push({ id: destination._id, name: destination.name, connector: destination.connector, idType: destination.idType, segments: segmentsHeld });
    }
    return { held, read };
  }

  /** The subject's ids as the destination's partner receives them (through the match table for partner ids). */
  async function idsAt(destination: DestinationDoc, facts: ReturnType<typeof exportFacts>): Promise<Set<string>> {
    const prefix = memberKeyPrefix(destination.idType);
    const ours = facts.ids.filter((key) => key.startsWith(prefix)).map((key) => key.slice(prefix.length));
    const partner = partnerOfIdType(destination.idType);
    if (partner === null) return new Set(ours);
    return new Set([...(await matches.partnerIdsOf(partner, ours)).values()].flat());
  }

  return {
    /** Finds the profile the subject's identity belongs to (its documents, through the identity graph). */
    async resolvePrivacySubject(input: { requestId: string }): Promise<{ found: boolean; profiles: number }> {
      const { request, key } = await open(input.requestId);
      const owner = await graph.ownerOf(key);
      const component = owner ? await graph.component(owner.id) : null;
      const profiles = component?.docs.length ?? 0;
      await done(request, 'resolve', { identities: 1, profiles, identity_links: component?.links.length ?? 0 });
      return { found: profiles > 0, profiles };
    },

    /**
     * The access export: the profile as the API shows it (identities with the sources that reported
     * them, traits with theirs, consent), its retained events, its segments now, and the partners
     * holding it — written as the request's download.
     */
    async collectAccessExport(input: { requestId: string }): Promise<PrivacyResult> {
      return withHeartbeats(async () => {
        const { request, key } = await open(input.requestId);
        const view = await reader.byIdentity(key);
        const person = view ? await reader.person(view.id) : null;
        // Events as GET /v1/profiles/:id/events gives them: names as collected.
        const events = (view ? ((await reader.eventsOf(view.id)) ?? []) : []).map(({ seq: _seq, party: _party, traits, properties, ...event }) => ({
          ...event,
          ...(traits && { traits: decodeKeys(traits) }),
          ...(properties && { properties: decodeKeys(properties) }),
        }));
        const names = new Map((await segments.list()).map((segment) => [segment._id, segment.name]));
        const { held, read } = person ? await heldBy(exportFacts(person)) : { held: [], read: 0 };
        const document: AccessExport = {
          request: { id: request._id, receivedAt: request.receivedAt.toISOString(), subject: request.subject },
          generatedAt: new Date().toISOString(),
          profile: view,
          events,
          segments: (view?.segments ?? []).map((id) => ({ id, name: names.get(id) ?? id })),
          destinations: held,
        };
        const parts = await requests.writeExport(request._id, JSON.stringify(document));
        await done(request, 'collect', { profiles: view?.profileIds.length ?? 0, profile_events: events.length, segments: names.size, partner_state: read, privacy_exports: parts });
        return {
          found: view !== null,
          profiles: view?.profileIds.length ?? 0,
          identities: view?.identities.length ?? 0,
          events: events.length,
          segments: document.segments.length,
          destinations: held.length,
          exportUrl: `/v1/privacy/requests/${request._id}/export`,
        };
      });
    },

    /** Closes a request with its result; the subject's identity key leaves the store with it. */
    async completePrivacyRequest(input: { requestId: string; result: PrivacyResult }): Promise<void> {
      const request = await requests.get(input.requestId);
      if (!request || request.state === 'completed') return;
      await done(request, 'complete', { privacy_subjects: 1 });
      await requests.finish(request._id, { state: 'completed', completedAt: new Date(), error: null, result: input.result });
    },

    /** Records a request that could not finish, and why. */
    async failPrivacyRequest(input: { requestId: string; error: string }): Promise<void> {
      const request = await requests.get(input.requestId);
      if (request && request.state !== 'completed') await requests.finish(request._id, { state: 'failed', completedAt: new Date(), error: input.error, result: null });
    },
  };
}

export type PrivacyActivities = ReturnType<typeof createPrivacyActivities>;
