// The reference image (picked, dropped, chosen or clicked in the results), its history, uploads and the
// gallery picker.
"use strict";

import { $, api, element, state, status, thumbnail, withProgress } from "./common.js";

const PAGE = 60;
const NO_REFERENCE = "No reference image. Drop one here, choose a file, or pick one from the gallery.";

export function setReference(reference, remember = true) {
  if (remember && state.reference) {
    state.history.push(state.reference);
  }
  state.reference = reference;
  renderReference();
}

export function clearReference() {
  state.reference = null;
  state.history = [];
  renderReference();
}

export function renderReference() {
  const ref = state.reference;
  const img = $("reference-image");
  $("reference").dataset.reference = ref ? ref.label : "";
  $("clear-reference").hidden = !ref;
  $("difference-button").disabled = !(ref && state.history.length);
  img.hidden = !ref;
  if (ref) img.src = ref.src; else img.removeAttribute("src");
  $("reference-label").textContent = ref ? ref.label : NO_REFERENCE;
  const list = $("history");
  list.replaceChildren();
  state.history.forEach((earlier, index) => {
    const item = element("li");
    const button = element("button");
    button.type = "button";
    button.title = "Go back to " + earlier.label;
    button.setAttribute("aria-label", "Go back to " + earlier.label);
    button.appendChild(thumbnail(earlier.src, earlier.label));
    button.addEventListener("click", () => {
      state.history = state.history.slice(0, index);
      setReference(earlier, false);
    });
    item.appendChild(button);
    list.appendChild(item);
  });
}

export function galleryReference(id, thumbnailUrl) {
  return { gallery_id: id, label: id, src: thumbnailUrl };
}

export function referenceField(ref) {
  return ref.gallery_id !== undefined ? { gallery_id: ref.gallery_id } : { upload_id: ref.upload_id };
}

export async function uploadImage(file) {
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
    const uploaded = await withProgress(`Uploading ${file.name}`,
                                        () => api("/api/uploads", { method: "POST", body: form }));
    return { upload_id: uploaded.upload_id, label: file.name, src: URL.createObjectURL(file),
             width: uploaded.width, height: uploaded.height };
  } catch (error) {
    status(error.message, true);
    return null;
  }
}

export async function uploadFile(file) {
  const uploaded = await uploadImage(file);
  if (!uploaded) return;
  setReference(uploaded);
  status(`Reference: ${file.name} (${uploaded.width}×${uploaded.height}). Describe a change and search.`);
  $("text").focus();
}

// ---- gallery picker ---------------------------------------------------------------------------------
export function openPicker(target) {
  state.pickTarget = target;
  $("picker").showModal();
  loadPickerPage(true);
}

let pickerSequence = 0;  // a page asked for before the latest one is dropped (typing in the filter)

export async function loadPickerPage(reset, onPick = state.onPick) {
  const sequence = ++pickerSequence;
  if (reset) state.pickerOffset = 0;
  const params = new URLSearchParams({ offset: state.pickerOffset, limit: PAGE });
  const filter = $("picker-filter").value.trim();
  if (filter) params.set("q", filter);
  try {
    const page = await api("/api/items?" + params);
    if (sequence !== pickerSequence) return;
    if (reset) $("picker-grid").replaceChildren();
    for (const item of page.items) {
      const button = element("button", "item");
      button.type = "button";
      button.dataset.id = item.id;
      button.title = item.id;
      button.appendChild(thumbnail(item.thumbnail_url, item.id));
      button.addEventListener("click", () => {
        $("picker").close();
        onPick(state.pickTarget, galleryReference(item.id, item.thumbnail_url));
      });
      $("picker-grid").appendChild(button);
    }
    state.pickerOffset += page.items.length;
    $("picker-count").textContent = `${state.pickerOffset} of ${page.total}`;
    $("picker-more").hidden = state.pickerOffset >= page.total;
  } catch (error) {
    if (sequence === pickerSequence) $("picker-count").textContent = error.message;
  }
}

export function wireReference(onPick) {
  state.onPick = onPick;
  $("file-input").addEventListener("change", (e) => {
    uploadFile(e.target.files[0]);
    e.target.value = "";
  });
  $("clear-reference").addEventListener("click", clearReference);
  const zone = $("reference");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadFile(e.dataTransfer.files[0]);
  });
  $("browse").addEventListener("click", () => openPicker("reference"));
  $("picker-close").addEventListener("click", () => $("picker").close());
  $("picker-more").addEventListener("click", () => loadPickerPage(false));
  let filterTimer = null;
  $("picker-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => loadPickerPage(true), 200);
  });
}
