/*
 * DMP tag: page views, custom events and identities of a site's visitors, for one source.
 *
 * Embed it with the source's write key; the optional first script lets the page call `dmp` before the
 * tag has loaded (the calls are queued and replayed in order):
 *
 *   <script>window.dmp=window.dmp||{q:[]};['track','identify','page'].forEach(function(m){dmp[m]=dmp[m]||function(){dmp.q.push([m,[].slice.call(arguments)])}})</script>
 *   <script async src="https://dmp.example/v1/tag.js?writeKey=WRITE_KEY"></script>
 *
 *   dmp.track(type, properties)       a custom event; property values are flat: strings, numbers, booleans, null or lists of them
 *   dmp.identify(identities, traits)  who the visitor is: { email, phone, crm_id, email_sha256, phone_sha256, maid } (hashed by the platform)
 *   dmp.page(properties)              another page view (single-page apps); one is sent on load with url, referrer and title
 *
 * The visitor's id is a first-party cookie `_dmp_id` on the site's registrable domain (13 months, SameSite=Lax), sent as
 * `cookie_id`. Consent is read from the page's CMP, through `__tcfapi` (TCF v2) and `__gpp` (GPP), and attached to every event
 * as `consent: {tcf, gpp, gppSid}` (a CMP whose stub comes after the tag is looked for again before each send); events wait for the CMP's answer — the visitor's choice where its banner is up — until the page is
 * hidden or left, and at most 10 seconds from the tag's load for a CMP that has not answered, 30 while its banner is up, so a
 * returning visitor's slow CMP still tags them with their choice. Where the GDPR applies and purpose 1 (storing information on
 * a device) is not consented (nor, when the source names its IAB vendor id, consented to that vendor without a publisher
 * restriction barring it), the cookie is neither read nor written (a withdrawal removes it) and events carry an id for the page
 * only; while a TCF CMP on the page has no TC string to give (the visitor has not chosen yet), events also say
 * `purposes: {profiling: false}`, and while a GPP CMP has no GPP string to give, `gppPending: true`. Events are sent together a second after the first (once consent is known), and at once when the page is hidden or
 * left, with navigator.sendBeacon (a text/plain body, so no CORS preflight) or else fetch with keepalive.
 */
(function (window, document) {
  'use strict';
  var COOKIE = '_dmp_id';
  var COOKIE_MAX_AGE = 395 * 24 * 3600;
  var COOKIE_ID = /^[A-Za-z0-9_-]{16,64}$/;
  var FLUSH_MS = 1000;
  // Bounds, from the tag's load, for a CMP that has not answered at all (a slow or blocked one) and for a banner left open
  // (the visitor still choosing); the page hidden or left sends at once.
  var CMP_LOAD_WAIT_MS = 10000;
  var CMP_CHOICE_WAIT_MS = 30000;
  var MAX_EVENTS = 100;
  var MAX_BYTES = 60000; // a beacon or keepalive request may carry 64 KiB
  var MAX_TEXT = 1024;
  var IDENTITY_TYPES = ['email', 'phone', 'crm_id', 'email_sha256', 'phone_sha256', 'maid'];
  var GPP_STRING = /^D[A-Za-z0-9_~.-]+$/;
  // The source's IAB vendor id (its consent policy's tcfVendorId), written in by the server that serves the script.
  var VENDOR_ID = /*tcfVendorId*/ null;

  var stub = window.dmp;
  if (stub && stub.loaded) return;
  var script = document.currentScript || document.querySelector('script[src*="/tag.js"]');
  var src = script && new URL(script.src, location.href);
  var writeKey = src && src.searchParams.get('writeKey');
  if (!writeKey) {
    if (window.console) console.warn('dmp: the tag needs ?writeKey= in its src');
    return;
  }
  var endpoint = src.origin + src.pathname.replace(/tag\.js$/, 'tag/events') + '?writeKey=' + encodeURIComponent(writeKey);

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 15) | 64;
    bytes[8] = (bytes[8] & 63) | 128;
    var hex = '';
    for (var i = 0; i < 16; i++) hex += (bytes[i] + 256).toString(16).slice(1);
    return hex.slice(0, 8) + '-' + hex.slice(8, 12) + '-' + hex.slice(12, 16) + '-' + hex.slice(16, 20) + '-' + hex.slice(20);
  }
  var pageId = newId();
  var queue = []; // events not sent yet, with the identities they were given
  var firstQueuedAt = 0;
  var timer = null;

  // ---- consent --------------------------------------------------------------------------------
  var hasTcf = typeof window.__tcfapi === 'function';
  var hasGpp = typeof window.__gpp === 'function';
  var tcf = null; // the CMP's latest answer: { applies, tcString, storage }
  var tcfDecided = !hasTcf;
  var gpp = null; // { gppString, euStorage, sid }: euStorage is null unless the GPP string's EU TCF section applies; sid, the sections in force
  var gppDecided = !hasGpp;
  var loadedAt = new Date().getTime();
  var waitUntil = loadedAt + CMP_LOAD_WAIT_MS;
  var cmpFoundAt = loadedAt; // when a CMP was found: at load, or later (lookForCmp)

  function consentKnown() {
    return (tcfDecided && gppDecided) || new Date().getTime() >= waitUntil;
  }

  /**
   * Whether the source's vendor, when it names one, may rely on consent for purpose 1: consented to, and not barred by a
   * publisher restriction of purpose 1 of type 0 ("not allowed") or 2 ("require legitimate interest", which consent cannot meet).
   */
  function vendorMayStore(vendorConsented, restrictionTypes) {
    return VENDOR_ID === null || (!!vendorConsented && restrictionTypes.indexOf(0) === -1 && restrictionTypes.indexOf(2) === -1);
  }

  /**
   * Whether the cookie may be read and written: not where the GDPR applies without consent to purpose 1, nor while the CMP
   * has not answered. (A GPP string's EU section is read for CMPs without `__tcfapi`; TCF CMPs must offer it.)
   */
  function storageAllowed() {
    if (hasTcf) return !!tcf && (!tcf.applies || tcf.storage);
    return gppDecided && (!gpp || gpp.euStorage !== false);
  }

  function consentSignal() {
    var consent = {};
    var signal = false;
    if (tcf && tcf.applies && tcf.tcString) {
      consent.tcf = tcf.tcString;
      signal = true;
    } else if (hasTcf && (!tcf || tcf.applies)) {
      // The GDPR applies (or the CMP has not said) and there is no TC string yet: nothing was consented.
      consent.purposes = { profiling: false };
      signal = true;
    } else if (tcf && !tcf.applies) {
      // The CMP says the GDPR does not apply: this ends a no-decision mark an earlier page sent before it answered.
      consent.tcfNotApplicable = true;
      signal = true;
    }
    // A string from before the CMP is ready (an empty "DBAA" while it loads) is not the visitor's decision.
    if (gpp && gppDecided && GPP_STRING.test(gpp.gppString) && gpp.gppString.length <= 4096) {
      consent.gpp = gpp.gppString;
      if (gpp.sid) consent.gppSid = gpp.sid;
      signal = true;
    } else if (hasGpp && !gppDecided) {
      // A GPP CMP that has not answered may hold the EU decision or a US opt-out: the server decides what that leaves.
      consent.gppPending = true;
      signal = true;
    }
    return signal ? consent : null;
  }

  function onConsentChange() {
    if (tcfDecided && gppDecided && !storageAllowed()) forgetCookie();
    if (!queue.length || !consentKnown()) return;
    // Waiting for this answer: send a second after the first event, not when the wait would have run out.
    if (timer) clearTimeout(timer);
    timer = null;
    schedule(firstQueuedAt + FLUSH_MS - new Date().getTime());
  }

  function listenToTcf() {
    try {
      window.__tcfapi('addEventListener', 2, function (data, success) {
        if (!success || !data) return;
        var consents = data.purpose && data.purpose.consents;
        var vendors = data.vendor && data.vendor.consents;
        var restrictions = data.publisher && data.publisher.restrictions && data.publisher.restrictions[1];
        var storage = !!(consents && consents[1]) && vendorMayStore(vendors && vendors[VENDOR_ID], restrictions ? [restrictions[VENDOR_ID]] : []);
        tcf = { applies: data.gdprApplies !== false, tcString: data.tcString || '', storage: storage };
        // 'cmpuishown' is an answer too, but the visitor is still choosing: wait (up to the longer bound) for their choice.
        if (data.eventStatus === 'tcloaded' || data.eventStatus === 'useractioncomplete' || data.gdprApplies === false) tcfDecided = true;
        else waitUntil = Math.max(waitUntil, cmpFoundAt + CMP_CHOICE_WAIT_MS);
        onConsentChange();
      });
    } catch (error) {
      tcfDecided = true;
    }
  }
  if (hasTcf) listenToTcf();

  function onGpp(ping) {
    if (!ping) return;
    var ready = ping.signalStatus === 'ready' || (!ping.signalStatus && ping.cmpStatus === 'loaded') || ping.cmpStatus === 'error';
    // A CMP updating its string (the visitor choosing again) says 'not ready' meanwhile: the last ready answer stands until the next one.
    if (!ready && gppDecided) return;
    if (typeof ping.gppString !== 'string') {
      // A GPP 1.0 ping carries no string: no signal to wait for once the CMP has loaded.
      if (ready) gppDecided = true;
      onConsentChange();
      return;
    }
    var eu = null;
    if (ping.applicableSections && ping.applicableSections.indexOf(2) !== -1 && ping.parsedSections && ping.parsedSections.tcfeuv2) {
      var section = ping.parsedSections.tcfeuv2;
      var core = section instanceof Array ? section[0] : section;
      var types = [];
      var ranges = (core && core.PublisherRestrictions) || [];
      for (var r = 0; r < ranges.length; r++) {
        if (ranges[r].key === 1 && ranges[r].ids && ranges[r].ids.indexOf(VENDOR_ID) !== -1) types.push(ranges[r].type);
      }
      eu = !!(core && core.PurposeConsents && core.PurposeConsents[0]) && vendorMayStore(core && core.VendorConsents && core.VendorConsents.indexOf(VENDOR_ID) !== -1, types);
    }
    gpp = { gppString: ping.gppString, euStorage: eu, sid: sectionsInForce(ping.applicableSections) };
    if (ready) gppDecided = true;
    onConsentChange();
  }

  /** The CMP's `applicableSections` as the server takes them (up to 32 ids, -1 to 255); null when it gave none. */
  function sectionsInForce(sections) {
    if (!(sections instanceof Array) || sections.length === 0 || sections.length > 32) return null;
    for (var i = 0; i < sections.length; i++) {
      if (typeof sections[i] !== 'number' || sections[i] % 1 !== 0 || sections[i] < -1 || sections[i] > 255) return null;
    }
    return sections.slice();
  }

  function listenToGpp() {
    try {
      window.__gpp('addEventListener', function (event, success) {
        if (success && event) onGpp(event.pingData);
      });
      window.__gpp('ping', function (ping, success) {
        if (success) onGpp(ping);
      });
    } catch (error) {
      gppDecided = true;
    }
  }
  if (hasGpp) listenToGpp();

  /**
   * A CMP whose stub came after the tag (a tag manager loading them out of order) is looked for
   * again before each send, and waited for as one found at load: the wait runs from when it is found.
   */
  function lookForCmp() {
    var lateTcf = !hasTcf && typeof window.__tcfapi === 'function';
    var lateGpp = !hasGpp && typeof window.__gpp === 'function';
    if (!lateTcf && !lateGpp) return;
    cmpFoundAt = new Date().getTime();
    waitUntil = Math.max(waitUntil, cmpFoundAt + CMP_LOAD_WAIT_MS);
    if (lateTcf) {
      hasTcf = true;
      tcfDecided = false;
      listenToTcf();
    }
    if (lateGpp) {
      hasGpp = true;
      gppDecided = false;
      listenToGpp();
    }
  }

  // ---- the cookie -----------------------------------------------------------------------------
  function readCookie() {
    var match = document.cookie.match(new RegExp('(?:^|;\\s*)' + COOKIE + '=([^;]*)'));
    return match && COOKIE_ID.test(match[1]) ? match[1] : null;
  }

  /** Candidate cookie domains, highest first: `example.co.uk` is the highest a browser accepts for `www.example.co.uk`. */
  function cookieDomains() {
    var host = location.hostname;
    if (host.indexOf('.') === -1 || /^[\d.]+$/.test(host) || host.indexOf(':') !== -1) return [];
    var labels = host.split('.');
    var domains = [];
    for (var i = labels.length - 2; i >= 0; i--) domains.push(labels.slice(i).join('.'));
    return domains;
  }

  function setCookie(value, maxAge, domain) {
    document.cookie =
      COOKIE + '=' + value + '; Max-Age=' + maxAge + '; Path=/' + (domain ? '; Domain=' + domain : '') + '; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');
  }

  /** The cookie's id, made once and never extended: consent-based identifiers should not outlive 13 months. */
  function cookieId() {
    var id = readCookie();
    if (id) return id;
    id = newId();
    forgotten = false;
    var domains = cookieDomains();
    for (var i = 0; i < domains.length; i++) {
      setCookie(id, COOKIE_MAX_AGE, domains[i]);
      if (readCookie() === id) return id;
    }
    setCookie(id, COOKIE_MAX_AGE); // host-only: localhost, IP addresses
    return readCookie() === id ? id : null;
  }

  /** Expires the cookie without reading it (a withdrawn consent); once per page unless a cookie is made again. */
  var forgotten = false;
  function forgetCookie() {
    if (forgotten) return;
    forgotten = true;
    var domains = cookieDomains();
    for (var i = 0; i < domains.length; i++) setCookie('', 0, domains[i]);
    setCookie('', 0);
  }

  // ---- events and sending ---------------------------------------------------------------------
  function copyFlat(values) {
    var copy = {};
    var any = false;
    if (values && typeof values === 'object') {
      for (var key in values) {
        if (Object.prototype.hasOwnProperty.call(values, key) && values[key] !== undefined && typeof values[key] !== 'function') {
          copy[key] = values[key];
          any = true;
        }
      }
    }
    return any ? copy : null;
  }

  /**
   * Cut to MAX_TEXT characters, never through the middle of one (a surrogate pair): the API refuses
   * longer. Nor through an email address: the API removes whole ones, and one cut would no longer
   * read as an address there, so what is left of it goes too.
   */
  function text(value) {
    var full = String(value || '');
    var cut = full.slice(0, MAX_TEXT);
    if (/[\ud800-\udbff]$/.test(cut)) cut = cut.slice(0, -1);
    if (cut.length < full.length) {
      // An `%40` the cut split in two is read whole.
      var back = (/%4?$/.exec(cut) || [''])[0].length;
      cut = /^[\w.%+'-]*(?:@|%40)/i.test(full.slice(cut.length - back)) ? cut.replace(/[\w.%+'-]*$/, '') : cut.replace(/[\w.%+'-]*(?:@|%40)[\w.%-]*$/i, '');
    }
    return cut;
  }

  function enqueue(type, identities, properties, traits) {
    var event = { id: newId(), type: type, timestamp: new Date().toISOString() };
    if (properties) event.properties = properties;
    if (traits) event.traits = traits;
    if (!queue.length) firstQueuedAt = new Date().getTime();
    queue.push({ event: event, identities: identities });
    schedule(FLUSH_MS);
  }

  function schedule(delay) {
    if (timer) return;
    timer = setTimeout(function () {
      timer = null;
      lookForCmp();
      // A timer may fire a little before the wall clock says the wait is over: wait the rest.
      if (consentKnown()) flush(false);
      else schedule(0);
    }, Math.max(delay, consentKnown() ? 0 : waitUntil - new Date().getTime()));
  }

  /** Sends what is queued; before consent is known only when the page is going away. */
  function flush(leaving) {
    lookForCmp();
    if (!queue.length || (!leaving && !consentKnown())) return;
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    var browserId = (storageAllowed() && cookieId()) || pageId;
    var consent = consentSignal();
    var events = [];
    for (var i = 0; i < queue.length; i++) {
      var event = queue[i].event;
      event.identities = { cookie_id: browserId };
      var extra = queue[i].identities;
      for (var type in extra) event.identities[type] = extra[type];
      if (consent) event.consent = consent;
      events.push(event);
    }
    queue = [];
    send(events);
  }

  function send(events) {
    // The browser's clock may be far off: the server corrects each timestamp by how far its sentAt is.
    var body = JSON.stringify({ events: events, sentAt: new Date().toISOString() });
    if (events.length > 1 && (events.length > MAX_EVENTS || new TextEncoder().encode(body).length > MAX_BYTES)) {
      var half = Math.ceil(events.length / 2);
      send(events.slice(0, half));
      send(events.slice(half));
      return;
    }
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(endpoint, body)) return;
    } catch (error) {
      // Fall through to fetch.
    }
    if (window.fetch) {
      fetch(endpoint, { method: 'POST', body: body, keepalive: true, credentials: 'omit', headers: { 'Content-Type': 'text/plain' } })['catch'](function () {});
    }
  }

  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'hidden') flush(true);
  });
  window.addEventListener('pagehide', function () {
    flush(true);
  });

  var dmp = {
    loaded: true,
    track: function (type, properties) {
      if (typeof type !== 'string' || !type) return void (window.console && console.warn('dmp.track: the event type must be a non-empty string'));
      enqueue(type, null, copyFlat(properties), null);
    },
    identify: function (identities, traits) {
      var known = {};
      var any = false;
      for (var i = 0; i < IDENTITY_TYPES.length; i++) {
        var value = identities && identities[IDENTITY_TYPES[i]];
        if (typeof value === 'string' && value) {
          known[IDENTITY_TYPES[i]] = value;
          any = true;
        }
      }
      if (!any && !copyFlat(traits)) return void (window.console && console.warn('dmp.identify: no identity of a known type (' + IDENTITY_TYPES.join(', ') + ') and no traits'));
      enqueue('identify', known, null, copyFlat(traits));
    },
    page: function (properties) {
      var page = { url: text(location.href), referrer: text(document.referrer), title: text(document.title) };
      var extra = copyFlat(properties);
      for (var key in extra) page[key] = extra[key];
      enqueue('page_view', null, page, null);
    },
  };
  window.dmp = dmp;
  dmp.page();
  var calls = (stub && stub.q) || [];
  for (var c = 0; c < calls.length; c++) {
    if (typeof dmp[calls[c][0]] === 'function') dmp[calls[c][0]].apply(dmp, calls[c][1]);
  }
})(window, document);
