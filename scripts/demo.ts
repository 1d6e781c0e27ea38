/**
 * Loads a small demo dataset through the public API: one first-party source and a few hundred
 * events for 100 visitors, some with a (hashed at the edge) email and a TCF consent-free history.
 */
const api = process.env.DMP_API_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`;
const adminKey = process.env.DMP_ADMIN_KEY ?? '';

async function post(path: string, key: string, body: unknown): Promise<any> {
  const response = await fetch(`${api}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function main(): Promise<void> {
  const source = await post('/v1/sources', adminKey, { name: 'Demo website', kind: 'events', party: 'first', labels: ['demo'] });
  const types = ['page_view', 'product_view', 'add_to_cart', 'purchase'];
  const events = [];
  for (let visitor = 0; visitor < 100; visitor++) {
    for (let n = 0; n < 6; n++) {
      const identities: Record<string, string> = { cookie_id: `demo-cookie-${visitor}` };
      if (visitor % 4 === 0) identities.email = `visitor${visitor}@example.org`;
      events.push({
        id: `demo-${visitor}-${n}`,
        type: types[(visitor + n) % types.length],
        timestamp: new Date(Date.now() - (visitor * 6 + n) * 3_600_000).toISOString(),
        identities,
        traits: { country: ['US', 'DE', 'FR', 'GB'][visitor % 4], loyalty_tier: visitor % 3 === 0 ? 'gold' : 'standard' },
        properties: { path: `/products/${(visitor * 7 + n) % 40}` },
      });
    }
  }
  const result = await post('/v1/collect', source.writeKey, { events });
  console.log(JSON.stringify({ demoSource: source.id, demoWriteKey: source.writeKey, ...result }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
