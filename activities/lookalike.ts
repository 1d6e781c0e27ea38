import { ApplicationFailure } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { auc, definingFeatures, definitionsOverlap, HOLDOUT_SHARE, hashUnit, isDefining, MAX_PER_CLASS, MIN_FEATURE_SUPPORT, MIN_SEED_MEMBERS, retrainRunId, scoreRow, trainLogistic, type TrainingRow } from '../domain/lookalike';
import { featuresOf, MAX_MODEL_FEATURES } from '../domain/scoreModel';
import { cycleThrough, type Rule, type SubjectNeeds } from '../domain/segmentRules';
import type { Store } from '../store/db';
import { LookalikeRunStore, type LookalikeOutcome, type LookalikeRunDoc } from '../store/lookalikeRuns';
import { decodeProfile } from '../store/profiles';
import { SegmentMembership, type RealTimeStates } from '../store/segmentMembership';
import { prepareRun, SegmentRunStore } from '../store/segmentRuns';
import { ruleOf, SegmentStore, type SegmentDoc } from '../store/segments';
import { StartGates, startGateKey } from '../store/startGates';
import { startSegmentRun, syncLookalikeSchedule } from '../temporal/client';
import { heartbeat, withHeartbeats } from './heartbeat';
import { beginGated } from './startGate';
import { passPeople, peoplePassStores } from './peoplePass';

export interface LookalikeDeps {
  store: Store;
  temporal: Client;
  config: Pick<Config, 'DMP_TASK_QUEUE'>;
}

/** The pass reads whole documents itself. */
const NO_RULE_NEEDS: SubjectNeeds = { traits: false, identities: false, consent: false, events: new Map() };
const TOP_FEATURES = 20;

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
/** A probability a `score` rule can state (strictly between 0 and 1). */
const clampProbability = (p: number) => Math.min(1 - 1e-12, Math.max(1e-12, p));

/** The extension segment of a run: its id derives from the run, so a retry finds the one it made. */
export function extensionSegmentId(runId: string): string {
  return `seg_${runId}`;
}

/** The activity of a lookalike run: train, measure, score, and make the extension segment. */
export function createLookalikeActivities(deps: LookalikeDeps) {
  const stores = peoplePassStores(deps.store);
  const segments = new SegmentStore(deps.store);
  const runs = new LookalikeRunStore(deps.store);
  const gates = new StartGates(deps.store);

  /** A segment's members now (walked again from its current snapshot if the one read is let go meanwhile). */
  function membersOf(segment: SegmentDoc, membership: SegmentMembership, states: RealTimeStates): Promise<Set<string>> {
    return membership.walkCurrent(segment, states, (id) => segments.get(id), async (doc, docStates) => {
      const members = new Set<string>();
      for await (const page of membership.pages(doc, docStates)) {
        for (const id of page) members.add(id);
        heartbeat({ phase: 'members', segment: doc._id, members: members.size });
      }
      return members;
    });
  }

  async function evaluatedSegment(id: string, role: string): Promise<SegmentDoc> {
    const doc = await segments.get(id);
    if (!doc?.current) throw new Error(`the ${role} segment ${id} is gone or has no completed run`);
    return doc;
  }

  /**
   * One pass over every person gives each one's features (those defining the seed left out); the
   * seed's members against the rest of the base, sampled by id hash and split into training and
   * holdout the same way, train the model; the holdout gives its AUC; every base profile outside the
   * seed is scored to place the threshold at the asked reach; the extension is a segment whose rule
   * is the model (and not the seed), evaluated by a batch run like any other. Safe to retry: the
   * sample, split and training are deterministic, and the segment's id derives from the run.
   */
  async function train(run: LookalikeRunDoc): Promise<LookalikeOutcome> {
    const seed = await evaluatedSegment(run.seedId, 'seed');
    const base = run.base === 'all' ? null : await evaluatedSegment(run.base, 'base');
    const all = await segments.list();
    const rules = new Map(all.map((doc) => [doc._id, ruleOf(doc)]));
    const ruleOfId = (id: string) => rules.get(id) ?? null;
    const excluded = definingFeatures(ruleOf(seed), ruleOfId);
    // Taxonomy features: membership of the other evaluated segments — except those whose own rules
    // read what defines the seed (or refer to it): they would give its definition away; and those
    // that refer to the extension itself (another lookalike's model reading it): it would refer to them in turn.
    const extensionId = extensionSegmentId(run.retrainOf ?? run._id);
    const withheld = [...excluded, `segment:${seed._id}`, `segment:${extensionId}`];
    const taxonomy = all.filter((doc) => doc.current && doc._id !== seed._id && doc._id !== base?._id && doc._id !== extensionId && !definitionsOverlap(definingFeatures(ruleOf(doc), ruleOfId), withheld));

    const names: string[] = [];
    const ids = new Map<string, number>();
    const intern = (feature: string) => {
      let id = ids.get(feature);
      if (id === undefined) {
        id = names.push(feature) - 1;
        ids.set(feature, id);
      }
      return id;
    };
    const featuresOfPerson = (subject: Parameters<typeof featuresOf>[0]) => Int32Array.from(featuresOf(subject, run.startedAt).filter((feature) => !isDefining(feature, excluded)).map(intern));
    const { people } = await passPeople(stores, NO_RULE_NEEDS, {
      document: (stored) => featuresOfPerson(decodeProfile(stored)),
      person: (person) => featuresOfPerson(person),
    }, { skipOptedOut: true, skipRefused: true });
    const membership = new SegmentMembership(deps.store);
    const states = await membership.realTime([...taxonomy, seed, ...(base ? [base] : [])]);
    for (const segment of taxonomy) {
      const feature = intern(`segment:${segment._id}`);
      for (const id of await membersOf(segment, membership, states)) {
        const features = people.get(id);
        if (features) people.set(id, Int32Array.of(...features, feature));
      }
    }
    const seedMembers = await membersOf(seed, membership, states);
    const baseMembers = base ? await membersOf(base, membership, states) : null;
    const inBase = (id: string) => baseMembers === null || baseMembers.has(id);

    // Training profiles: the seed (within the base) and the rest of the base, each class sampled down to MAX_PER_CLASS.
    const positives = [...seedMembers].filter((id) => people.has(id) && inBase(id));
    const negatives = [...people.keys()].filter((id) => inBase(id) && !seedMembers.has(id));
    // Retrying would read the same data: the run fails at once, naming why.
    if (positives.length === 0 || negatives.length === 0) {
      throw ApplicationFailure.nonRetryable(positives.length === 0 ? 'the seed has no members in the base' : 'the base has no profiles outside the seed', 'NothingToLearn');
    }
    if (positives.length < MIN_SEED_MEMBERS) {
      throw ApplicationFailure.nonRetryable(`the seed has ${positives.length} members in the base: a model is trained on ${MIN_SEED_MEMBERS} at least`, 'NothingToLearn');
    }
    const sampled = (list: string[]) => list.filter((id) => hashUnit(id, `sample:${run._id}`) < MAX_PER_CLASS / list.length);
    const labelled = [...sampled(positives).map((id) => ({ id, label: 1 as const })), ...sampled(negatives).map((id) => ({ id, label: 0 as const }))];
    const isHoldout = (id: string) => hashUnit(id, `holdout:${run._id}`) < HOLDOUT_SHARE;
    const training = labelled.filter((row) => !isHoldout(row.id));
    const holdout = labelled.filter((row) => isHoldout(row.id));
    // A seed (or base) so small that the holdout took all of it leaves one class to learn: such a model would take everyone.
    for (const [label, name] of [[1, 'seed'], [0, 'base outside the seed']] as const) {
      if (!training.some((row) => row.label === label)) {
        throw ApplicationFailure.nonRetryable(`too few profiles in the ${name} to learn from: none is left once ${HOLDOUT_SHARE * 100}% are held out to measure the model`, 'NothingToLearn');
      }
    }

    // Features too rare in training carry no weight (their index maps to none).
    const support = new Int32Array(names.length);
    for (const row of training) for (const f of people.get(row.id) as Int32Array) support[f]++;
    const kept = new Int32Array(names.length).fill(-1);
    const keptNames: string[] = [];
    for (let f = 0; f < names.length; f++) if (support[f] >= MIN_FEATURE_SUPPORT) kept[f] = keptNames.push(names[f]) - 1;
    const rowOf = (row: { id: string; label: 0 | 1 }): TrainingRow => ({ features: Int32Array.from((people.get(row.id) as Int32Array).filter((f) => kept[f] >= 0), (f) => kept[f]), label: row.label });
    heartbeat({ phase: 'train', rows: training.length, features: keptNames.length });
    const model = trainLogistic(training.map(rowOf), keptNames.length);

    // What the rule states: the strongest weights (at most MAX_MODEL_FEATURES); scores and the threshold use exactly those.
    const stated = [...model.weights.entries()]
      .filter(([, weight]) => weight !== 0)
      .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]) || (keptNames[a[0]] < keptNames[b[0]] ? -1 : 1))
      .slice(0, MAX_MODEL_FEATURES);
    // No feature tells the seed apart (too few of them, or none seen often enough): a rule of the intercept alone would take everyone.
    if (stated.length === 0) throw ApplicationFailure.nonRetryable('no feature tells the seed apart from the base: nothing to score others by', 'NothingToLearn');
    const statedModel = { intercept: model.intercept, weights: new Float64Array(keptNames.length) };
    for (const [f, weight] of stated) statedModel.weights[f] = weight;
    const score = (id: string) => scoreRow(statedModel, rowOf({ id, label: 0 }).features);
    const measured = auc(holdout.map((row) => ({ score: score(row.id), label: row.label })));

    const candidates = negatives.map(score).sort((a, b) => b - a);
    const wanted = Math.min(run.reach ?? seedMembers.size, candidates.length);
    // Just under the reach-th best score: the rule sums the same weights in another order, which must not drop it.
    const threshold = clampProbability(run.accuracy ?? sigmoid(candidates[Math.max(0, wanted - 1)] - 1e-9));
    const cut = Math.log(threshold / (1 - threshold));
    const reachFound = candidates.filter((z) => z >= cut).length;

    const scoreRule = { score: { intercept: model.intercept, weights: stated.map(([f, weight]) => [keptNames[f], weight] as [string, number]), min: threshold } };
    const rule: Rule = { all: [scoreRule, { not: { segment: seed._id } }, ...(base ? [{ segment: base._id }] : [])] };
    const segmentId = extensionId;
    const cycle = cycleThrough(segmentId, new Map([...rules, [segmentId, rule]]));
    if (cycle) throw ApplicationFailure.nonRetryable(`the model would make segments refer to each other: ${cycle.join(' → ')}`, 'SegmentCycle');
    const now = new Date();
    const description = `Profiles like ${seed._id}${base ? ` within ${base._id}` : ''}, by lookalike run ${run._id}`;
    if (run.retrainOf) {
      // A re-train replaces the extension's model in place (a retry finds it replaced already).
      const extension = await segments.get(segmentId);
      if (!extension) throw ApplicationFailure.nonRetryable(`the extension segment ${segmentId} is gone`);
      if (extension.description !== description && !(await segments.edit(segmentId, extension.version, { description, ruleJson: JSON.stringify(rule), version: extension.version + 1, updatedAt: now }))) {
        throw new Error(`the extension segment ${segmentId} changed while its model was replaced`);
      }
    } else {
      // A retry finds the one it created (keyed by the run).
      await segments.create({
        _id: segmentId,
        name: `${seed.name} (lookalike)`.slice(0, 200),
        description,
        taxonomyPath: seed.taxonomyPath,
        ruleJson: JSON.stringify(rule),
        schedule: null,
        version: 1,
        createdAt: now,
        updatedAt: now,
        current: null,
        lastRun: null,
      });
      // The seed (or base) deleted while the model trained: its DELETE found no extension referring to it, so the extension goes.
      const { missing, deleting } = await segments.gone([seed._id, ...(base ? [base._id] : [])]);
      const gone = [...missing, ...deleting];
      if (gone.length > 0) {
        await segments.remove(segmentId);
        throw ApplicationFailure.nonRetryable(`segment ${gone.join(', ')} was deleted while the model trained: no extension is made`, 'SeedDeleted');
      }
    }
    const segmentRun = await prepareRun(segments, new SegmentRunStore(deps.store), now, now, [segmentId]);
    await startSegmentRun(deps.temporal, deps.store.db.databaseName, segmentRun._id, deps.config);

    return {
      state: 'completed',
      error: null,
      auc: measured,
      holdoutSize: holdout.length,
      trainingSize: training.length,
      threshold,
      reachFound,
      segmentId,
      topFeatures: stated.slice(0, TOP_FEATURES).map(([f, weight]) => ({ feature: keptNames[f], weight })),
      excluded,
      finishedAt: new Date(),
    };
  }

  return {
    /** See train; a run already finished is left as it is. */
    async trainLookalike(input: { runId: string }): Promise<void> {
      const run = await runs.get(input.runId);
      if (!run) return;
      if (run.state === 'running') {
        // A re-train's run is recorded by its own workflow; only the API's runs can have their start given up.
        if (!run.retrainOf) await beginGated(gates, startGateKey.lookalike(run._id), () => runs.saveOutcome(run._id, { state: 'failed', error: 'its workflow could not be started', finishedAt: new Date() }));
        await runs.saveOutcome(run._id, await withHeartbeats(() => train(run)));
      }
      // Also on a retry that finds the outcome saved: the attempt before may have stopped in between.
      if (run.retrainOf && (await runs.get(run._id))?.state === 'completed') await runs.set(run.retrainOf, { latestRetrain: run._id });
    },

    /**
     * Records the re-train a schedule firing asks for (a retry finds it recorded) and returns its id;
     * none when the run that set the schedule, its seed or its extension is gone, or the schedule
     * was stopped — then the schedule is deleted.
     */
    async beginRetrain(input: { firstRunId: string; at: number }): Promise<string | null> {
      const first = await runs.get(input.firstRunId);
      const alive = first?.retrain && first.state === 'completed' && (await segments.get(first.seedId))?.current && (await segments.get(extensionSegmentId(first._id))) && (first.base === 'all' || (await segments.get(first.base)));
      if (!first || !alive) {
        await syncLookalikeSchedule(deps.temporal, deps.store.db.databaseName, input.firstRunId, null, deps.config);
        return null;
      }
      const at = new Date(input.at);
      const { scheduleSync: _owed, ...asked } = first;
      const run: LookalikeRunDoc = { ...asked, _id: retrainRunId(first._id, at), state: 'running', auc: null, holdoutSize: 0, trainingSize: 0, threshold: null, reachFound: null, segmentId: null, topFeatures: [], excluded: [], error: null, retrain: null, retrainOf: first._id, latestRetrain: null, startedAt: at, finishedAt: null };
      await runs.create(run);
      return run._id;
    },

    /** Records a run that could not finish, and why. */
    async failLookalike(input: { runId: string; error: string }): Promise<void> {
      const run = await runs.get(input.runId);
      if (run?.state === 'running') await runs.saveOutcome(run._id, { state: 'failed', error: input.error, finishedAt: new Date() });
    },
  };
}

export type LookalikeActivities = ReturnType<typeof createLookalikeActivities>;
