// clipmath web page: pick or drop a reference, describe a change, search, click a result to refine;
// compare two images (before, after) and read what changed.
// Plain browser JavaScript, no build step. Talks to the JSON API under /api (see /docs).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_COOKIE = "clipmath_token";
const PAGE = 60;
const DIFFERENCE_OFF = "Difference captions are off: start the server with --caption-lm or --diff-checkpoint.";

const state = {
  info: null,
  reference: null,   // {gallery_id} | {upload_id}, plus .label and .src for display
  history: [],       // earlier references, most recent last
  pickerOffset: 0,
  pickTarget: "reference",  // what a gallery pick fills: "reference", "before" or "after"
  compare: { before: null, after: null },
};

// ---- API --------------------------------------------------------------------------------------------
function token() {
  const match = document.cookie.split("; ").find((c) => c.startsWith(TOKEN_COOKIE + "="));
  return match ? match.slice(TOKEN_COOKIE.length + 1) : "";
}

function setToken(value) {
  // The cookie lets <img> thumbnail requests carry the token; SameSite keeps other sites from sending it.
  document.cookie = `${TOKEN_COOKIE}=${value}; path=/; SameSite=Strict`;
}

async function api(path, options = {}) {
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

function describeError(body, response) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => `${(e.loc || []).slice(1).join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return `${response.status} ${response.statusText}`;
}

function status(message, isError = false) {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", isError);
}

// ---- start-up ---------------------------------------------------------------------------------------
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

// ---- reference image --------------------------------------------------------------------------------
function setReference(reference, remember = true) {
  if (remember && state.reference) {
    state.history.push(state.reference);
  }
  state.reference = reference;
  renderReference();
}

function renderReference() {
  const ref = state.reference;
  const img = $("reference-image");
  $("reference").dataset.reference = ref ? ref.label : "";
  $("clear-reference").hidden = !ref;
  $("difference-button").disabled = !(ref && state.history.length);
  if (!ref) {
    img.hidden = true;
    img.removeAttribute("src");
    $("reference-label").textContent =
      "No reference image. Drop one here, choose a file, or pick one from the gallery.";
  } else {
    img.src = ref.src;
    img.hidden = false;
    $("reference-label").textContent = ref.label;
  }
  const list = $("history");
  list.replaceChildren();
  state.history.forEach((earlier, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.title = "Go back to " + earlier.label;
    const thumb = document.createElement("img");
    thumb.src = earlier.src;
    thumb.alt = earlier.label;
    button.appendChild(thumb);
    button.addEventListener("click", () => {
      state.history = state.history.slice(0, index);
      setReference(earlier, false);
    });
    item.appendChild(button);
    list.appendChild(item);
  });
}

function galleryReference(id, thumbnailUrl) {
  return { gallery_id: id, label: id, src: thumbnailUrl };
}

async function uploadImage(file) {
  // Upload a file; returns a reference ({upload_id, label, src, width, height}) or null (the error is shown).
  if (!file) return null;
  if (state.info && file.size > state.info.max_upload_bytes) {
    status(`${file.name} is larger than the server's limit of ${state.info.max_upload_bytes} bytes.`, true);
    return null;
  }
  status(`Uploading ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const uploaded = await api("/api/uploads", { method: "POST", body: form });
    return { upload_id: uploaded.upload_id, label: file.name, src: URL.createObjectURL(file),
             width: uploaded.width, height: uploaded.height };
  } catch (error) {
    status(error.message, true);
    return null;
  }
}

async function uploadFile(file) {
  const uploaded = await uploadImage(file);
  if (!uploaded) return;
  setReference(uploaded);
  status(`Reference: ${file.name} (${uploaded.width}×${uploaded.height}). Describe a change and search.`);
  $("text").focus();
}

function referenceField(ref) {
  return ref.gallery_id !== undefined ? { gallery_id: ref.gallery_id } : { upload_id: ref.upload_id };
}

// ---- search -----------------------------------------------------------------------------------------
function queryBody() {
  const text = $("text").value.trim();
  const source = $("source").value.trim();
  const target = $("target").value.trim();
  const expression = $("expression").value.trim();
  const body = { k: Number($("k").value) || undefined };
  if (state.reference) body.reference = referenceField(state.reference);
  if (text) body.text = text;
  if (source || target) {
    body.source = source;
    body.target = target;
    body.lam = Number($("lam").value);
  }
  if (expression) body.expression = expression;
  if ($("method").value) body.method = $("method").value;
  return body;
}

async function search(event) {
  if (event) event.preventDefault();
  const button = $("search");
  button.disabled = true;
  status("Searching…");
  try {
    const answer = await api("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(queryBody()),
    });
    renderResults(answer);
    $("store-count").textContent = `${answer.store_items} images`;
    status(`${answer.results.length} results by ${answer.method} in ${answer.milliseconds.toFixed(0)} ms. ` +
           "Click one to use it as the next reference.");
  } catch (error) {
    status(error.message, true);
  } finally {
    button.disabled = false;
  }
}

function renderResults(answer) {
  const grid = $("results");
  grid.replaceChildren();
  const title = $("results-title");
  title.hidden = false;
  title.textContent = `method ${answer.method} · ${answer.model}`;
  for (const hit of answer.results) {
    const figure = document.createElement("figure");
    figure.className = "result";
    figure.dataset.id = hit.id;
    const button = document.createElement("button");
    button.type = "button";
    button.title = `Use ${hit.id} as the next reference`;
    const img = document.createElement("img");
    img.src = hit.thumbnail_url;
    img.alt = hit.id;
    img.loading = "lazy";
    button.appendChild(img);
    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `#${hit.rank} · ${hit.score.toFixed(3)}`;
    const name = document.createElement("a");
    name.href = hit.image_url;
    name.target = "_blank";
    name.rel = "noopener";
    name.textContent = hit.id;
    caption.append(score, name);
    figure.append(button, caption);
    button.addEventListener("click", () => {
      setReference(galleryReference(hit.id, hit.thumbnail_url));
      status(`Reference: ${hit.id}. Describe the next change and search again.`);
      $("text").select();
      window.scrollTo({ top: 0, behavior: "smooth" });
    });
    grid.appendChild(figure);
  }
  if (!answer.results.length) {
    grid.textContent = "No results.";
  }
}

// ---- gallery picker ---------------------------------------------------------------------------------
async function loadPickerPage(reset) {
  if (reset) {
    state.pickerOffset = 0;
    $("picker-grid").replaceChildren();
  }
  const params = new URLSearchParams({ offset: state.pickerOffset, limit: PAGE });
  const filter = $("picker-filter").value.trim();
  if (filter) params.set("q", filter);
  try {
    const page = await api("/api/items?" + params);
    for (const item of page.items) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "item";
      button.dataset.id = item.id;
      button.title = item.id;
      const img = document.createElement("img");
      img.src = item.thumbnail_url;
      img.alt = item.id;
      img.loading = "lazy";
      button.appendChild(img);
      button.addEventListener("click", () => {
        $("picker").close();
        if (state.pickTarget !== "reference") {
          setSlot(state.pickTarget, galleryReference(item.id, item.thumbnail_url));
          return;
        }
        setReference(galleryReference(item.id, item.thumbnail_url));
        status(`Reference: ${item.id}. Describe a change and search.`);
        $("text").focus();
      });
      $("picker-grid").appendChild(button);
    }
    state.pickerOffset += page.items.length;
    $("picker-count").textContent = `${state.pickerOffset} of ${page.total}`;
    $("picker-more").hidden = state.pickerOffset >= page.total;
  } catch (error) {
    $("picker-count").textContent = error.message;
  }
}

// ---- captions ---------------------------------------------------------------------------------------
async function describeReference() {
  if (!state.reference) { status("Choose a reference image first.", true); return; }
  await showCaption("/api/caption", { image: referenceField(state.reference) });
}

async function describeDifference() {
  const before = state.history[state.history.length - 1];
  if (!before || !state.reference) return;
  await showCaption("/api/caption/difference",
                    { before: referenceField(before), after: referenceField(state.reference) });
}

async function showCaption(path, body, output = $("caption-output")) {
  // Ask for a caption and show it in `output`, with a busy indicator while the model runs.
  output.textContent = path.endsWith("/difference") ? "Describing the change…" : "Describing…";
  output.classList.remove("error", "off");
  output.classList.add("busy");
  output.setAttribute("aria-busy", "true");
  try {
    const answer = await api(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    output.textContent = `${answer.caption.trim() || "(an empty caption)"} (${answer.captioner})`;
  } catch (error) {
    const off = error.status === 501 && path.endsWith("/difference");
    output.textContent = off ? DIFFERENCE_OFF : error.message;
    output.classList.add(off ? "off" : "error");
  } finally {
    output.classList.remove("busy");
    output.removeAttribute("aria-busy");
  }
}

// ---- compare two images -----------------------------------------------------------------------------
function setSlot(which, reference) {
  state.compare[which] = reference;
  renderSlots();
}

function renderSlots() {
  for (const which of ["before", "after"]) {
    const slot = $("slot-" + which);
    const ref = state.compare[which];
    const img = slot.querySelector("img");
    const title = which === "before" ? "Before" : "After";
    slot.dataset.reference = ref ? ref.label : "";
    slot.querySelector(".slot-label").textContent = `${title}: ${ref ? ref.label : "none"}`;
    img.hidden = !ref;
    if (ref) img.src = ref.src; else img.removeAttribute("src");
  }
  $("compare-button").disabled = !(state.compare.before && state.compare.after);
}

function showCompareNote() {
  const output = $("compare-output");
  const off = state.info && !state.info.difference_captioning;
  output.classList.toggle("off", Boolean(off));
  output.textContent = off ? DIFFERENCE_OFF : "";
}

async function describeComparison() {
  const { before, after } = state.compare;
  if (!before || !after) return;
  const button = $("compare-button");
  button.disabled = true;
  try {
    await showCaption("/api/caption/difference",
                      { before: referenceField(before), after: referenceField(after) }, $("compare-output"));
  } finally {
    button.disabled = false;
  }
}

function wireSlot(which) {
  const slot = $("slot-" + which);
  slot.querySelector(".slot-pick").addEventListener("click", () => {
    state.pickTarget = which;
    $("picker").showModal();
    loadPickerPage(true);
  });
  slot.querySelector(".slot-file").addEventListener("change", async (e) => {
    const uploaded = await uploadImage(e.target.files[0]);
    e.target.value = "";
    if (uploaded) {
      setSlot(which, uploaded);
      status(`${which === "before" ? "Before" : "After"}: ${uploaded.label}.`);
    }
  });
  slot.querySelector(".slot-reference").addEventListener("click", () => {
    if (state.reference) setSlot(which, state.reference);
    else status("Choose a reference image first.", true);
  });
}

// ---- wiring -----------------------------------------------------------------------------------------
function wire() {
  $("query-form").addEventListener("submit", search);
  $("file-input").addEventListener("change", (e) => uploadFile(e.target.files[0]));
  $("clear-reference").addEventListener("click", () => {
    state.reference = null;
    state.history = [];
    renderReference();
  });
  const zone = $("reference");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadFile(e.dataTransfer.files[0]);
  });
  $("browse").addEventListener("click", () => {
    state.pickTarget = "reference";
    $("picker").showModal();
    loadPickerPage(true);
  });
  $("picker-close").addEventListener("click", () => $("picker").close());
  $("picker-more").addEventListener("click", () => loadPickerPage(false));
  let filterTimer = null;
  $("picker-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => loadPickerPage(true), 200);
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("token").value.trim());
    loadInfo().catch((error) => status(error.message, true));
  });
  $("caption-button").addEventListener("click", describeReference);
  $("difference-button").addEventListener("click", describeDifference);
  wireSlot("before");
  wireSlot("after");
  $("compare-button").addEventListener("click", describeComparison);
  $("compare-swap").addEventListener("click", () => {
    state.compare = { before: state.compare.after, after: state.compare.before };
    renderSlots();
  });
}

takeTokenFromAddress();
wire();
renderReference();
renderSlots();
loadInfo().catch((error) => status(error.message, true));
