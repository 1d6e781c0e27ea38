import { sha256Hex } from '../../domain/identity';
import { newProfile, type EventCounter, type ProfileDoc } from '../../domain/profile';
import type { Rule } from '../../domain/segmentRules';
import type { SegmentDoc } from '../../store/segments';

/** Synthetic profiles and segments over them, for the segmentation benchmark and the tests that need many profiles. */
const DAY = 86_400_000;
export const EVENT_TYPES = ['page_view', 'purchase', 'add_to_cart', 'search', 'video_view'];
const PLANS = ['free', 'silver', 'gold', 'platinum'];
const COUNTRIES = ['US', 'GB', 'DE', 'FR', 'ES', 'IT', 'NL', 'SE', 'PL', 'BR'];
const INTERESTS = ['running', 'chess', 'cooking', 'travel', 'finance', 'gaming', 'music', 'film'];
export const CATEGORIES = ['shoes', 'books', 'garden', 'toys', 'tech', 'beauty'];

/** A synthetic profile document: what a drain would have written for a visitor with some history. */
export function syntheticProfile(n: number, random: () => number, now: number): ProfileDoc {
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)];
  const lastSeen = new Date(now - Math.floor(random() * 120 * DAY));
  const id = `p_bench${n.toString(36).padStart(9, '0')}`;
  const doc = newProfile(id, lastSeen, new Date(lastSeen.getTime() - Math.floor(random() * 200 * DAY)));
  doc.lastSeen = lastSeen;
  const source = 'src_bench_segment';
  const seen = { firstSeen: doc.firstSeen, lastSeen, sourceId: source };
  doc.identities.push({ type: 'cookie_id', value: `ck-${n}`, ...seen });
  if (random() < 0.3) doc.identities.push({ type: 'email_sha256', value: sha256Hex(`user${n}@example.com`), ...seen });
  if (random() < 0.2) doc.identities.push({ type: 'maid', value: `maid-${n}`, ...seen });
  if (random() < 0.1) doc.identities.push({ type: 'crm_id', value: `crm-${n}`, ...seen });
  const origin = { at: lastSeen, sourceId: source, party: 'first' as const };
  const traits: Record<string, unknown> = { plan: pick(PLANS), age: 18 + Math.floor(random() * 62), country: pick(COUNTRIES) };
  if (random() < 0.6) traits.interests = INTERESTS.filter(() => random() < 0.25);
  if (random() < 0.5) traits.newsletter = random() < 0.5;
  for (const [name, value] of Object.entries(traits)) {
    doc.traits[name] = value;
    doc.traitOrigins[name] = origin;
  }
  for (const type of EVENT_TYPES) {
    if (random() > (type === 'page_view' ? 0.95 : 0.4)) continue;
    const days: Record<string, number> = {};
    const recent: NonNullable<EventCounter['recent']> = [];
    let count = 0;
    for (let k = 1 + Math.floor(random() * 8); k > 0; k--) {
      const at = new Date(lastSeen.getTime() - Math.floor(random() * 89) * DAY);
      const day = at.toISOString().slice(0, 10).replace(/-/g, '');
      const times = 1 + Math.floor(random() * 3);
      days[day] = (days[day] ?? 0) + times;
      count += times;
      if (recent.length < 6) recent.push({ at, properties: type === 'purchase' || type === 'add_to_cart' ? commerceProperties(pick(CATEGORIES), random) : {} });
    }
    recent.sort((a, b) => b.at.getTime() - a.at.getTime());
    const firstSeen = recent[recent.length - 1].at;
    doc.counters[type] = { count: count + Math.floor(random() * 20), firstSeen, lastSeen: recent[0].at, days, recent };
  }
  if (random() < 0.7) {
    // The door let these people in: purposes 1 and 3 (the default policy's) granted, the others as they chose.
    const purposes = [1, 3, ...[2, 4, 5, 6, 7, 8, 9, 10].filter(() => random() < 0.8)].sort((a, b) => a - b);
    doc.consent = {
      tcf: { tcString: 'bench', policyVersion: 4, cmpId: 7, created: lastSeen, purposeConsents: purposes, purposeLegitimateInterests: [], vendorConsents: [] },
      sourceId: source,
      at: lastSeen,
    };
  }
  doc.sources = [source];
  return doc;
}

/** Fifty segments over every rule kind, a few built on others (by index into the list). */
export function mixedSegments(random: () => number, count = 50): Array<Rule | ((ids: string[]) => Rule)> {
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)];
  const rules: Array<Rule | ((ids: string[]) => Rule)> = [];
  for (const plan of PLANS) rules.push({ trait: 'plan', op: 'eq', value: plan });
  for (const country of COUNTRIES.slice(0, 5)) rules.push({ all: [{ trait: 'country', op: 'eq', value: country }, { lastSeen: { within: 'P30D' } }] });
  for (const interest of INTERESTS.slice(0, 5)) rules.push({ trait: 'interests', op: 'contains', value: interest });
  rules.push({ trait: 'age', op: 'gte', value: 50 }, { trait: 'age', op: 'lt', value: 25 }, { trait: 'newsletter', op: 'eq', value: true }, { trait: 'plan', op: 'in', value: ['gold', 'platinum'] });
  for (const type of EVENT_TYPES) rules.push({ event: type, count: { op: 'gte', value: 3 }, within: 'P30D' });
  for (const category of CATEGORIES) rules.push({ event: 'purchase', within: 'P60D', where: [{ property: 'category', op: 'eq', value: category }] });
  rules.push({ event: 'add_to_cart', within: 'P14D', where: [{ property: 'total', op: 'gt', value: 150 }] });
  rules.push({ all: [{ event: 'add_to_cart', within: 'P7D' }, { not: { event: 'purchase', within: 'P7D' } }] });
  rules.push({ lastSeen: { within: 'P7D' } }, { lastSeen: { notWithin: 'P60D' } }, { lastSeen: { within: 'P90D', notWithin: 'P30D' } });
  for (const identity of ['email', 'maid', 'crm_id'] as const) rules.push({ identity });
  for (const purpose of [1, 3, 4]) rules.push({ consent: { purpose } });
  rules.push({ any: [{ identity: 'email' }, { identity: 'crm_id' }] });
  rules.push((ids) => ({ all: [{ segment: ids[2] }, { segment: ids[14] }] }));
  rules.push((ids) => ({ all: [{ segment: ids[19] }, { not: { segment: ids[30] } }] }));
  rules.push((ids) => ({ any: [{ segment: ids[0] }, { segment: ids[1] }, { consent: { purpose: pick([2, 5]) } }] }));
  rules.push({ all: [{ event: 'search', count: { op: 'gte', value: 2 } }, { trait: 'country', op: 'in', value: ['US', 'GB'] }, { identity: 'cookie_id' }] });
  while (rules.length < count) rules.push({ event: pick(EVENT_TYPES), count: { op: 'gte', value: 1 + Math.floor(random() * 5) }, within: pick(['P7D', 'P14D', 'P30D', 'P90D']) });
  return rules.slice(0, count);
}


/** A purchase's or cart's properties: its category, a total, and an item of that category's 300 (what recommendations learn from). */
function commerceProperties(category: string, random: () => number): Record<string, unknown> {
  return { category, total: Math.floor(random() * 300), item: `${category}-${Math.floor(random() * 300)}` };
}

/** A segment document as the store keeps it, for tests that write segments without the API. */
export function segmentDoc(id: string, rule: Rule, version = 1): SegmentDoc {
  const at = new Date('2026-11-01T00:00:00Z');
  return { _id: id, name: id, description: null, taxonomyPath: null, ruleJson: JSON.stringify(rule), schedule: null, version, createdAt: at, updatedAt: at, current: null, lastRun: null };
}
