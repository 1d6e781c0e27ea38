import { startPlatform, type RunningPlatform } from '../support/services';
import { newSource } from '../support/sourceClient';

describe('surveys and declared data', () => {
  let platform: RunningPlatform;

  beforeAll(async () => {
    platform = await startPlatform('declared');
  });
  afterAll(async () => {
    await platform?.stop();
  });

  it("lands declared answers as traits carrying their source's party and usage labels", async () => {
    const survey = await newSource(platform.api, 'panel survey', { party: 'second', labels: ['declared', 'no_third_party_export'] });
    const web = await newSource(platform.api, 'site');
    await web.send([{ type: 'page_view', identities: { cookie_id: 'resp-1' }, traits: { language: 'de' } }]);
    const response = await survey.send([
      { type: 'survey_response', identities: { cookie_id: 'resp-1' }, traits: { favourite_sport: 'tennis', household_size: 3 }, properties: { survey: 'spring-2026' } },
    ]);
    expect(response.body).toMatchObject({ accepted: 1, rejected: [] });
    await survey.folded(1);
    await web.folded(1);

    const profile = (await survey.lookup('cookie_id', 'resp-1')).body;
    expect(profile.traits).toMatchObject({ favourite_sport: 'tennis', household_size: 3, language: 'de' });
    expect(profile.traitOrigins.favourite_sport).toMatchObject({ sourceId: survey.sourceId, party: 'second', labels: ['declared', 'no_third_party_export'] });
    expect(profile.traitOrigins.household_size.labels).toEqual(['declared', 'no_third_party_export']);
    expect(profile.traitOrigins.language).toMatchObject({ sourceId: web.sourceId, party: 'first', labels: [] });
  });
});
