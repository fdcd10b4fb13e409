// Shared by the on-call pages (alert.js, silences.js), under the dashboard's rules: the token lives in
// sessionStorage and travels only as an Authorization header; strings reach the page only as textContent.
"use strict";

window.TocsinSession = (function () {
  const TOKEN_KEY = "tocsin.token";
  let token = null;
  const $ = (id) => document.getElementById(id);

  function el(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // An SVG element with its attributes set one by one (never markup); text only through textContent.
  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function store(v) {
    token = v;
    try { if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* memory only */ }
  }

  // The token kept from an earlier visit in this tab, now in use; null when there is none.
  function resume() {
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (e) { token = null; }
    return token;
  }

  function showLogin(message) {
    store(null);
    $("main").hidden = true; $("logout").hidden = true; $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  async function api(path, options) {
    const opts = Object.assign({cache: "no-store", credentials: "omit"}, options || {});
    opts.headers = Object.assign({"Authorization": "Bearer " + token}, opts.headers || {});
    const resp = await fetch(path, opts);
    if (resp.status === 401) { showLogin("The token was refused. Log in again."); throw new Error("unauthorized"); }
    return resp;
  }

  function fmtTime(s) { const d = new Date(s); return s && !isNaN(d) ? d.toLocaleString() : ""; }

  return {$, el, svg, store, resume, showLogin, api, fmtTime};
})();
