// The notify-relay console: plain JavaScript, no build step, no third-party code.
//
// Every value from the server is attacker-controlled text (message ids, headers, partner
// bodies): it is only ever put in the page with textContent, createElement and
// setAttribute, never parsed as HTML. The API key lives in this tab's sessionStorage
// only, and travels in the Authorization header, never in a URL.
"use strict";

(function () {
  const KEY_ITEM = "notify-relay.key";
  const SENDER_ITEM = "notify-relay.sender";
  const POLL_MS = 3000;
  const STATUSES = ["QUEUED", "DELIVERING", "RETRYING", "DELIVERED", "FAILED", "CANCELLED"];
  const SVG = "http://www.w3.org/2000/svg";

  const state = { keys: false, senderId: null, timers: [], generation: 0 };

  // ---- storage: sessionStorage only -------------------------------------------------

  function storedKey() { return sessionStorage.getItem(KEY_ITEM) || ""; }
  function storedSender() { return sessionStorage.getItem(SENDER_ITEM) || "default"; }

  // ---- DOM helpers: text only ---------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  const $ = (id) => document.getElementById(id);

  function badge(value) { return el("span", { class: "badge " + value, text: value }); }

  function time(value) {
    if (!value) return "–";
    return String(value).replace("T", " ");
  }

  function messageLink(id) {
    return el("a", { href: "#/message/" + encodeURIComponent(id), text: id });
  }

  let flashedAt = 0;

  function flash(text, isError) {
    const node = $("flash");
    node.textContent = text;
    node.className = isError ? "error" : "";
    node.hidden = !text;
    flashedAt = Date.now();
  }

  // ---- the API ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || "HTTP " + status);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, options) {
    const { query, body } = options || {};
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const key = storedKey();
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = "Bearer " + key;
    else url.searchParams.set("senderId", storedSender());
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (response.status === 401) showLogin(key ? "The API key was refused: " + error.message : "");
      throw error;
    }
    return data;
  }

  function messagePath(id) { return "/v1/messages/" + encodeURIComponent(id); }
  function destinationPath(name) { return "/v1/destinations/" + encodeURIComponent(name); }

  // ---- session: key or sender -----------------------------------------------------------

  async function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("login-key").value.trim();
      $("login-key").value = "";
      if (key) sessionStorage.setItem(KEY_ITEM, key);
      openSession();
    });
    $("sender-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const sender = $("sender").value.trim() || "default";
      sessionStorage.setItem(SENDER_ITEM, sender);
      openSession();
    });
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      showLogin("");
    });
    window.addEventListener("hashchange", render);
    await openSession();
  }

  async function openSession() {
    let session;
    try {
      session = await api("GET", "/console/api/session");
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        showLogin("");
        flash("The server cannot be reached: " + error.message, true);
      }
      return;
    }
    state.keys = session.keys;
    state.senderId = session.senderId;
    $("login").hidden = true;
    $("nav").hidden = false;
    $("who").hidden = false;
    $("sender-form").hidden = session.keys;
    $("sign-out").hidden = !session.keys;
    $("sender").value = session.senderId;
    $("who-sender").textContent = session.keys ? "Sender: " + session.senderId : "";
    flash("");
    render();
  }

  function showLogin(message) {
    stopPolling();
    sessionStorage.removeItem(KEY_ITEM);
    $("view").hidden = true;
    $("nav").hidden = true;
    $("who").hidden = true;
    $("login").hidden = false;
    flash(message, Boolean(message));
    $("login-key").focus();
  }

  // ---- routing ------------------------------------------------------------------------

  function route() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [path, search] = hash.split("?");
    const parts = path.split("/");
    return { view: parts[0] || "messages", arg: parts.slice(1).join("/"),
             params: new URLSearchParams(search || "") };
  }

  function stopPolling() {
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
    state.generation += 1;
  }

  function poll(fn, ms) {
    const generation = state.generation;
    state.timers.push(setInterval(() => {
      if (generation === state.generation) fn().catch(() => {});
    }, ms || POLL_MS));
  }

  function render() {
    if (state.senderId === null) return;
    stopPolling();
    // a note belongs to the page it was made on: going elsewhere clears it, unless it was
    // just made by the action that navigated (a replay that opens the dead letters)
    if (Date.now() - flashedAt > 1000) flash("");
    const { view, arg, params } = route();
    for (const link of document.querySelectorAll("#nav a")) {
      const active = link.dataset.view === view || (view === "message" && link.dataset.view === "messages");
      link.classList.toggle("active", active);
    }
    const container = $("view");
    clear(container);
    container.hidden = false;
    container.dataset.view = view;
    const views = { messages: messagesView, message: messageView, replay: replayView,
                    destinations: destinationsView, activity: activityView };
    (views[view] || messagesView)(container, arg ? decodeURIComponent(arg) : "", params)
      .catch((error) => flash(error.message, true));
  }

  function go(view, params) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params || {})) if (value) query.set(name, value);
    const text = query.toString();
    location.hash = "#/" + view + (text ? "?" + text : "");
  }

  // datetime-local (this browser's time zone) <-> RFC 3339 UTC
  function toUtc(local) { return local ? new Date(local).toISOString() : ""; }
  function toLocalInput(utc) {
    if (!utc) return "";
    const date = new Date(utc);
    if (isNaN(date)) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  // ---- view 1: messages -----------------------------------------------------------------

  async function messagesView(container, _, params) {
    const filter = {
      status: params.get("status") || "", destination: params.get("destination") || "",
      messageId: params.get("messageId") || "", since: params.get("since") || "",
      until: params.get("until") || "", timeField: params.get("timeField") || "created",
    };
    const counts = el("ul", { class: "counts", id: "counts" });
    const statusSelect = el("select", { name: "status", id: "filter-status" },
      el("option", { value: "", text: "any status" }),
      STATUSES.map((s) => el("option", { value: s, text: s, selected: s === filter.status })));
    const idInput = el("input", { name: "messageId", id: "filter-id", value: filter.messageId,
                                   placeholder: "id starts with", size: 18 });
    const destInput = el("input", { name: "destination", id: "filter-destination",
                                     value: filter.destination, size: 18 });
    const fieldSelect = el("select", { name: "timeField", id: "filter-time-field" },
      el("option", { value: "created", text: "created", selected: filter.timeField === "created" }),
      el("option", { value: "updated", text: "last changed", selected: filter.timeField === "updated" }));
    const sinceInput = el("input", { type: "datetime-local", id: "filter-since",
                                      value: toLocalInput(filter.since) });
    const untilInput = el("input", { type: "datetime-local", id: "filter-until",
                                      value: toLocalInput(filter.until) });
    const form = el("form", { class: "filters", id: "filters", onsubmit: (event) => {
      event.preventDefault();
      go("messages", { status: statusSelect.value, messageId: idInput.value.trim(),
                       destination: destInput.value.trim(), timeField: fieldSelect.value,
                       since: toUtc(sinceInput.value), until: toUtc(untilInput.value) });
    } },
      el("label", {}, "Status", statusSelect),
      el("label", {}, "Message id", idInput),
      el("label", {}, "Destination", destInput),
      el("label", {}, "Time", fieldSelect),
      el("label", {}, "From (local time)", sinceInput),
      el("label", {}, "To", untilInput),
      el("button", { type: "submit", class: "primary", text: "Search" }),
      el("button", { type: "button", text: "Clear", onclick: () => go("messages") }));
    const body = el("tbody", { id: "messages" });
    const table = el("table", { id: "messages-table" },
      el("thead", {}, el("tr", {}, ["Message id", "Status", "Destination", "Attempts",
                                    "Created", "Last change", "Last error"]
        .map((name) => el("th", { text: name })))), body);
    const more = el("div", { class: "more" });
    const summary = el("p", { class: "muted", id: "messages-summary" });
    append(container, [el("h2", { text: "Messages" }), counts, form, summary, table, more]);

    async function refreshCounts() {
      const data = await api("GET", "/console/api/counts");
      clear(counts);
      const all = el("button", { type: "button", class: filter.status ? "" : "selected",
                                 "data-status": "", onclick: () => go("messages", { ...filter, status: "" }) },
        el("span", { class: "count", text: data.total }), el("span", { class: "label", text: "all" }));
      counts.append(el("li", {}, all));
      for (const [status, count] of Object.entries(data.counts)) {
        counts.append(el("li", {}, el("button", {
          type: "button", "data-status": status, class: status === filter.status ? "selected" : "",
          onclick: () => go("messages", { ...filter, status }),
        }, el("span", { class: "count", text: count }), el("span", { class: "label", text: status }))));
      }
    }

    async function load(cursor) {
      const page = await api("GET", "/console/api/messages", { query: { ...filter, limit: 50, cursor } });
      if (!cursor) clear(body);
      for (const m of page.items) {
        body.append(el("tr", { "data-id": m.messageId },
          el("td", { class: "id" }, messageLink(m.messageId)),
          el("td", {}, badge(m.status)),
          el("td", { class: "mono", text: m.destination || "" }),
          el("td", { class: "num", text: m.attemptCount + " / " + m.maxAttempts }),
          el("td", { class: "mono", text: time(m.createdAt) }),
          el("td", { class: "mono", text: time(m.updatedAt) }),
          el("td", { text: m.lastError || "" })));
      }
      summary.textContent = body.children.length ? body.children.length + " shown" : "No messages match.";
      clear(more);
      if (page.nextCursor) {
        more.append(el("button", { type: "button", id: "load-more", text: "Load more",
                                   onclick: () => load(page.nextCursor).catch((e) => flash(e.message, true)) }));
      }
    }

    await Promise.all([refreshCounts(), load(null)]);
    poll(refreshCounts);
  }

  // ---- view 2: one message --------------------------------------------------------------

  async function messageView(container, id) {
    const heading = el("h2", {}, "Message ", el("span", { class: "mono", id: "message-id", text: id }));
    const content = el("div", { id: "message" });
    append(container, [el("p", {}, el("a", { href: "#/messages", text: "← Messages" })), heading, content]);

    async function act(action) {
      try {
        const result = await api("POST", messagePath(id) + "/" + action);
        flash(action === "retry" ? "Retried: the message is " + result.status + " again."
                                 : "Cancelled: the message is " + result.status + ".");
      } catch (error) {
        flash(action + " refused: " + error.message, true);
      }
      await refresh();
    }

    let shown = null;

    async function refresh() {
      let m;
      try {
        m = await api("GET", messagePath(id));
      } catch (error) {
        shown = null;
        clear(content);
        content.append(el("p", { class: "error", text: error.message }));
        return;
      }
      // drawn again only when it changed: a reader's scroll and selection stay put
      const signature = JSON.stringify(m);
      if (signature === shown) return;
      shown = signature;
      clear(content);
      const retryable = m.status === "FAILED" || m.status === "CANCELLED";
      const cancellable = m.status === "QUEUED" || m.status === "RETRYING";
      content.append(
        el("p", {}, el("span", { id: "message-status" }, badge(m.status))),
        el("div", { class: "actions" },
          el("button", { type: "button", id: "retry", class: "primary", disabled: !retryable,
                         text: "Retry", onclick: () => act("retry") }),
          el("button", { type: "button", id: "cancel", class: "danger", disabled: !cancellable,
                         text: "Cancel", onclick: () => act("cancel") })),
        fields([
          ["Sender", m.senderId], ["Destination", m.destination], ["Target", m.method + " " + m.targetUrl],
          ["Correlation id", m.correlationId], ["Created", time(m.createdAt)],
          ["Last change", time(m.updatedAt)], ["Next attempt", time(m.nextAttemptAt)],
          ["Delivered", time(m.deliveredAt)], ["Attempts", m.attemptCount + " of " + m.maxAttempts],
          ["Last status code", m.lastStatusCode], ["Last error", m.lastError],
          ["Callback", m.callback ? m.callback.status + " (" + m.callback.attemptCount + " attempts)" : null],
        ]),
        el("h3", { text: "Headers" }), headersTable(m.headers || {}, "message-headers"),
        el("h3", { text: "Timeline" }), timeline(m),
        el("h3", { text: "Attempts" }), attemptsTable(m.attempts || []));
    }

    await refresh();
    poll(refresh);
  }

  function fields(pairs) {
    const list = el("dl", { class: "fields" });
    for (const [name, value] of pairs) {
      if (value === undefined || value === null || value === "") continue;
      list.append(el("dt", { text: name }), el("dd", { text: value }));
    }
    return list;
  }

  function headersTable(headers, id) {
    const names = Object.keys(headers);
    if (!names.length) return el("p", { class: "muted", id, text: "none" });
    return el("table", { class: "headers", id },
      el("tbody", {}, names.map((name) => el("tr", {},
        el("td", { class: "mono", text: name }), el("td", { class: "mono", text: headers[name] })))));
  }

  function timeline(m) {
    const items = [{ at: m.createdAt, cls: "QUEUED", text: "accepted" }];
    for (const a of m.attempts || []) {
      const result = a.statusCode !== null && a.statusCode !== undefined ? "HTTP " + a.statusCode : a.error || "";
      items.push({ at: a.startedAt, cls: a.outcome,
                   text: "attempt " + a.number + ": " + a.outcome + (result ? " (" + result + ")" : "") +
                         ", " + a.durationMs + " ms" });
    }
    if (m.status === "DELIVERED") items.push({ at: m.deliveredAt, cls: "DELIVERED", text: "delivered" });
    else if (m.status === "FAILED") items.push({ at: m.updatedAt, cls: "FAILED", text: "failed (dead letter)" });
    else if (m.status === "CANCELLED") items.push({ at: m.updatedAt, cls: "CANCELLED", text: "cancelled" });
    else if (m.nextAttemptAt) items.push({ at: m.nextAttemptAt, cls: m.status, text: "next attempt due" });
    return el("ol", { class: "timeline", id: "timeline" },
      items.map((item) => el("li", { class: item.cls }, el("time", { text: time(item.at) }), item.text)));
  }

  function attemptsTable(attempts) {
    if (!attempts.length) return el("p", { class: "muted", id: "attempts", text: "No attempt yet." });
    return el("table", { id: "attempts" },
      el("thead", {}, el("tr", {}, ["#", "Started", "Duration", "Status", "Error", "Outcome", "Partner's response"]
        .map((name) => el("th", { text: name })))),
      el("tbody", {}, attempts.map((a) => el("tr", { "data-number": a.number },
        el("td", { class: "num", text: a.number }),
        el("td", { class: "mono", text: time(a.startedAt) }),
        el("td", { class: "num", text: a.durationMs + " ms" }),
        el("td", { class: "num", text: a.statusCode === null || a.statusCode === undefined ? "–" : a.statusCode }),
        el("td", { text: a.error || "" }),
        el("td", {}, badge(a.outcome)),
        el("td", { class: "response" }, responseView(a.response))))));
  }

  function responseView(response) {
    if (response === undefined) return el("span", { class: "muted", text: "not recorded" });
    if (response === null) return el("span", { class: "muted", text: "no response" });
    return el("div", {},
      headersTable(response.headers || {}),
      el("pre", { class: "body", text: response.body || "" }),
      response.bodyTruncated ? el("span", { class: "muted", text: "(first 1,024 bytes)" }) : null);
  }

  // ---- view 3: replay ---------------------------------------------------------------------

  async function replayView(container, _, params) {
    const destination = params.get("destination") || "";
    const since = params.get("since") || "";
    const until = params.get("until") || "";
    const names = el("datalist", { id: "destination-names" });
    const destInput = el("input", { id: "replay-destination", list: "destination-names", value: destination,
                                     required: true, size: 24 });
    const sinceInput = el("input", { type: "datetime-local", id: "replay-since", value: toLocalInput(since) });
    const untilInput = el("input", { type: "datetime-local", id: "replay-until", value: toLocalInput(until) });
    const limitInput = el("input", { type: "number", id: "replay-limit", min: 1, max: 10000, value: 1000 });
    const preview = el("div", { id: "dead-letters" });
    const result = el("p", { id: "replay-result", role: "status" });
    const form = el("form", { class: "filters", id: "replay-form", onsubmit: (event) => {
      event.preventDefault();
      go("replay", { destination: destInput.value.trim(), since: toUtc(sinceInput.value),
                     until: toUtc(untilInput.value) });
    } },
      el("label", {}, "Destination", destInput),
      el("label", {}, "Failed from (local time)", sinceInput),
      el("label", {}, "Failed before", untilInput),
      el("label", {}, "At most", limitInput),
      el("button", { type: "submit", text: "Show dead letters" }));
    const replayButton = el("button", { type: "button", id: "replay", class: "primary", disabled: !destination,
                                        text: "Replay these dead letters", onclick: replay });
    append(container, [el("h2", { text: "Replay dead letters" }),
      el("p", { class: "hint", text: "Sends a destination's FAILED messages again, each with a fresh attempt budget." }),
      names, form, el("div", { class: "actions" }, replayButton), result, preview]);

    api("GET", "/v1/destinations", { query: { limit: 500 } }).then((page) => {
      for (const d of page.items) names.append(el("option", { value: d.destination }));
    }).catch(() => {});

    async function showDeadLetters() {
      clear(preview);
      if (!destination) return;
      const page = await api("GET", "/console/api/messages", { query: {
        status: "FAILED", destination, since, until, timeField: "updated", limit: 100 } });
      preview.append(el("h3", { text: "Dead letters of " + destination }));
      if (!page.items.length) {
        preview.append(el("p", { class: "muted", id: "dead-letter-count", text: "No dead letters." }));
        return;
      }
      preview.append(el("p", { class: "muted", id: "dead-letter-count",
                               text: page.items.length + (page.nextCursor ? "+" : "") + " dead letters" }));
      preview.append(el("table", {}, el("thead", {}, el("tr", {},
        ["Message id", "Failed at", "Attempts", "Last error"].map((n) => el("th", { text: n })))),
        el("tbody", {}, page.items.map((m) => el("tr", { "data-id": m.messageId },
          el("td", { class: "id" }, messageLink(m.messageId)), el("td", { class: "mono", text: time(m.updatedAt) }),
          el("td", { class: "num", text: m.attemptCount }), el("td", { text: m.lastError || "" }))))));
    }

    async function replay() {
      const body = { destination, limit: Number(limitInput.value) || 1000 };
      if (since) body.since = since;
      if (until) body.until = until;
      replayButton.disabled = true;
      try {
        const answer = await api("POST", "/v1/messages/replay", { body });
        result.textContent = "Replayed " + answer.replayed + " dead letter" + (answer.replayed === 1 ? "" : "s") +
          (answer.more ? "; more remain: replay again." : ".");
        result.className = "";
      } catch (error) {
        result.textContent = "Replay refused: " + error.message;
        result.className = "error";
      } finally {
        replayButton.disabled = false;
      }
      await showDeadLetters();
    }

    await showDeadLetters();
  }

  // ---- view 4: destinations ---------------------------------------------------------------

  async function destinationsView(container) {
    const body = el("tbody", { id: "destinations" });
    append(container, [el("h2", { text: "Destinations" }),
      el("table", {}, el("thead", {}, el("tr", {}, ["Destination", "Breaker", "Paused", "Pending", "In flight",
        "Max concurrency", "Failures in a row", "Next probe", "Last error", ""].map((n) => el("th", { text: n })))),
      body)]);

    async function setPaused(name, paused) {
      try {
        await api("PATCH", destinationPath(name), { body: { paused } });
        flash((paused ? "Paused " : "Resumed ") + name + ".");
      } catch (error) {
        flash("Change refused: " + error.message, true);
      }
      await refresh();
    }

    async function refresh() {
      const items = [];
      let cursor = null;
      for (let i = 0; i < 20; i++) {
        const page = await api("GET", "/v1/destinations", { query: { limit: 500, cursor } });
        items.push(...page.items);
        cursor = page.nextCursor;
        if (!cursor) break;
      }
      clear(body);
      if (!items.length) body.append(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "No destinations yet." })));
      for (const d of items) {
        body.append(el("tr", { "data-destination": d.destination },
          el("td", { class: "mono", text: d.destination }),
          el("td", { class: "state" }, badge(d.state)),
          el("td", { class: "is-paused" }, d.paused ? badge("paused") : "no"),
          el("td", { class: "num pending", text: d.pending }),
          el("td", { class: "num", text: d.inFlight }),
          el("td", { class: "num", text: d.maxConcurrency }),
          el("td", { class: "num", text: d.consecutiveFailures }),
          el("td", { class: "mono", text: time(d.nextProbeAt) }),
          el("td", { text: d.lastError || "" }),
          el("td", { class: "row-actions" },
            el("button", { type: "button", class: d.paused ? "primary resume" : "danger pause",
                           text: d.paused ? "Resume" : "Pause", onclick: () => setPaused(d.destination, !d.paused) }),
            el("a", { href: "#/replay?destination=" + encodeURIComponent(d.destination), text: "Dead letters" }))));
      }
    }

    await refresh();
    poll(refresh);
  }

  // ---- view 5: activity chart ------------------------------------------------------------

  async function activityView(container) {
    const chart = el("div", { id: "chart" });
    const totals = el("p", { id: "activity-totals" });
    append(container, [el("h2", { text: "Messages that ended, per minute" }),
      el("p", { class: "hint", text: "Each message counted once, by its current status " +
                "(DELIVERED or FAILED) at the minute it last changed: one failed, then " +
                "retried and delivered, counts as delivered." }),
      el("div", { class: "legend" },
        el("span", {}, el("span", { class: "swatch delivered" }), "delivered"),
        el("span", {}, el("span", { class: "swatch failed" }), "failed")),
      chart, totals]);

    async function refresh() {
      const data = await api("GET", "/console/api/activity", { query: { minutes: 60 } });
      clear(chart);
      chart.append(drawChart(data.minutes));
      const delivered = data.minutes.reduce((sum, m) => sum + m.delivered, 0);
      const failed = data.minutes.reduce((sum, m) => sum + m.failed, 0);
      totals.textContent = "Last " + data.minutes.length + " minutes: " + delivered + " delivered, " +
        failed + " failed.";
    }

    await refresh();
    poll(refresh, 10000);
  }

  function clock(utc) {
    const date = new Date(utc);
    return String(date.getHours()).padStart(2, "0") + ":" + String(date.getMinutes()).padStart(2, "0");
  }

  function drawChart(minutes) {
    const width = 720, height = 220, left = 36, bottom = 22, top = 10;
    const plot = height - bottom - top;
    const most = Math.max(1, ...minutes.map((m) => m.delivered + m.failed));
    const step = (width - left) / Math.max(1, minutes.length);
    const bar = Math.max(1, step - 2);
    const node = svg("svg", { class: "chart", viewBox: "0 0 " + width + " " + height, role: "img",
                               "aria-label": "deliveries and failures per minute" });
    node.append(svg("line", { class: "axis", x1: left, y1: top + plot, x2: width, y2: top + plot }),
                svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plot }),
                svg("text", { x: left - 4, y: top + 10, "text-anchor": "end", text: most }),
                svg("text", { x: left - 4, y: top + plot, "text-anchor": "end", text: 0 }));
    minutes.forEach((m, i) => {
      const x = left + i * step + 1;
      const delivered = (m.delivered / most) * plot;
      const failed = (m.failed / most) * plot;
      const label = clock(m.minute) + ": " + m.delivered + " delivered, " + m.failed + " failed";
      const group = svg("g", { "data-minute": m.minute }, svg("title", { text: label }));
      if (m.delivered) {
        group.append(svg("rect", { class: "delivered", x, width: bar, y: top + plot - delivered,
                                   height: delivered, "data-count": m.delivered }));
      }
      if (m.failed) {
        group.append(svg("rect", { class: "failed", x, width: bar, y: top + plot - delivered - failed,
                                   height: failed, "data-count": m.failed }));
      }
      node.append(group);
    });
    const labels = [[0, left, "start"], [Math.floor(minutes.length / 2), null, "middle"],
                    [minutes.length - 1, width, "end"]];
    for (const [i, x, anchor] of labels) {
      if (!minutes[i]) continue;
      node.append(svg("text", { x: x === null ? left + i * step + step / 2 : x, y: height - 6,
                                "text-anchor": anchor, text: clock(minutes[i].minute) }));
    }
    return node;
  }

  document.addEventListener("DOMContentLoaded", () => { start(); });
})();
