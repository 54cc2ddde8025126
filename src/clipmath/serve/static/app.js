// clipmath web page: pick or drop a reference, describe a change, search the photo library under query
// controls (cutoff, sort, filters, paging), find similar photos, find duplicates, compare two images.
// Plain browser JavaScript modules, no build step. Talks to the JSON API under /api (see /docs).
"use strict";

import { $, api, setToken, state, status } from "./common.js";
import { renderSlots, setSlot, showCompareNote, wireCompare } from "./compare.js";
import { findDuplicates } from "./duplicates.js";
import { loadControls, wirePhotos } from "./photos.js";
import { renderReference, setReference, wireReference } from "./reference.js";

async function loadInfo() {
  const info = await api("/api/info");
  state.info = info;
  $("auth").hidden = true;
  $("model").textContent = info.model;
  $("model").classList.toggle("warning", !info.pretrained);
  $("store-count").textContent = `${info.store_items} images`;
  const select = $("method");
  select.length = 1;
  for (const [name, description] of Object.entries(info.methods)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    option.title = description;
    select.appendChild(option);
  }
  $("k").value = info.default_k;
  $("k").max = info.max_k;
  $("captions").hidden = !info.captioning;
  showCompareNote();
  await loadControls();
  status("Ready.");
}

function takeTokenFromAddress() {
  // `clipmath serve --token` prints an address ending in #token=...; keep it out of the history.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    setToken(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function showView(name) {
  for (const view of ["search", "duplicates"]) {
    $(`${view}-view`).hidden = view !== name;
    $(`view-${view}`).setAttribute("aria-pressed", String(view === name));
  }
}

function picked(target, reference) {
  // A gallery pick fills the reference or a compare slot.
  if (target !== "reference") {
    setSlot(target, reference);
    return;
  }
  setReference(reference);
  status(`Reference: ${reference.label}. Describe a change and search.`);
  $("text").focus();
}

function wire() {
  wireReference(picked);
  wirePhotos();
  wireCompare();
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("token").value.trim());
    loadInfo().catch((error) => status(error.message, true));
  });
  $("view-search").addEventListener("click", () => showView("search"));
  $("view-duplicates").addEventListener("click", () => {
    showView("duplicates");
    $("duplicate-threshold").focus();
  });
  $("duplicates-form").addEventListener("submit", findDuplicates);
}

takeTokenFromAddress();
wire();
renderReference();
renderSlots();
loadInfo().catch((error) => status(error.message, true));
