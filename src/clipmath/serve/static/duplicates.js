// The duplicates view: groups of near-identical photos, the best copy of each marked; nothing is deleted.
"use strict";

import { $, api, element, thumbnail, withProgress } from "./common.js";
import { describe } from "./photos.js";

function copyCard(id, group) {
  const best = id === group.best;
  const figure = element("figure", best ? "result copy best" : "result copy");
  figure.dataset.id = id;
  const url = group.thumbnail_urls[id];
  const link = element("a", "thumb");
  link.href = url.replace("/api/thumbnail/", "/api/image/");
  link.target = "_blank";
  link.rel = "noopener";
  link.setAttribute("aria-label", `${best ? "Best copy: " : ""}${id} (open the original)`);
  link.append(thumbnail(url, id));
  const caption = element("figcaption");
  if (best) caption.append(element("span", "badge-best", "Best copy"));
  caption.append(element("span", "meta", describe(group.photos[id])), element("span", "name", id));
  const photo = group.photos[id];
  if (photo && photo.size_bytes) caption.append(element("span", "meta", `${(photo.size_bytes / 1024).toFixed(1)} KiB`));
  figure.append(link, caption);
  return figure;
}

export async function findDuplicates(event) {
  if (event) event.preventDefault();
  const threshold = Number($("duplicate-threshold").value);
  const button = $("find-duplicates");
  const summary = $("duplicates-summary");
  const count = $("store-count").textContent || "the gallery";
  button.disabled = true;
  summary.textContent = `Comparing ${count}…`;
  summary.classList.remove("error");
  try {
    const page = await withProgress(`Looking for duplicates in ${count}…`,
                                    () => api("/api/photos/duplicates?" + new URLSearchParams({ threshold })));
    const list = $("duplicate-groups");
    list.replaceChildren();
    page.groups.forEach((group, number) => {
      const section = element("section", "duplicate-group");
      section.dataset.best = group.best;
      section.setAttribute("aria-label", `Group ${number + 1}: ${group.ids.length} copies`);
      section.append(element("h3", "", `${group.ids.length} copies · similarity ≥ ${group.min_score.toFixed(3)}`));
      const grid = element("div", "grid");
      for (const id of group.ids) grid.append(copyCard(id, group));
      section.append(grid);
      list.append(section);
    });
    const shown = page.shown < page.total ? ` (the ${page.shown} largest shown)` : "";
    summary.textContent = `${page.total} groups of near-duplicates among ${page.store_items} photos at similarity ≥ ` +
      `${page.threshold}${shown}, in ${page.milliseconds.toFixed(0)} ms. Nothing was deleted.`;
  } catch (error) {
    summary.textContent = error.message;
    summary.classList.add("error");
  } finally {
    button.disabled = false;
  }
}
