import { BSON } from 'mongodb';
import { profilingRefusal, type StoredConsent } from '../../domain/consent';
import { DEFAULT_CONSENT_POLICY } from '../../domain/schemas';
import { encodeFieldName } from '../../domain/fieldNames';
import type { Identity } from '../../domain/identity';
import {
  applyEvent,
  BEHAVIOUR_DAYS,
  RECENT_EVENTS_KEPT,
  RECENT_PROPERTIES_KEPT,
  RECENT_PROPERTY_BYTES,
  EVENT_TYPES_KEPT,
  TRAIT_BYTES_KEPT,
  combineProfiles,
  EVENT_IDS_KEPT,
  eventIdToken,
  hasApplied,
  holdEvent,
  newProfile,
  nextVersion,
  type ProfileDoc,
  type ProfileEvent,
  foldEvent,
  foldOrder,
  mostRestrictiveConsent,
} from '../../domain/profile';

const CREATED_AT = new Date('2025-06-15T12:00:00.000Z');
const at = (iso: string) => new Date(iso);

let eventNumber = 0;

/** An event with an id of its own, unless the test names one. */
function event(overrides: Partial<ProfileEvent> & Pick<ProfileEvent, 'timestamp'>): ProfileEvent {
  return { id: `e${++eventNumber}`, type: 'page_view', identities: [], ...overrides };
}

function profile(seenAt = at('2025-06-01T00:00:00Z')): ProfileDoc {
  return newProfile('p_test', CREATED_AT, seenAt);
}

function tcfConsent(purposes: number[]): StoredConsent {
  return {
    tcf: {
      tcString: `tc-${purposes.join('-')}`,
      policyVersion: 4,
      cmpId: 10,
      created: at('2025-01-01T00:00:00Z'),
      purposeConsents: purposes,
      purposeLegitimateInterests: [],
      vendorConsents: [],
    },
  };
}

/** Undoes what counting an event typed like an Object.prototype member writes onto built-ins. */
function removeCountFromBuiltIns(): void {
  for (const target of [Object.prototype, Object, Object.prototype.toString, Object.prototype.hasOwnProperty]) {
    delete (target as unknown as Record<string, unknown>).count;
  }
}

describe('newProfile', () => {
  it("uses the creating event's time for firstSeen and lastSeen, and now for createdAt and updatedAt", () => {
    const seenAt = at('2025-05-01T08:00:00Z');
    const doc = newProfile('p_1', CREATED_AT, seenAt);
    expect(doc._id).toBe('p_1@00000000');
    expect(doc.profileId).toBe('p_1');
    expect(doc.version).toBe(0);
    expect(doc.firstSeen).toEqual(seenAt);
    expect(doc.lastSeen).toEqual(seenAt);
    expect(doc.createdAt).toEqual(CREATED_AT);
    expect(doc.updatedAt).toEqual(CREATED_AT);
  });

  it('starts empty', () => {
    const doc = profile();
    expect(doc.identities).toEqual([]);
    expect(doc.traits).toEqual({});
    expect(doc.counters).toEqual({});
    expect(doc.consent).toBeNull();
    expect(doc.sources).toEqual([]);
    expect(doc.applied).toEqual({});
  });

  it('keeps firstSeen at the creating event when that event is then applied', () => {
    const seenAt = at('2025-05-01T08:00:00Z');
    const doc = newProfile('p_1', CREATED_AT, seenAt);
    applyEvent(doc, event({ timestamp: seenAt }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(doc.firstSeen).toEqual(seenAt);
    expect(doc.lastSeen).toEqual(seenAt);
  });
});

describe('applyEvent: counters', () => {
  it('counts events per type', () => {
    const doc = profile();
    applyEvent(doc, event({ type: 'page_view', timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ type: 'page_view', timestamp: at('2025-06-03T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ type: 'purchase', timestamp: at('2025-06-04T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(doc.counters.page_view.count).toBe(2);
    expect(doc.counters.purchase.count).toBe(1);
    expect(Object.keys(doc.counters).sort()).toEqual(['page_view', 'purchase']);
  });

  it('records first and last seen per type, including for an older event arriving late', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-05T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-07T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 1 });
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 2 });
    applyEvent(doc, event({ timestamp: at('2025-06-06T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 3 });
    expect(doc.counters.page_view).toEqual({
      count: 4,
      firstSeen: at('2025-06-03T00:00:00Z'),
      lastSeen: at('2025-06-07T00:00:00Z'),
      days: { '20250603': 1, '20250605': 1, '20250606': 1, '20250607': 1 },
      recent: ['2025-06-07', '2025-06-06', '2025-06-05', '2025-06-03'].map((day) => ({ at: at(`${day}T00:00:00Z`), properties: {} })),
    });
  });

  it('keeps the newest events of a type with their first properties by name, for property filters, and forgets them with the daily buckets', () => {
    const doc = profile();
    const properties = Object.fromEntries(Array.from({ length: RECENT_PROPERTIES_KEPT + 4 }, (_, k) => [`p${String(k).padStart(2, '0')}`, k]));
    for (let k = 0; k < RECENT_EVENTS_KEPT + 5; k++) {
      applyEvent(doc, event({ timestamp: new Date(Date.UTC(2025, 5, 1) + k * 3_600_000), properties }), { sourceId: 'src_a', party: 'first', seq: k });
    }
    const recent = doc.counters.page_view.recent ?? [];
    expect(recent).toHaveLength(RECENT_EVENTS_KEPT);
    expect(recent[0].at).toEqual(new Date(Date.UTC(2025, 5, 1) + (RECENT_EVENTS_KEPT + 4) * 3_600_000));
    expect(Object.keys(recent[0].properties)).toEqual(Object.keys(properties).slice(0, RECENT_PROPERTIES_KEPT));
    // An event more than BEHAVIOUR_DAYS + 1 days (a day for events stamped ahead) after the last of them moves the window past all of them.
    applyEvent(doc, event({ timestamp: new Date(Date.UTC(2025, 5, 1) + (BEHAVIOUR_DAYS + 3) * 86_400_000) }), { sourceId: 'src_a', party: 'first', seq: 99 });
    expect(doc.counters.page_view.recent).toHaveLength(1);
    expect(doc.counters.page_view.count).toBe(RECENT_EVENTS_KEPT + 6);
  });

  it('moves the profile firstSeen back for an older event and lastSeen forward for a newer one', () => {
    const doc = profile(at('2025-06-05T00:00:00Z'));
    applyEvent(doc, event({ timestamp: at('2025-06-05T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-01T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 1 });
    applyEvent(doc, event({ timestamp: at('2025-06-09T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 2 });
    applyEvent(doc, event({ timestamp: at('2025-06-04T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 3 });
    expect(doc.firstSeen).toEqual(at('2025-06-01T00:00:00Z'));
    expect(doc.lastSeen).toEqual(at('2025-06-09T00:00:00Z'));
  });

  it('keys counters by the encoded event type', () => {
    const doc = profile();
    applyEvent(doc, event({ type: 'checkout.step$1', timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(Object.keys(doc.counters)).toEqual([encodeFieldName('checkout.step$1')]);
    expect(Object.keys(doc.counters)[0]).not.toContain('.');
  });

  it.each([['constructor'], ['toString'], ['hasOwnProperty'], ['__proto__']])(
    'counts an event whose type is %j like any other type',
    (type) => {
      const doc = profile();
      try {
        applyEvent(doc, event({ type, timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
        applyEvent(doc, event({ type, timestamp: at('2025-06-03T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 1 });
        const view = combineProfiles([doc]);
        expect(Object.prototype.hasOwnProperty.call(view.counters, type)).toBe(true);
        expect(view.counters[type]).toEqual({
          count: 2,
          firstSeen: '2025-06-02T00:00:00.000Z',
          lastSeen: '2025-06-03T00:00:00.000Z',
          days: { '20250602': 1, '20250603': 1 },
        });
      } finally {
        removeCountFromBuiltIns();
      }
    },
  );

  it.each([['__proto__'], ['constructor']])('does not write onto shared built-in objects for an event typed %j', (type) => {
    const doc = profile();
    try {
      applyEvent(doc, event({ type, timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
      expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'count')).toBe(false);
      expect(({} as Record<string, unknown>).count).toBeUndefined();
      expect(Object.prototype.hasOwnProperty.call(Object, 'count')).toBe(false);
    } finally {
      removeCountFromBuiltIns();
    }
  });
});

describe('applyEvent: traits', () => {
  it('sets traits from an event', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { plan: 'gold', seats: 3 } }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(doc.traits).toEqual({ plan: 'gold', seats: 3 });
    const origin = { at: at('2025-06-02T00:00:00Z'), sourceId: 'src_a', party: 'first' };
    expect(doc.traitOrigins).toEqual({ plan: origin, seats: origin });
  });

  it('lets a newer event overwrite a trait', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { plan: 'silver' } }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { plan: 'gold' } }), { sourceId: 'src_a', party: 'first', seq: 1 });
    expect(doc.traits.plan).toBe('gold');
    expect(doc.traitOrigins.plan.at).toEqual(at('2025-06-03T00:00:00Z'));
  });

  it('does not let an older event that arrives late overwrite a trait', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { plan: 'gold' } }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { plan: 'silver' } }), { sourceId: 'src_a', party: 'first', seq: 1 });
    expect(doc.traits.plan).toBe('gold');
    expect(doc.traitOrigins.plan.at).toEqual(at('2025-06-03T00:00:00Z'));
  });

  it('decides per trait: an older event still sets traits the profile does not have', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { plan: 'gold' } }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(
      doc,
      event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { plan: 'silver', country: 'DE' } }),
      { sourceId: 'src_a', party: 'first', seq: 1 },
    );
    expect(doc.traits).toEqual({ plan: 'gold', country: 'DE' });
  });

  it('breaks a tie on timestamp the same way whatever the order of application', () => {
    const silver = event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { plan: 'silver' } });
    const gold = event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { plan: 'gold' } });
    const one = profile();
    applyEvent(one, silver, { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(one, gold, { sourceId: 'src_a', party: 'first', seq: 1 });
    const other = profile();
    applyEvent(other, gold, { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(other, silver, { sourceId: 'src_a', party: 'first', seq: 1 });
    expect(one.traits.plan).toBe(other.traits.plan);
  });

  it('never lets a second- or third-party value replace a first-party one, even when newer', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { age: '25-34' } }), { sourceId: 'src_crm', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-09T00:00:00Z'), traits: { age: '45-54' } }), { sourceId: 'src_feed', party: 'third', seq: 0 });
    expect(doc.traits.age).toBe('25-34');
    applyEvent(doc, event({ timestamp: at('2025-06-09T00:00:00Z'), traits: { income: 'high' } }), { sourceId: 'src_feed', party: 'third', seq: 1 });
    applyEvent(doc, event({ timestamp: at('2025-06-01T00:00:00Z'), traits: { income: 'mid' } }), { sourceId: 'src_partner', party: 'second', seq: 0 });
    expect(doc.traits.income).toBe('mid');
    expect(doc.traitOrigins.income).toEqual({ at: at('2025-06-01T00:00:00Z'), sourceId: 'src_partner', party: 'second' });
  });

  it('keeps traits of other names when an event sets some', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { plan: 'gold' } }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { country: 'DE' } }), { sourceId: 'src_a', party: 'first', seq: 1 });
    applyEvent(doc, event({ timestamp: at('2025-06-04T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 2 });
    expect(doc.traits).toEqual({ plan: 'gold', country: 'DE' });
  });

  it.each([['constructor'], ['toString'], ['valueOf']])('stores a trait named %j like any other trait', (name) => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), traits: { [name]: 'v1' } }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(combineProfiles([doc]).traits).toEqual({ [name]: 'v1' });
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { [name]: 'v2' } }), { sourceId: 'src_a', party: 'first', seq: 1 });
    expect(combineProfiles([doc]).traits).toEqual({ [name]: 'v2' });
  });
});

describe('applyEvent: consent, identities, sources, applied', () => {
  it('takes only the consent of a consent-only event: no count, identity, trait, source or time seen', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), identities: [{ type: 'cookie_id', value: 'c1' }], traits: { plan: 'gold' }, consent: tcfConsent([1, 3]) }), { sourceId: 'src_a', party: 'first', seq: 1 });
    const before = structuredClone(doc);
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), traits: { plan: 'silver' }, consent: tcfConsent([1]), consentOnly: true }), { sourceId: 'src_b', party: 'first', seq: 7 });
    expect(doc.consent).toEqual({ ...tcfConsent([1]), sourceId: 'src_b', at: at('2025-06-03T00:00:00Z'), since: { tcf: at('2025-06-03T00:00:00Z') } });
    expect({ ...doc, consent: null, applied: {} }).toEqual({ ...before, consent: null, applied: {} });
    expect(doc.applied).toEqual({ src_a: 1, src_b: 7 });
  });

  it('takes consent from an event and records its source and time', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), consent: tcfConsent([1]) }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(doc.consent).toEqual({ ...tcfConsent([1]), sourceId: 'src_a', at: at('2025-06-02T00:00:00Z'), since: { tcf: at('2025-06-02T00:00:00Z') } });
  });

  it('keeps the consent of the newest event, whatever the order of application', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-05T00:00:00Z'), consent: tcfConsent([1, 2]) }), { sourceId: 'src_new', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), consent: tcfConsent([1]) }), { sourceId: 'src_old', party: 'first', seq: 0 });
    expect(doc.consent?.tcf?.purposeConsents).toEqual([1, 2]);
    expect(doc.consent?.sourceId).toBe('src_new');
    expect(doc.consent?.at).toEqual(at('2025-06-05T00:00:00Z'));

    // A later signal of another kind names the newest signal, and leaves the TC string as it was.
    applyEvent(doc, event({ timestamp: at('2025-06-07T00:00:00Z'), consent: { purposes: { ads: false } } }), { sourceId: 'src_old', party: 'first', seq: 1 });
    expect(doc.consent).toMatchObject({ purposes: { ads: false }, tcf: { purposeConsents: [1, 2] }, sourceId: 'src_old', at: at('2025-06-07T00:00:00Z') });
  });

  it('keeps each kind of signal the newest the person gave: flags alone, or a GPP string without a US section, leave a TCF withdrawal standing', () => {
    const withdrawal = event({ timestamp: at('2025-06-03T00:00:00Z'), consent: tcfConsent([]) });
    const flagsOnly = event({ timestamp: at('2025-06-04T00:00:00Z'), consent: { purposes: { analytics: true } } });
    const noUsSection = event({ timestamp: at('2025-06-05T00:00:00Z'), consent: { gpp: { gppString: 'DBAA', sectionIds: [] } } });
    const grant = event({ timestamp: at('2025-06-01T00:00:00Z'), consent: tcfConsent([1, 3]) });
    const docs = [
      [grant, withdrawal, flagsOnly, noUsSection],
      [noUsSection, flagsOnly, withdrawal, grant],
      [flagsOnly, grant, noUsSection, withdrawal],
    ].map((order) => {
      const doc = profile();
      for (const one of order) applyEvent(doc, { ...one, consentOnly: true }, { sourceId: 'src_a', party: 'first', seq: 0 });
      return doc.consent;
    });
    expect(docs[0]).toMatchObject({ tcf: { purposeConsents: [] }, purposes: { analytics: true }, at: at('2025-06-04T00:00:00Z') });
    expect(docs[0]?.gpp).toBeUndefined();
    // Folded in any order, the same.
    expect(docs[1]).toEqual(docs[0]);
    expect(docs[2]).toEqual(docs[0]);
    expect(profilingRefusal(docs[0] ?? undefined, DEFAULT_CONSENT_POLICY)).toBe('tcf_purpose');
  });

  it('keeps the newest answer per purpose flag; a no wins a tie with a yes', () => {
    const doc = profile();
    const flags = (when: string, purposes: Record<string, boolean>) => applyEvent(doc, event({ timestamp: at(when), consent: { purposes }, consentOnly: true }), { sourceId: 'src_a', party: 'first', seq: 0 });
    flags('2025-06-02T00:00:00Z', { profiling: false, ads: true });
    flags('2025-06-03T00:00:00Z', { profiling: true });
    flags('2025-06-01T00:00:00Z', { ads: false });
    flags('2025-06-03T00:00:00Z', { analytics: true });
    flags('2025-06-03T00:00:00Z', { analytics: false });
    flags('2025-06-03T00:00:00Z', { analytics: true });
    expect(doc.consent?.purposes).toEqual({ profiling: true, ads: true, analytics: false });
  });

  /** A document's consent once these signals (time, consent, source) fold into it, in this order. */
  const fold = (order: Array<[string, StoredConsent, string]>) => {
    const doc = profile();
    for (const [when, consent, sourceId] of order) applyEvent(doc, event({ timestamp: at(when), consent, consentOnly: true }), { sourceId, party: 'first', seq: 0 });
    return doc.consent;
  };

  it("lets any later TC string end a mark that the person had not decided yet, whatever its channel; an older mark folded late changes nothing", () => {
    const mark: [string, StoredConsent, string] = ['2025-06-02T00:00:00Z', { tcfPending: true }, 'src_tag'];
    const decision: [string, StoredConsent, string] = ['2025-06-03T00:00:00Z', tcfConsent([1, 3]), 'src_server'];
    const lateOldMark: [string, StoredConsent, string] = ['2025-06-01T00:00:00Z', { tcfPending: true }, 'src_pixel'];
    const decided = fold([mark, decision, lateOldMark]);
    expect(decided?.tcfPending).toBeUndefined();
    expect(decided?.tcf?.purposeConsents).toEqual([1, 3]);
    expect(fold([lateOldMark, decision, mark])).toEqual(decided);
    expect(profilingRefusal(decided ?? undefined, DEFAULT_CONSENT_POLICY)).toBeNull();
    // Not decided again later (a consent tool asking anew): held out until the next TC string.
    const again = fold([decision, ['2025-06-04T00:00:00Z', { tcfPending: true }, 'src_tag']]);
    expect(again).toMatchObject({ tcfPending: true, sourceId: 'src_tag' });
    expect(again?.tcf).toBeUndefined();
    expect(profilingRefusal(again ?? undefined, DEFAULT_CONSENT_POLICY)).toBe('tcf_pending');
  });

  it("keeps no mark of a GPP tool that had not answered: the profile's consent stays as the person's signals made it", () => {
    const decision: [string, StoredConsent, string] = ['2025-06-02T00:00:00Z', tcfConsent([1, 3]), 'src_server'];
    const unanswered: [string, StoredConsent, string] = ['2025-06-03T00:00:00Z', { gppPending: true }, 'src_tag'];
    expect(fold([decision, unanswered])).toEqual(fold([decision]));
    expect(fold([unanswered])).toBeNull();
  });

  it('lets word that the GDPR does not apply end an older no-decision mark, and a newer mark stand over it', () => {
    const mark: [string, StoredConsent, string] = ['2025-06-02T00:00:00Z', { tcfPending: true }, 'src_tag'];
    const notApplicable: [string, StoredConsent, string] = ['2025-06-03T00:00:00Z', { tcfNotApplicable: true }, 'src_tag'];
    const ended = fold([mark, notApplicable]);
    expect(ended).toMatchObject({ tcfNotApplicable: true });
    expect(ended?.tcfPending).toBeUndefined();
    expect(fold([notApplicable, mark])).toEqual(ended);
    expect(profilingRefusal(ended ?? undefined, DEFAULT_CONSENT_POLICY)).toBeNull();
    // It never replaces a TC string the person gave: a refusal stands.
    const refusal: [string, StoredConsent, string] = ['2025-06-01T00:00:00Z', tcfConsent([]), 'src_tag'];
    const refused = fold([refusal, notApplicable]);
    expect(refused?.tcf?.purposeConsents).toEqual([]);
    expect(refused?.tcfNotApplicable).toBeUndefined();
    expect(profilingRefusal(refused ?? undefined, DEFAULT_CONSENT_POLICY)).toBe('tcf_purpose');
    expect(fold([notApplicable, refusal])).toEqual(refused);
    // In any order the same: a mark between the refusal and that word is ended by it; a refusal at the mark's moment outranks nothing.
    const between: [string, StoredConsent, string] = ['2025-06-02T00:00:00Z', { tcfPending: true }, 'src_pixel'];
    const tie: [string, StoredConsent, string] = ['2025-06-02T00:00:00Z', tcfConsent([1, 3]), 'src_server'];
    const signals = [refusal, between, notApplicable, tie];
    const orders = (list: typeof signals): Array<typeof signals> => (list.length <= 1 ? [list] : list.flatMap((first, i) => orders([...list.slice(0, i), ...list.slice(i + 1)]).map((rest) => [first, ...rest])));
    const outcomes = orders(signals).map((order) => {
      const { sourceId: _source, at: _at, ...outcome } = fold(order) ?? {};
      return outcome;
    });
    expect(outcomes).toHaveLength(24);
    for (const outcome of outcomes) expect(outcome).toEqual(outcomes[0]);
    expect(fold(signals)).toMatchObject({ tcfNotApplicable: true });
    const markedAgain = fold([notApplicable, ['2025-06-04T00:00:00Z', { tcfPending: true }, 'src_tag']]);
    expect(markedAgain).toMatchObject({ tcfPending: true });
    expect(markedAgain?.tcfNotApplicable).toBeUndefined();
  });

  it('names the same newest source in any fold order, and at a tie keeps the more restrictive TC string', () => {
    const fold = (order: Array<[StoredConsent, string]>) => {
      const doc = profile();
      for (const [consent, sourceId] of order) applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), consent, consentOnly: true }), { sourceId, party: 'first', seq: 0 });
      return doc.consent;
    };
    const a: [StoredConsent, string] = [{ purposes: { profiling: false } }, 'src_a'];
    const z: [StoredConsent, string] = [{ purposes: { profiling: true } }, 'src_z'];
    expect(fold([a, z])).toEqual(fold([z, a]));
    expect(fold([a, z])).toMatchObject({ sourceId: 'src_z', purposes: { profiling: false } });
    const grant: [StoredConsent, string] = [tcfConsent([1, 3, 4]), 'src_a'];
    const withdrawal: [StoredConsent, string] = [tcfConsent([1]), 'src_b'];
    expect(fold([grant, withdrawal])?.tcf?.purposeConsents).toEqual([1]);
    expect(fold([withdrawal, grant])?.tcf?.purposeConsents).toEqual([1]);
  });

  it('keeps each GPP opt-out the newest the person gave: a later string saying less leaves the others standing', () => {
    const doc = profile();
    const gpp = (when: string, fields: object) =>
      applyEvent(doc, event({ timestamp: at(when), consent: { gpp: { gppString: `gpp-${when}`, sectionIds: [7], ...fields } }, consentOnly: true }), { sourceId: 'src_a', party: 'first', seq: 0 });
    gpp('2025-06-02T00:00:00Z', { saleOptOut: false, targetedAdvertisingOptOut: true });
    gpp('2025-06-03T00:00:00Z', { saleOptOut: false });
    gpp('2025-06-01T00:00:00Z', { sharingOptOut: true, saleOptOut: true });
    expect(doc.consent?.gpp).toEqual({ gppString: 'gpp-2025-06-03T00:00:00Z', sectionIds: [7], saleOptOut: false, targetedAdvertisingOptOut: true, sharingOptOut: true });
    // Global Privacy Control follows each deciding string: the browser stopped sending it.
    gpp('2025-06-04T00:00:00Z', { saleOptOut: true, sharingOptOut: true, targetedAdvertisingOptOut: true, gpc: true });
    expect(doc.consent?.gpp?.gpc).toBe(true);
    gpp('2025-06-05T00:00:00Z', { saleOptOut: false, sharingOptOut: false, targetedAdvertisingOptOut: false });
    expect(doc.consent?.gpp).toEqual({ gppString: 'gpp-2025-06-05T00:00:00Z', sectionIds: [7], saleOptOut: false, sharingOptOut: false, targetedAdvertisingOptOut: false });
  });

  it("reads a former tag or pixel mark (profiling false alone, undated) as not decided yet, so a later TC string ends it", () => {
    const doc = profile();
    doc.consent = { purposes: { profiling: false }, sourceId: 'src_tag', at: at('2025-06-02T00:00:00Z') };
    expect(mostRestrictiveConsent([doc.consent])).toMatchObject({ tcfPending: true });
    applyEvent(doc, event({ timestamp: at('2025-06-03T00:00:00Z'), consent: tcfConsent([1, 3]), consentOnly: true }), { sourceId: 'src_server', party: 'first', seq: 0 });
    expect(doc.consent).toMatchObject({ tcf: { purposeConsents: [1, 3] }, sourceId: 'src_server' });
    expect(doc.consent?.tcfPending).toBeUndefined();
    expect(doc.consent?.purposes).toBeUndefined();
    // An undated refusal of another flag is a refusal.
    const other = profile();
    other.consent = { purposes: { ads: false }, sourceId: 'src_api', at: at('2025-06-02T00:00:00Z') };
    applyEvent(other, event({ timestamp: at('2025-06-03T00:00:00Z'), consent: tcfConsent([1, 3]), consentOnly: true }), { sourceId: 'src_server', party: 'first', seq: 0 });
    expect(other.consent?.purposes).toEqual({ ads: false });
  });

  it('folds or holds as the writers do: held once the event\'s own signal is in and the document still refuses; a document holding no one takes it', () => {
    const origin = { sourceId: 'src_app', party: 'first' as const, seq: 1 };
    const withdrawn = profile();
    applyEvent(withdrawn, event({ timestamp: at('2025-06-02T00:00:00Z'), identities: [{ type: 'cookie_id', value: 'c1' }], consent: tcfConsent([1]) }), { sourceId: 'src_web', party: 'first', seq: 0 });
    const granting = event({ id: 'flag-only', type: 'order', timestamp: at('2025-06-03T00:00:00Z'), consent: { purposes: { profiling: true } } });
    expect(foldEvent(withdrawn, granting, origin, DEFAULT_CONSENT_POLICY, false)).toBe('held');
    expect(withdrawn.counters.order).toBeUndefined();
    expect(withdrawn.consent?.purposes).toEqual({ profiling: true });
    expect(foldEvent(withdrawn, granting, origin, DEFAULT_CONSENT_POLICY, false)).toBe('repeat');
    expect(foldEvent(withdrawn, event({ type: 'order', timestamp: at('2025-06-04T00:00:00Z') }), origin, { ...DEFAULT_CONSENT_POLICY, mode: 'not_required' }, false)).toBe('applied');
    expect(foldEvent(withdrawn, event({ type: 'order', timestamp: at('2025-06-05T00:00:00Z'), consent: tcfConsent([1, 3]) }), origin, DEFAULT_CONSENT_POLICY, false)).toBe('applied');
    expect(withdrawn.counters.order.count).toBe(2);
    expect(foldEvent(withdrawn, event({ type: 'order', timestamp: at('2025-06-06T00:00:00Z') }), origin, DEFAULT_CONSENT_POLICY, true)).toBe('opted-out');
    expect(withdrawn.counters.order.count).toBe(2);
    const fresh = profile();
    expect(foldEvent(fresh, event({ timestamp: at('2025-06-03T00:00:00Z'), identities: [{ type: 'cookie_id', value: 'c2' }] }), origin, DEFAULT_CONSENT_POLICY, false)).toBe('applied');
    // A document holding no one but a withdrawal (a split's part whose first event was a consent signal) holds it.
    const consentOnly = profile();
    consentOnly.consent = { ...tcfConsent([1]), sourceId: 'src_web', at: at('2025-06-02T00:00:00Z') };
    expect(foldEvent(consentOnly, event({ timestamp: at('2025-06-03T00:00:00Z'), identities: [{ type: 'cookie_id', value: 'c3' }] }), origin, DEFAULT_CONSENT_POLICY, false)).toBe('held');
  });

  it("keeps the browser's newest Global Privacy Control: a later request without it ends the opt-out; across documents any stands", () => {
    const doc = profile();
    const gpc = (when: string, value: boolean) => applyEvent(doc, event({ timestamp: at(when), consent: { gpc: value }, consentOnly: true }), { sourceId: 'src_tag', party: 'first', seq: 0 });
    gpc('2025-06-03T00:00:00Z', true);
    gpc('2025-06-02T00:00:00Z', false);
    expect(doc.consent?.gpc).toBe(true);
    expect(profilingRefusal(doc.consent ?? undefined, DEFAULT_CONSENT_POLICY)).toBe('gpp_opt_out');
    gpc('2025-06-04T00:00:00Z', false);
    expect(doc.consent?.gpc).toBe(false);
    expect(mostRestrictiveConsent([doc.consent!, { gpc: true, sourceId: 'src_app', at: at('2025-06-01T00:00:00Z') }])?.gpc).toBe(true);
  });

  it('reads a document folded before kinds were dated as if each kind it holds dates from its consent time', () => {
    const doc = profile();
    doc.consent = { ...tcfConsent([]), purposes: { ads: true }, sourceId: 'src_old', at: at('2025-06-05T00:00:00Z') };
    applyEvent(doc, event({ timestamp: at('2025-06-04T00:00:00Z'), consent: { ...tcfConsent([1, 3]), purposes: { ads: false, crm: true } }, consentOnly: true }), { sourceId: 'src_a', party: 'first', seq: 0 });
    expect(doc.consent).toMatchObject({ tcf: { purposeConsents: [] }, purposes: { ads: true, crm: true }, sourceId: 'src_old', at: at('2025-06-05T00:00:00Z') });
  });

  it('holds back an event (a withdrawal recorded earlier): nothing of it applied, and a retry of it is a repeat even once consent is given again', () => {
    const doc = profile();
    const origin = { sourceId: 'src_server', party: 'first' as const, seq: 4 };
    const order = event({ id: 'order-1', type: 'order', timestamp: at('2025-06-03T00:00:00Z'), traits: { tier: 'gold' } });
    expect(holdEvent(doc, order, origin)).toBe(true);
    expect(doc.counters).toEqual({});
    expect(doc.traits).toEqual({});
    expect(doc.applied).toEqual({ src_server: 4 });
    expect(holdEvent(doc, order, origin)).toBe(false);
    applyEvent(doc, event({ timestamp: at('2025-06-04T00:00:00Z'), consent: tcfConsent([1, 3]) }), { sourceId: 'src_web', party: 'first', seq: 0 });
    expect(applyEvent(doc, order, { ...origin, seq: 5 })).toBe(false);
    expect(doc.counters.order).toBeUndefined();
  });

  it('keeps consent when a newer event carries none', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), consent: tcfConsent([1]) }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-09T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 1 });
    expect(doc.consent?.tcf?.purposeConsents).toEqual([1]);
  });

  it('lists each source once, in order of first appearance', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_b', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_b', party: 'first', seq: 1 });
    expect(doc.sources).toEqual(['src_b', 'src_a']);
  });

  it('adds identities without duplicates', () => {
    const doc = profile();
    const cookie = { type: 'cookie_id' as const, value: 'c-1' };
    const crm = { type: 'crm_id' as const, value: 'c-1' };
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), identities: [cookie] }), { sourceId: 'src_a', party: 'first', seq: 0 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z'), identities: [{ ...cookie }, crm] }), { sourceId: 'src_a', party: 'first', seq: 0 });
    const seen = { firstSeen: at('2025-06-02T00:00:00Z'), lastSeen: at('2025-06-02T00:00:00Z'), sourceId: 'src_a' };
    expect(doc.identities).toEqual([{ ...cookie, ...seen }, { ...crm, ...seen }]);
  });

  it('records the highest chunk applied per source, even when chunks are applied out of order', () => {
    const doc = profile();
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 3 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 1 });
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_b', party: 'first', seq: 0 });
    expect(doc.applied).toEqual({ src_a: 3, src_b: 0 });
  });
});

describe('applyEvent: repeats of events already folded', () => {
  const origin = (sourceId = 'src_a', seq = 0) => ({ sourceId, party: 'first' as const, seq });

  it('drops an event whose id the document has folded from the same source, changing nothing', () => {
    const doc = profile();
    expect(applyEvent(doc, event({ id: 'm-1', type: 'purchase', timestamp: at('2025-06-02T00:00:00Z'), traits: { tier: 'gold' } }), origin('src_a', 0))).toBe(true);
    const before = structuredClone(doc);
    expect(applyEvent(doc, event({ id: 'm-1', type: 'purchase', timestamp: at('2025-06-02T00:00:00Z'), traits: { tier: 'gold' } }), origin('src_a', 7))).toBe(false);
    expect(doc).toEqual(before);
    expect(doc.counters.purchase.count).toBe(1);
  });

  it('keeps ids per source: the same id from another source is another event', () => {
    const doc = profile();
    expect(applyEvent(doc, event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin('src_a'))).toBe(true);
    expect(applyEvent(doc, event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin('src_b'))).toBe(true);
    expect(doc.counters.page_view.count).toBe(2);
  });

  it('remembers ids across versions: a repeat folded into the next version is dropped too', () => {
    const doc = profile();
    applyEvent(doc, event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin());
    const next = nextVersion(doc);
    expect(applyEvent(next, event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin('src_a', 1))).toBe(false);
    expect(next.counters.page_view.count).toBe(1);
  });

  it(`remembers the newest ${EVENT_IDS_KEPT} ids: the oldest is forgotten first, and a repeat of it counts again`, () => {
    const doc = profile();
    for (let n = 0; n <= EVENT_IDS_KEPT; n++) expect(applyEvent(doc, event({ id: `m-${n}`, timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(true);
    // m-0 was pushed out by m-500; m-1 … m-500 are still remembered.
    expect(applyEvent(doc, event({ id: `m-${EVENT_IDS_KEPT}`, timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(false);
    expect(applyEvent(doc, event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(false);
    expect(applyEvent(doc, event({ id: 'm-0', timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(true);
    expect(doc.counters.page_view.count).toBe(EVENT_IDS_KEPT + 2);
    // Remembering m-0 again pushed out m-1, the oldest.
    expect(applyEvent(nextVersion(doc), event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(true);
  });

  it(`remembers exactly the newest ${EVENT_IDS_KEPT} ids after any number of events, across versions and a store round trip, in ~6 KB`, () => {
    let doc = profile();
    const total = 3 * EVENT_IDS_KEPT + 17;
    for (let n = 0; n < total; n++) {
      if (n % 97 === 0) doc = BSON.deserialize(BSON.serialize(nextVersion(doc))) as ProfileDoc;
      expect(applyEvent(doc, event({ id: `m-${n}`, timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(true);
      if (n % 41 !== 0 && n !== total - 1) continue;
      for (const back of [0, 1, EVENT_IDS_KEPT - 1, EVENT_IDS_KEPT, EVENT_IDS_KEPT + 1, 2 * EVENT_IDS_KEPT].filter((k) => k <= n)) {
        const repeated = applyEvent(structuredClone(doc), event({ id: `m-${n - back}`, timestamp: at('2025-06-02T00:00:00Z') }), origin());
        expect({ n, back, applied: repeated }).toEqual({ n, back, applied: back >= EVENT_IDS_KEPT });
      }
      expect((doc.recentEventIds ?? '').length + (doc.recentEventIdsTail ?? '').length).toBeLessThanOrEqual((EVENT_IDS_KEPT + 32) * 12);
    }
  });

  it('reads a document stored before the tail existed (its newest 500 ids in one string) the same way', () => {
    const stored = { ...profile(), recentEventIds: Array.from({ length: EVENT_IDS_KEPT }, (_, n) => eventIdToken('src_a', `m-${n}`)).join('') };
    expect(applyEvent(structuredClone(stored), event({ id: 'm-0', timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(false);
    expect(applyEvent(stored, event({ id: `m-${EVENT_IDS_KEPT}`, timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(true);
    // m-500 pushed out m-0, the oldest; m-1 is still remembered.
    expect(applyEvent(structuredClone(stored), event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(false);
    expect(applyEvent(structuredClone(stored), event({ id: 'm-0', timestamp: at('2025-06-02T00:00:00Z') }), origin())).toBe(true);
  });

  it('applies a repeated consent signal again (harmless) and does not remember it', () => {
    const doc = profile();
    const signal = event({ id: 'm-1', timestamp: at('2025-06-02T00:00:00Z'), consentOnly: true, consent: { purposes: { analytics: false } } as StoredConsent });
    expect(applyEvent(doc, signal, origin())).toBe(true);
    expect(applyEvent(doc, signal, origin())).toBe(true);
    expect(doc.recentEventIds).toBeUndefined();
    expect(doc.recentEventIdsTail).toBeUndefined();
  });
});

describe('foldOrder', () => {
  it('orders events by time, then a consent signal first, then id, whatever order they come in', () => {
    const event = (id: string, day: string, consent?: boolean) => ({ id, timestamp: at(day), ...(consent && { consent: tcfConsent([1]) }) });
    const shuffled = [event('z', '2025-06-02T00:00:00Z'), event('b', '2025-06-01T00:00:00Z'), event('y', '2025-06-02T00:00:00Z', true), event('a', '2025-06-02T00:00:00Z')];
    expect(shuffled.sort(foldOrder).map((e) => e.id)).toEqual(['b', 'y', 'a', 'z']);
  });
});

describe('hasApplied', () => {
  it('is false for a source the profile has never seen', () => {
    expect(hasApplied({}, 'src_a', 0)).toBe(false);
    expect(hasApplied({ src_b: 5 }, 'src_a', 0)).toBe(false);
  });

  it('is true for the last applied chunk and every earlier one', () => {
    expect(hasApplied({ src_a: 5 }, 'src_a', 5)).toBe(true);
    expect(hasApplied({ src_a: 5 }, 'src_a', 4)).toBe(true);
    expect(hasApplied({ src_a: 5 }, 'src_a', 0)).toBe(true);
  });

  it('is false for a later chunk', () => {
    expect(hasApplied({ src_a: 5 }, 'src_a', 6)).toBe(false);
  });

  it('treats chunk 0 as applied once recorded', () => {
    expect(hasApplied({ src_a: 0 }, 'src_a', 0)).toBe(true);
    expect(hasApplied({ src_a: 0 }, 'src_a', 1)).toBe(false);
  });

  it('agrees with what applyEvent records', () => {
    const doc = profile();
    expect(hasApplied(doc.applied, 'src_a', 2)).toBe(false);
    applyEvent(doc, event({ timestamp: at('2025-06-02T00:00:00Z') }), { sourceId: 'src_a', party: 'first', seq: 2 });
    expect(hasApplied(doc.applied, 'src_a', 2)).toBe(true);
    expect(hasApplied(doc.applied, 'src_a', 3)).toBe(false);
  });
});

describe('nextVersion', () => {
  it('copies the profile under the next versioned id without sharing state with it', () => {
    const first = newProfile('p_9', new Date('2025-01-01T00:00:00Z'), new Date('2025-01-01T00:00:00Z'));
    first.traits.tier = 'gold';
    const second = nextVersion(first);
    expect(second._id).toBe('p_9@00000001');
    expect(second.version).toBe(1);
    second.traits.tier = 'silver';
    expect(first.traits.tier).toBe('gold');
    expect(second.firstSeen).toEqual(first.firstSeen);
  });

  it('leaves the version it copies as it was while events are folded into the copy (recent events are shared, never changed)', () => {
    const first = profile();
    const fold = (doc: ProfileDoc, from: number, count: number, seq: number) => {
      for (let k = from; k < from + count; k++) {
        const type = ['page_view', 'impression', 'purchase'][k % 3];
        const timestamp = new Date(Date.UTC(2025, 5, 1) + k * 3 * 86_400_000);
        const identities: Identity[] = [{ type: 'cookie_id', value: 'c1' }, ...(k % 4 === 0 ? [{ type: 'crm_id' as const, value: `crm-${k}` }] : [])];
        applyEvent(doc, event({ type, timestamp, identities, traits: { tier: `t${k}` }, properties: { campaign: 'spring', page: `/p/${k % 5}` }, consent: tcfConsent([1, k % 10]) }), { sourceId: 'src_a', party: 'first', seq });
      }
    };
    fold(first, 0, RECENT_EVENTS_KEPT * 3, 0);
    const before = structuredClone(first);
    const second = nextVersion(first);
    // Newer events, older ones within the window, and a window that moves past the first days.
    fold(second, RECENT_EVENTS_KEPT * 3, 40, 1);
    fold(second, 1, 5, 2);
    expect(second.counters[encodeFieldName('page_view')].count).toBeGreaterThan(before.counters[encodeFieldName('page_view')].count);
    expect(first).toEqual(before);
  });
});

describe('applyEvent: a document stays within the store', () => {
  const origin = (seq: number) => ({ sourceId: 'src_a', party: 'first' as const, seq });
  const hour = (k: number) => new Date(Date.UTC(2025, 5, 1) + k * 3_600_000);
  /** The longest values an event may carry: 100 strings of 1,024 characters (non-ASCII ones take 3 bytes each). */
  const longList = (k: number) => Array.from({ length: 100 }, (_, n) => `${k}:${n}:`.padEnd(1024, 'é'));

  it('keeps new traits only while their bytes fit, counts the rest, and still lets a held trait change', () => {
    const doc = profile();
    for (let k = 0; k < 40; k++) {
      // Each event names traits no other does, as a client putting a time into trait names would.
      const traits = Object.fromEntries(Array.from({ length: 5 }, (_, n) => [`t_${k}_${n}`, longList(k)]));
      applyEvent(doc, event({ timestamp: hour(k), traits }), origin(k));
    }
    const held = Object.keys(doc.traits);
    expect(held.length).toBeGreaterThan(0);
    expect(held.length).toBeLessThan(200);
    expect(doc.limited?.traits).toBe(200 - held.length);
    // The first ones folded are the ones kept.
    expect(held).toEqual(Array.from({ length: 200 }, (_, n) => `t_${Math.floor(n / 5)}_${n % 5}`).slice(0, held.length));
    expect(BSON.calculateObjectSize({ traits: doc.traits, traitOrigins: doc.traitOrigins })).toBeLessThan(3 * TRAIT_BYTES_KEPT);
    // A held trait takes a newer value no larger than its own; a larger one, past the limit, is counted.
    applyEvent(doc, event({ timestamp: hour(50), traits: { [held[0]]: 'short' } }), origin(50));
    expect(doc.traits[held[0]]).toBe('short');
    applyEvent(doc, event({ timestamp: hour(51), traits: { [held[0]]: longList(51) } }), origin(51));
    expect(doc.traits[held[0]]).toEqual(longList(51)); // into the room 'short' left
    const refusedBefore = doc.limited?.traits ?? 0;
    applyEvent(doc, event({ timestamp: hour(52), traits: { new_trait: longList(52), [held[2]]: longList(52) } }), origin(52));
    expect(doc.traits).not.toHaveProperty('new_trait');
    expect(doc.traits[held[2]]).toEqual(longList(52)); // same size: replaced
    expect(doc.limited?.traits).toBe(refusedBefore + 1);
    expect(combineProfiles([doc]).limited).toEqual({ traits: refusedBefore + 1, eventTypes: 0 });
  });

  it(`counts the first ${EVENT_TYPES_KEPT} event types to come and the events of the others as limited, applying the rest of them`, () => {
    const doc = profile();
    const types = Array.from({ length: EVENT_TYPES_KEPT + 30 }, (_, k) => `Type ${k}`);
    types.forEach((type, k) => applyEvent(doc, event({ timestamp: hour(k), type, traits: { last: k } }), origin(k)));
    // The types a profile held first stay, whatever names come later.
    expect(Object.keys(doc.counters)).toEqual(types.slice(0, EVENT_TYPES_KEPT).map(encodeFieldName));
    expect(doc.limited).toEqual({ eventTypes: 30 });
    expect(doc.traits.last).toBe(EVENT_TYPES_KEPT + 29);
    applyEvent(doc, event({ timestamp: hour(900), type: types[0] }), origin(900));
    applyEvent(doc, event({ timestamp: hour(901), type: types[EVENT_TYPES_KEPT] }), origin(901));
    expect(doc.counters[encodeFieldName(types[0])].count).toBe(2);
    expect(doc.limited).toEqual({ eventTypes: 31 });
  });

  it(`keeps of a recent event's properties the item first, then the smallest, within ${RECENT_PROPERTY_BYTES} bytes`, () => {
    const doc = profile();
    const item = `https://shop.example/${'p'.repeat(1000)}`;
    const properties = { a_list: longList(0), b_small: 'shoes', c_text: 'x'.repeat(900), d_more: 'y'.repeat(200), e_last: 7, item };
    applyEvent(doc, event({ timestamp: hour(0), properties }), origin(0));
    expect(doc.counters.page_view.recent?.[0].properties).toEqual({ item, e_last: 7, b_small: 'shoes', d_more: 'y'.repeat(200) });
  });

  it('stays well under 16 MB when every kept type holds its recent events full and traits fill their bytes', () => {
    const doc = profile();
    const sourceId = `src_${'s'.repeat(36)}`;
    let seq = 0;
    // 16 properties of ~95 bytes fill a recent event's bytes; each type holds its newest 32 events.
    const properties = Object.fromEntries(Array.from({ length: RECENT_PROPERTIES_KEPT }, (_, n) => [`p${String(n).padStart(2, '0')}`, 'v'.repeat(85)]));
    for (let type = 0; type < EVENT_TYPES_KEPT; type++) {
      for (let n = 0; n < RECENT_EVENTS_KEPT + 1; n++) applyEvent(doc, event({ timestamp: hour(n), type: `type_${type}`, properties }), { sourceId, party: 'first', seq: seq++ });
    }
    // Tiny traits carry the most overhead (names twice, origins) for their bytes.
    for (let batch = 0; batch < 40; batch++) {
      const traits = Object.fromEntries(Array.from({ length: 500 }, (_, n) => [`t${batch * 500 + n}`, n]));
      applyEvent(doc, event({ timestamp: hour(batch), traits }), { sourceId, party: 'first', seq: seq++ });
    }
    expect(doc.counters.type_0.recent?.[0].properties).toEqual(properties);
    expect(doc.limited?.traits).toBeGreaterThan(0);
    const bytes = BSON.serialize(doc).length;
    expect(bytes).toBeLessThan(12 * 1024 * 1024);
    expect(bytes).toBeGreaterThan(6 * 1024 * 1024); // the limits, not the test's events, are what bound it
  });

  it('ends alike whether the events are folded into one version or across several', () => {
    const events = Array.from({ length: 60 }, (_, k) => event({ timestamp: hour(k), type: `type_${k % 7}`, traits: { [`t_${k}`]: longList(k) } }));
    const whole = profile();
    events.forEach((e, k) => applyEvent(whole, e, origin(k)));
    let versioned = profile();
    events.forEach((e, k) => {
      if (k % 9 === 0) versioned = BSON.deserialize(BSON.serialize(nextVersion(versioned))) as ProfileDoc;
      applyEvent(versioned, e, origin(k));
    });
    expect(whole.limited?.traits).toBeGreaterThan(0);
    const { _id: _a, version: _b, ...wholeContent } = whole;
    const { _id: _c, version: _d, ...versionedContent } = versioned;
    expect(versionedContent).toEqual(wholeContent);
  });
});
