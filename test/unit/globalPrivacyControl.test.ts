import { withBrowserGpc } from '../../api/globalPrivacyControl';

describe('withBrowserGpc', () => {
  const event = { type: 'page_view', identities: { cookie_id: 'c' } };

  it("states Global Privacy Control when the browser sent it, beside the event's own consent", () => {
    expect(withBrowserGpc(event, true, false)).toEqual({ ...event, consent: { gpc: true } });
    expect(withBrowserGpc({ ...event, consent: { tcf: 'TC', gpc: false } }, true, true)).toEqual({ ...event, consent: { tcf: 'TC', gpc: true } });
  });

  it('states its absence only on a channel browsers alone call, and only beside consent the event carries', () => {
    expect(withBrowserGpc(event, false, true)).toBe(event);
    expect(withBrowserGpc({ ...event, consent: { tcf: 'TC' } }, false, true)).toEqual({ ...event, consent: { tcf: 'TC', gpc: false } });
    // The Segment routes serve server SDKs too, which never send the header: their absence says nothing.
    const fromServer = { ...event, consent: { tcf: 'TC' } };
    expect(withBrowserGpc(fromServer, false, false)).toBe(fromServer);
  });

  it('leaves an event whose consent is no object, or whose gpc is no boolean, for validation to refuse', () => {
    for (const bad of [{ ...event, consent: 'x' }, { ...event, consent: null }, { ...event, consent: [] }, { ...event, consent: { gpc: 'yes' } }]) {
      expect(withBrowserGpc(bad, true, true)).toBe(bad);
    }
    expect(withBrowserGpc('nonsense', true, true)).toBe('nonsense');
  });
});
