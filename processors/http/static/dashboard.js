// Tocsin dashboard: hand-written, no library, no CDN.
// Security: the token lives in sessionStorage (and memory) and travels only as an
// Authorization header, never in a URL. Every string that came from an event is put
// on the page with textContent or an SVG text node: never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "tocsin.token";
  const REFRESH_MS = 5000;
  const HOUR_MS = 3600 * 1000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#3558c8", "#c62828", "#1a7f37", "#b76e00", "#7b3fbf", "#00838f",
                   "#ad1457", "#5d4037", "#546e7a", "#9e9d24", "#ef6c00", "#283593"];

  let token = null;
  let timer = null;
  let inFlight = false;
  let canOperate = null;  // from /api/whoami: resolve buttons only for operate and admin tokens
  const resolving = new Set();  // alert ids resolved from this page, until they leave the active list

  const $ = (id) => document.getElementById(id);

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function storeToken(value) {
    token = value;
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* private mode: the token stays in memory only */ }
  }

  // el("td", {className: "x"}, "text") -- text always via textContent.
  function el(tag, props, text) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (k === "dataset") Object.assign(node.dataset, v); else node[k] = v;
      }
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function row(cells) {
    const tr = el("tr");
    tr.append(...cells);
    return tr;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function badge(value) {
    const cls = String(value).replace(/[^a-z]/g, "");  // a class name from a known vocabulary only
    return el("span", {className: "badge " + cls}, value);
  }

  function fmtTime(isoString) {
    if (!isoString) return "";
    const d = new Date(isoString);
    return isNaN(d) ? String(isoString) : d.toLocaleString();
  }

  function fmtNum(v, digits) {
    if (v === null || v === undefined) return "\u2013";
    const n = Number(v);
    if (!isFinite(n)) return "\u2013";
    return n.toLocaleString(undefined, {maximumFractionDigits: digits === undefined ? 2 : digits});
  }

  function fmtDuration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m + "m " + (s % 60) + "s";
  }

  async function api(path, options) {
    const opts = Object.assign({cache: "no-store", credentials: "omit"}, options || {});
    opts.headers = Object.assign({"Authorization": "Bearer " + token}, opts.headers || {});
    const resp = await fetch(path, opts);
    if (resp.status === 401) {
      showLogin("The token was refused. Log in again.");
      throw new Error("unauthorized");
    }
    return resp;
  }

  function showLogin(message) {
    storeToken(null);
    canOperate = null;
    if (timer) { clearInterval(timer); timer = null; }
    $("main").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function showMain() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = false;
    if (!timer) timer = setInterval(refresh, REFRESH_MS);
  }

  async function loadScope() {
    const resp = await api("/api/whoami");
    const who = resp.ok ? await resp.json() : {scope: "read"};
    canOperate = who.scope === "operate" || who.scope === "admin";
  }

  async function refresh() {
    if (inFlight || !token) return;
    inFlight = true;
    try {
      if (canOperate === null) await loadScope();
      const resp = await api("/api/dashboard");
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      $("banner").hidden = true;
    } catch (e) {
      if (e.message !== "unauthorized") {
        $("banner").textContent = "Could not refresh: " + e.message + ". Retrying every " + REFRESH_MS / 1000 + " s.";
        $("banner").hidden = false;
      }
    } finally {
      inFlight = false;
    }
  }

  function render(doc) {
    $("service-name").textContent = doc.service;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    renderTiles(doc);
    renderActive(doc.active_alerts, doc.status.active_alerts);
    renderHealth(doc.health_checks);
    renderHistory(doc.alert_history);
    renderLag(doc.throughput.lag);
    const now = Date.parse(doc.timestamp) || Date.now();
    renderChart($("chart-errors"), doc.series, "error_rate_per_min", now, "errors/min");
    renderChart($("chart-latency"), doc.series, "p95_latency_ms", now, "ms");
  }

  function tile(label, value, level) {
    const t = el("div", {className: "tile " + (level || "")});
    t.append(el("div", {className: "label"}, label), el("div", {className: "value"}, value));
    return t;
  }

  function renderTiles(doc) {
    const s = doc.status, t = doc.throughput;
    const levelOf = {healthy: "ok", degraded: "warn", unhealthy: "crit"};
    const tiles = [
      tile("Status", s.overall_status, levelOf[s.overall_status]),
      tile("Kafka", s.kafka ? "reachable" : "unreachable", s.kafka ? "ok" : "crit"),
      tile("ClickHouse", s.clickhouse === null ? "not used" : (s.clickhouse ? "reachable" : "unreachable"),
           s.clickhouse === null ? "" : (s.clickhouse ? "ok" : "crit")),
      tile("Active alerts", s.active_alerts + (s.active_alerts ? " (" + s.critical_alerts + " critical)" : ""),
           s.critical_alerts ? "crit" : (s.active_alerts ? "warn" : "ok")),
      tile("Events/s", fmtNum(t.events_per_s, 0), "info"),
      tile("Consumer lag", fmtNum(t.consumer_lag, 0), t.consumer_lag > 10000 ? "warn" : "info"),
      tile("Dead-lettered", fmtNum(t.dead_lettered_total, 0), t.dead_lettered_total ? "warn" : "info"),
      tile("Late events", fmtNum(t.late_total, 0), "info"),
      tile("Live series", fmtNum(t.live_series, 0), "info"),
      tile("Uptime", fmtDuration(s.uptime_seconds), "info"),
    ];
    // Error budgets left (lowest first): under 25 % warns, spent is critical.
    for (const b of ((doc.slo || {}).budgets || []).slice(0, 6)) {
      const left = b.remaining === null ? null : b.remaining * 100;
      tiles.push(tile("Budget " + b.rule + " " + (b.labels.service || ""),
                      left === null ? "?" : fmtNum(left, 1) + " % left" + (b.covers === "store+stream" ? "" : " (replay only)"),
                      left === null ? "" : (left <= 0 ? "crit" : (left < 25 ? "warn" : "ok"))));
    }
    $("tiles").replaceChildren(...tiles);
  }

  function renderActive(alerts, total) {
    const ids = new Set(alerts.map((a) => a.alert_id));
    for (const id of Array.from(resolving)) if (!ids.has(id)) resolving.delete(id);
    const rows = alerts.map((a) => {
      const tr = el("tr", {dataset: {alertId: a.alert_id}});
      if (resolving.has(a.alert_id)) tr.className = "resolving";
      const button = el("button", {type: "button", className: "resolve"}, resolving.has(a.alert_id) ? "Resolving\u2026" : "Resolve");
      button.disabled = resolving.has(a.alert_id);
      button.addEventListener("click", () => resolveAlert(a.alert_id, tr, button));
      const action = el("td");
      if (canOperate) action.append(button, ackButton(a));
      const sev = el("td");
      sev.append(badge(a.severity));
      const state = el("td");
      state.append(badge(a.state));
      if (a.acked) state.append(el("div", {className: "ack"}, "acked by " + a.acked_by + (a.ack_note ? ": " + a.ack_note : "")));
      tr.append(sev, el("td", null, a.service), el("td", null, a.rule), state, el("td", null, fmtNum(a.value)),
                el("td", null, fmtNum(a.threshold)), el("td", null, fmtTime(a.started_at)),
                el("td", null, a.annotations.summary || ""), action);
      return tr;
    });
    $("active-alerts").tBodies[0].replaceChildren(...rows);
    $("active-empty").hidden = rows.length > 0;
    $("active-count").textContent = total > alerts.length ? "(" + alerts.length + " of " + total + ")" : "(" + total + ")";
  }

  async function resolveAlert(alertId, tr, button) {
    button.disabled = true;
    button.textContent = "Resolving\u2026";
    try {
      const resp = await api("/api/alerts/resolve", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({alert_id: alertId, reason: "resolved from the dashboard", actor: "dashboard"}),
      });
      if (resp.status !== 202) throw new Error("HTTP " + resp.status);
      resolving.add(alertId);
      tr.className = "resolving";
      refresh();
    } catch (e) {
      if (e.message === "unauthorized") return;
      button.disabled = false;
      button.textContent = "Resolve";
      $("banner").textContent = "Could not resolve the alert: " + e.message;
      $("banner").hidden = false;
    }
  }

  // Ack (operate): asks for a name and a note; the processor emits the acked AlertEvent.
  function ackButton(a) {
    const b = el("button", {type: "button", className: "ack-button"}, a.acked ? "Unack" : "Ack");
    b.addEventListener("click", async () => {
      const body = {alert_id: a.alert_id, actor: "dashboard"};
      if (!a.acked) {
        const note = window.prompt("Acknowledge " + a.rule + " on " + a.service + ". Note (optional):", "");
        if (note === null) return;
        body.note = note.slice(0, 1000);
      }
      b.disabled = true;
      try {
        const resp = await api(a.acked ? "/api/alerts/unack" : "/api/alerts/ack", {
          method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
        if (resp.status !== 202) throw new Error("HTTP " + resp.status);
        b.textContent = a.acked ? "Unacking\u2026" : "Acking\u2026";
        refresh();
      } catch (e) {
        if (e.message === "unauthorized") return;
        b.disabled = false;
        $("banner").textContent = "Could not " + (a.acked ? "unack" : "ack") + " the alert: " + e.message;
        $("banner").hidden = false;
      }
    });
    return b;
  }

  function renderHealth(checks) {
    const rows = checks.map((c) => {
      const status = el("td");
      status.append(badge(c.status));
      return row([
        el("td", null, c.service), el("td", null, c.check), el("td", null, c.host), status,
        el("td", null, c.response_time_ms === null ? "" : fmtNum(c.response_time_ms, 1) + " ms"),
        el("td", null, c.error_message || ""), el("td", null, fmtTime(c.timestamp)),
      ]);
    });
    $("health-checks").tBodies[0].replaceChildren(...rows);
    $("health-empty").hidden = rows.length > 0;
  }

  function renderHistory(items) {
    const rows = items.map((a) => {
      const sev = el("td");
      sev.append(badge(a.severity));
      return row([
        el("td", null, fmtTime(a.updated_at)), el("td", null, a.service), el("td", null, a.rule),
        el("td", null, transition(a)), sev, el("td", null, fmtNum(a.value)),
        el("td", null, a.resolved_by || ""),
      ]);
    });
    $("alert-history").tBodies[0].replaceChildren(...rows);
    $("history-empty").hidden = rows.length > 0;
  }

  // "pending -> firing", or "firing: warning -> critical" for an escalation or de-escalation.
  function transition(a) {
    if (a.previous_state === a.state && a.previous_severity === a.severity) {
      return a.acked_by ? "acked by " + a.acked_by : a.state + ": unacked";
    }
    if (a.previous_state === a.state) return a.state + ": " + a.previous_severity + " \u2192 " + a.severity;
    return a.previous_state + " \u2192 " + a.state;
  }

  function renderLag(lag) {
    const rows = lag.map((l) => row([
      el("td", null, l.topic), el("td", null, l.partition), el("td", null, fmtNum(l.lag, 0)),
    ]));
    $("lag").tBodies[0].replaceChildren(...rows);
  }

  // A 1-2-5 "nice" ceiling for the y axis.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function renderChart(container, series, field, nowMs, unit) {
    const W = 640, H = 240, L = 52, R = 12, T = 10, B = 26;
    const x0 = nowMs - HOUR_MS;
    const xOf = (ms) => L + (ms - x0) / HOUR_MS * (W - L - R);
    let max = 0;
    for (const s of series) for (const p of s.points) if (p[field] !== null && p[field] > max) max = p[field];
    const yMax = niceMax(max);
    const yOf = (v) => T + (1 - v / yMax) * (H - T - B);

    const root = svg("svg", {viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "xMidYMid meet"});
    for (let i = 0; i <= 4; i++) {
      const v = yMax * i / 4, y = yOf(v);
      root.append(svg("line", {x1: L, x2: W - R, y1: y, y2: y, class: i ? "grid" : "axis"}));
      root.append(svg("text", {x: L - 6, y: y + 4, "text-anchor": "end"}, fmtNum(v)));
    }
    for (let m = 0; m <= 60; m += 15) {
      const x = xOf(x0 + m * 60000);
      root.append(svg("line", {x1: x, x2: x, y1: T, y2: H - B, class: "grid"}));
      root.append(svg("text", {x: x, y: H - 8, "text-anchor": "middle"}, m === 60 ? "now" : "-" + (60 - m) + "m"));
    }
    const legend = el("div", {className: "legend"});
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      let d = "", pen = false;
      const dots = [];
      for (const p of s.points) {
        const ms = p.ts_us / 1000;
        if (p[field] === null || ms < x0) { pen = false; continue; }
        const x = xOf(ms).toFixed(1), y = yOf(p[field]).toFixed(1);
        d += (pen ? " L" : " M") + x + " " + y;
        pen = true;
        const dot = svg("circle", {cx: x, cy: y, r: 2.2, fill: color});
        dot.append(svg("title", null, s.service + " \u00b7 " + new Date(ms).toLocaleTimeString() + " \u00b7 " +
                                      fmtNum(p[field]) + " " + unit));
        dots.push(dot);
      }
      if (d) root.append(svg("path", {d: d.trim(), class: "line", stroke: color}));
      root.append(...dots);
      const item = el("span");
      const swatch = el("span", {className: "swatch"});
      swatch.style.background = color;
      item.append(swatch, document.createTextNode(s.service));
      legend.append(item);
    });
    if (!series.length) legend.append(el("span", {className: "muted"}, "No data in the last hour."));
    container.replaceChildren(root, legend);
  }

  async function login(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    storeToken(value);
    canOperate = null;
    $("login-button").disabled = true;
    try {
      await loadScope();
      const resp = await api("/api/dashboard");
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      showMain();
      render(await resp.json());
    } catch (e) {
      if (e.message !== "unauthorized") $("login-error").textContent = "Could not load the dashboard: " + e.message;
    } finally {
      $("login-button").disabled = false;
    }
  }

  function init() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => showLogin(""));
    token = storedToken();
    if (token) { showMain(); refresh(); } else { showLogin(""); }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
