// The asyncq dashboard: polls the JSON API every 2 s and redraws in place.
// No libraries and no build step. Data only ever reaches the page through
// textContent and setAttribute (never innerHTML), so task names, arguments and
// tracebacks cannot inject markup.
"use strict";

const REFRESH_MS = 2000;
const WINDOW_S = 600; // the throughput chart's span
const TOKEN_KEY = "asyncq-token"; // sessionStorage: kept for this tab only
const READY = new Set(["SUCCESS", "FAILURE", "REVOKED", "UNKNOWN"]); // will not change
const $ = (id) => document.getElementById(id);

let timer = null;
let lastOk = null; // when the last refresh succeeded
let openTask = null; // the id shown in the detail dialog
let detailDone = false; // its state is final: stop re-reading it

class AuthNeeded extends Error {}
class Unreachable extends Error {}

// -- building nodes ----------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child); // strings become text
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fillBody(table, rows, emptyText) {
  const empty = el("tr", {class: "empty"},
    el("td", {colspan: table.tHead.rows[0].cells.length}, emptyText));
  table.tBodies[0].replaceChildren(...(rows.length ? rows : [empty]));
}

const badge = (state) => el("span", {class: "badge", "data-state": state}, state);
const taskLink = (id, text) =>
  el("a", {href: `#task=${encodeURIComponent(id)}`, "data-task-link": id}, text || id);

// -- formatting ------------------------------------------------------------------
function duration(value) {
  if (value === null || value === undefined || value === "") return "–";
  const s = Number(value);
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 0)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  return `${Math.floor(s / 60)} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
}

const clock = (unix) => (unix ? new Date(Number(unix) * 1000).toLocaleTimeString() : "–");
const rate = (v) => String(Number(v.toFixed(2)));

function ago(unix, now) {
  const s = Math.max(0, now - Number(unix));
  return s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`;
}

// -- talking to the API ----------------------------------------------------------
// Relative paths: /dashboard's siblings, wherever the app is mounted.
async function getJSON(path, allow404 = false) {
  const headers = {Accept: "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {headers, cache: "no-store"});
  } catch {
    throw new Unreachable("server unreachable");
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new AuthNeeded(token ? "That token was not accepted; try again." : "");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok && !(allow404 && response.status === 404)) {
    throw new Unreachable(body.error || `HTTP ${response.status}`);
  }
  return body;
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
  document.body.dataset.state = state; // the stylesheet dims what may be stale
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [snap, throughput, recent] = await Promise.all([
      getJSON("inspect"),
      getJSON(`inspect/throughput?seconds=${WINDOW_S}`),
      getJSON("inspect/tasks?limit=30"),
    ]);
    renderSummary(snap);
    renderWorkers(snap);
    renderQueues(snap.queues);
    renderPeriodic(snap.periodic || []);
    renderChart(throughput);
    renderTasks(recent.tasks, snap.time);
    if (openTask && !detailDone) await loadDetail();
    lastOk = new Date();
    setStatus("ok", `updated ${lastOk.toLocaleTimeString()}`);
  } catch (error) {
    if (error instanceof AuthNeeded) return askToken(error.message); // resumes on submit
    if (!(error instanceof Unreachable)) console.error(error); // a bug in this page
    const since = lastOk ? ` since ${lastOk.toLocaleTimeString()}` : "";
    setStatus("lost", `connection lost${since}: ${error.message}`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

// -- the token, asked for once per tab -----------------------------------------
function askToken(message) {
  clearTimeout(timer);
  setStatus("auth", "waiting for the API token");
  $("login-message").textContent = message || "This API needs a token ($ASYNCQ_API_TOKEN).";
  if (!$("login").open) $("login").showModal();
  $("login-token").focus();
}

$("login-form").addEventListener("submit", () => {
  sessionStorage.setItem(TOKEN_KEY, $("login-token").value.trim());
  $("login-token").value = "";
  refresh();
});
$("login").addEventListener("cancel", (event) => event.preventDefault()); // nothing works without it

// -- the parts of the page ------------------------------------------------------
function renderSummary(snap) {
  const alive = snap.workers.filter((w) => w.alive).length;
  const counts = snap.tasks_by_state || {};
  const queued = Object.values(snap.queues).reduce((a, b) => a + b, 0);
  $("tile-workers").textContent = `${alive} / ${snap.workers.length}`;
  $("tile-queued").textContent = queued;
  $("tile-scheduled").textContent = snap.scheduled;
  $("tile-dead").textContent = snap.dead_letters;
  $("tile-dead").parentElement.classList.toggle("warn", snap.dead_letters > 0);
  $("tile-succeeded").textContent = counts.SUCCESS || 0;
  $("tile-failed").textContent = counts.FAILURE || 0;
  const warnings = snap.warnings || [];
  $("warnings").textContent = warnings.join(" · ");
  $("warnings").hidden = warnings.length === 0;
}

function heartbeat(worker) {
  if (!worker.alive) return el("span", {class: "badge", "data-state": "LOST"}, "lost");
  const age = worker.heartbeat_age ?? 0;
  return el("span", {class: age > 10 ? "stale" : ""}, `${age.toFixed(1)} s ago`);
}

function activeTasks(worker) {
  const items = worker.active.map((t) =>
    el("li", {}, taskLink(t.id, t.name), " ", el("span", {class: "muted"}, duration(t.runtime))));
  if (worker.reserved.length) {
    items.push(el("li", {class: "muted"}, `+${worker.reserved.length} reserved`));
  }
  return items.length ? el("ul", {class: "plain"}, items) : el("span", {class: "muted"}, "idle");
}

function renderWorkers(snap) {
  const rows = snap.workers.map((w) => el("tr", {"data-worker-id": w.id},
    el("td", {class: "mono"}, w.id),
    el("td", {}, w.hostname || "–"),
    el("td", {class: "num"}, w.pid ?? "–"),
    el("td", {class: "num"}, w.concurrency),
    el("td", {}, w.queues.join(", ") || "–"),
    el("td", {}, heartbeat(w)),
    el("td", {class: "num"}, w.done),
    el("td", {}, activeTasks(w))));
  fillBody($("workers"), rows, "No workers. Start one: asyncq -A <your app> worker");
}

function renderQueues(queues) {
  const rows = Object.entries(queues).map(([name, depth]) =>
    el("tr", {"data-queue": name, class: depth > 0 ? "busy" : ""},
      el("td", {class: "mono"}, name), el("td", {class: "num"}, depth)));
  fillBody($("queues"), rows, "No queues yet.");
}

function renderPeriodic(entries) {
  $("periodic-panel").hidden = entries.length === 0;
  const when = (stamp) => (stamp ? new Date(stamp * 1000).toLocaleString() : "–");
  const rows = entries.map((e) => el("tr", {"data-entry": e.name},
    el("td", {}, e.name), el("td", {}, e.task), el("td", {class: "mono"}, e.schedule),
    el("td", {}, when(e.last_run)), el("td", {}, when(e.next_run))));
  fillBody($("periodic"), rows, "No periodic tasks.");
}

function renderTasks(tasks, now) {
  const rows = tasks.map((t) => el("tr", {"data-task-id": t.id, "data-state": t.state},
    el("td", {}, badge(t.state)),
    el("td", {}, t.name),
    el("td", {class: "mono"}, taskLink(t.id)),
    el("td", {class: "num"}, duration(t.runtime)),
    el("td", {class: "mono"}, t.worker || "–"),
    el("td", {class: "muted"}, `${t.last_event} ${ago(t.time, now)}`)));
  fillBody($("tasks"), rows, "No task events yet.");
}

function niceCeiling(value) { // 1, 2 or 5 times a power of ten, so the axis reads well
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

function renderChart(data) {
  const chart = $("chart");
  // Drawn at the element's own size, so text and lines are not scaled.
  const W = Math.max(320, Math.round(chart.getBoundingClientRect().width));
  const [H, left, right, top, bottom] = [200, 48, 14, 10, 26];
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const series = data.series || [];
  const slice = data.slice || 5;
  const end = series.length ? series[series.length - 1].time : Date.now() / 1000;
  const start = end - WINDOW_S + slice;
  const max = niceCeiling(Math.max(0, ...series.map((p) => Math.max(p.succeeded, p.failed))));
  const x = (t) => left + ((t - start) / (end - start || 1)) * (W - left - right);
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  const parts = [];
  const lead = Math.round(max / 10 ** Math.floor(Math.log10(max))); // 1, 2 or 5
  const steps = lead === 2 ? 4 : 5; // so every label is a round number
  for (let i = 0; i <= steps; i += 1) { // horizontal grid with tasks/s labels
    const v = (max * i) / steps;
    parts.push(svg("line", {x1: left, x2: W - right, y1: y(v), y2: y(v), class: "grid"}),
      svg("text", {x: left - 6, y: y(v) + 4, class: "ylabel"}, rate(v)));
  }
  for (let minutes = 10; minutes >= 0; minutes -= 2) { // time axis: minutes before now
    const t = Math.max(start, end - minutes * 60);
    parts.push(svg("text", {x: x(t), y: H - 10, class: "xlabel"},
      minutes ? `−${minutes} min` : "now"));
  }
  const mid = top + (H - top - bottom) / 2;
  parts.push(svg("text", {x: 14, y: mid, class: "axis-title",
    transform: `rotate(-90 14 ${mid})`}, "tasks/s"));
  const points = (key) => series.map((p) => `${x(p.time).toFixed(1)},${y(p[key]).toFixed(1)}`);
  if (series.length) {
    const base = y(0).toFixed(1);
    const area = [`${x(start)},${base}`, ...points("succeeded"), `${x(end)},${base}`];
    parts.push(svg("polygon", {points: area.join(" "), class: "area succeeded"}));
    for (const key of ["succeeded", "failed"]) {
      parts.push(svg("polyline", {points: points(key).join(" "), class: `line ${key}`}));
    }
  }
  for (const p of series) { // invisible hover targets, one per slice, with a tooltip
    const tip = `${clock(p.time)}: ${rate(p.succeeded)} succeeded/s, ${rate(p.failed)} failed/s`;
    const hit = svg("rect", {x: x(p.time) - 2.5, y: top, width: 5, height: H - top - bottom,
      class: "hit"});
    hit.append(svg("title", {}, tip));
    parts.push(hit);
  }
  chart.replaceChildren(...parts);
  // Totals in the window, for the legend (and for tests to watch the chart change).
  const total = (key) => series.reduce((n, p) => n + Math.round(p[key] * slice), 0);
  $("rate-succeeded").textContent = total("succeeded");
  $("rate-failed").textContent = total("failed");
  chart.dataset.points = series.length;
  chart.dataset.total = total("succeeded") + total("failed");
  chart.dataset.renders = Number(chart.dataset.renders) + 1;
}

// -- one task's detail, at /dashboard#task=<id> ---------------------------------
function openFromHash() {
  const match = /^#task=(.+)$/.exec(location.hash);
  if (!match) {
    if ($("detail").open) $("detail").close();
    return;
  }
  try {
    openTask = decodeURIComponent(match[1]);
  } catch {
    openTask = match[1];  // a malformed escape: show it as typed
  }
  detailDone = false;
  $("detail-title").textContent = "Task";
  $("detail-body").replaceChildren(el("p", {class: "muted"}, "loading…"));
  if (!$("detail").open) $("detail").showModal();
  loadDetail().catch((error) => {
    if (error instanceof AuthNeeded) return askToken(error.message);
    $("detail-body").replaceChildren(el("p", {class: "error"}, `Could not load: ${error.message}`));
  });
}

async function loadDetail() {
  const id = openTask;
  const view = await getJSON(`results/${encodeURIComponent(id)}`, true);
  if (id !== openTask) return; // another task was opened meanwhile
  renderDetail(id, view);
  detailDone = READY.has(view.state);
}

const json = (value) => el("pre", {}, JSON.stringify(value, null, 2));

function progressOf(meta) {
  if (!meta || typeof meta.current !== "number" || !(meta.total > 0)) return null;
  const percent = Math.round((100 * meta.current) / meta.total);
  return el("div", {class: "progress", "data-testid": "detail-progress"},
    el("progress", {value: meta.current, max: meta.total}),
    el("span", {}, `${meta.current} / ${meta.total} (${percent}%)`));
}

function renderDetail(id, view) {
  $("detail-title").replaceChildren(view.task || "Task", " ", badge(view.state || "UNKNOWN"));
  const when = (unix) => (unix ? new Date(Number(unix) * 1000).toLocaleString() : null);
  const runtime = view.runtime ?? (view.finished_at && view.started_at
    ? Number(view.finished_at) - Number(view.started_at) : null);
  const facts = [["Task id", id], ["Queue", view.queue], ["Worker", view.worker],
    ["Submitted", when(view.submitted_at)], ["Started", when(view.started_at)],
    ["Finished", when(view.finished_at)], ["Runtime", runtime === null ? null : duration(runtime)],
    ["Retries", view.retries]];
  const rows = facts.filter(([, v]) => v !== undefined && v !== null)
    .map(([label, v]) => el("tr", {}, el("th", {}, label), el("td", {class: "mono"}, v)));
  const parts = [progressOf(view.meta), el("table", {class: "facts"}, rows)];
  if (view.state === "UNKNOWN" && view.error) parts.push(el("p", {class: "error"}, view.error));
  const call = "args" in view || "kwargs" in view;
  parts.push(el("h3", {}, "Arguments"), call
    ? el("div", {class: "call"},
      el("div", {"data-testid": "detail-args"}, el("h4", {}, "args"), json(view.args ?? [])),
      el("div", {"data-testid": "detail-kwargs"}, el("h4", {}, "kwargs"), json(view.kwargs ?? {})))
    : el("p", {class: "muted"}, "Not kept (result_extended is off)."));
  if ("result" in view) {
    parts.push(el("h3", {}, "Result"), el("div", {"data-testid": "detail-result"}, json(view.result)));
  }
  if (view.error && view.error.type) {
    parts.push(el("h3", {}, "Error"), el("div", {"data-testid": "detail-error"},
      el("p", {class: "error"}, `${view.error.type}: ${view.error.message}`),
      el("pre", {class: "traceback"}, view.error.traceback || "")));
  }
  if (view.meta && !progressOf(view.meta)) parts.push(el("h3", {}, "Meta"), json(view.meta));
  $("detail-body").replaceChildren(...parts.filter(Boolean));
}

$("detail-close").addEventListener("click", () => $("detail").close());
$("detail").addEventListener("click", (event) => { // a click on the backdrop closes it
  if (event.target === $("detail")) $("detail").close();
});
$("detail").addEventListener("close", () => {
  openTask = null;
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
});
window.addEventListener("hashchange", openFromHash);

openFromHash();
refresh();
