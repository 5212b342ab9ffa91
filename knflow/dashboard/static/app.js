// knflow dashboard: one page, hash routes, polls its own JSON API every 2 s. No build step.
"use strict";

const REFRESH_MS = 2000;
const view = document.getElementById("view");

// h("td", {class: "x"}, "text", child): DOM built from text nodes only, never from HTML strings.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class SignInNeeded extends Error {}

// The namespace the page shows (the header's selector); every API call addresses it.
let namespace = sessionStorage.getItem("knflow-namespace") || "";

async function api(path, options) {
  const headers = { ...(options && options.headers), ...(namespace ? { "X-Knflow-Namespace": namespace } : {}) };
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 401) throw new SignInNeeded(body.error || "sign in");
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// Sign-in: a token (`knflow token create`, or the link `knflow up` prints) becomes an HttpOnly cookie.
function signIn(reason) {
  const input = h("input", { type: "password", id: "token", placeholder: "knf_…", autocomplete: "off" });
  const message = h("p", { class: "muted" }, reason || "");
  const form = h("form", { id: "signin", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("/api/login", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: input.value }),
      });
      render();
    } catch (err) {
      message.textContent = err.message;
    }
  } }, h("h1", {}, "Sign in"), h("p", {}, "Paste a knflow token."), input, h("button", { type: "submit" }, "Sign in"),
  message);
  return h("section", { class: "panel" }, form);
}

const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const fmtClock = (iso) => {
  if (!iso) return "";
  const t = new Date(iso);
  return `${t.toLocaleTimeString([], { hour12: false })}.${String(t.getMilliseconds()).padStart(3, "0")}`;
};
function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} m ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} m`;
}
const fmtNum = (v) => (typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(4)) : v ?? "");
const badge = (status) => h("span", { class: `badge status-${status}` }, status);
const short = (text, n = 12) => h("code", { title: text }, String(text || "").slice(0, n));
const fields = (obj) =>
  h("div", { class: "fields" }, Object.entries(obj || {}).map(([k, v]) =>
    h("span", {}, h("b", {}, `${k} `), typeof v === "object" ? JSON.stringify(v) : String(v))));

function table(columns, rows, rowAttrs) {
  if (!rows.length) return h("p", { class: "empty" }, "none yet");
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((row) =>
      h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))))));
}

// A panel that fetches its own data: a backend that is down shows its reason here, the rest still renders.
async function panel(title, path, render) {
  const box = h("section", { class: "panel", "data-panel": path });
  if (title) box.append(h("h1", {}, title));
  try {
    box.append(render(await api(path)));
  } catch (err) {
    box.append(h("div", { class: "error" }, `${path}: ${err.message}`));
  }
  return box;
}

// -- views ---------------------------------------------------------------------------------
function runsTable(data) {
  const counts = {};
  for (const r of data.runs) counts[r.status] = (counts[r.status] || 0) + 1;
  const summary = h("p", { class: "muted", id: "run-counts" },
    ["running", "succeeded", "failed"].map((s) => `${counts[s] || 0} ${s}`).join(" · "));
  const columns = [
    ["", (r) => knflowCompare.checkbox(r.runid), "pick"],
    ["Run", (r) => h("code", {}, r.runid), "runid"],
    ["Experiment", (r) => r.experiment, "experiment"],
    ["Dataset", (r) => h("div", {}, r.dataset, r.key ? h("div", { class: "muted" }, r.key) : null)],
    ["Step", (r) => r.step, "step"],
    ["Status", (r) => badge(r.status), "status"],
    ["Model", (r) => r.model],
    ["Started", (r) => fmtTime(r.started)],
    ["Duration", (r) => fmtDuration(r.duration_s)],
    ["Events", (r) => r.events],
  ];
  const rowAttrs = (r) => ({ class: "link", "data-runid": r.runid, onclick: () => { location.hash = `#/runs/${r.runid}`; } });
  const pick = knflowCompare.button();
  if (!data.runs.some((r) => r.experiment)) return h("div", {}, summary, pick, table(columns, data.runs, rowAttrs));
  const experimentOf = (r) => r.experiment || r.dataset || "";
  const experiments = [...new Set(data.runs.map(experimentOf))]; // grouped by experiment, newest run's group first
  return h("div", {}, summary, pick, experiments.map((name) => h("div", { "data-experiment": name },
    h("h2", {}, "Experiment ", name), table(columns, data.runs.filter((r) => experimentOf(r) === name), rowAttrs))));
}

function replayButton(f) {
  return h("button", {
    "data-replay": f.event_id,
    onclick: async (ev) => {
      ev.stopPropagation();
      ev.target.disabled = true;
      try {
        const out = await api(`/api/failures/${encodeURIComponent(f.event_id)}/replay`, { method: "POST" });
        ev.target.textContent = `replayed as ${out.id.slice(0, 8)}`;
      } catch (err) {
        ev.target.textContent = `replay failed: ${err.message}`;
      }
      setTimeout(render, 300);
    },
  }, "Replay");
}

function failuresTable(rows, withRun) {
  return table([
    ["Time", (f) => fmtTime(f.time)],
    ...(withRun ? [["Run", (f) => h("a", { href: `#/runs/${f.runid}` }, f.runid)]] : []),
    ["Event", (f) => h("div", {}, f.event_type, h("br"), short(f.event_id, 24))],
    ["Trigger", (f) => h("div", {}, f.trigger, h("br"), h("span", { class: "muted" }, f.subscriber))],
    ["Status", (f) => f.status],
    ["Reason", (f) => h("span", { class: "reason" }, f.error), "reason"],
    ["Attempts", (f) => f.attempts],
    ["Replays", (f) => f.replays.map((r) => h("div", {}, short(r.id, 8), " ", fmtTime(r.time)))],
    ["", (f) => replayButton(f)],
  ], rows, (f) => ({ "data-failure": f.event_id }));
}

function runDetail(d) {
  const r = d.run;
  const parts = [
    h("h1", {}, "Run ", h("code", {}, r.runid), " ", badge(r.status), " ",
      h("a", { href: `#/trace/${encodeURIComponent(r.runid)}`, id: "trace-link" }, "Trace")),
    h("p", { class: "muted" }, `experiment ${r.experiment || "?"} · dataset ${r.dataset || "?"} · step ${r.step} · started ${fmtTime(r.started)} · `
      + `${fmtDuration(r.duration_s)} · ${r.events} events${r.model ? " · model " + r.model : ""}`),
  ];
  if (d.reason) parts.push(h("div", { class: "error reason", id: "failure-reason" }, d.reason));
  parts.push(h("h2", {}, "Steps"), table([
    ["Step", (s) => s.step], ["Status", (s) => badge(s.status)], ["Started", (s) => fmtTime(s.started)],
    ["Duration", (s) => fmtDuration(s.duration_s)],
  ], d.steps, (s) => ({ "data-step": s.step })));
  if (d.trials.length) {
    parts.push(h("h2", {}, "Tuning trials"), knflowCompare.button(), table([
      ["", (t) => knflowCompare.checkbox(`${r.runid}/${t.trial}`), "pick"],
      ["Trial", (t) => t.trial], ["Status", (t) => badge(t.status)], ["Objective", (t) => fmtNum(t.value)],
      ["Params", (t) => fields(t.params)], ["Reason", (t) => t.reason || ""],
    ], d.trials, (t) => ({ "data-trial": t.trial })));
  }
  const charts = h("div", { id: "run-charts" }); // filled by charts.js (knflowPlots.runCharts)
  charts.trials = d.trials;
  parts.push(charts);
  if (d.failures.length) parts.push(h("h2", {}, "Failed deliveries"), failuresTable(d.failures, false));
  parts.push(h("h2", {}, "Timeline"), table([
    ["Time", (e) => h("span", { class: "mono", title: e.time }, fmtClock(e.time))],
    ["Type", (e) => h("div", {}, e.type.replace("dev.knflow.", ""), e.mode ? h("span", { class: "muted" }, ` (${e.mode})`) : null,
      e.replay_of ? h("div", { class: "muted" }, "replay of ", short(e.replay_of, 8)) : null)],
    ["Source", (e) => h("span", { class: "muted" }, e.source)],
    ["Data", (e) => fields(e.fields)],
  ], d.timeline, (e) => ({ "data-type": e.type })));
  return h("div", {}, parts);
}

function lineage(l) {
  const bits = [];
  if (l.run) bits.push(["run", l.run]);
  if (l.dataset) bits.push(["dataset", l.dataset]);
  if (l.trial) bits.push(["trial", l.trial]);
  if (l.tuning) bits.push(["best of", l.tuning.experiment]);
  return fields(Object.fromEntries(bits));
}

// The test metrics a model's versions report: accuracy for classifiers, rmse and r² for regressors.
const METRIC_COLUMNS = [["test_accuracy", "Test accuracy", "accuracy"], ["test_rmse", "Test RMSE", "rmse"],
  ["test_r2", "Test R²", "r2"]];

function metricColumns(versions) {
  return METRIC_COLUMNS.filter(([key]) => versions.some((v) => v.metrics[key] !== undefined))
    .map(([key, title, cls]) => [title, (v) => fmtNum(v.metrics[key]), cls]);
}

function answers(v) {
  if (v.task === "regression") return "prediction";
  const classes = v.classes || [];
  if (!classes.length) return v.task || "";
  return h("span", { title: classes.join(", ") }, classes.slice(0, 6).join(", ") + (classes.length > 6 ? ", …" : ""));
}

function models(data) {
  if (!data.models.length) return h("p", { class: "empty" }, "no registered models");
  return h("div", {}, data.models.map((m) => h("div", { "data-model": m.name },
    h("h2", {}, m.name, " ", Object.entries(m.aliases).map(([a, v]) => h("span", { class: "badge alias" }, `${a} → v${v}`))),
    table([
      ["Version", (v) => `v${v.version}`, "version"],
      ["Aliases", (v) => v.aliases.map((a) => h("span", { class: "badge alias" }, a)), "aliases"],
      ...metricColumns(m.versions),
      ["Answers", answers, "answers"],
      ["sha256", (v) => short(v.sha256)],
      ["Size", (v) => `${(v.size / 1024).toFixed(1)} KiB`],
      ["Created", (v) => fmtTime(v.created)],
      ["Lineage", (v) => lineage(v.lineage || {})],
    ], m.versions, (v) => ({ "data-version": v.version })))));
}

function serving(data) {
  if (!data.models.length) return h("p", { class: "empty" }, `gateway ${data.gateway} serves no models`);
  return h("div", {}, data.models.map((m) => h("div", { "data-serving": m.model },
    h("h2", {}, m.model, " ", h("code", { class: "muted" }, m.endpoint)),
    table([
      ["Revision", (r) => h("code", {}, r.id)], ["Version", (r) => `v${r.version}`],
      ["Traffic", (r) => h("span", {}, h("span", { class: "bar", style: `width:${r.percent}px` }), `${r.percent} %`), "traffic"],
      ["Tag", (r) => r.tag || ""], ["Replicas", (r) => r.replicas, "replicas"],
      ["In flight", (r) => r.inflight], ["Requests", (r) => r.requests, "requests"], ["Errors", (r) => r.errors, "errors"],
    ], m.revisions, (r) => ({ "data-revision": r.id })))));
}

const ROUTES = {
  runs: () => panel("Runs", "/api/runs", runsTable),
  run: async (id) => knflowPlots.runCharts(await panel(null, `/api/runs/${encodeURIComponent(id)}`, runDetail), id),
  models: () => panel("Models", "/api/models", models),
  serving: async () => knflowPlots.servingCharts(await panel("Serving", "/api/serving", serving)),
  compare: (ids) => knflowCompare.view(ids.split(",").filter(Boolean)),
  failures: () => panel("Failed events", "/api/failures", (d) => failuresTable(d.failures, true)),
  trace: (id) => panel(null, `/api/runs/${encodeURIComponent(id)}/trace`, traceView), // trace.js
};

// The header's platform indicator: whether every component `knflow up` supervises runs (from /api/health).
async function platformIndicator() {
  const box = document.getElementById("platform");
  let components;
  try {
    components = (await api("/api/health")).components || [];
  } catch (err) {
    components = [{ name: "knflow server", state: "unreachable", restarts: 0 }];
  }
  const down = components.filter((c) => c.state !== "running");
  const restarts = components.reduce((n, c) => n + c.restarts, 0);
  const failed = down.some((c) => c.state === "failed" || c.state === "unreachable");
  box.hidden = !components.length;
  box.className = `badge status-${failed ? "failed" : down.length ? "running" : "succeeded"}`;
  box.textContent = down.length
    ? down.map((c) => `${c.name} ${c.state}`).join(", ")
    : `platform ok${restarts ? `, ${restarts} restart(s)` : ""}`;
  box.title = components
    .map((c) => `${c.name}: ${c.state}, ${c.restarts} restart(s)${c.last_exit ? `; last: ${c.last_exit}` : ""}`)
    .join("\n");
}

// The header's namespace selector: the caller's namespaces (from /api/whoami); choosing one re-renders the page.
function namespaceSelector(me) {
  const select = document.getElementById("namespace");
  const choices = me.choices || [];
  if (!choices.includes(namespace)) namespace = me.home || choices[0] || "";
  if (select.dataset.choices !== choices.join(",")) {
    select.replaceChildren(...choices.map((n) => h("option", { value: n }, n)));
    select.dataset.choices = choices.join(",");
    select.onchange = () => {
      namespace = select.value;
      sessionStorage.setItem("knflow-namespace", namespace);
      location.hash = "#/runs";
      render();
    };
  }
  select.value = namespace;
  select.hidden = choices.length < 2;
}

let rendering = false;
let again = false; // a route change that arrives mid-render renders once more afterwards
async function render() {
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const [, name, arg] = (location.hash || "#/runs").split("/");
    const route = name === "runs" && arg ? "run" : (ROUTES[name] ? name : "runs");
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.dataset.view === (route === "run" ? "runs" : route));
    }
    let content;
    try {
      namespaceSelector(await api("/api/whoami"));
      content = await ROUTES[route](decodeURIComponent(arg || ""));
    } catch (err) {
      if (!(err instanceof SignInNeeded)) throw err;
      if (document.getElementById("signin")) return; // keep what the user is typing
      content = signIn();
    }
    view.replaceChildren(content);
    await platformIndicator();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } finally {
    rendering = false;
    if (again) { again = false; render(); }
  }
}

window.addEventListener("hashchange", render);
setInterval(render, REFRESH_MS);
render();
