// Status page of the fwupgrader NMS example: it lists builds and batches
// through the REST API and follows one batch on the events stream
// (Server-Sent Events). Everything the page shows is set with textContent
// and data attributes, never as HTML.
"use strict";

const API = "/api/v1/firmware-upgrader/";
const STATES = ["pending", "in-progress", "success", "failed", "aborted", "cancelled"];
const TERMINAL = new Set(["success", "failed", "aborted", "cancelled"]);

const $ = (id) => document.getElementById(id);
let source = null;   // the EventSource of the batch followed
let batchID = "";    // the batch followed
let deviceNames = {};

function org() {
  return $("org").value.trim();
}

// api calls the REST API as the organization typed in the page.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (org()) headers["X-Organization"] = org();
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, Object.assign({}, options, { headers }));
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || res.statusText);
  return body;
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

async function loadBuilds() {
  const sel = $("build-select");
  sel.replaceChildren();
  const page = await api("build/?page_size=100");
  for (const b of page.results) {
    sel.append(option(b.id, `${b.version}${b.os ? " (" + b.os + ")" : ""}`));
  }
  if (sel.options.length > 0) sel.selectedIndex = sel.options.length - 1; // the newest
}

async function loadBatches() {
  const sel = $("batch-select");
  const keep = batchID;
  sel.replaceChildren(option("", "choose a batch"));
  const page = await api("batch-upgrade-operation/?page_size=100");
  for (const b of page.results.reverse()) { // newest first
    sel.append(option(b.id, `${b.name} · ${b.status} · ${b.progress_report}`));
  }
  sel.value = keep;
}

async function startBatch() {
  const build = $("build-select").value;
  const out = $("start-result");
  out.textContent = "starting…";
  try {
    const res = await api(`build/${encodeURIComponent(build)}/upgrade/`, { method: "POST", body: JSON.stringify({}) });
    out.textContent = `batch ${res.batch}: ${res.plan.selected.length} device(s), ${res.plan.skipped.length} skipped`;
    out.dataset.batch = res.batch;
    follow(res.batch);
    loadBatches().catch(() => {});
  } catch (err) {
    out.textContent = "refused: " + err.message;
  }
}

async function batchAction(action) {
  const out = $("action-result");
  try {
    const b = await api(`batch-upgrade-operation/${encodeURIComponent(batchID)}/${action}/`, { method: "POST", body: "{}" });
    out.textContent = `${action}: ${b.status}`;
  } catch (err) {
    out.textContent = `${action} refused: ${err.message}`;
  }
}

async function cancelOperation(id) {
  const out = $("action-result");
  try {
    await api(`upgrade-operation/${encodeURIComponent(id)}/cancel/`, { method: "POST", body: "{}" });
    out.textContent = "cancelled";
  } catch (err) {
    out.textContent = "cancel refused: " + err.message;
  }
}

// follow shows batch id and opens its events stream.
function follow(id) {
  if (source) source.close();
  batchID = id;
  $("batch-select").value = id;
  const url = new URL(location.href);
  url.searchParams.set("batch", id);
  if (org()) url.searchParams.set("organization", org()); else url.searchParams.delete("organization");
  history.replaceState(null, "", url);

  $("batch").hidden = false;
  $("batch-id").textContent = id;
  $("batch-id").dataset.batch = id;
  $("operation-rows").replaceChildren();
  let events = `${API}events/?batch=${encodeURIComponent(id)}`;
  if (org()) events += `&organization=${encodeURIComponent(org())}`;
  source = new EventSource(events);
  const streamState = $("stream-state");
  source.onopen = () => { streamState.dataset.state = "open"; streamState.textContent = "live"; };
  source.onerror = () => { streamState.dataset.state = "reconnecting"; streamState.textContent = "reconnecting…"; };
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("operation", (e) => { counted(); onOperation(JSON.parse(e.data)); });
  source.addEventListener("log", (e) => { counted(); onLog(JSON.parse(e.data)); });
  source.addEventListener("batch", (e) => { counted(); onBatch(JSON.parse(e.data)); });
}

function counted() {
  document.body.dataset.events = String(Number(document.body.dataset.events) + 1);
}

function onSnapshot(snap) {
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots) + 1);
  deviceNames = Object.assign(deviceNames, snap.devices || {});
  $("batch-name").textContent = snap.batch.name;
  $("batch-summary").textContent = snap.batch.progress_report;
  setBatch(snap.batch.status, snap.batch.counts, snap.batch.total);
  for (const op of snap.operations) {
    updateRow(op.id, op.device, op, true);
  }
}

function onOperation(ev) {
  updateRow(ev.operation, ev.device, ev, false);
}

function onLog(ev) {
  const tr = row(ev.operation, ev.device);
  tr.querySelector(".log").textContent = ev.line;
  tr.querySelector(".log").title = ev.line;
}

function onBatch(ev) {
  setBatch(ev.status, ev.counts, ev.total);
  const summary = `${ev.done} of ${ev.total} done`;
  $("batch-summary").textContent = summary;
  for (const o of $("batch-select").options) {
    if (o.value === ev.batch) o.textContent = `${$("batch-name").textContent} · ${ev.status} · ${summary}`;
  }
}

function setBatch(state, counts, total) {
  const el = $("batch-state");
  el.textContent = state;
  el.dataset.state = state;
  for (const s of STATES) {
    const dd = $("count-" + s);
    const n = counts[s] || 0;
    dd.textContent = String(n);
    dd.dataset.count = String(n);
  }
  $("count-total").textContent = String(total);
  $("count-total").dataset.count = String(total);
}

// row returns the table row of an operation, made from the template the
// first time.
function row(opID, deviceID) {
  let tr = document.getElementById("op-" + opID);
  if (tr) return tr;
  tr = $("row-template").content.firstElementChild.cloneNode(true);
  tr.id = "op-" + opID;
  tr.dataset.operation = opID;
  tr.dataset.device = deviceID;
  tr.dataset.state = "";
  tr.dataset.phase = "";
  tr.dataset.progress = "0";
  tr.dataset.phases = "";
  tr.querySelector(".device").textContent = deviceNames[deviceID] || deviceID;
  tr.querySelector(".cancel-op").addEventListener("click", () => cancelOperation(opID));
  $("operation-rows").append(tr);
  return tr;
}

// updateRow applies an operation's state, phase and progress. A row that
// ended keeps its end: a late event of an earlier moment cannot undo it
// (terminal states never change); a snapshot always applies.
function updateRow(opID, deviceID, op, snapshot) {
  const tr = row(opID, deviceID);
  if (!snapshot && TERMINAL.has(tr.dataset.state)) return;
  tr.dataset.state = op.status;
  tr.querySelector(".state").textContent = op.status + (op.reason ? ` (${op.reason})` : "");
  if (op.phase) {
    tr.dataset.phase = op.phase;
    tr.querySelector(".phase").textContent = op.phase;
    if (!snapshot) {
      const seen = tr.dataset.phases ? tr.dataset.phases.split(",") : [];
      if (!seen.includes(op.phase)) {
        seen.push(op.phase);
        tr.dataset.phases = seen.join(",");
      }
    }
  }
  tr.dataset.progress = String(op.progress);
  tr.querySelector(".bar").value = op.progress;
  tr.querySelector(".percent").textContent = `${op.progress} %`;
  tr.querySelector(".cancel-op").disabled = TERMINAL.has(op.status);
}

function init() {
  const params = new URLSearchParams(location.search);
  $("org").value = params.get("organization") || "";
  $("start-batch").addEventListener("click", startBatch);
  $("pause-batch").addEventListener("click", () => batchAction("pause"));
  $("resume-batch").addEventListener("click", () => batchAction("resume"));
  $("cancel-batch").addEventListener("click", () => batchAction("cancel"));
  $("batch-select").addEventListener("change", (e) => { if (e.target.value) follow(e.target.value); });
  $("org").addEventListener("change", () => {
    Promise.all([loadBuilds(), loadBatches()]).catch((err) => { $("start-result").textContent = err.message; });
  });
  Promise.all([loadBuilds(), loadBatches()])
    .then(() => { document.body.dataset.ready = "true"; })
    .catch((err) => { $("start-result").textContent = err.message; });
  if (params.get("batch")) follow(params.get("batch"));
}

document.addEventListener("DOMContentLoaded", init);
