import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { IdentityError, identityKeysOf, type InputIdentityType } from '../domain/identity';
import type { UnlinkView } from '../domain/schemas';
import type { Store } from '../store/db';
import { UnlinkStore, type UnlinkDoc } from '../store/identityUnlinks';
import { ProfileGraph } from '../store/profileGraph';
import { requestUnlink } from '../temporal/client';
import { ProblemError } from './problem';

export function unlinkView(doc: UnlinkDoc): UnlinkView {
  return {
    id: doc._id,
    state: doc.state,
    identities: doc.keys,
    requestedAt: doc.requestedAt.toISOString(),
    completedAt: doc.completedAt?.toISOString() ?? null,
    split: doc.result?.split ?? null,
    profiles: doc.result?.sides.map((side) => side.profileIds) ?? [],
    eventsSevered: doc.result?.eventsSevered ?? null,
    reason: doc.result?.reason ?? null,
    statusUrl: `/v1/identity/unlinks/${doc._id}`,
  };
}

/**
 * Unlink requests as the API takes them: the identities are checked against the graph (known, and
 * in one profile) before anything is recorded, then the request is queued on the store's identity
 * graph workflow, which splits the profile if the unlink separates it.
 */
export class Unlinks {
  private readonly store: UnlinkStore;
  private readonly graph: ProfileGraph;

  constructor(
    store: Store,
    private readonly temporal: Client,
    private readonly config: { DMP_TASK_QUEUE: string; DMP_DEFAULT_PHONE_REGION: string },
  ) {
    this.store = new UnlinkStore(store);
    this.graph = ProfileGraph.open(store);
    this.databaseName = store.db.databaseName;
  }

  private readonly databaseName: string;

  async request(identities: Array<{ type: InputIdentityType; value: string }>): Promise<UnlinkDoc> {
    const readings = identities.map((identity, index) => {
      try {
        return identityKeysOf(identity.type, identity.value, this.config.DMP_DEFAULT_PHONE_REGION);
      } catch (error) {
        if (!(error instanceof IdentityError)) throw error;
        // Well-formed as a request, but no profile can hold such an identity (as for a lookup).
        throw new ProblemError(404, 'identity-not-found', 'No profile can have this identity', [{ path: `identities.${index}.value`, message: error.message }]);
      }
    });
    // Each identity's key a document holds (the stored form's, or the id as an older version kept it): where an
    // identity has two, the one in the profile of the others' (the first of identities.0's that has them all).
    const held = await Promise.all(readings.map(async (candidates) => (await Promise.all(candidates.map(async (key) => ({ key, owner: await this.graph.ownerOf(key) })))).filter((reading) => reading.owner !== null)));
    let found: Array<(typeof held)[number][number] | null> = held.map((readings) => readings[0] ?? null);
    for (const start of held[0].length > 1 || held.some((readings) => readings.length > 1) ? held[0] : []) {
      const { ids } = await this.graph.component(start.owner!.id);
      const together = held.map((readings, index) => (index === 0 ? start : (readings.find((reading) => ids.includes(reading.owner!.id)) ?? null)));
      if (together.every(Boolean)) {
        found = together;
        break;
      }
    }
    const keys = found.map((reading, index) => reading?.key ?? readings[index][0]);
    const owners = found.map((reading) => reading?.owner ?? null);
    const unknown = owners.findIndex((owner) => !owner);
    if (unknown >= 0) throw new ProblemError(404, 'identity-not-found', 'No profile has this identity', [{ path: `identities.${unknown}`, message: 'not found' }]);
    // Sent differently, read as one (an email's case, a hash's encoding): the document cannot tell them apart.
    const repeated = keys.findIndex((key, index) => keys.indexOf(key) !== index);
    if (repeated >= 0) throw new ProblemError(400, 'validation', 'Invalid unlink request', [{ path: `identities.${repeated}`, message: 'the same identity twice, as normalized' }]);
    const component = await this.graph.component(owners[0]!.id);
    const apart = owners.findIndex((owner) => !component.ids.includes(owner!.id));
    if (apart >= 0) {
      throw new ProblemError(409, 'not-linked', 'The identities are not in one profile', [{ path: `identities.${apart}`, message: `not in the profile of identities.0 (${component.ids[0]})` }]);
    }
    const doc: UnlinkDoc = { _id: `ul_${randomBytes(10).toString('hex')}`, keys, state: 'pending', requestedAt: new Date() };
    await this.store.create(doc);
    await requestUnlink(this.temporal, this.databaseName, doc._id, this.config);
    return doc;
  }

  get(id: string): Promise<UnlinkDoc | null> {
    return this.store.get(id);
  }
}
