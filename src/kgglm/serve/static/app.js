// kgglm explorer: search a user, show history and explained recommendations, draw each path as SVG.
// Plain DOM code, no libraries; every dataset string goes through textContent (never innerHTML).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const state = { user: null, mode: "best", k: 10, seq: 0, run: false };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : `HTTP ${r.status}`);
  return body;
}

function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

// ------------------------------------------------------------------ the explanation graph
function pathGraph(rec, index) {
  const nodes = rec.nodes, rels = rec.relations;
  const width = 760, height = 96, pad = 70, y = 46;
  const step = nodes.length > 1 ? (width - 2 * pad) / (nodes.length - 1) : 0;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "path-graph", role: "img",
    "aria-label": rec.explanation || "explanation path" });
  const marker = `arrow-${index}`;
  const defs = svgEl("defs");
  const m = svgEl("marker", { id: marker, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
    markerHeight: 7, orient: "auto-start-reverse" });
  m.appendChild(svgEl("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a93a3" }));
  defs.appendChild(m);
  svg.appendChild(defs);
  const r = 11;
  nodes.forEach((_, i) => {
    if (i === 0) return;
    const x1 = pad + (i - 1) * step + r + 2, x2 = pad + i * step - r - 3;
    svg.appendChild(svgEl("line", { x1, y1: y, x2, y2: y, "marker-end": `url(#${marker})` }));
    svg.appendChild(svgEl("text", { x: (x1 + x2) / 2, y: y - 10, "text-anchor": "middle", class: "rel" },
      short(rels[i - 1] || "", 30)));
  });
  nodes.forEach((n, i) => {
    const x = pad + i * step;
    const last = i === nodes.length - 1;
    const g = svgEl("g", { class: `node ${n.kind}${last ? " target" : ""}`, "data-id": n.id, "data-kind": n.kind });
    g.appendChild(svgEl("title", {}, `${n.kind} ${n.id}${n.name !== n.id ? ": " + n.name : ""}`));
    g.appendChild(svgEl("circle", { cx: x, cy: y, r }));
    const label = n.kind === "user" ? `user ${n.name}` : n.name;
    g.appendChild(svgEl("text", { x, y: y + 28, "text-anchor": "middle" }, short(label, 22)));
    if (n.kind === "item") g.addEventListener("click", () => showItem(n.id));
    svg.appendChild(g);
  });
  return svg;
}

// ------------------------------------------------------------------ panels
async function loadUsers(query) {
  const list = $("user-list");
  try {
    const body = await getJSON(`/users?limit=50&query=${encodeURIComponent(query)}`);
    list.replaceChildren();
    list.dataset.query = query; // the query these results are for (the page is done updating)
    if (!body.users.length) list.appendChild(el("li", { class: "muted" }, "no user matches"));
    for (const u of body.users) {
      const b = el("button", { type: "button", "data-user": u.user });
      b.appendChild(el("span", {}, `user ${u.user}`));
      b.appendChild(el("small", {}, `${u.n_history} items`));
      if (u.user === state.user) b.classList.add("active");
      b.addEventListener("click", () => selectUser(u.user));
      list.appendChild(el("li")).appendChild(b);
    }
  } catch (e) {
    list.replaceChildren(el("li", { class: "error" }, e.message));
  }
}

function itemButton(item, title) {
  const b = el("button", { type: "button", class: "linkish", "data-item": item }, title);
  b.addEventListener("click", () => showItem(item));
  return b;
}

async function loadHistory(user) {
  const list = $("history");
  list.replaceChildren(el("li", { class: "muted" }, "loading…"));
  try {
    const h = await getJSON(`/users/${encodeURIComponent(user)}/history`);
    $("history-count").textContent = `(${h.n_items} items)`;
    list.replaceChildren(...h.items.map((x) => el("li").appendChild(itemButton(x.item, x.title)).parentNode));
  } catch (e) {
    list.replaceChildren(el("li", { class: "error" }, e.message));
  }
}

async function loadRecs() {
  const seq = ++state.seq, user = state.user;
  const list = $("recs");
  $("rec-status").textContent = "decoding…";
  try {
    const q = `k=${state.k}&explanation=${state.mode}`;
    const body = await getJSON(`/users/${encodeURIComponent(user)}/recommendations?${q}`);
    if (seq !== state.seq) return; // a newer request superseded this one
    list.replaceChildren();
    const legend = el("div", { class: "legend" }, "nodes:");
    legend.append(el("span", { class: "u" }, "user"), el("span", { class: "i" }, "item"),
      el("span", { class: "e" }, "entity"));
    list.appendChild(el("li")).appendChild(legend);
    body.recommendations.forEach((rec, i) => {
      const li = el("li", { class: "rec", "data-item": rec.item });
      const head = el("div", { class: "rec-head" });
      head.append(el("span", { class: "rank" }, `${rec.rank}.`), itemButton(rec.item, rec.title));
      head.lastChild.classList.add("rec-title");
      if (rec.explanation_source === "knowledge") head.appendChild(el("span", { class: "source" }, "via knowledge graph"));
      head.appendChild(el("span", { class: "score" }, `score ${rec.score.toFixed(3)}`));
      li.append(head, pathGraph(rec, i), el("p", { class: "explanation" }, rec.explanation));
      list.appendChild(li);
    });
    $("rec-status").textContent = `(${body.recommendations.length}, ${body.explanation} explanations)`;
  } catch (e) {
    if (seq !== state.seq) return;
    list.replaceChildren(el("li", { class: "error" }, e.message));
    $("rec-status").textContent = "";
  }
}

async function showItem(item) {
  const panel = $("item-panel");
  panel.hidden = false;
  $("item-title").textContent = item;
  $("item-facts").replaceChildren();
  try {
    const info = await getJSON(`/items/${encodeURIComponent(item)}?limit=60`);
    $("item-title").textContent = info.title;
    $("item-summary").textContent = `item ${info.item}: watched by ${info.n_users} training users, ` +
      `${info.n_facts} knowledge-graph facts`;
    $("item-facts").replaceChildren(...info.facts.map((f) => el("li", {}, `${f.relation} → ${f.name}`)));
    panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (e) {
    $("item-summary").textContent = e.message;
  }
}

// ------------------------------------------------------------------ the run: metrics and report
function metricValue(v) {
  if (typeof v !== "number") return "";
  return Number.isInteger(v) ? String(v) : v.toFixed(4);
}

function metricsTable(split, columns) {
  const names = Object.keys(columns);
  const metrics = [...new Set(names.flatMap((n) => Object.keys(columns[n])))];
  const table = el("table", { class: "metrics", "data-split": split });
  table.appendChild(el("caption", {}, `${split} metrics`));
  const head = el("tr");
  head.appendChild(el("th", { scope: "col" }, "metric"));
  for (const n of names) head.appendChild(el("th", { scope: "col" }, n));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  for (const m of metrics) {
    const tr = el("tr", { "data-metric": m });
    tr.appendChild(el("th", { scope: "row" }, m));
    for (const n of names) tr.appendChild(el("td", { "data-column": n }, metricValue(columns[n][m])));
    body.appendChild(tr);
  }
  return table;
}

async function loadRun() {
  if (state.run) return;
  state.run = true;
  try {
    const run = await getJSON("/run");
    $("run-name").textContent = run.run;
    $("report-link").hidden = !run.report;
    $("run-status").textContent = `${run.model} on ${run.dataset} (${run.train_stage})` +
      (run.report ? "" : " · this run has no report.html (write it with: kgglm report RUN_DIR)");
    const tables = Object.entries(run.metrics).filter(([, cols]) => Object.keys(cols).length);
    $("run-metrics").replaceChildren(...tables.map(([split, cols]) => metricsTable(split, cols)));
    if (!tables.length) $("run-metrics").replaceChildren(el("p", { class: "muted" }, "no metrics in result.json"));
  } catch (e) {
    $("run-status").textContent = e.message;
    $("run-status").classList.add("error");
  }
}

function showView(view) {
  const run = view === "run";
  $("run-view").hidden = !run;
  $("intro").hidden = run || state.user !== null;
  $("user-view").hidden = run || state.user === null;
  for (const [id, on] of [["tab-explore", !run], ["tab-run", run]]) {
    $(id).classList.toggle("active", on);
    $(id).setAttribute("aria-pressed", String(on));
  }
  if (run) {
    history.replaceState(null, "", "?view=run");
    loadRun();
  } else if (state.user !== null) {
    history.replaceState(null, "", `?${new URLSearchParams({ user: state.user, explanation: state.mode })}`);
  }
}

function selectUser(user) {
  state.user = user;
  showView("explore");
  $("item-panel").hidden = true;
  $("user-name").textContent = user;
  for (const b of document.querySelectorAll(".user-list button")) {
    b.classList.toggle("active", b.dataset.user === user);
  }
  loadHistory(user);
  loadRecs();
}

// ------------------------------------------------------------------ start-up
async function init() {
  try {
    const h = await getJSON("/health");
    $("status").textContent = `${h.model} on ${h.dataset} · ${h.n_users} users · ${h.n_items} items`;
  } catch (e) {
    $("status").textContent = `server not ready: ${e.message}`;
  }
  let timer = null;
  $("search").addEventListener("input", (ev) => {
    clearTimeout(timer);
    timer = setTimeout(() => loadUsers(ev.target.value), 150);
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      state.mode = radio.value;
      if (state.user) selectUser(state.user);
    });
  }
  $("k").addEventListener("change", (ev) => { state.k = Number(ev.target.value); if (state.user) loadRecs(); });
  $("item-close").addEventListener("click", () => { $("item-panel").hidden = true; });
  $("tab-explore").addEventListener("click", () => showView("explore"));
  $("tab-run").addEventListener("click", () => showView("run"));
  const params = new URLSearchParams(location.search);
  const mode = params.get("explanation");
  if (mode === "knowledge" || mode === "best") {
    state.mode = mode;
    document.querySelector(`input[name=mode][value=${mode}]`).checked = true;
  }
  await loadUsers("");
  if (params.get("user")) selectUser(params.get("user"));
  else if (params.get("view") === "run") showView("run");
}

init();
