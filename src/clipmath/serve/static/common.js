// Shared by the page's modules: the state, the JSON API client, the status line and the progress display.
"use strict";

export const $ = (id) => document.getElementById(id);
const TOKEN_COOKIE = "clipmath_token";

export const state = {
  info: null,
  reference: null,   // {gallery_id} | {upload_id}, plus .label and .src for display
  history: [],       // earlier references, most recent last
  pickerOffset: 0,
  pickTarget: "reference",  // what a gallery pick fills: "reference", "before" or "after"
  compare: { before: null, after: null },
};

// ---- API --------------------------------------------------------------------------------------------
export function token() {
  const match = document.cookie.split("; ").find((c) => c.startsWith(TOKEN_COOKIE + "="));
  return match ? match.slice(TOKEN_COOKIE.length + 1) : "";
}

export function setToken(value) {
  // The cookie lets <img> thumbnail requests carry the token; SameSite keeps other sites from sending it.
  document.cookie = `${TOKEN_COOKIE}=${value}; path=/; SameSite=Strict`;
}

export async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const saved = token();
  if (saved) headers["Authorization"] = "Bearer " + saved;
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) {
    $("auth").hidden = false;
    $("token").focus();
  }
  if (!response.ok) {
    const error = new Error(describeError(body, response));
    error.status = response.status;
    throw error;
  }
  return body;
}

export function postJSON(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function describeError(body, response) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => `${(e.loc || []).slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return `${response.status} ${response.statusText}`;
}

export function status(message, isError = false) {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", isError);
}

// ---- progress of long operations ---------------------------------------------------------------------
const running = new Map();  // id -> {label, started}; the display shows the oldest still running
let ticker = null;
let nextId = 0;

function renderProgress() {
  const box = $("progress");
  if (!running.size) {
    box.hidden = true;
    clearInterval(ticker);
    ticker = null;
    return;
  }
  const { label, started } = running.values().next().value;
  box.hidden = false;
  $("progress-label").textContent = label + (running.size > 1 ? ` (+${running.size - 1} more)` : "");
  $("progress-time").textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
}

export async function withProgress(label, work) {
  // Run `work()` (a promise-returning function) with `label` and the elapsed time shown until it settles.
  const key = nextId++;
  running.set(key, { label, started: performance.now() });
  renderProgress();
  if (!ticker) ticker = setInterval(renderProgress, 100);
  try {
    return await work();
  } finally {
    running.delete(key);
    renderProgress();
  }
}

// ---- small DOM helpers ---------------------------------------------------------------------------------
export function element(tag, className = "", text = "") {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text) el.textContent = text;
  return el;
}

export function thumbnail(src, alt) {
  // An <img> that never shows a broken-image icon: if it fails, it is replaced by its name.
  const img = element("img");
  img.alt = alt;
  img.loading = "lazy";
  img.addEventListener("error", () => img.replaceWith(element("span", "missing", alt)), { once: true });
  img.src = src;
  return img;
}
