// modalign search page: plain JS against the same-origin API (GET /health, POST /search).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, health: null, previewUrl: null };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(detail);
}

async function loadHealth() {
  try {
    const res = await fetch("/health");
    const info = await res.json();
    state.health = info;
    const parts = info.modalities.map((m) => `${m.count.toLocaleString()} ${m.name}`);
    $("index-info").textContent = `${info.items.toLocaleString()} items · ${parts.join(" · ")} · ${info.backend}`;
    const filter = $("modality-filter");
    for (const m of info.modalities) {
      const label = document.createElement("label");
      label.className = "chip";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = m.name;
      box.checked = true;
      box.addEventListener("change", () => { if (hasQuery()) runSearch(); });
      label.append(box, document.createTextNode(` ${m.name}`));
      filter.append(label);
    }
    const kinds = new Set(Object.values(info.query_modalities));
    const accept = [kinds.has("image") ? "image/*" : null, kinds.has("audio") ? "audio/*" : null].filter(Boolean);
    $("file").accept = accept.join(",");
    if (!accept.length) document.querySelector(".upload-btn").hidden = true;
    $("q").maxLength = info.limits.max_text_chars;
    $("k").max = info.limits.max_k;
  } catch (err) {
    $("index-info").textContent = "index unavailable";
    showError(`cannot reach the server: ${err}`);
  }
}

function hasQuery() {
  return Boolean(state.file) || $("q").value.trim().length > 0;
}

function selectedModalities() {
  const boxes = [...document.querySelectorAll("#modality-filter input[type=checkbox]")];
  const on = boxes.filter((b) => b.checked).map((b) => b.value);
  return on.length === boxes.length ? null : on;
}

function commonFields() {
  const fields = { k: Number($("k").value) || 24, routing: $("routing").value };
  const adaptive = $("adaptive").value;
  if (adaptive !== "") fields.adaptive = Number(adaptive);
  const modalities = selectedModalities();
  if (modalities) fields.modalities = modalities;
  return fields;
}

async function runSearch(byId) {
  showError("");
  const fields = commonFields();
  if (fields.modalities && fields.modalities.length === 0) {
    render([], null);
    $("status").textContent = "No modality selected.";
    return;
  }
  let init;
  if (byId) {
    init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...fields, id: byId }) };
  } else if (state.file) {
    const form = new FormData();
    form.append("file", state.file);
    for (const [key, value] of Object.entries(fields)) {
      form.append(key, Array.isArray(value) ? value.join(",") : String(value));
    }
    init = { method: "POST", body: form };
  } else {
    const text = $("q").value.trim();
    if (!text) return;
    init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ...fields, text }) };
  }
  $("status").textContent = "Searching…";
  document.body.classList.add("busy");
  try {
    const res = await fetch("/search", init);
    const payload = await res.json();
    if (!res.ok) {
      showError(detailText(payload.detail));
      $("status").textContent = "";
      return;
    }
    render(payload.results, payload.query);
  } catch (err) {
    showError(`search failed: ${err}`);
    $("status").textContent = "";
  } finally {
    document.body.classList.remove("busy");
  }
}

function formatScore(result, routing) {
  if (routing === "calibrated") return `calibrated ${result.score.toFixed(2)}`;
  return `cosine ${result.cosine.toFixed(3)}`;
}

function scoreHelp(result, routing) {
  const how = routing === "calibrated"
    ? "calibrated: how many standard deviations this item's cosine lies above the query's usual cosine to " +
      "items of its modality, so that text and image results rank on one scale"
    : "cosine similarity of the query and this item in the shared space (1 = same direction)";
  const floor = result.confident === false ? " · below the confidence floor: most of this index's own pairs " +
    "score higher" : "";
  return `${how} · score ${result.score.toFixed(3)} · cosine ${result.cosine.toFixed(3)}${floor}`;
}

function render(results, query) {
  const grid = $("results");
  grid.replaceChildren();
  $("empty").hidden = results.length > 0 || !query;
  const noMatch = $("no-match");
  noMatch.hidden = !(query && query.confident_match === false && results.length > 0);
  if (query) {
    const counts = {};
    for (const r of results) counts[r.modality] = (counts[r.modality] || 0) + 1;
    const mix = Object.entries(counts).map(([m, n]) => `${n} ${m}`).join(", ");
    $("status").textContent = `${results.length} results${mix ? ` (${mix})` : ""} · ${query.routing} · ` +
      `${query.took_ms.toFixed(0)} ms`;
  }
  const template = $("card-template");
  for (const r of results) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.id = r.id;
    card.dataset.modality = r.modality;
    card.classList.add(`kind-${r.kind}`);
    if (r.confident === false) card.classList.add("low-confidence");
    const media = card.querySelector(".media");
    if (r.kind === "image") {
      const img = document.createElement("img");
      img.className = "thumb";
      img.loading = "lazy";
      img.alt = r.text || r.id;
      img.src = r.thumbnail;
      const link = document.createElement("a");
      link.href = r.url;
      link.target = "_blank";
      link.rel = "noopener";
      link.append(img);
      media.append(link);
    } else if (r.kind === "audio") {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = r.url;
      media.append(audio);
    } else {
      const quote = document.createElement("blockquote");
      quote.className = "text-item";
      quote.textContent = r.text || r.id;
      media.append(quote);
    }
    const caption = card.querySelector(".caption");
    if (r.kind === "text") {
      caption.textContent = r.n_rows > 1 ? `shared by ${r.n_rows} rows` : r.rows[0] || r.id;
    } else {
      caption.textContent = r.text || r.id;
    }
    caption.title = r.n_rows > 1 ? `${r.id} (+${r.n_rows - 1} rows share this item)` : r.id;
    card.querySelector(".badge").textContent = r.modality;
    card.querySelector(".badge").classList.add(`badge-${r.kind}`);
    const score = card.querySelector(".score");
    score.textContent = formatScore(r, query ? query.routing : "raw");
    score.title = scoreHelp(r, query ? query.routing : "raw");
    card.querySelector(".similar").addEventListener("click", () => runSearch(r.id));
    grid.append(card);
  }
}

function setFile(file) {
  state.file = file;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = null;
  const chip = $("file-chip");
  const preview = $("file-preview");
  if (!file) {
    chip.hidden = true;
    $("file").value = "";
    $("q").disabled = false;
    return;
  }
  $("file-name").textContent = file.name;
  if (file.type.startsWith("image/")) {
    state.previewUrl = URL.createObjectURL(file);
    preview.src = state.previewUrl;
    preview.hidden = false;
  } else {
    preview.hidden = true;
  }
  chip.hidden = false;
  $("q").value = "";
  $("q").disabled = true;
  runSearch();
}

function wire() {
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });
  $("file").addEventListener("change", (ev) => setFile(ev.target.files[0] || null));
  $("file-clear").addEventListener("click", () => setFile(null));
  $("routing").addEventListener("change", () => { if (hasQuery()) runSearch(); });
  const zone = $("dropzone");
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("drag"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("drag"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("drag");
    if (ev.dataTransfer.files.length) setFile(ev.dataTransfer.files[0]);
  });
  loadHealth();
}

wire();
