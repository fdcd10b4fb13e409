// Tocsin alert page: one incident, its transitions, ack/unack. Same rules as dashboard.js: the token
// lives in sessionStorage and travels only as an Authorization header; event strings go in via textContent.
"use strict";

(function () {
  const {$, el, svg, store, resume, showLogin, api, fmtTime} = window.TocsinSession;
  const alertId = decodeURIComponent(location.pathname.split("/").pop() || "");
  const params = new URLSearchParams(location.search);
  let current = null;
  let logLines = 20;
  async function load() {
    const resp = await api("/api/alerts?limit=500");
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const doc = await resp.json();
    const active = doc.active.items.filter((a) => a.alert_id === alertId);
    const history = doc.history.items.filter((a) => a.alert_id === alertId);
    current = active[0] || history[0] || null;
    $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
    render(current, history);
    loadNotifications().catch((e) => { if (e.message !== "unauthorized") $("notifications-status").textContent = e.message; });
    loadContext().catch((e) => { if (e.message !== "unauthorized") $("chart-status").textContent = e.message; });
  }

  // The rule's value, its thresholds and the error lines around the start, from the store
  // (GET /api/alerts/{id}/context; 404 before the ClickHouse sink wrote the alert, 503 without the store).
  async function loadContext() {
    const resp = await api("/api/alerts/" + encodeURIComponent(alertId) + "/context?before_s=1800&logs=" + logLines);
    const doc = await resp.json();
    if (!resp.ok) {
      const why = doc.detail || "HTTP " + resp.status;
      $("chart-status").textContent = why; $("logs-status").textContent = why;
      return;
    }
    $("chart-status").textContent = doc.series.points.length ? "" : "No value stored for this window.";
    $("chart-what").textContent = doc.series.what + " (from " + doc.series.source + ")";
    $("value-chart").replaceChildren(chart(doc.series, doc.thresholds, doc.incident));
    renderLogs(doc.logs, doc.incident);
  }

  // Inline SVG from DOM calls only: the value as a polyline, a dashed line per threshold, the incident shaded.
  function chart(series, thresholds, incident) {
    const W = 760, H = 240, L = 56, R = 12, T = 12, B = 28;
    // at least 10 minutes after the start, so a fresh incident is not squeezed against the right edge
    const t0 = Date.parse(series.from), t1 = Math.max(Date.parse(series.to), Date.parse(incident.started_at) + 600000);
    const pts = series.points.filter((p) => p[1] !== null).map((p) => [Date.parse(p[0]), Number(p[1])]);
    const marks = series.transitions.filter((p) => p[1] !== null).map((p) => [Date.parse(p[0]), Number(p[1])]);
    const ys = [0, ...pts.map((p) => p[1]), ...marks.map((p) => p[1]), ...thresholds.map((t) => t.value)];
    const yMax = Math.max(...ys) * 1.1 || 1, yMin = Math.min(...ys);
    const x = (t) => L + (Math.min(Math.max(t, t0), t1) - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => T + (1 - (v - yMin) / (yMax - yMin || 1)) * (H - T - B);
    const root = svg("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "value and thresholds"});
    const start = Date.parse(incident.started_at), end = incident.ended_at ? Date.parse(incident.ended_at) : t1;
    root.append(svg("rect", {class: "incident", x: x(start), y: T, width: Math.max(1, x(end) - x(start)), height: H - T - B}));
    for (const v of [yMin, (yMin + yMax) / 2, yMax]) {
      root.append(svg("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
      root.append(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"}, Number(v.toPrecision(3))));
    }
    root.append(svg("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
    for (const [t, anchor] of [[t0, "start"], [start, "middle"], [t1, "end"]]) {
      root.append(svg("text", {x: x(t), y: H - 8, "text-anchor": anchor}, new Date(t).toLocaleTimeString()));
    }
    for (const th of thresholds) {
      const line = svg("line", {class: "threshold threshold-" + th.severity, x1: L, x2: W - R, y1: y(th.value), y2: y(th.value)});
      line.dataset.severity = th.severity;
      line.dataset.value = th.value;
      line.append(svg("title", {}, th.severity + " threshold " + th.value));
      root.append(line, svg("text", {x: W - R - 4, y: y(th.value) - 4, "text-anchor": "end"}, th.severity + " " + th.value));
    }
    if (pts.length) {
      root.append(svg("polyline", {class: "value", points: pts.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ")}));
    }
    for (const [t, v] of marks) root.append(svg("circle", {class: "transition", cx: x(t), cy: y(v), r: 3.5}));
    return root;
  }

  function renderLogs(logs, incident) {
    const row = (line, cls) => {
      const tr = el("tr");
      if (cls) tr.className = cls;
      const level = el("td", line.level);
      level.className = "level-" + line.level.replace(/[^A-Z]/g, "");
      tr.append(el("td", fmtTime(line.ts)), level, el("td", line.host), el("td", line.logger), el("td", line.message));
      return tr;
    };
    const rows = [...logs.before.map((l) => row(l, "before")), ...logs.after.map((l, i) => row(l, i === 0 ? "after start" : "after"))];
    $("error-logs").tBodies[0].replaceChildren(...rows);
    $("logs-status").textContent = (rows.length ? "" : "No " + logs.levels.join("/") + " line of " + incident.service +
      " in the day around the start. ") + "Up to " + logs.limit + " lines before and after " + fmtTime(incident.started_at) + ".";
    $("logs-more").hidden = logs.before.length < logs.limit && logs.after.length < logs.limit || logLines >= 200;
    $("logs-query").textContent = logs.more.sql;
  }

  function render(a, history) {
    const facts = $("alert-facts").tBodies[0];
    if (!a) {
      $("alert-heading").textContent = "No alert " + alertId + " in this processor's memory";
      facts.replaceChildren();
      $("ack-panel").hidden = true;
      return;
    }
    $("page-title").textContent = a.rule + " on " + a.service;
    $("alert-heading").textContent = a.rule + " on " + a.service + " (" + a.state + ", " + a.severity + ")";
    const rows = [["Alert id", a.alert_id], ["State", a.state], ["Severity", a.severity], ["Value", a.value],
                  ["Threshold", a.threshold], ["Started", fmtTime(a.started_at)], ["Summary", a.annotations.summary || ""],
                  ["Acknowledged", a.acked ? a.acked_by + (a.ack_note ? ": " + a.ack_note : "") +
                    (a.ack_expires_at ? " (until " + fmtTime(a.ack_expires_at) + ")" : "") : "no"]];
    facts.replaceChildren(...rows.map(([k, v]) => { const tr = el("tr"); tr.append(el("th", k), el("td", v)); return tr; }));
    const open = a.state === "firing" || a.state === "pending";
    $("ack-panel").hidden = !open;
    $("unack").hidden = !a.acked;
    $("ack-submit").textContent = a.acked ? "Ack again" : "Ack";
    const tl = history.slice().reverse().map((h) => {
      const tr = el("tr");
      const what = h.previous_state === h.state && h.previous_severity === h.severity
        ? (h.acked_by ? "acked by " + h.acked_by : "unacked")
        : h.previous_state === h.state ? h.state + ": " + h.previous_severity + " \u2192 " + h.severity
        : h.previous_state + " \u2192 " + h.state;
      tr.append(el("td", fmtTime(h.updated_at)), el("td", what), el("td", h.severity), el("td", h.value),
                el("td", h.ack_note || h.resolved_by || ""));
      return tr;
    });
    $("timeline").tBodies[0].replaceChildren(...tl);
  }

  // What the notification log says, per receiver (GET /api/alerts/{id}/notifications; 503 without the store).
  async function loadNotifications() {
    const resp = await api("/api/alerts/" + encodeURIComponent(alertId) + "/notifications");
    const doc = await resp.json();
    if (!resp.ok) { $("notifications-status").textContent = doc.detail || "HTTP " + resp.status; return; }
    const receivers = Object.entries(doc.receivers);
    $("notifications-status").textContent = receivers.length ? "" : "No notification logged for this alert yet.";
    $("notifications").replaceChildren(...receivers.map(([name, items]) => {
      const box = el("div");
      box.className = "receiver";
      box.dataset.receiver = name;
      const table = el("table");
      const head = el("tr");
      for (const h of ["When", "Transition", "Decision"]) head.append(el("th", h));
      table.append(el("thead"), el("tbody"));
      table.tHead.append(head);
      for (const i of items) {
        const tr = el("tr");
        tr.className = "status-" + i.status;
        tr.append(el("td", fmtTime(i.ts)), el("td", i.transition), el("td", i.decision));
        table.tBodies[0].append(tr);
      }
      box.append(el("h3", name), table);
      return box;
    }));
  }

  async function send(path, body) {
    $("ack-status").textContent = "";
    try {
      const resp = await api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      const doc = await resp.json();
      $("ack-status").textContent = resp.status === 202 ? "Sent; the processor applies it in a moment." : (doc.detail || "HTTP " + resp.status);
      setTimeout(() => load().catch(() => {}), 1500);
    } catch (e) {
      if (e.message !== "unauthorized") $("ack-status").textContent = "Could not send: " + e.message;
    }
  }

  function init() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      store($("token").value.trim());
      load().catch((e) => { if (e.message !== "unauthorized") $("login-error").textContent = e.message; });
    });
    $("logout").addEventListener("click", () => showLogin(""));
    $("ack-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body = {alert_id: alertId, note: $("ack-note").value, actor: $("ack-actor").value || "web"};
      const minutes = Number($("ack-for").value);
      if (minutes > 0) body.for_s = minutes * 60;
      send("/api/alerts/ack", body);
    });
    $("logs-more").addEventListener("click", () => {
      logLines = Math.min(200, logLines * 5);
      loadContext().catch((e) => { if (e.message !== "unauthorized") $("logs-status").textContent = e.message; });
    });
    $("unack").addEventListener("click", () => send("/api/alerts/unack", {alert_id: alertId, actor: $("ack-actor").value || "web"}));
    if (params.get("action") === "ack") $("ack-note").focus();
    if (resume()) load().catch((e) => { if (e.message !== "unauthorized") showLogin(e.message); }); else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
