import { Router } from 'express';
import { z } from 'zod';
import { IdentityError, identityKeysOf, toStoredIdentity, type InputIdentityType } from '../domain/identity';
import { identityBlocklist } from '../domain/identityBlocklist';
import {
  AccessExportSchema,
  deadlineOf,
  PrivacyListQuerySchema,
  privacyRequestId,
  PrivacyRequestSchema,
  PrivacyRequestViewSchema,
  subjectHash,
  STEPS_OF,
  targetOf,
  type PrivacyRequestView,
} from '../domain/privacy';
import { ExpiredProfiles } from '../store/expiredProfiles';
import { IdentityIndex } from '../store/identities';
import { PrivacyMarks } from '../store/privacyMarks';
import { PrivacyStore, type PrivacyRequestDoc } from '../store/privacy';
import { startPrivacyRequest } from '../temporal/client';
import type { OpenApiParts } from './openapi';
import { parseOr400, ProblemError } from './problem';
import type { RouterDeps } from './routerDeps';

/** Requests of one type about one subject at most: the n-th is looked for before a new one is made. */
const MAX_REQUESTS_PER_SUBJECT = 50;

export function privacyView(doc: PrivacyRequestDoc, lateEventsDropped = 0): PrivacyRequestView {
  return {
    id: doc._id,
    type: doc.type,
    state: doc.state,
    subject: doc.subject,
    requestedBy: doc.requestedBy,
    receivedAt: doc.receivedAt.toISOString(),
    deadline: doc.deadline.toISOString(),
    target: doc.target.toISOString(),
    steps: doc.steps.map((step) => ({ name: step.name, state: step.state, at: step.at?.toISOString() ?? null, touched: step.touched })),
    destinations: (doc.destinations ?? []).map((removal) => ({ ...removal, updatedAt: removal.updatedAt.toISOString() })),
    completedAt: doc.completedAt?.toISOString() ?? null,
    error: doc.error,
    result: doc.result,
    lateEventsDropped,
    statusUrl: `/v1/privacy/requests/${doc._id}`,
  };
}

/**
 * Privacy requests (admin key). A request names its subject by one identity, hashed as at collection;
 * the request keeps only a salted hash of it, and its id is that hash with the type and its place
 * among the subject's requests of that type — asking again while one is open finds the same request.
 */
export function privacyRouter({ store, temporal, config, admin }: Pick<RouterDeps, 'store' | 'temporal' | 'config' | 'admin'>): Router {
  const router = Router();
  const requests = new PrivacyStore(store);
  const identities = new IdentityIndex(store, 0);
  const blocked = identityBlocklist(config.DMP_IDENTITY_BLOCKLIST, config.DMP_DEFAULT_PHONE_REGION);
  const expired = new ExpiredProfiles(store);
  const marks = new PrivacyMarks(store, config.DMP_PRIVACY_SALT);
  let salt: Promise<string> | null = null;
  const saltOf = () => (salt ??= config.DMP_PRIVACY_SALT ? Promise.resolve(config.DMP_PRIVACY_SALT) : requests.salt().catch((error) => ((salt = null), Promise.reject(error))));

  const found = async (id: string): Promise<PrivacyRequestDoc> => {
    const doc = await requests.get(id);
    if (!doc) throw new ProblemError(404, 'privacy-request-not-found', 'No such privacy request', [{ path: 'params.id', message: `no request ${id}` }]);
    return doc;
  };

  /** Whether an identity has a stored form today (not only the form an older version kept it as). */
  const storable = (identity: { type: InputIdentityType; value: string }) => {
    try {
      toStoredIdentity(identity.type, identity.value, config.DMP_DEFAULT_PHONE_REGION);
      return true;
    } catch (error) {
      if (error instanceof IdentityError) return false;
      throw error;
    }
  };

  router.post('/v1/privacy/requests', admin, async (req, res) => {
    const body = parseOr400(PrivacyRequestSchema, req.body, 'privacy request');
    let keys: string[];
    try {
      keys = identityKeysOf(body.identity.type, body.identity.value, config.DMP_DEFAULT_PHONE_REGION);
    } catch (error) {
      if (!(error instanceof IdentityError)) throw error;
      // Well-formed as a request, but no profile can hold such an identity (as for a lookup or an unlink).
      throw new ProblemError(404, 'identity-not-found', 'No profile can have this identity', [{ path: 'identity.value', message: error.message }]);
    }
    // A placeholder many people send (`0`, `test@example.com`) joins no profile: erasing it would drop every later event carrying it, real ids beside it too.
    if (keys.some(blocked)) {
      throw new ProblemError(404, 'identity-not-found', 'No profile can have this identity', [{ path: 'identity.value', message: 'a placeholder value many people send (the identity blocklist): it names no one' }]);
    }
    // Named by the stored form's key, whatever the store holds now (a repeat finds the same request); the
    // workflow also looks under the others (an id an older version kept as sent) — only those the store
    // holds: such a key is an address or a phone number as sent, not to be written down for nothing.
    const held = async (other: string) => (await identities.reload([other])).has(other) || (await expired.naming(other)).length > 0;
    const [key, ...asSent] = keys;
    // An id with no stored form today (one holding an address inside it) is named only as sent: a new request only while the store holds it.
    const refuseUnheld = async () => {
      if (!storable(body.identity) && !(await held(key))) {
        throw new ProblemError(404, 'identity-not-found', 'No profile holds this identity', [{ path: 'identity.value', message: 'no profile holds it, and it would not be kept as sent today' }]);
      }
    };
    const alsoKeys = (await Promise.all(asSent.map(async (other) => ((await held(other)) ? [other] : [])))).flat();
    const subject = subjectHash(await saltOf(), key);
    const candidates = Array.from({ length: MAX_REQUESTS_PER_SUBJECT }, (_, n) => privacyRequestId(body.type, subject, n + 1));
    const open = (doc: PrivacyRequestDoc | null | undefined): doc is PrivacyRequestDoc => !!doc && doc.state !== 'completed' && doc.state !== 'failed';
    /** The same request, still open (its workflow started again if an earlier attempt stopped short). */
    const answerOpen = async (doc: PrivacyRequestDoc) => {
      await startPrivacyRequest(temporal, store.db.databaseName, doc._id, doc.type, config);
      res.status(202).location(`/v1/privacy/requests/${doc._id}`).json({ id: doc._id, statusUrl: `/v1/privacy/requests/${doc._id}` });
    };
    for (let n = 0; n < candidates.length; n += 10) {
      const existing = await requests.getMany(candidates.slice(n, n + 10));
      for (const id of candidates.slice(n, n + 10)) {
        const doc = existing.get(id);
        if (open(doc)) return answerOpen(doc);
        if (doc) continue;
        await refuseUnheld();
        const receivedAt = new Date();
        const request: PrivacyRequestDoc = {
          _id: id,
          type: body.type,
          subject: `${key.slice(0, key.indexOf(':'))}:${subject}`,
          state: 'received',
          requestedBy: body.requestedBy ?? null,
          receivedAt,
          deadline: deadlineOf(receivedAt),
          target: targetOf(receivedAt),
          steps: STEPS_OF[body.type].map((name) => ({ name, state: 'pending', at: null, touched: {} })),
          destinations: [],
          completedAt: null,
          error: null,
          result: null,
        };
        if (!(await requests.create(request, key, alsoKeys))) {
          // A concurrent repeat made this one first: the same request while it is open, else the next place.
          const made = await requests.get(id);
          if (open(made)) return answerOpen(made);
          continue;
        }
        await startPrivacyRequest(temporal, store.db.databaseName, id, body.type, config);
        res.status(202).location(`/v1/privacy/requests/${id}`).json({ id, statusUrl: `/v1/privacy/requests/${id}` });
        return;
      }
    }
    throw new ProblemError(409, 'too-many-requests-for-subject', 'This subject has made too many requests of this type', [{ path: 'identity', message: `${MAX_REQUESTS_PER_SUBJECT} requests of type ${body.type} already` }]);
  });

  router.get('/v1/privacy/requests', admin, async (req, res) => {
    const query = parseOr400(PrivacyListQuerySchema, req.query, 'privacy request list query');
    res.json({ requests: (await requests.list(query.state, query.limit)).map((doc) => privacyView(doc)) });
  });

  router.get('/v1/privacy/requests/:id', admin, async (req, res) => {
    const doc = await found(String(req.params.id));
    res.json(privacyView(doc, doc.type === 'erase' ? await marks.lateEventsOf(doc._id) : 0));
  });

  router.get('/v1/privacy/requests/:id/export', admin, async (req, res) => {
    const doc = await found(String(req.params.id));
    if (doc.type !== 'access') throw new ProblemError(404, 'no-export', 'Only an access request has an export', [{ path: 'params.id', message: `${doc._id} is a ${doc.type} request` }]);
    if (doc.state !== 'completed') throw new ProblemError(409, 'not-ready', 'The export is not ready', [{ path: 'params.id', message: `the request is ${doc.state}` }]);
    const json = await requests.readExport(doc);
    if (json === null) throw new ProblemError(404, 'no-export', 'The export is no longer held', [{ path: 'params.id', message: 'removed' }]);
    res.status(200).type('application/json').attachment(`${doc._id}.json`).send(json);
  });

  return router;
}

export function registerPrivacyPaths({ registry, problem, json, adminKey }: OpenApiParts): void {
  const security = [{ [adminKey]: [] }];
  const admin = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  const idParam = z.object({ id: z.string() });
  registry.registerPath({
    method: 'post',
    path: '/v1/privacy/requests',
    summary: "Make a data subject's privacy request: erase (removed from every store and every partner, a salted tombstone kept), access (a JSON export of everything held about them), or opt-out (no more profiling, segments or exports, and a removal at every partner)",
    description:
      'One durable `privacyRequest` workflow per request, its id deterministic per subject and type (asking again while one is open returns it). The identity is normalized and hashed as at collection; the request keeps only a salted hash of it (the salt: DMP_PRIVACY_SALT, or one made for the store). An erasure tombstones every identity of the subject (salted hashes: later events naming one are counted and dropped at the door and at the drains), removes the subject from every collection — shared event chunks and routed batches are rewritten without their events, the data of others in them untouched — checks that nothing is left, and removes them at each partner. An opt-out marks the profile documents (the mark survives merges) and takes the person out of every segment at once. Both export each destination that held the subject until its partner confirms the removal (`destinations`, the ledger).',
    security,
    request: { body: { content: { 'application/json': { schema: PrivacyRequestSchema } } } },
    responses: {
      202: { description: 'The request, recorded and started (or the open one)', ...json(z.object({ id: z.string(), statusUrl: z.string() })) },
      400: problem('Invalid body (the field is named)'),
      ...admin,
      404: problem('No profile can have this identity: `identity.value` does not normalize as its type (not an email, a phone number, an advertising id…); or it is a placeholder many people send, on the identity blocklist (`0`, `test@example.com`, an all-zero ad id, DMP_IDENTITY_BLOCKLIST), which joins no profile — erasing it would drop every later event carrying it; or it has no stored form today (a customer id holding an address inside it) and no profile holds it as an older version kept it'),
      409: problem('Too many requests of this type about this subject'),
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/privacy/requests',
    summary: 'Privacy requests, newest first, optionally in one state',
    security,
    request: { query: PrivacyListQuerySchema },
    responses: { 200: { description: 'The requests', ...json(z.object({ requests: z.array(PrivacyRequestViewSchema) })) }, 400: problem('Invalid query'), ...admin },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/privacy/requests/{id}',
    summary: 'Where a privacy request stands: its steps (each audited), deadline, target and result',
    security,
    request: { params: idParam },
    responses: { 200: { description: 'The request', ...json(PrivacyRequestViewSchema) }, ...admin, 404: problem('No such request') },
  });
  registry.registerPath({
    method: 'get',
    path: '/v1/privacy/requests/{id}/export',
    summary: "An access request's export: the profile, its identities with their sources, events, segments, and the partners holding the subject",
    security,
    request: { params: idParam },
    responses: {
      200: { description: 'The export (a JSON download)', ...json(AccessExportSchema) },
      ...admin,
      404: problem('No such request, not an access request, or the export is gone'),
      409: problem('The request has not completed'),
    },
  });
}
