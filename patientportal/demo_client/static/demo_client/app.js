// The /demo/ reference client: what the mobile app does, in plain JavaScript (no build step).
//
// Sign-in: OAuth 2.0 Authorization Code + PKCE (S256, WebCrypto) against this server, as a
// public client. Tokens live in sessionStorage (this tab only) and never in a URL: the
// ?code=... and ?connection=...&outcome=... this page is opened with are removed at once with
// history.replaceState. Everything else goes through /api/v1/, whose errors all have the shape
// {code, message, status, request_id}.
(function () {
  "use strict";

  var body = document.body;
  var CONFIG = {
    clientId: body.dataset.clientId,
    redirectUri: body.dataset.redirectUri,
    publicBaseUrl: body.dataset.publicBaseUrl,
    scopes: body.dataset.scopes,
  };
  var STORE = window.sessionStorage;
  var K = { tokens: "demo.tokens", pkce: "demo.pkce", returned: "demo.connection-return" };
  var FINISHED = ["succeeded", "partial", "failed"];
  var PURPOSE_ORDER = ["ehr_sync", "care_team_access", "engagement", "ai_processing"];
  var TREND_PREFERENCE = ["85354-9", "29463-7", "8867-4", "8310-5", "2339-0"];
  var state = { pollTimer: null, timelineCursor: null, logCursor: null, connections: [], person: "self" };

  // --- small DOM helpers ----------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) { return; }
      if (name === "text") { node.textContent = value; }
      else if (name === "class") { node.className = value; }
      else if (name.slice(0, 2) === "on") { node.addEventListener(name.slice(2), value); }
      else { node.setAttribute(name, value === true ? "" : value); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }

  function say(text) { $("status").textContent = text || ""; }

  function showError(error) {
    var box = $("error");
    if (!error) { box.hidden = true; clear(box); return; }
    clear(box);
    box.appendChild(el("strong", { text: error.message || "Something went wrong." }));
    if (error.code) {
      box.appendChild(el("span", { class: "muted" }, [" (", el("code", { class: "error-code", text: error.code }), ")"]));
    }
    box.hidden = false;
  }

  function formatDate(value, withTime) {
    if (!value) { return ""; }
    var date = new Date(value);
    if (isNaN(date.getTime())) { return String(value); }
    var options = { year: "numeric", month: "short", day: "numeric" };
    if (withTime) {
      options.hour = "2-digit"; options.minute = "2-digit";
      if (date.getFullYear() === new Date().getFullYear()) { delete options.year; }
    }
    return date.toLocaleString(undefined, options);
  }

  function humanize(text) { return String(text || "").replace(/_/g, " "); }

  // --- PKCE and the OAuth flow ----------------------------------------------------------------

  function base64url(bytes) {
    var binary = "";
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomString(byteCount) {
    var bytes = new Uint8Array(byteCount);
    window.crypto.getRandomValues(bytes);
    return base64url(bytes);
  }

  function s256(verifier) {
    return window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))
      .then(function (digest) { return base64url(new Uint8Array(digest)); });
  }

  function signIn() {
    if (!window.crypto || !window.crypto.subtle) {
      showError({ code: "insecure_context", message: "Open this page over https or on 127.0.0.1 (WebCrypto is needed for PKCE)." });
      return;
    }
    var verifier = randomString(48);
    var oauthState = randomString(24);
    s256(verifier).then(function (challenge) {
      STORE.setItem(K.pkce, JSON.stringify({ verifier: verifier, state: oauthState }));
      var query = new URLSearchParams({
        response_type: "code",
        client_id: CONFIG.clientId,
        redirect_uri: CONFIG.redirectUri,
        scope: CONFIG.scopes,
        state: oauthState,
        code_challenge: challenge,
        code_challenge_method: "S256",
      });
      window.location.assign("/o/authorize/?" + query.toString());
    });
  }

  function tokenRequest(fields) {
    fields.client_id = CONFIG.clientId;
    return fetch("/o/token/", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: new URLSearchParams(fields).toString(),
      credentials: "omit",
      cache: "no-store",
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          throw { code: data.error || "token_error", message: data.error_description || "The sign-in could not be completed." };
        }
        return data;
      });
    });
  }

  function saveTokens(data) {
    var tokens = {
      access: data.access_token,
      refresh: data.refresh_token || null,
      expiresAt: Date.now() + 1000 * (data.expires_in || 600),
      scope: data.scope || "",
    };
    STORE.setItem(K.tokens, JSON.stringify(tokens));
    return tokens;
  }

  function tokens() {
    try { return JSON.parse(STORE.getItem(K.tokens) || "null"); } catch (e) { return null; }
  }

  function finishSignIn(params) {
    var pending = null;
    try { pending = JSON.parse(STORE.getItem(K.pkce) || "null"); } catch (e) { pending = null; }
    STORE.removeItem(K.pkce);
    if (params.get("error")) {
      return Promise.reject({ code: params.get("error"), message: params.get("error_description") || "Sign-in was cancelled or refused." });
    }
    if (!pending || params.get("state") !== pending.state) {
      return Promise.reject({ code: "invalid_state", message: "This sign-in response does not belong to this tab. Sign in again." });
    }
    var iss = params.get("iss");
    if (iss && iss.replace(/\/+$/, "") !== CONFIG.publicBaseUrl && iss.replace(/\/+$/, "") !== window.location.origin) {
      return Promise.reject({ code: "iss_mismatch", message: "The sign-in response came from an unexpected issuer." });
    }
    return tokenRequest({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: CONFIG.redirectUri,
      code_verifier: pending.verifier,
    }).then(saveTokens);
  }

  var refreshing = null;
  function refreshTokens() {
    var current = tokens();
    if (!current || !current.refresh) { return Promise.reject({ code: "not_authenticated", message: "Your session has ended. Sign in again." }); }
    if (!refreshing) {
      refreshing = tokenRequest({ grant_type: "refresh_token", refresh_token: current.refresh })
        .then(saveTokens)
        .finally(function () { refreshing = null; });
    }
    return refreshing;
  }

  function signOut() {
    var current = tokens();
    STORE.removeItem(K.tokens);
    var revoke = current && current.refresh
      ? fetch("/o/revoke_token/", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: current.refresh, token_type_hint: "refresh_token", client_id: CONFIG.clientId }).toString(),
        credentials: "omit",
      }).catch(function () { /* signed out locally anyway */ })
      : Promise.resolve();
    revoke.then(function () { window.location.replace(window.location.pathname); });
  }

  // --- the API ---------------------------------------------------------------------------------

  function api(method, path, payload, retried) {
    var current = tokens();
    if (!current) { return Promise.reject({ code: "not_authenticated", message: "Sign in first." }); }
    var options = {
      method: method,
      headers: { Authorization: "Bearer " + current.access, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    };
    if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    return fetch("/api/v1/" + path, options).then(function (response) {
      if (response.status === 401 && !retried && current.refresh) {
        return refreshTokens().then(function () { return api(method, path, payload, true); });
      }
      return response.json().catch(function () { return null; }).then(function (data) {
        if (!response.ok) {
          var error = data && data.code ? data : { code: "http_" + response.status, message: "The server answered " + response.status + "." };
          if (response.status === 401) { STORE.removeItem(K.tokens); render(); }
          throw error;
        }
        return data;
      });
    });
  }

  function guarded(promise) {
    return promise.catch(function (error) { showError(error); throw error; });
  }

  // --- sections ------------------------------------------------------------------------------

  function loadMe() {
    return api("GET", "me").then(function (me) {
      $("me-email").textContent = me.email;
      $("me-name").textContent = me.given_name ? ", " + me.given_name : "";
    });
  }

  var consentState = {};
  function loadConsents() {
    return api("GET", "consents").then(function (items) {
      var list = clear($("consent-list"));
      consentState = {};
      items.sort(function (a, b) { return PURPOSE_ORDER.indexOf(a.purpose) - PURPOSE_ORDER.indexOf(b.purpose); });
      items.forEach(function (item) {
        consentState[item.purpose] = item.status;
        var granted = item.status === "granted";
        var badge = el("span", { class: "badge " + (granted ? "ok" : "warn"), text: granted ? "Given" : humanize(item.status) });
        var button = el("button", {
          type: "button",
          class: "button small " + (granted ? "secondary" : ""),
          "data-purpose": item.purpose,
          text: granted ? "Withdraw" : "I agree",
          "aria-label": (granted ? "Withdraw: " : "I agree: ") + item.document.title,
          onclick: function () { changeConsent(item, !granted, button); },
        });
        list.appendChild(el("li", { "data-purpose": item.purpose, "data-status": item.status }, [
          el("div", { class: "row-head" }, [el("span", { class: "row-title", text: item.document.title }), badge]),
          el("details", { class: "doc" }, [el("summary", { text: "Read version " + item.document.version }), el("p", { text: item.document.body })]),
          el("div", { class: "actions" }, [button]),
        ]));
      });
      renderHealthSystems();
    });
  }

  function changeConsent(item, grant, button) {
    button.disabled = true;
    showError(null);
    var call = grant
      ? api("POST", "consents/" + item.purpose + "/grant", { version: item.document.version, language: item.document.language || "en" })
      : api("POST", "consents/" + item.purpose + "/revoke", {});
    guarded(call).then(function () {
      say(grant ? "Consent given: " + item.document.title + "." : "Consent withdrawn: " + item.document.title + ".");
      return loadConsents();
    }).catch(function () { button.disabled = false; });
  }

  var healthSystems = [];
  // Find your hospital: a search box over the directory (name, alias or town; typos forgiven).
  function loadHealthSystems() {
    var box = $("hs-search");
    var query = box && box.value.trim() ? "?search=" + encodeURIComponent(box.value.trim()) : "";
    return api("GET", "health-systems" + query).then(function (page) { healthSystems = page.results; renderHealthSystems(); });
  }
  var searchTimer = null;
  if ($("hs-search")) {
    $("hs-search").addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(loadHealthSystems, 250);
    });
  }

  function renderHealthSystems() {
    var list = clear($("hs-list"));
    var canSync = consentState.ehr_sync === "granted";
    healthSystems.forEach(function (hs) {
      list.appendChild(el("li", { "data-health-system": hs.id }, [
        el("div", { class: "row-head" }, [
          el("span", { class: "row-title", text: hs.name }),
          hs.available ? el("button", {
            type: "button", class: "button small", text: "Connect",
            "aria-label": "Connect " + hs.name + (hs.city ? ", " + hs.city : ""),
            onclick: function (event) { connect(hs, event.currentTarget); },
          }) : el("span", { class: "badge", text: hs.availability === "down" ? "Down" : "Not available here" }),
        ]),
        hs.city ? el("p", { class: "muted", text: [hs.city, hs.state, hs.postal_code].filter(Boolean).join(", ") }) : null,
        canSync ? null : el("p", { class: "muted", text: "Agree to “Sync my health record” first." }),
      ]));
    });
    if (!healthSystems.length) { list.appendChild(el("li", { class: "muted", text: "No health system matches." })); }
  }

  function connect(hs, button) {
    button.disabled = true;
    showError(null);
    var existing = state.connections.filter(function (c) { return c.health_system.id === hs.id && c.status !== "disconnected"; })[0];
    var payload = { health_system: hs.id, return_uri: CONFIG.redirectUri };
    if (existing && existing.status === "needs_reauth") { payload.connection = existing.id; }
    guarded(api("POST", "connections", payload)).then(function (started) {
      say("Opening " + hs.name + "’s sign-in page…");
      // A single-use start URL on this server: it binds the launch to this browser (signed in
      // here as the same account) and goes on to the health system.
      window.location.assign(started.start_url);
    }).catch(function () { button.disabled = false; });
  }

  function statusBadge(status) {
    var kind = { active: "ok", syncing: "warn", pending: "warn", needs_reauth: "bad", error: "bad", disconnected: "" }[status];
    return el("span", { class: "badge " + (kind || ""), "data-status": status, text: humanize(status) });
  }

  function syncView(sync) {
    if (!sync) { return el("p", { class: "muted", text: "Waiting for the first sync…" }); }
    var finished = FINISHED.indexOf(sync.status) >= 0;
    var label = finished
      ? "Sync " + sync.status + ": " + sync.fetched + " records fetched" + (sync.finished_at ? ", " + formatDate(sync.finished_at, true) : "")
      : "Syncing… " + sync.percent + "% (" + sync.types_done + " of " + sync.types_total + " record types, " + sync.fetched + " records)";
    return el("div", { class: "sync", "data-sync-status": sync.status }, [
      el("progress", { max: "100", value: String(sync.percent), "aria-label": "Sync progress" }),
      el("p", { class: "muted sync-label", text: label }),
    ]);
  }

  function loadConnections() {
    return api("GET", "connections?page_size=50").then(function (page) {
      state.connections = page.results;
      renderConnections();
      renderPeople();
      return page.results;
    });
  }

  // --- whose record: the account holder's own, or someone they manage (a child, a parent) ------

  var RELATIONSHIPS = { managed: "Someone you manage", child: "Your child", parent: "Your parent", partner: "Your partner", other: "Someone you manage" };

  function managed(c) { return c.person && c.person.relationship !== "self" && c.status !== "disconnected"; }

  // withSource: name the health system too (the summary's picker; a connection's row has it as
  // its title already).
  function personName(c, withSource) {
    if (!managed(c)) { return "Your own record"; }
    var name = (c.person.label ? c.person.label + " · " : "") + RELATIONSHIPS[c.person.relationship];
    return withSource === false ? name : name + " (" + c.health_system.name + ")";
  }

  // ?person= for the records API: "self" is the default and needs no parameter.
  function personQuery(separator) {
    return state.person === "self" ? "" : separator + "person=" + encodeURIComponent(state.person);
  }

  function renderPeople() {
    var select = clear($("person-select"));
    var people = state.connections.filter(managed);
    select.appendChild(el("option", { value: "self", text: "Your own record" }));
    people.forEach(function (c) { select.appendChild(el("option", { value: c.id, text: personName(c) })); });
    if (state.person !== "self" && !people.some(function (c) { return c.id === state.person; })) { state.person = "self"; }
    select.value = state.person;
    $("person-picker").hidden = people.length === 0;
  }

  function labelPerson(c, input, relationship, button) {
    button.disabled = true;
    showError(null);
    guarded(api("PATCH", "connections/" + c.id, { label: input.value, relationship: relationship.value })).then(function (saved) {
      say("Saved: " + personName(saved, false) + " at " + saved.health_system.name + ".");
      return loadConnections();
    }).catch(function () { button.disabled = false; });
  }

  function renderConnections() {
    var list = clear($("connection-list"));
    var shown = state.connections.filter(function (c) { return c.status !== "disconnected"; });
    $("connections-empty").hidden = shown.length > 0;
    shown.forEach(function (c) {
      var confirmBox = el("div", { class: "actions", hidden: true }, [
        el("p", { text: "Disconnect " + c.health_system.name + " and erase the records synced from it? This cannot be undone." }),
        el("button", {
          type: "button", class: "button small danger", text: "Yes, disconnect and erase",
          onclick: function (event) { disconnect(c, event.currentTarget); },
        }),
        el("button", { type: "button", class: "button small secondary", text: "Keep it", onclick: function () { confirmBox.hidden = true; } }),
      ]);
      // A record someone manages: their name for the person, and how they relate to them.
      var labelInput = el("input", { id: "label-" + c.id, type: "text", maxlength: "60", autocomplete: "off", value: c.person.label || "" });
      var relationshipSelect = el("select", { id: "relationship-" + c.id }, ["managed", "child", "parent", "partner", "other"].map(function (r) {
        var option = el("option", { value: r, text: RELATIONSHIPS[r] });
        if (r === c.person.relationship) { option.selected = true; }
        return option;
      }));
      var personBox = managed(c) ? el("fieldset", { class: "person-edit" }, [
        el("legend", { text: "Who is this?" }),
        el("p", { class: "muted", text: "You manage this record at " + c.health_system.name + ". Your own name for them and how they relate to you tell it apart from yours." }),
        el("div", { class: "field" }, [el("label", { for: "label-" + c.id, text: "Name" }), labelInput]),
        el("div", { class: "field" }, [el("label", { for: "relationship-" + c.id, text: "Relationship" }), relationshipSelect]),
        el("button", { type: "button", class: "button small secondary", text: "Save",
          onclick: function (event) { labelPerson(c, labelInput, relationshipSelect, event.currentTarget); } }),
      ]) : el("span", { hidden: true });
      var granted = (c.granted_resources || []).join(", ");
      var declined = (c.declined_resources || []).join(", ");
      list.appendChild(el("li", { "data-connection": c.id, "data-status": c.status }, [
        el("div", { class: "row-head" }, [el("span", { class: "row-title", text: c.health_system.name }), statusBadge(c.status)]),
        el("dl", { class: "kv" }, [
          el("dt", { text: "Whose record" }), el("dd", { "data-field": "person", text: personName(c, false) }),
          el("dt", { text: "Shared" }), el("dd", { class: "granted", text: granted || "—" }),
          el("dt", { text: "Not shared" }), el("dd", { class: "declined", text: declined || "—" }),
          el("dt", { text: "Last sync" }), el("dd", { text: c.last_synced_at ? formatDate(c.last_synced_at, true) : "not yet" }),
        ]),
        syncView(c.sync),
        personBox,
        el("div", { class: "actions" }, [
          el("button", {
            type: "button", class: "button small secondary", text: "Sync now",
            onclick: function (event) { syncNow(c, event.currentTarget); },
          }),
          el("button", {
            type: "button", class: "button small secondary", text: "Disconnect…",
            onclick: function () { confirmBox.hidden = false; },
          }),
        ]),
        confirmBox,
      ]));
    });
  }

  function syncRunning(c) {
    if (c.status === "syncing") { return true; }
    if (c.sync) { return FINISHED.indexOf(c.sync.status) < 0; }
    // Just connected: the first sync is queued but has not started yet.
    return c.status === "active" && !c.last_synced_at;
  }

  function pollConnections() {
    if (state.pollTimer) { window.clearTimeout(state.pollTimer); }
    state.pollTimer = window.setTimeout(function () {
      loadConnections().then(function (items) {
        if (items.some(syncRunning)) { pollConnections(); }
        else { state.pollTimer = null; say("Your record is up to date."); loadRecords(); }
      }).catch(showError);
    }, 1200);
  }

  function syncNow(c, button) {
    button.disabled = true;
    showError(null);
    guarded(api("POST", "connections/" + c.id + "/sync", {})).then(function () {
      say("Sync queued.");
      return loadConnections().then(pollConnections);
    }).catch(function () { button.disabled = false; });
  }

  function disconnect(c, button) {
    button.disabled = true;
    showError(null);
    guarded(api("DELETE", "connections/" + c.id + "?purge=true")).then(function (receipt) {
      showReceipt(receipt, personName(c, false));
      say("Disconnected " + receipt.health_system + ".");
      // Connections first: disconnecting the record on show puts the picker back on your own.
      return loadConnections().then(loadRecords);
    }).catch(function () { button.disabled = false; });
  }

  function showReceipt(receipt, person) {
    var box = clear($("receipt"));
    var erased = receipt.erased || {};
    var total = Object.keys(erased).reduce(function (sum, key) { return sum + erased[key]; }, 0);
    var revocation = receipt.revocation || {};
    box.appendChild(el("h3", { text: "Disconnected: receipt" }));
    box.appendChild(el("dl", { class: "kv" }, [
      el("dt", { text: "Health system" }), el("dd", { text: receipt.health_system }),
      el("dt", { text: "Whose record" }), el("dd", { "data-field": "person", text: person }),
      el("dt", { text: "When" }), el("dd", { text: formatDate(receipt.disconnected_at, true) }),
      el("dt", { text: "Access revoked there" }), el("dd", { "data-field": "revocation", text: revocation.refresh_token || revocation.access_token || "not offered by the health system" }),
      el("dt", { text: "Tokens destroyed here" }), el("dd", { "data-field": "tokens", text: receipt.local_tokens_destroyed ? "yes" : "no" }),
      el("dt", { text: "Synced records erased" }), el("dd", { "data-field": "erased", text: receipt.purged ? String(total) : "no (kept)" }),
      el("dt", { text: "Encryption key destroyed" }), el("dd", { "data-field": "key", text: receipt.data_key_destroyed ? "yes" : "no" }),
      el("dt", { text: "Receipt id" }), el("dd", {}, [el("code", { text: receipt.connection })]),
    ]));
    box.hidden = false;
    box.focus();
  }

  // --- records -------------------------------------------------------------------------------

  var COUNT_LABELS = [
    ["active_conditions", "Conditions"], ["active_medications", "Medications"], ["allergies", "Allergies"],
    ["vital_signs", "Vital signs"], ["lab_results", "Lab results"], ["immunizations", "Immunizations"],
    ["encounters", "Encounters"], ["documents", "Documents"],
  ];

  function recordLine(record) {
    var parts = (record.components || []).filter(function (c) { return c.value !== null && c.value !== undefined; });
    var value = record.value !== null && record.value !== undefined
      ? " " + record.value + (record.unit ? " " + record.unit : "")
      : parts.length
        ? " " + parts.map(function (c) { return c.value; }).join("/") + (parts[0].unit ? " " + parts[0].unit : "")
        : (record.value_text ? " " + record.value_text : "");
    return el("li", {}, [(record.display || record.resource_type) + value + " ", el("span", { class: "when", text: formatDate(record.date) })]);
  }

  function loadSummary() {
    return api("GET", "records/summary" + personQuery("?")).then(function (summary) {
      var target = clear($("summary-body"));
      var empty = !summary.demographics && COUNT_LABELS.every(function (pair) { return !summary.counts[pair[0]]; });
      $("summary-empty").hidden = !empty;
      if (empty) { return; }
      var d = summary.demographics;
      if (d) {
        target.appendChild(el("dl", { class: "kv" }, [
          el("dt", { text: "Name" }), el("dd", { "data-field": "name", text: d.name }),
          el("dt", { text: "Born" }), el("dd", { "data-field": "birth_date", text: d.birth_date || "—" }),
          el("dt", { text: "From" }), el("dd", { text: d.health_system }),
        ]));
      }
      target.appendChild(el("ul", { class: "counts", "aria-label": "Counts" }, COUNT_LABELS.map(function (pair) {
        return el("li", { "data-count": pair[0] }, [el("span", { class: "n", text: String(summary.counts[pair[0]]) }), el("span", { class: "label", text: pair[1] })]);
      })));
      [["conditions", "Active conditions"], ["medications", "Active medications"], ["allergies", "Allergies"],
        ["vital_signs", "Latest vital signs"], ["lab_results", "Recent lab results"], ["immunizations", "Immunizations"]]
        .forEach(function (pair) {
          var items = summary[pair[0]] || [];
          if (!items.length) { return; }
          target.appendChild(el("h3", { text: pair[1] }));
          target.appendChild(el("ul", { class: "items" }, items.slice(0, 5).map(recordLine)));
        });
    });
  }

  function loadTrendCodes() {
    return api("GET", "records/trends" + personQuery("?")).then(function (data) {
      var select = clear($("trend-code"));
      var available = (data.available || []).filter(function (a) { return a.unit; });
      var codes = available.map(function (a) { return a.code; });
      // Blood pressure is a panel: offer it when its parts are there.
      if (codes.indexOf("85354-9") < 0 && (codes.indexOf("8480-6") >= 0 || codes.indexOf("8462-4") >= 0)) {
        available.unshift({ code: "85354-9", unit: "mm[Hg]", count: 0, category: "vital-signs" });
      }
      available.sort(function (a, b) {
        var ia = TREND_PREFERENCE.indexOf(a.code), ib = TREND_PREFERENCE.indexOf(b.code);
        return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || b.count - a.count;
      });
      if (!available.length) {
        select.appendChild(el("option", { value: "", text: "Nothing to plot yet" }));
        select.disabled = true;
        clear($("trend-chart"));
        $("trend-caption").textContent = "";
        return;
      }
      select.disabled = false;
      available.forEach(function (a) {
        select.appendChild(el("option", { value: a.code, text: (TREND_NAMES[a.code] || "LOINC " + a.code) + (a.unit ? " (" + a.unit + ")" : "") }));
      });
      return loadTrend(select.value);
    });
  }

  var TREND_NAMES = {
    "85354-9": "Blood pressure", "29463-7": "Body weight", "8867-4": "Heart rate", "8310-5": "Body temperature",
    "2339-0": "Glucose", "8302-2": "Body height", "39156-5": "BMI", "9279-1": "Respiratory rate", "59408-5": "Oxygen saturation",
    "8480-6": "Systolic blood pressure", "8462-4": "Diastolic blood pressure", "3141-9": "Body weight (measured)",
  };

  function loadTrend(code) {
    if (!code) { return Promise.resolve(); }
    return api("GET", "records/trends?code=" + encodeURIComponent(code) + personQuery("&")).then(drawTrend);
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function drawTrend(trend) {
    var holder = clear($("trend-chart"));
    var series = (trend.series || []).filter(function (s) { return s.points.length; });
    var points = [].concat.apply([], series.map(function (s) { return s.points; })).filter(function (p) { return p.date; });
    var title = trend.display || TREND_NAMES[trend.code] || trend.code;
    if (!points.length) {
      $("trend-caption").textContent = title + ": no values yet.";
      return;
    }
    // Drawn at the container's own width, so the labels keep their size on a phone.
    var W = Math.max(280, Math.round(holder.clientWidth || 600)), H = 220, L = 40, R = 10, T = 10, B = 28;
    var times = points.map(function (p) { return new Date(p.date).getTime(); });
    var values = points.map(function (p) { return p.value; });
    var t0 = Math.min.apply(null, times), t1 = Math.max.apply(null, times);
    var v0 = Math.min.apply(null, values), v1 = Math.max.apply(null, values);
    if (t1 === t0) { t0 -= 86400000; t1 += 86400000; }
    var pad = (v1 - v0) * 0.1 || Math.abs(v1) * 0.1 || 1;
    v0 -= pad; v1 += pad;
    function x(t) { return L + (W - L - R) * (t - t0) / (t1 - t0); }
    function y(v) { return T + (H - T - B) * (1 - (v - v0) / (v1 - v0)); }
    var chart = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "trend-svg-title" });
    chart.appendChild(svg("title", { id: "trend-svg-title" }, title + " over time, " + points.length + " values in " + trend.unit));
    for (var i = 0; i <= 4; i++) {
      var v = v0 + (v1 - v0) * i / 4;
      chart.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      chart.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(v1 - v0 < 10 ? 1 : 0)));
    }
    chart.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    [t0, (t0 + t1) / 2, t1].forEach(function (t, index) {
      chart.appendChild(svg("text", { x: x(t), y: H - 10, "text-anchor": ["start", "middle", "end"][index] }, formatDate(new Date(t).toISOString())));
    });
    series.forEach(function (s, index) {
      var cls = index % 2;
      var sorted = s.points.filter(function (p) { return p.date; })
        .map(function (p) { return [new Date(p.date).getTime(), p.value]; })
        .sort(function (a, b) { return a[0] - b[0]; });
      var d = sorted.map(function (p, n) { return (n ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1); }).join(" ");
      chart.appendChild(svg("path", { class: "s" + cls, d: d, "data-series": s.code }));
      sorted.forEach(function (p) { chart.appendChild(svg("circle", { class: "p" + cls, cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5 })); });
    });
    holder.appendChild(chart);
    holder.appendChild(el("div", { class: "legend" }, series.map(function (s, index) {
      return el("span", {}, [el("span", { class: "swatch k" + (index % 2) }), (s.display || s.code) + " (" + s.points.length + ")"]);
    })));
    $("trend-caption").textContent = title + " in " + trend.unit + ", " + formatDate(new Date(t0).toISOString()) + " to " + formatDate(new Date(t1).toISOString()) + (trend.truncated ? " (latest values only)" : "") + ".";
  }

  function loadTimeline(more) {
    var path = "records/timeline?page_size=20" + personQuery("&") + (more && state.timelineCursor ? "&cursor=" + encodeURIComponent(state.timelineCursor) : "");
    return api("GET", path).then(function (page) {
      var list = $("timeline-list");
      if (!more) { clear(list); }
      page.results.forEach(function (r) {
        list.appendChild(el("li", { "data-type": r.resource_type }, [
          el("div", { class: "row-head" }, [el("span", { class: "row-title", text: r.display || r.resource_type }), el("span", { class: "muted", text: formatDate(r.date) })]),
          el("span", { class: "muted", text: humanize(r.resource_type) + (r.status ? " · " + r.status : "") + (r.source && r.source.health_system ? " · " + r.source.health_system : "") }),
        ]));
      });
      if (!more && !page.results.length) { list.appendChild(el("li", { class: "muted", text: "Nothing yet." })); }
      state.timelineCursor = page.next_cursor;
      $("timeline-more").hidden = !page.next_cursor;
    });
  }

  function loadAccessLog(more) {
    var path = "access-log?page_size=25" + (more && state.logCursor ? "&cursor=" + encodeURIComponent(state.logCursor) : "");
    var cursorFrom = function (page) {
      if (!page.next) { return null; }
      try { return new URL(page.next, window.location.origin).searchParams.get("cursor"); } catch (e) { return null; }
    };
    return api("GET", path).then(function (page) {
      var rows = $("log-rows");
      if (!more) { clear(rows); }
      page.results.forEach(function (event) {
        var what = humanize(event.action) + (event.resource_type ? " · " + event.resource_type : "") + (event.resource_count > 1 ? " (" + event.resource_count + ")" : "");
        rows.appendChild(el("li", { "data-action": event.action, "data-actor-kind": event.actor.kind, "data-outcome": event.outcome }, [
          el("div", { class: "row-head" }, [el("span", { class: "row-title", text: what }), el("span", { class: "muted", text: formatDate(event.occurred_at, true) })]),
          el("span", { class: "muted", text: event.actor.display + (event.purpose ? " · for " + humanize(event.purpose) : "") + (event.outcome !== "success" ? " · " + humanize(event.outcome) : "") }),
        ]));
      });
      state.logCursor = cursorFrom(page);
      $("log-more").hidden = !state.logCursor;
    });
  }

  function loadRecords() {
    return Promise.all([loadSummary(), loadTrendCodes(), loadTimeline(false)])
      .then(function () { return loadAccessLog(false); })
      .catch(showError);
  }

  // --- start ---------------------------------------------------------------------------------

  function render() {
    var signedIn = !!tokens();
    $("signed-out").hidden = signedIn;
    $("app").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
  }

  function outcomeMessage(outcome, person) {
    // Someone the account holder manages (picked in the health system's patient picker).
    if (person && person.relationship !== "self" && outcome.indexOf("connected") === 0) {
      return "Connected a record you manage" + (outcome === "connected_partial" ? ", with some record types not shared" : "") +
        ". " + (person.label ? "" : "Give it a name below. ") + "Its first sync has started.";
    }
    var messages = {
      connected: "Connected. Your first sync has started.",
      connected_partial: "Connected, with some record types not shared. Your first sync has started.",
      no_resources_granted: "Nothing was shared, so there is nothing to sync.",
      access_denied: "You cancelled at your health system. Nothing was connected.",
      consent_required: "Agree to “Sync my health record” first.",
      state_foreign: "That sign-in was finished in another browser or account. Nothing was connected: start again here.",
      start_foreign: "That link was started from another account. Nothing was connected.",
      start_expired: "That link expired. Start connecting again.",
      start_replayed: "That link was already used. Start connecting again if needed.",
    };
    return messages[outcome] || "The connection did not complete (" + humanize(outcome) + ").";
  }

  // The deep link's outcome is only a hint: the result is what the API says, with this app's
  // own token, about the connection (a link finished elsewhere names none): {outcome, person}.
  function confirmOutcome(returned) {
    if (!returned || !returned.outcome) { return Promise.resolve(null); }
    var failed = { outcome: returned.outcome.indexOf("connected") === 0 ? "internal_error" : returned.outcome, person: null };
    if (!returned.connection) { return Promise.resolve(failed); }
    return api("GET", "connections/" + encodeURIComponent(returned.connection)).then(
      function (c) { return { outcome: c.last_outcome || returned.outcome, person: c.person || null }; },
      function () { return failed; }
    );
  }

  function start() {
    $("sign-in").addEventListener("click", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("trend-code").addEventListener("change", function (event) { loadTrend(event.target.value).catch(showError); });
    $("person-select").addEventListener("change", function (event) { state.person = event.target.value; loadRecords(); });
    $("timeline-more").addEventListener("click", function () { loadTimeline(true).catch(showError); });
    $("log-more").addEventListener("click", function () { loadAccessLog(true).catch(showError); });
    $("log-refresh").addEventListener("click", function () { loadAccessLog(false).catch(showError); });

    if (window.location.origin !== CONFIG.publicBaseUrl) {
      var warning = $("origin-warning");
      warning.appendChild(document.createTextNode("This server's OAuth client is registered for "));
      warning.appendChild(el("a", { href: CONFIG.redirectUri, text: CONFIG.redirectUri }));
      warning.appendChild(document.createTextNode(": open the page there to sign in."));
      warning.hidden = false;
    }

    var params = new URLSearchParams(window.location.search);
    var step = Promise.resolve();
    if (params.has("code") || (params.has("error") && params.has("state"))) {
      say("Signing you in…");
      step = finishSignIn(params);
    } else if (params.has("outcome")) {
      STORE.setItem(K.returned, JSON.stringify({ connection: params.get("connection") || params.get("connection_id"), outcome: params.get("outcome") }));
    }
    // Neither the authorization code nor the connection result stays in the address bar.
    if (window.location.search) { window.history.replaceState(null, "", window.location.pathname); }

    step.then(function () {
      render();
      if (!tokens()) { say(""); return; }
      var returned = null;
      try { returned = JSON.parse(STORE.getItem(K.returned) || "null"); } catch (e) { returned = null; }
      STORE.removeItem(K.returned);
      return confirmOutcome(returned).then(function (result) {
        var outcome = result && result.outcome;
        say(outcome ? outcomeMessage(outcome, result.person) : "");
        if (outcome && outcome.indexOf("connected") !== 0) {
          showError({ code: outcome, message: outcomeMessage(outcome) });
        }
        return Promise.all([loadMe(), loadConsents(), loadHealthSystems(), loadConnections()]).then(function (all) {
          var connections = all[3];
          if (connections.some(syncRunning)) { pollConnections(); }
          return loadRecords();
        });
      });
    }).catch(function (error) { render(); say(""); showError(error); });
  }

  start();
})();
