// music inspect: one page, no build step. Browse mode shows everything a pair carries; label
// mode shows the two sides in the labeller's seeded random order and nothing that reveals
// which one is chosen. Every write goes through POST /api/label.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { mode: "browse", index: 0, offset: 0, total: 0, pair: null, labeller: localStorage.getItem("music-labeller") || "" };

function esc(s) { return String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function filters() {
  if (state.mode === "label") return "";
  const f = { strategy: $("f-strategy").value, verdict: $("f-verdict").value, turns: $("f-turns").value,
              source: $("f-source").value, q: $("f-q").value, disagree: $("f-disagree").checked ? "1" : "" };
  return Object.entries(f).filter(([, v]) => v).map(([k, v]) => `&${k}=${encodeURIComponent(v)}`).join("");
}

async function loadMeta() {
  const m = await api("/api/meta");
  $("file").textContent = `${m.file} · ${m.count} ${m.skipped && m.skipped.count ? "records" : "pairs"}`;
  for (const [id, values] of [["f-strategy", m.strategies], ["f-verdict", m.verdicts], ["f-turns", m.turns], ["f-source", m.sources]]) {
    const sel = $(id);
    const keep = sel.value;
    sel.length = 1;
    for (const v of values) sel.add(new Option(v, v));
    sel.value = keep;
  }
  $("f-disagree").disabled = !m.rms.length;
  const sk = m.skipped || { count: 0, by_reason: {} };
  const skipped = sk.count ? ` · ${sk.count} records skipped (${Object.entries(sk.by_reason).map(([k, v]) => `${k} ${v}`).join(", ")})` : "";
  $("status").textContent = m.index_error ? `index error: ${m.index_error}` :
    (m.ready ? "" : `indexing ${m.indexed}/${m.count}`) + skipped + (m.rms.length ? ` · RM scored ${m.rm_scored}` : "") +
    (m.warnings.length ? ` · ${m.warnings.join("; ")}` : "") +
    Object.values(m.truncation || {}).map((t) => ` · ${t}`).join("");
  if (!m.ready) setTimeout(loadMeta, 1000);
}

async function loadList() {
  const r = await api(`/api/pairs?offset=${state.offset}&limit=50&mode=${state.mode}${filters()}`);
  const ol = $("list");
  ol.innerHTML = "";
  ol.start = state.offset + 1;
  if (!r.complete) { $("page-info").textContent = `indexing ${r.indexing}…`; setTimeout(loadList, 1000); return; }
  for (const row of r.rows) {
    const li = document.createElement("li");
    li.dataset.index = row.index;
    li.value = row.index + 1;  // the pair's place in the file: skipped lines leave gaps
    li.textContent = state.mode === "label" ? `pair ${row.index + 1}` :
      `${row.strategy} · ${row.num_turns}t · ${row.audit}`;
    li.onclick = () => show(row.index);
    if (row.index === state.index) li.classList.add("current");
    ol.appendChild(li);
  }
  $("page-info").textContent = `${r.total ? state.offset + 1 : 0}-${state.offset + r.rows.length} of ${r.total}`;
  state.total = r.total;
}

function badge(text, cls) { return `<span class="badge ${cls || ""}">${esc(text)}</span>`; }

function render(p) {
  const tbody = $("conv").querySelector("tbody");
  tbody.innerHTML = "";
  const blind = state.mode === "label";
  $("left-head").textContent = blind ? "first" : "chosen";
  $("right-head").textContent = blind ? "second" : "rejected";
  let head = `<b>pair ${p.index + 1} of ${p.total}</b>`;
  if (!blind) {
    head += ` · <code>${esc(p.id)}</code> · ${esc(p.source)} ` + (p.strategy ? badge(p.strategy, "contrast") : "") +
      (p.fallback && p.fallback !== "none" ? badge(`fallback: ${p.fallback}`, "fallback") : "") +
      (p.audit ? badge(`audit: ${p.audit.verdict} (P(chosen) ${p.audit.p_chosen ?? "n/a"})`, p.audit.verdict) : "");
    for (const [rm, s] of Object.entries(p.scores || {})) head += ` ${badge(`${rm}: chosen ${s.chosen.toFixed(3)} · rejected ${s.rejected.toFixed(3)}`)}`;
  }
  $("pair-head").innerHTML = head;
  for (const row of p.rows) {
    const tr = document.createElement("tr");
    tr.className = `${row.role} ${row.same ? "same" : ""} ${row.i === p.diverge_at ? "diverge" : ""}`;
    const left = blind ? row.first : row.chosen, right = blind ? row.second : row.rejected;
    const mark = row.i === p.diverge_at ? `<div class="divergence">▼ the branches diverge here</div>` : "";
    let extraRight = "", extraLeft = "";
    if (!blind && row.contrast) {
      extraRight += `<div>${badge(`contrasted turn ${row.contrast.turn}`, "contrast")}${badge(row.contrast.strategy || "?")}` +
        (row.contrast.fallback ? badge("fallback", "fallback") : "") + `</div>`;
      if (row.contrast.modified) extraRight += `<div class="modified">the rejected branch was answered as if asked: ${esc(row.contrast.modified)}</div>`;
    }
    if (!blind && row.audit) extraRight += `<div>${badge(`audit: ${row.audit.verdict}`, row.audit.verdict)}</div>`;
    if (!blind) {
      for (const [rm, s] of Object.entries(p.scores || {})) {
        if (s.chosen_turns[row.i] !== undefined) extraLeft += `<div class="score">${esc(rm)} after this turn: ${s.chosen_turns[row.i].toFixed(3)}</div>`;
        if (s.rejected_turns[row.i] !== undefined) extraRight += `<div class="score">${esc(rm)} after this turn: ${s.rejected_turns[row.i].toFixed(3)}</div>`;
      }
    }
    tr.innerHTML = `<td>${mark}<div class="role">${esc(row.role)}</div>${esc(left ?? "—")}${extraLeft}</td>` +
      `<td>${mark}<div class="role">${esc(row.role)}</div>${esc(right ?? "—")}${extraRight}</td>`;
    tbody.appendChild(tr);
  }
  $("label-state").textContent = blind && p.previous ? `your earlier label: ${p.previous} (a new one supersedes it)` : "";
  for (const li of $("list").children) li.classList.toggle("current", Number(li.dataset.index) === p.index);
}

async function show(index, dir) {
  if (index < 0 || (state.pair && index >= state.pair.total)) return;
  // dir: which way to step over lines the server skipped as unusable
  const q = `?dir=${dir || 1}` + (state.mode === "label" ? `&mode=label&labeller=${encodeURIComponent(state.labeller)}` : "");
  state.pair = await api(`/api/pair/${index}${q}`);
  index = state.pair.index;
  state.index = index;
  document.body.dataset.index = String(index);
  render(state.pair);
  if (index < state.offset || index >= state.offset + 50) { state.offset = Math.floor(index / 50) * 50; await loadList(); }
}

async function label(verdict) {
  if (state.mode !== "label" || !state.pair) return;
  const body = { index: state.pair.index, pair_id: state.pair.pair_id, labeller: state.labeller, verdict, note: $("note").value };
  await api("/api/label", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  $("note").value = "";
  const li = [...$("list").children].find((x) => Number(x.dataset.index) === state.pair.index);
  if (li) li.classList.add("done");
  document.body.dataset.labelled = String(Number(document.body.dataset.labelled || 0) + 1);
  await show(state.pair.index + 1);
}

async function setMode(mode) {
  state.mode = mode;
  document.body.className = mode;
  $("mode").value = mode;
  $("filters").style.display = mode === "label" ? "none" : "";
  if (mode === "label") {
    if (!state.labeller) { $("labeller").focus(); $("status").textContent = "label mode: enter your name first"; return; }
    const r = await api(`/api/resume?labeller=${encodeURIComponent(state.labeller)}`);
    state.offset = Math.floor(r.index / 50) * 50;
    await loadList();
    await show(r.index);
  } else {
    await loadList();
    await show(state.index);
  }
  document.body.dataset.ready = "1";
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "TEXTAREA" || e.target.tagName === "INPUT") return;
  const keys = { "1": () => label("first"), "2": () => label("second"), t: () => label("tie"), x: () => label("invalid"),
                 n: () => show(state.index + 1), ArrowRight: () => show(state.index + 1),
                 p: () => show(state.index - 1, -1), ArrowLeft: () => show(state.index - 1, -1) };
  if (keys[e.key]) { e.preventDefault(); keys[e.key]().catch((err) => { $("status").textContent = err.message; }); }
});
for (const b of document.querySelectorAll("#label-buttons button")) b.onclick = () => label(b.dataset.verdict);
$("mode").onchange = () => setMode($("mode").value);
$("labeller").value = state.labeller;
$("labeller").onchange = () => { state.labeller = $("labeller").value.trim(); localStorage.setItem("music-labeller", state.labeller); if (state.mode === "label") setMode("label"); };
for (const id of ["f-strategy", "f-verdict", "f-turns", "f-source", "f-disagree"]) $(id).onchange = () => { state.offset = 0; loadList(); };
$("f-q").oninput = () => { state.offset = 0; loadList(); };
$("prev-page").onclick = () => { state.offset = Math.max(0, state.offset - 50); loadList(); };
$("next-page").onclick = () => { if (state.offset + 50 < state.total) { state.offset += 50; loadList(); } };

const params = new URLSearchParams(location.search);
if (params.get("labeller")) { state.labeller = params.get("labeller"); $("labeller").value = state.labeller; }
loadMeta();
setMode(params.get("mode") === "label" ? "label" : "browse").catch((err) => { $("status").textContent = err.message; });
