import { Router } from 'express';
import { z } from 'zod';
import { DMP_COOKIE_NAME, newCookieId } from '../domain/cookies';
import { partnerOfIdType } from '../domain/destinations';
import { identityKey, partnerUserIdProblem } from '../domain/identity';
import { identityBlocklist } from '../domain/identityBlocklist';
import {
  cookieSyncEventId,
  expandRedirect,
  matchLimits,
  partnerRequestSchemas,
  PartnerViewSchema,
  readSyncQuery,
  REDIRECT_PARAMS,
  SyncQuerySchema,
  syncAnswer,
  syncConsentInput,
  syncPathOf,
  type PartnerView,
  type SyncDecision,
  type SyncWrite,
} from '../domain/partners';
import { logger } from '../logger';
import { sentGpc } from './globalPrivacyControl';
import { DestinationStore } from '../store/destinations';
import { MatchTableStore } from '../store/matchTables';
import { PartnerStore, type PartnerDoc } from '../store/partners';
import { SourceStore, type SourceDoc } from '../store/sources';
import type { OpenApiParts } from './openapi';
import { platformCookieOf, setPlatformCookie } from './platformCookie';
import { parseOr400, ProblemError } from './problem';
import type { RouterDeps } from './routerDeps';

export const SYNC_PATH = '/v1/sync/:partner';

/** How long the sync path trusts a partner (and its source) it read; changes made through this process apply at once. */
const PARTNER_CACHE_MS = 30_000;

function partnerView(doc: PartnerDoc): PartnerView {
  return {
    id: doc._id,
    name: doc.name,
    redirectUrl: doc.redirectUrl,
    sourceId: doc.sourceId,
    syncPath: syncPathOf(doc._id),
    createdAt: doc.createdAt.toISOString(),
    updatedAt: doc.updatedAt.toISOString(),
  };
}

/**
 * Sync partners (admin key) and the cookie sync itself (`GET /v1/sync/:partner`, called by
 * browsers): partner id ↔ our cookie id recorded in the match tables, then a redirect to the
 * partner's configured match URL with our id.
 */
export function partnersRouter({ store, config, admin, collector }: RouterDeps): Router {
  const partners = new PartnerStore(store);
  const sources = new SourceStore(store);
  const destinations = new DestinationStore(store);
  const matches = new MatchTableStore(store, matchLimits(config));
  const blocked = identityBlocklist(config.DMP_IDENTITY_BLOCKLIST, config.DMP_DEFAULT_PHONE_REGION);
  const requests = partnerRequestSchemas(new Set(config.DMP_DESTINATION_ALLOWLIST));
  const cache = new Map<string, { partner: PartnerDoc; source: SourceDoc | null; until: number }>();
  const router = Router();

  async function requirePartner(id: string): Promise<PartnerDoc> {
    const doc = await partners.get(id);
    if (!doc) throw new ProblemError(404, 'partner-not-found', 'No such partner', [{ path: 'params.id', message: `no partner ${id}` }]);
    return doc;
  }

  async function checkSource(sourceId: string | null | undefined): Promise<void> {
    if (sourceId && !(await sources.get(sourceId))) throw new ProblemError(404, 'source-not-found', 'No such source', [{ path: 'sourceId', message: `source ${sourceId} does not exist` }]);
  }

  router.post('/v1/partners', admin, async (req, res) => {
    const body = parseOr400(requests.create, req.body, 'partner');
    await checkSource(body.sourceId);
    const at = new Date();
    const doc: PartnerDoc = { _id: body.id, name: body.name, redirectUrl: body.redirectUrl, sourceId: body.sourceId ?? null, createdAt: at, updatedAt: at };
    const created = await partners.create(doc);
    if (created === 'exists') throw new ProblemError(409, 'partner-exists', 'A partner with this id exists', [{ path: 'id', message: `partner ${body.id} exists` }]);
    if (created === 'retired') {
      throw new ProblemError(409, 'partner-id-retired', 'A deleted partner had this id', [
        { path: 'id', message: `partner ${body.id} was deleted; profiles still hold its users' ids (partner_uid ${body.id}:…), so the id is not reused: choose another` },
      ]);
    }
    res.status(201).json(partnerView(doc));
  });

  router.get('/v1/partners', admin, async (_req, res) => {
    res.json({ partners: (await partners.list()).map(partnerView) });
  });

  router.get('/v1/partners/:id', admin, async (req, res) => {
    res.json(partnerView(await requirePartner(req.params.id as string)));
  });

  router.patch('/v1/partners/:id', admin, async (req, res) => {
    const doc = await requirePartner(req.params.id as string);
    const patch = parseOr400(requests.patch, req.body, 'partner change');
    await checkSource(patch.sourceId);
    const set = {
      ...(patch.name !== undefined && { name: patch.name }),
      ...(patch.redirectUrl !== undefined && { redirectUrl: patch.redirectUrl }),
      ...(patch.sourceId !== undefined && { sourceId: patch.sourceId }),
      updatedAt: new Date(),
    };
    await partners.update(doc._id, set);
    cache.delete(doc._id);
    res.json(partnerView({ ...doc, ...set }));
  });

  router.delete('/v1/partners/:id', admin, async (req, res) => {
    const doc = await requirePartner(req.params.id as string);
    const exporting = (await destinations.list()).filter((destination) => partnerOfIdType(destination.idType) === doc._id);
    const feeding = (await sources.list()).filter((source) => source.feed?.mapping.identities[`partner:${doc._id}`] !== undefined);
    if (exporting.length + feeding.length > 0) {
      throw new ProblemError(409, 'partner-in-use', 'Destinations export or feeds map this partner\'s ids', [
        ...exporting.map((destination) => ({ path: 'id', message: `destination ${destination._id} has idType partner:${doc._id}` })),
        ...feeding.map((source) => ({ path: 'id', message: `feed source ${source._id} maps a partner:${doc._id} column` })),
      ]);
    }
    await partners.retire(doc._id, new Date());
    cache.delete(doc._id);
    res.status(204).end();
  });

  async function syncTarget(id: string): Promise<{ partner: PartnerDoc; source: SourceDoc | null }> {
    const cached = cache.get(id);
    if (cached && cached.until > Date.now()) return cached;
    const partner = await partners.get(id);
    if (!partner) throw new ProblemError(404, 'partner-not-found', 'No such sync partner', [{ path: 'params.partner', message: `no partner ${id}` }]);
    const source = partner.sourceId ? await sources.get(partner.sourceId) : null;
    if (partner.sourceId && !source) logger.warn({ partnerId: id, sourceId: partner.sourceId }, "a sync partner's source does not exist; syncs record no events");
    const target = { partner, source, until: Date.now() + PARTNER_CACHE_MS };
    cache.set(id, target);
    return target;
  }

  /**
   * Appends the sync to the partner's source: one event per partner id, cookie and day (repeats are
   * duplicates). It carries the partner's user id as an identity (`partner_uid`), so the sync is an
   * edge of the identity graph: two of our cookies the partner knows as one user are one person.
   */
  async function appendSyncEvent(source: SourceDoc, partner: PartnerDoc, sync: SyncDecision, cookieId: string, at: Date): Promise<SyncWrite> {
    const signals = syncConsentInput(sync.signals);
    // `gdpr=0` is a consent signal of its own, as on the pixel: a source that requires one profiles the sync.
    const notApplicable = sync.signals.gdpr === '0' && signals.tcf === undefined;
    // A placeholder the partner sends for users it does not know is no identity: the sync is still an event of the cookie.
    const partnerUserId = `${partner._id}:${sync.puid}`;
    const event = {
      id: cookieSyncEventId(partner._id, sync.puid, cookieId, at),
      type: 'cookie_sync',
      timestamp: at.toISOString(),
      identities: { cookie_id: cookieId, ...(partnerUserIdProblem(partnerUserId) === null && { partner_uid: partnerUserId }) },
      properties: { partner: partner._id },
      ...((Object.keys(signals).length > 0 || notApplicable) && { consent: { ...signals, ...(notApplicable && { tcfNotApplicable: true as const }) } }),
    };
    const result = await collector.collect(source, [event], at);
    if (result.rejected.length === 0) return 'done';
    logger.warn({ sourceId: source._id, partnerId: partner._id, errors: result.rejected[0].errors }, 'cookie_sync event refused');
    return 'none';
  }

  router.get(SYNC_PATH, async (req, res) => {
    const { partner, source } = await syncTarget(req.params.partner as string);
    const read = readSyncQuery(req.query as Record<string, unknown>, { gpc: sentGpc(req) }, source?.consent?.tcfVendorId);
    if (!read.ok) throw new ProblemError(400, 'validation', 'Invalid sync request', read.errors);
    const { sync } = read;
    let cookieId: string | null = null;
    // A HEAD (a link checker, a prefetch) is answered as a sync without consent is, recording nothing.
    if (!sync.refused && req.method === 'GET') {
      const at = new Date();
      const known = platformCookieOf(req);
      cookieId = known ?? newCookieId();
      // A placeholder the partner sends for users it does not know matches nobody: recorded, it would map that partner's every unknown user to this cookie.
      const partnerUserId = `${partner._id}:${sync.puid}`;
      const partnerKey = identityKey({ type: 'partner_uid', value: partnerUserId });
      // An erased subject's browser or partner id syncing again: its event is dropped at the door, and its match is not recorded either.
      const recordMatch = async (id: string): Promise<SyncWrite> => {
        if (partnerUserIdProblem(partnerUserId) !== null || blocked(partnerKey)) return 'none';
        if (await collector.namesErased([partnerKey, identityKey({ type: 'cookie_id', value: id })])) return 'none';
        await matches.record(partner._id, sync.puid, id, at);
        return 'done';
      };
      const appendEvent = async (id: string): Promise<SyncWrite> => (source ? appendSyncEvent(source, partner, sync, id, at) : 'none');
      // A store that fails any of these (the erasure marks' read too) ends the chain as a sync without consent does, never in a 5xx.
      const [match, event] = await Promise.allSettled([recordMatch(cookieId), appendEvent(cookieId)]);
      const written = (outcome: PromiseSettledResult<SyncWrite>): SyncWrite => (outcome.status === 'fulfilled' ? outcome.value : 'failed');
      for (const outcome of [match, event]) {
        if (outcome.status === 'rejected') logger.error({ err: outcome.reason, partnerId: partner._id }, 'cookie sync not fully recorded');
      }
      const answer = syncAnswer(known !== null, written(match), written(event));
      if (answer.setCookie) setPlatformCookie(req, res, cookieId, config.DMP_COOKIE_DOMAIN);
      // With an empty id, as without consent: the partner's chain ends normally, and its next sync records the match.
      if (!answer.sendId) cookieId = null;
    }
    res.set('Cache-Control', 'no-store');
    res.redirect(302, expandRedirect(partner.redirectUrl, cookieId, sync.signals));
  });

  return router;
}

export function registerPartnerPaths({ registry, problem, json, adminKey, config }: OpenApiParts): void {
  const idParam = z.object({ id: z.string() });
  const adminProblems = { 401: problem('No admin key'), 403: problem('Not an admin key') };
  const requests = partnerRequestSchemas(new Set(config.DMP_DESTINATION_ALLOWLIST));
  const partnerProblem = problem('Invalid body: each problem names its field — `redirectUrl` without `${DMP_UID}`, not https (http only for hosts in DMP_DESTINATION_ALLOWLIST), with an unknown macro');
  const noSource = problem('The `sourceId` names no source');
  const paths: Array<{ method: 'get' | 'post' | 'patch' | 'delete'; path: string; summary: string; request?: object; ok: [number, string, z.ZodType | null]; extra?: object }> = [
    {
      method: 'post',
      path: '/v1/partners',
      summary: 'Add a cookie-sync partner: the match URL its browsers are sent to with our id, and optionally the source that records each sync',
      request: { body: json(requests.create) },
      ok: [201, 'Created', PartnerViewSchema],
      extra: { 400: partnerProblem, 404: noSource, 409: problem('A partner with this id exists, or a deleted one had it (an id is never reused)') },
    },
    { method: 'get', path: '/v1/partners', summary: 'Every sync partner', ok: [200, 'Partners', z.object({ partners: z.array(PartnerViewSchema) })] },
    { method: 'get', path: '/v1/partners/{id}', summary: 'A sync partner', request: { params: idParam }, ok: [200, 'The partner', PartnerViewSchema], extra: { 404: problem('No such partner') } },
    {
      method: 'patch',
      path: '/v1/partners/{id}',
      summary: 'Change a sync partner (`sourceId: null` stops recording sync events); other API processes apply it within 30 seconds',
      request: { params: idParam, body: json(requests.patch) },
      ok: [200, 'The partner', PartnerViewSchema],
      extra: { 400: partnerProblem, 404: problem('No such partner, or the `sourceId` names no source') },
    },
    {
      method: 'delete',
      path: '/v1/partners/{id}',
      summary:
        "Remove a sync partner (refused while a destination exports its ids or a feed maps them): its syncs are refused from then on; its matches stay until they expire, and profiles keep its users' ids (`partner_uid`), so its id is never given to another partner",
      request: { params: idParam },
      ok: [204, 'Deleted', null],
      extra: { 404: problem('No such partner'), 409: problem('A destination has idType `partner:<id>`, or a feed maps a `partner:<id>` column; each is named') },
    },
  ];
  for (const { method, path, summary, request, ok, extra } of paths) {
    const [status, description, schema] = ok;
    registry.registerPath({
      method,
      path,
      summary,
      security: [{ [adminKey]: [] }],
      request,
      responses: { [status]: schema ? { description, ...json(schema) } : { description }, ...adminProblems, ...extra },
    });
  }

  registry.registerPath({
    method: 'get',
    path: '/v1/sync/{partner}',
    summary: "Cookie sync, called by the browser (no key): records the partner's id with our cookie id in the match tables and redirects to the partner's match URL with our id",
    description:
      `Reads the platform's cookie (\`${DMP_COOKIE_NAME}\`) or sets a new one (HttpOnly, 13 months, Path=/, SameSite=None; Secure over https — Lax over plain http, where browsers refuse SameSite=None — Domain=DMP_COOKIE_DOMAIN when set). ` +
      'Records the pair both ways (newest DMP_MATCH_CAP kept per id, for DMP_MATCH_TTL_DAYS since last seen) and, when the partner has a `sourceId`, a `cookie_sync` event (one per partner id, cookie and day) carrying the partner\'s user id as identity `partner_uid`, which joins the cookie\'s profile in the identity graph. ' +
      "The redirect target only ever comes from the partner's config: a request naming one (" +
      REDIRECT_PARAMS.map((param) => `\`${param}\``).join(', ') +
      ') is refused. Consent: where the GDPR applies (`gdpr=1`, or a TC string is sent) without consent to TCF purpose 1 (or to the vendor its source names in `tcfVendorId`), or a GPP US section or US Privacy string records an opt-out, or a TC or GPP string cannot be read, ' +
      "the cookie is neither read nor set and nothing is recorded; the partner still gets its redirect, with an empty id, so its sync chain ends normally and it sees the same consent signal. " +
      'Empty parameters and unexpanded macros (`${GDPR}`, `[GDPR]`, `%%GDPR%%`) count as absent; other parameters (cache busters) are ignored.',
    request: { params: z.object({ partner: z.string().openapi({ description: 'The partner id' }) }), query: SyncQuerySchema },
    responses: {
      302: {
        description:
          "To the partner's match URL, our id in place of `${DMP_UID}`; nothing in its place without consent, or when the store could not record the sync (the browser's cookie is then left as it was)",
        headers: {
          Location: { description: "The partner's configured match URL, expanded", schema: { type: 'string' } },
          'Set-Cookie': { description: `\`${DMP_COOKIE_NAME}\`, when the browser had no cookie id we set (never without consent)`, schema: { type: 'string' } },
        },
      },
      400: problem('Invalid query, naming the parameter: `query.puid` missing or not printable ASCII (≤ 256), `query.gdpr_consent`/`query.gpp` not made of a TC/GPP string\'s characters, `query.redirect` (or another target) given'),
      404: problem('No such partner'),
      503: problem("The store could not be read, so the partner's match URL is unknown; retry later"),
    },
  });
}
