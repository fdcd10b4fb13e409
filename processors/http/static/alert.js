// Tocsin alert page: one incident, its transitions, ack/unack. Same rules as dashboard.js: the token
// lives in sessionStorage and travels only as an Authorization header; event strings go in via textContent.
"use strict";

(function () {
  const {$, el, store, resume, showLogin, api, fmtTime} = window.TocsinSession;
  const alertId = decodeURIComponent(location.pathname.split("/").pop() || "");
  const params = new URLSearchParams(location.search);
  let current = null;






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
    $("unack").addEventListener("click", () => send("/api/alerts/unack", {alert_id: alertId, actor: $("ack-actor").value || "web"}));
    if (params.get("action") === "ack") $("ack-note").focus();
    if (resume()) load().catch((e) => { if (e.message !== "unauthorized") showLogin(e.message); }); else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
