import { Router, type RequestHandler } from 'express';
import type { Client } from '@temporalio/client';
import { z } from 'zod';
import type { Config } from '../config';
import { newExport } from '../activities/exports';
import { CONNECTORS } from '../connectors/registry';
import type { Connector } from '../connectors/connector';
import { zodIssuesToFieldErrors } from '../domain/collect';
import {
  changedConsent,
  CreateDestinationRequestSchema,
  DestinationConsentSchema,
  ExportListQuerySchema,
  ExportRequestSchema,
  exportIdFor,
  PartnerIdTypeSchema,
  PatchDestinationRequestSchema,
  partnerOfIdType,
  segmentIdList,
  type DestinationView,
  type ExportView,
  type IdType,
} from '../domain/destinations';
import { deliveryUrlSchema } from '../domain/outboundUrls';
import { destinationScheduleId } from '../domain/workflowIds';
import type { Store } from '../store/db';
import { DestinationStore, newDestinationId, type DestinationDefinition, type DestinationDoc, type ExportDoc } from '../store/destinations';
import { PartnerStore } from '../store/partners';
import { SegmentStore } from '../store/segments';
import { newScheduleSyncMark, type ScheduleSyncMark } from '../store/scheduleSyncs';
import { deleteDestinationSchedule, settleDestinationSchedule, startDestinationExport, startGated } from '../temporal/client';
import { StartGates, startGateKey } from '../store/startGates';
import { checkOutboundUrl } from './outboundUrl';
import { holdsHiddenQuery, SECRET_SET, urlShown } from '../domain/secrets';
import { RetiredIds } from '../store/retiredIds';
import { createIdentity, sameCreate } from './idempotency';
import { optionalJsonBody, parseOr400, ProblemError } from './problem';

/** The config field each connector names its partner's address with: its query values are never echoed (see urlShown). */
const URL_FIELD = 'url';
/** Config fields that change how a partner is sent to, not which partner or list receives. */
const TUNING = new Set(['batchSize', 'requestsPerSecond', 'concurrency', 'minAudience', 'ttlMinutes', 'format']);

export interface DestinationsRouterDeps {
  store: Store;
  temporal: Client;
  config: Pick<Config, 'DMP_TASK_QUEUE' | 'DMP_DESTINATION_ALLOWLIST'>;
  admin: RequestHandler;
}

/**
 * A connector's config as the document states it: the connector's own schema, its delivery URL
 * (connectors name it `url`) https or an allowlisted http host, without credentials.
 */
function configSchema(connector: Connector, allowlist: ReadonlySet<string>) {
  return connector.config.and(z.looseObject({ url: deliveryUrlSchema(allowlist).optional() }));
}

/** The id types a connector takes, refused with a message listing them. */
function idTypeSchema(connector: Connector) {
  const error = `the ${connector.name} connector takes ${connector.idTypes.join(', ')}${connector.partnerIds ? ', partner:<partner id>' : ''}`;
  const own = z.enum(connector.idTypes as [IdType, ...IdType[]], { error });
  return connector.partnerIds ? z.union([own, PartnerIdTypeSchema], { error }) : own;
}

/** A stored destination's connector, unless this version does not know it. */
const knownConnector = (name: string): Connector | undefined => (Object.hasOwn(CONNECTORS, name) ? CONNECTORS[name] : undefined);

const tooManySegments = (connector: string, max: number) => `a ${connector} destination sends at most ${max} segment${max === 1 ? '' : 's'} to its list: make one destination per segment`;

/** One shape per connector, as the document states it (`oneOf` on `connector`): its config and the id types it takes. */
export function createDestinationRequestSchema(allowlist: ReadonlySet<string>) {
  const shapes = Object.values(CONNECTORS).map((connector) =>
    z
      .object({
        ...CreateDestinationRequestSchema.shape,
        connector: z.literal(connector.name),
        config: configSchema(connector, allowlist),
        idType: idTypeSchema(connector),
        ...(connector.maxSegments !== undefined && {
          segments: segmentIdList(connector.maxSegments, tooManySegments(connector.name, connector.maxSegments)).openapi({ description: 'One segment a destination: its partner list is one audience' }),
        }),
      })
      .strict(),
  );
  return z.discriminatedUnion('connector', shapes as [(typeof shapes)[number], ...typeof shapes]).openapi('CreateDestinationRequest', {
    example: { name: 'CRM webhook', connector: 'webhook', config: { url: 'https://crm.example.com/dmp', secret: 'a-long-shared-secret' }, segments: ['seg_0123456789abcdef'], idType: 'crm_id', schedule: { every: 'PT1H' } },
  });
}

/** A secret sent as the API shows a stored one (`"(set)"`) where none is stored: it would be kept as the secret. */
function refuseSecretPlaceholders(connector: Connector, config: Record<string, unknown>): void {
  const placeholders = connector.secrets
    .filter((field) => config[field] === SECRET_SET)
    .map((field) => ({ path: `config.${field}`, message: `"${SECRET_SET}" stands for a stored secret, and none is stored: send the secret itself` }));
  const url = config[URL_FIELD];
  if (typeof url === 'string' && holdsHiddenQuery(url)) {
    placeholders.push({ path: `config.${URL_FIELD}`, message: `"${SECRET_SET}" stands for a query value the API hides, and this URL is not the stored one: send the values themselves` });
  }
  if (placeholders.length > 0) throw new ProblemError(409, 'secret-needed', 'No secret is stored to keep: send it', placeholders);
}

/** The config's delivery URLs resolved; see checkOutboundUrl (the document's pattern leaves only what resolving tells). */
async function checkDeliveryUrls(connector: Connector, config: Record<string, unknown>, allowlist: Set<string>): Promise<void> {
  for (const url of connector.urls(config)) await checkOutboundUrl(url, allowlist, 'config.url');
}

/** A config checked against the destination's own connector: one that does not fit it conflicts with the destination (409). */
function configOf(connector: Connector, value: Record<string, unknown>, allowlist: ReadonlySet<string>): Record<string, unknown> {
  const parsed = configSchema(connector, allowlist).safeParse(value);
  if (!parsed.success) {
    const errors = zodIssuesToFieldErrors(parsed.error.issues).map((error) => ({ path: error.path === '(body)' ? 'config' : `config.${error.path}`, message: error.message }));
    throw new ProblemError(409, 'config-mismatch', `The config does not fit the destination's connector (${connector.name})`, errors);
  }
  return parsed.data as Record<string, unknown>;
}

export function destinationView(doc: DestinationDoc, databaseName: string): DestinationView {
  const connector = knownConnector(doc.connector);
  // A connector this version does not know: its secrets are unknown too, so nothing of its config is shown.
  const config = connector ? { ...doc.config } : {};
  for (const field of connector?.secrets ?? []) if (config[field] !== undefined) config[field] = SECRET_SET;
  if (typeof config[URL_FIELD] === 'string') config[URL_FIELD] = urlShown(config[URL_FIELD]);
  const iso = (date: Date) => date.toISOString();
  return {
    id: doc._id,
    name: doc.name,
    connector: doc.connector,
    config,
    segments: doc.segments,
    idType: doc.idType,
    schedule: doc.schedule,
    nearRealTime: doc.nearRealTime,
    labelsAllowed: doc.labelsAllowed,
    consent: doc.consent,
    holdoutShare: doc.holdoutShare ?? 0,
    state: doc.state,
    held: Object.fromEntries(Object.entries(doc.held).map(([segment, held]) => [segment, { ids: held.ids, uncertain: held.uncertain, sentAllAt: held.sentAllAt?.toISOString() ?? null }])),
    lastExport: doc.lastExport && {
      exportId: doc.lastExport.exportId,
      state: doc.lastExport.state,
      startedAt: iso(doc.lastExport.startedAt),
      finishedAt: doc.lastExport.finishedAt && iso(doc.lastExport.finishedAt),
      failingSince: doc.lastExport.state === 'failed' ? iso(doc.lastExport.failingSince ?? doc.lastExport.finishedAt ?? doc.lastExport.startedAt) : null,
    },
    scheduleId: doc.schedule || doc.nearRealTime ? destinationScheduleId(databaseName, doc._id) : null,
    partnerWaitUntil: doc.partnerWaitUntil ? iso(doc.partnerWaitUntil) : null,
    createdAt: iso(doc.createdAt),
    updatedAt: iso(doc.updatedAt),
  };
}

export function exportView(doc: ExportDoc): ExportView {
  const segments = (doc.plan?.segments ?? []).map(({ before: _before, batches: _batches, refused: _refused, runId: _runId, ...segment }) => segment);
  const sum = (pick: (segment: (typeof segments)[number]) => number) => segments.reduce((total, segment) => total + pick(segment), 0);
  const matched = sum((segment) => segment.matched);
  const unmatched = sum((segment) => segment.unmatched);
  const labels: Record<string, number> = {};
  for (const segment of segments) for (const [label, count] of Object.entries(segment.withheld.labels)) labels[label] = (labels[label] ?? 0) + count;
  return {
    exportId: doc._id,
    destinationId: doc.destinationId,
    state: doc.state,
    full: doc.full,
    trigger: doc.trigger,
    adds: sum((segment) => segment.adds),
    removes: sum((segment) => segment.removes),
    matched,
    unmatched,
    matchRate: matched + unmatched > 0 ? matched / (matched + unmatched) : null,
    batches: doc.plan?.batches ?? 0,
    batchesConfirmed: doc.batchesConfirmed,
    rejected: doc.rejected,
    // Exports planned before holdouts existed count none.
    withheld: { consent: sum((segment) => segment.withheld.consent), labels, holdout: sum((segment) => segment.withheld.holdout ?? 0), optOut: sum((segment) => segment.withheld.optOut ?? 0) },
    segments: (doc.plan?.segments ?? []).map(({ before: _before, batches: _batches, runId: _runId, refused, ...segment }) => ({ ...segment, ...(refused && { refused }) })),
    startedAt: doc.startedAt.toISOString(),
    finishedAt: doc.finishedAt && doc.finishedAt.toISOString(),
    error: doc.error,
  };
}

/** Destinations (partners audiences are sent to) and their exports; every route takes the admin key. */
export function destinationsRouter({ store, temporal, config, admin }: DestinationsRouterDeps): Router {
  const destinations = new DestinationStore(store);
  const retiredIds = new RetiredIds(store);
  const gates = new StartGates(store);
  const segments = new SegmentStore(store);
  const partners = new PartnerStore(store);
  const databaseName = store.db.databaseName;
  const allowlist = new Set(config.DMP_DESTINATION_ALLOWLIST);
  const createRequest = createDestinationRequestSchema(allowlist);
  const router = Router();

  async function requireDestination(id: string): Promise<DestinationDoc> {
    const doc = await destinations.get(id);
    if (!doc) throw new ProblemError(404, 'not-found', 'No such destination', undefined, id);
    return doc;
  }

  async function checkSegments(ids: string[]): Promise<void> {
    const known = new Set((await segments.list()).map((doc) => doc._id));
    const missing = ids.map((id, index) => ({ id, index })).filter(({ id }) => !known.has(id));
    if (missing.length > 0) throw new ProblemError(404, 'segment-not-found', 'No such segment', missing.map(({ id, index }) => ({ path: `segments.${index}`, message: `segment ${id} does not exist` })));
  }

  /** A change of segments a destination's connector cannot take (its partner keeps one audience per destination) conflicts with it. */
  function checkSegmentCount(connector: Connector, ids: string[]): void {
    if (connector.maxSegments !== undefined && ids.length > connector.maxSegments) {
      throw new ProblemError(409, 'config-mismatch', "The segments do not fit the destination's connector", [{ path: 'segments', message: tooManySegments(connector.name, connector.maxSegments) }]);
    }
  }

  /** A partner id type needs the sync partner whose match table it reads. */
  async function checkPartner(idType: IdType): Promise<void> {
    const partner = partnerOfIdType(idType);
    if (partner !== null && !(await partners.get(partner))) throw new ProblemError(404, 'partner-not-found', 'No such sync partner', [{ path: 'idType', message: `sync partner ${partner} does not exist` }]);
  }

  router.post('/v1/destinations', admin, async (req, res) => {
    const body = parseOr400(createRequest, req.body, 'destination');
    const connector = CONNECTORS[body.connector];
    await checkPartner(body.idType);
    await checkSegments(body.segments);
    const connectorConfig = body.config as Record<string, unknown>;
    refuseSecretPlaceholders(connector, connectorConfig);
    await checkDeliveryUrls(connector, connectorConfig, allowlist);
    const at = new Date();
    const { id, createdWith } = await createIdentity(req, 'dst', newDestinationId, retiredIds);
    const doc: DestinationDefinition = {
      _id: id,
      name: body.name,
      connector: connector.name,
      config: connectorConfig,
      segments: body.segments,
      idType: body.idType,
      schedule: body.schedule ?? null,
      nearRealTime: body.nearRealTime ?? false,
      labelsAllowed: body.labelsAllowed ?? [],
      consent: body.consent ?? DestinationConsentSchema.parse({}),
      holdoutShare: body.holdoutShare ?? 0,
      state: 'active',
      scheduleSync: newScheduleSyncMark(at, true),
      createdAt: at,
      updatedAt: at,
      ...(createdWith && { createdWith }),
    };
    let made: DestinationDoc = { ...doc, held: {}, resend: false, resentFor: null, lastExport: null };
    if (!(await destinations.create(doc))) {
      // The same create again: answered as the first was, finishing it if it stopped before its schedule was made.
      made = sameCreate(await destinations.get(id), createdWith);
      if (!made.scheduleSync?.create) return void res.status(201).json(destinationView(made, databaseName));
    }
    try {
      const { exists } = await settleDestinationSchedule(temporal, databaseName, destinations.scheduleSyncs, id, made.scheduleSync as ScheduleSyncMark, config);
      // Gone meanwhile: a create this slow was taken for one never answered, and undone (retention).
      if (!exists) throw new ProblemError(503, 'unavailable', 'The destination took too long to create and was undone; send it again');
    } catch (error) {
      // No destination without the schedule it asked for (nor a schedule whose creation answered too
      // late) — unless a repeat of this create, under its key, finished it meanwhile: then it stands.
      if (await destinations.scheduleSyncs.deleteIfMarked(id, made.scheduleSync as ScheduleSyncMark)) {
        await destinations.removeExportState(id);
        await deleteDestinationSchedule(temporal, databaseName, id).catch(() => undefined);
      }
      throw error;
    }
    res.status(201).json(destinationView(made, databaseName));
  });

  router.get('/v1/destinations', admin, async (_req, res) => {
    res.json({ destinations: (await destinations.list()).map((doc) => destinationView(doc, databaseName)) });
  });

  router.get('/v1/destinations/:id', admin, async (req, res) => {
    res.json(destinationView(await requireDestination(req.params.id as string), databaseName));
  });

  router.patch('/v1/destinations/:id', admin, async (req, res) => {
    const doc = await requireDestination(req.params.id as string);
    const patch = parseOr400(PatchDestinationRequestSchema, req.body, 'destination change');
    const set: Partial<DestinationDefinition> = { updatedAt: new Date(), scheduleSync: newScheduleSyncMark() };
    const connector = knownConnector(doc.connector);
    if (patch.name !== undefined) set.name = patch.name;
    if (patch.config !== undefined) {
      if (!connector) throw new ProblemError(409, 'config-mismatch', 'The destination\'s connector is not one this version knows', [{ path: 'config', message: `connector ${doc.connector}` }]);
      // Secrets left out (or sent back as shown) keep their stored value: the API never hands them out.
      const given = { ...patch.config };
      // The address sent back as shown is the stored one, its query values included.
      const storedUrl = doc.config[URL_FIELD];
      if (typeof storedUrl === 'string' && given[URL_FIELD] === urlShown(storedUrl)) given[URL_FIELD] = storedUrl;
      const kept = connector.secrets.filter((field) => (given[field] === undefined || given[field] === SECRET_SET) && doc.config[field] !== undefined);
      for (const field of kept) given[field] = doc.config[field];
      // null drops a stored secret, for a connector that can do without it (a required one is then missing: a 409 naming it, as any config that does not fit).
      for (const field of connector.secrets) if (given[field] === null) delete given[field];
      refuseSecretPlaceholders(connector, given);
      set.config = configOf(connector, given, allowlist);
      // A kept secret never goes to another address than the one it was given for (compared on the whole new config, once valid).
      if (kept.length > 0 && JSON.stringify(connector.urls(doc.config)) !== JSON.stringify(connector.urls(set.config))) {
        throw new ProblemError(409, 'secret-needed', 'The address changes: send the secret again', kept.map((field) => ({ path: `config.${field}`, message: 'send the secret again when the address changes' })));
      }
      await checkDeliveryUrls(connector, set.config, allowlist);
      // Another partner list or address holds none of what the old one did: the next export sends everything.
      const where = (config: Record<string, unknown>) => JSON.stringify(Object.entries(config).filter(([field]) => !TUNING.has(field) && !connector.secrets.includes(field)).sort());
      if (where(set.config) !== where(doc.config)) set.addressChangedAt = set.updatedAt;
    }
    if (patch.segments !== undefined) {
      if (connector) checkSegmentCount(connector, patch.segments);
      await checkSegments(patch.segments);
      set.segments = patch.segments;
    }
    if (patch.schedule !== undefined) set.schedule = patch.schedule;
    if (patch.nearRealTime !== undefined) set.nearRealTime = patch.nearRealTime;
    if (patch.labelsAllowed !== undefined) set.labelsAllowed = patch.labelsAllowed;
    if (patch.consent !== undefined) set.consent = changedConsent(doc.consent, patch.consent);
    if (patch.holdoutShare !== undefined) set.holdoutShare = patch.holdoutShare;
    await destinations.update(doc._id, set);
    await settleDestinationSchedule(temporal, databaseName, destinations.scheduleSyncs, doc._id, set.scheduleSync as ScheduleSyncMark, config);
    res.json(destinationView({ ...doc, ...set }, databaseName));
  });

  router.delete('/v1/destinations/:id', admin, async (req, res) => {
    const doc = await requireDestination(req.params.id as string);
    // Its key's id is never made again: an export of it finishing late finds no new destination there.
    if (doc.createdWith) await retiredIds.retire(doc._id);
    // Paused and marked first: one whose removal was cut short (the API stopped) exports nothing and
    // gets its schedule back, paused, until the same DELETE finishes it.
    await destinations.update(doc._id, { state: 'paused', scheduleSync: newScheduleSyncMark() });
    await deleteDestinationSchedule(temporal, databaseName, doc._id);
    await destinations.remove(doc._id);
    // Again: a change saved meanwhile may have made the schedule anew (it removes it too once it reads the destination gone).
    await deleteDestinationSchedule(temporal, databaseName, doc._id);
    res.status(204).end();
  });

  for (const [action, state] of [['pause', 'paused'], ['resume', 'active']] as const) {
    router.post(`/v1/destinations/:id/${action}`, admin, async (req, res) => {
      const doc = await requireDestination(req.params.id as string);
      const scheduleSync = newScheduleSyncMark();
      await destinations.update(doc._id, { state, scheduleSync });
      await settleDestinationSchedule(temporal, databaseName, destinations.scheduleSyncs, doc._id, scheduleSync, config);
      res.json(destinationView({ ...doc, state }, databaseName));
    });
  }

  router.post('/v1/destinations/:id/exports', admin, async (req, res) => {
    const doc = await requireDestination(req.params.id as string);
    const body = parseOr400(ExportRequestSchema, optionalJsonBody(req), 'export request');
    if (doc.state === 'paused') throw new ProblemError(409, 'paused', 'The destination is paused', [{ path: 'id', message: 'resume it first' }]);
    // One export per destination and second: a second asked for within the same second is the next second's.
    const startedAt = new Date();
    let exportId = '';
    for (let at = Math.floor(startedAt.getTime() / 1000) * 1000; ; at += 1000) {
      exportId = exportIdFor(doc._id, new Date(at));
      if ((await destinations.openExport(newExport(exportId, doc._id, body.full ?? false, 'api', startedAt))).startedAt.getTime() === startedAt.getTime()) break;
    }
    // Nothing will run an abandoned start: recorded as failed, not left running for ever.
    await startGated(
      gates,
      startGateKey.export(exportId),
      () => startDestinationExport(temporal, databaseName, doc._id, exportId, body.full ?? false, config),
      () => destinations.failUnstarted(exportId, 'its workflow could not be started', new Date()),
    );
    res.status(202).json({ exportId });
  });

  router.get('/v1/destinations/:id/exports', admin, async (req, res) => {
    const doc = await requireDestination(req.params.id as string);
    const query = parseOr400(ExportListQuerySchema, req.query, 'query');
    res.json({ exports: (await destinations.listExports(doc._id, query.limit)).map(exportView) });
  });

  router.get('/v1/destinations/:id/exports/:exportId', admin, async (req, res) => {
    const found = await destinations.getExport(req.params.exportId as string);
    if (!found || found.destinationId !== req.params.id) throw new ProblemError(404, 'not-found', 'No such export', undefined, req.params.exportId as string);
    res.json(exportView(found));
  });

  return router;
}
