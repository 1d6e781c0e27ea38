import { withBrowserGpc } from '../../api/globalPrivacyControl';

describe('withBrowserGpc', () => {
  const event = { type: 'page_view', identities: { cookie_id: 'c' } };

  it("states Global Privacy Control when the browser sent it, beside the event's own consent", () => {
    expect(withBrowserGpc(event, true)).toEqual({ ...event, consent: { gpc: true } });
    expect(withBrowserGpc({ ...event, consent: { tcf: 'TC' } }, true)).toEqual({ ...event, consent: { tcf: 'TC', gpc: true } });
  });

  it('states its absence only beside consent the event carries, so a page view without any adds no consent record', () => {
    expect(withBrowserGpc(event, false)).toBe(event);
    expect(withBrowserGpc({ ...event, consent: { tcf: 'TC' } }, false)).toEqual({ ...event, consent: { tcf: 'TC', gpc: false } });
  });

  it('leaves what is no event for validation to refuse', () => {
    expect(withBrowserGpc('nonsense', true)).toBe('nonsense');
    expect(withBrowserGpc([1], false)).toEqual([1]);
  });
});
