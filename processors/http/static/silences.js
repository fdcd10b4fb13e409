// Tocsin silence page: the matchers prefilled from the link, as a `tocsin silence add` command.
// Every value is shell-quoted and shown with textContent; no token is needed or taken here.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const matchers = params.getAll("matcher").slice(0, 20).map((m) => m.slice(0, 300));
  const quote = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'";

  function render() {
    const parts = ["tocsin silence add"];
    for (const m of matchers) parts.push("-m " + quote(m));
    parts.push("-d " + quote($("duration").value || "2h"));
    if ($("reason").value) parts.push("--reason " + quote($("reason").value));
    $("command").textContent = parts.join(" ");
  }

  function init() {
    $("matchers").replaceChildren(...matchers.map((m) => { const li = document.createElement("li"); li.textContent = m; return li; }));
    $("duration").addEventListener("input", render);
    $("reason").addEventListener("input", render);
    render();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
