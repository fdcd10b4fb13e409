// Tocsin silence page: create a silence (prefilled from a notification's ?matcher=... link), list and expire them.
// Same rules as dashboard.js: the token lives in sessionStorage and travels only as an Authorization header;
// every string goes in via textContent.
"use strict";

(function () {
  const {$, el, store, resume, showLogin, api, fmtTime} = window.TocsinSession;
  const params = new URLSearchParams(location.search);
  const prefilled = params.getAll("matcher").slice(0, 20).map((m) => m.slice(0, 300));
  const quote = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";

  function matcherLines() { return $("matchers").value.split("\n").map((l) => l.trim()).filter((l) => l).slice(0, 20); }

  function renderCommand() {
    const parts = ["tocsin silence add"];
    for (const m of matcherLines()) parts.push("-m " + quote(m));
    parts.push("-d " + quote($("duration").value || "2h"));
    if ($("starts").value) parts.push("--start " + quote($("starts").value));
    parts.push("--reason " + quote($("comment").value));
    $("command").textContent = parts.join(" ");
  }

  async function load() {
    const resp = await api("/api/silences");
    const doc = await resp.json();
    if (!resp.ok) throw new Error(doc.detail || "HTTP " + resp.status);
    $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
    const rows = doc.silences.map((s) => {
      const tr = el("tr");
      tr.dataset.silenceId = s.id;
      const expire = el("button", "Expire");
      expire.type = "button"; expire.className = "expire";
      expire.addEventListener("click", () => expireOne(s.id));
      const cell = el("td"); cell.append(expire);
      tr.append(el("td", s.id), el("td", s.matchers.join(", ")), el("td", s.state), el("td", fmtTime(s.starts_at)),
                el("td", fmtTime(s.ends_at)), el("td", s.created_by), el("td", s.comment), cell);
      return tr;
    });
    $("silence-list").tBodies[0].replaceChildren(...rows);
  }

  async function create(ev) {
    ev.preventDefault();
    $("silence-status").textContent = "";
    const body = {matchers: matcherLines(), duration: $("duration").value || "2h", comment: $("comment").value};
    $("silence-submit").disabled = true;  // one request at a time: the status and list answer the last click
    if ($("starts").value) body.starts_at = $("starts").value;
    try {
      const resp = await api("/api/silences", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify(body)});
      const doc = await resp.json();
      if (resp.status === 201) {
        $("silence-status").textContent = "Silence " + doc.id + " until " + fmtTime(doc.ends_at) + ".";
      } else {
        const detail = Array.isArray(doc.detail) ? doc.detail.map((d) => d.msg).join("; ") : doc.detail;
        $("silence-status").textContent = "Not created: " + (detail || "HTTP " + resp.status);
      }
      await load();
    } catch (e) {
      if (e.message !== "unauthorized") $("silence-status").textContent = "Could not send: " + e.message;
    } finally {
      $("silence-submit").disabled = false;
    }
  }

  async function expireOne(id) {
    try {
      const resp = await api("/api/silences/" + encodeURIComponent(id), {method: "DELETE"});
      const doc = await resp.json();
      $("silence-status").textContent = resp.ok ? "Silence " + id + " expired." : (doc.detail || "HTTP " + resp.status);
      await load();
    } catch (e) {
      if (e.message !== "unauthorized") $("silence-status").textContent = "Could not send: " + e.message;
    }
  }

  function init() {
    $("matchers").value = prefilled.join("\n");
    for (const id of ["matchers", "duration", "starts", "comment"]) $(id).addEventListener("input", renderCommand);
    renderCommand();
    $("silence-form").addEventListener("submit", create);
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      store($("token").value.trim());
      load().catch((e) => { if (e.message !== "unauthorized") $("login-error").textContent = e.message; });
    });
    $("logout").addEventListener("click", () => showLogin(""));
    if (resume()) load().catch((e) => { if (e.message !== "unauthorized") showLogin(e.message); }); else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
