import { buildOpenApiDocument } from '../../api/openapi';

const CONFIG = { DMP_MAX_BATCH_EVENTS: 1000, DMP_MAX_BODY_BYTES: 1_048_576, DMP_DESTINATION_ALLOWLIST: [] };

describe('the OpenAPI document', () => {
  it('comes out the same however many times it is built in one process', () => {
    const first = JSON.stringify(buildOpenApiDocument(CONFIG));
    buildOpenApiDocument(CONFIG);
    expect(JSON.stringify(buildOpenApiDocument(CONFIG))).toBe(first);
  });

  it("states an event's traits as an object of named values, with the names' and the values' limits", () => {
    const document = buildOpenApiDocument(CONFIG) as unknown as { components: { schemas: Record<string, { properties: Record<string, Record<string, unknown>> }> } };
    const traits = document.components.schemas.Event.properties.traits;
    expect(traits).toMatchObject({ type: 'object', propertyNames: { type: 'string', minLength: 1, maxLength: 128 } });
    expect(JSON.stringify(traits.additionalProperties)).toContain('"maxLength":1024');
  });
});
