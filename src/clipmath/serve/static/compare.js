// Captions of the reference, and comparing two images (before, after): what changed.
"use strict";

import { $, postJSON, state, status, withProgress } from "./common.js";
import { openPicker, referenceField, uploadImage } from "./reference.js";

const DIFFERENCE_OFF = "Difference captions are off: start the server with --caption-lm or --diff-checkpoint.";

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
  const label = path.endsWith("/difference") ? "Describing the change…" : "Describing…";
  output.textContent = label;
  output.classList.remove("error", "off");
  output.classList.add("busy");
  output.setAttribute("aria-busy", "true");
  try {
    const answer = await withProgress(label, () => postJSON(path, body));
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

export function setSlot(which, reference) {
  state.compare[which] = reference;
  renderSlots();
}

export function renderSlots() {
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

export function showCompareNote() {
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
  slot.querySelector(".slot-pick").addEventListener("click", () => openPicker(which));
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

export function wireCompare() {
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
