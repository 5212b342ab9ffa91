// knflow dashboard charts, drawn by uPlot (vendored in static/vendor/uplot): a run's training curves, a tuning
// experiment's trials, a served model's requests, latency, errors and replicas per revision. No build step.
// Every chart drawn is kept on window.knflowCharts[name] (its uPlot instance: .data holds what it plots).
"use strict";

window.knflowCharts = {};
const retired = {}; // the instance each chart replaced (the page redraws every chart each time it polls)

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
  "#4b5563", "#65a30d"];
const CHART_W = 560;
const CHART_H = 240;

function colorOf(i) {
  return PALETTE[i % PALETTE.length];
}

function elem(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// One chart in a titled box; `series` are uPlot series after x, `data` is [xs, ...ys].
function chart(name, title, data, series, extra) {
  const box = elem("figure", { class: "chart", "data-chart": name }, elem("figcaption", {}, title));
  const opts = {
    width: CHART_W, height: CHART_H, series: [{ label: extra?.xLabel || "x" }, ...series],
    scales: { x: { time: !!extra?.time } }, axes: extra?.axes || [{}, {}], legend: { live: true },
  };
  retired[name]?.destroy(); // two renders old, off the page by now: let uPlot drop its listeners on the window
  retired[name] = window.knflowCharts[name]; // still shown until the page swaps in this render's view
  window.knflowCharts[name] = new uPlot(opts, data, box);
  return box;
}

const WHOLE = { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }; // epochs and trial numbers: integer ticks
const PRECISE = { values: (u, ticks) => ticks.map((v) => +v.toPrecision(3)) };
const line = (label, i, more) => ({ label, stroke: colorOf(i), width: 2, spanGaps: false, ...more });
const dots = (label, i) => ({ label, stroke: colorOf(i), fill: colorOf(i), paths: () => null,
  points: { show: true, size: 8, fill: colorOf(i) } });

// -- training curves ------------------------------------------------------------------------
// Columns per epoch for one metric, one series per training (trial), padded to the longest one.
function curveData(series, metric) {
  const longest = Math.max(0, ...series.map((s) => s.metrics.epoch.length));
  const xs = Array.from({ length: longest }, (_, i) => i + 1);
  const ys = series.map((s) => xs.map((_, i) => (s.metrics[metric] || [])[i] ?? null));
  return [xs, ...ys];
}

function curveSeries(series) {
  return series.map((s, i) => line(`${s.trial || "training"}${s.early_stopped ? " (early stopped)" : ""}`, i,
    s.early_stopped ? { dash: [6, 4] } : {}));
}

// The loss drawn: train's `train_loss`, else the first loss a user's own training reports.
function lossOf(series) {
  const names = [...new Set(series.flatMap((s) => Object.keys(s.metrics)))].filter((n) => n !== "epoch");
  return names.includes("train_loss") ? "train_loss" : names.find((n) => n.includes("loss"));
}

function curveCharts(curves) {
  if (!curves.series.length) return elem("p", { class: "empty" }, "no training curves yet");
  const has = (m) => curves.series.some((s) => s.metrics[m]);
  const metric = [curves.objective?.metric, "val_accuracy", "val_rmse"].find((m) => m && has(m));
  const loss = lossOf(curves.series);
  const charts = [];
  if (loss) {
    charts.push(chart("curves-loss", `${loss === "train_loss" ? "Training loss" : loss} per epoch`,
      curveData(curves.series, loss), curveSeries(curves.series), { xLabel: "epoch", axes: [WHOLE, {}] }));
  }
  if (metric) {
    charts.push(chart("curves-objective", `${metric} per epoch`, curveData(curves.series, metric),
      curveSeries(curves.series), { xLabel: "epoch", axes: [WHOLE, {}] }));
  }
  return elem("div", { class: "charts" }, charts);
}

// -- tuning trials --------------------------------------------------------------------------
function bestSoFar(values, maximize) {
  let best = null;
  return values.map((v) => {
    if (v !== null && v !== undefined && (best === null || (maximize ? v > best : v < best))) best = v;
    return best;
  });
}

// Objective against one parameter: points sorted by the parameter (text values placed by their order).
function paramChart(name, trials) {
  const scored = trials.filter((t) => typeof t.value === "number" && t.params && name in t.params);
  const texts = [...new Set(scored.map((t) => t.params[name]).filter((v) => typeof v !== "number"))].sort();
  const xOf = (v) => (typeof v === "number" ? v : texts.indexOf(v));
  const rows = scored.map((t) => [xOf(t.params[name]), t.value]).sort((a, b) => a[0] - b[0]);
  const axes = [texts.length ? { incrs: [1], values: (u, ticks) => ticks.map((v) => texts[v] ?? "") } : PRECISE, {}];
  return chart(`trials-param-${name}`, `objective against ${name}`, [rows.map((r) => r[0]), rows.map((r) => r[1])],
    [dots("objective", 0)], { xLabel: name, axes });
}

function trialCharts(trials, objective) {
  if (!trials || !trials.length) return null;
  const ordered = [...trials].sort((a, b) => String(a.trial).localeCompare(String(b.trial)));
  const values = ordered.map((t) => (typeof t.value === "number" ? t.value : null));
  const maximize = (objective?.type || "maximize") === "maximize";
  const xs = ordered.map((_, i) => i + 1);
  const label = objective?.metric || "objective";
  const charts = [chart("trials-objective", `${label} per trial, with the best so far`,
    [xs, values, bestSoFar(values, maximize)], [dots(label, 0), line("best so far", 1, { points: { show: false } })],
    { xLabel: "trial", axes: [WHOLE, {}] })];
  const names = [...new Set(ordered.flatMap((t) => Object.keys(t.params || {})))].sort();
  for (const name of names) charts.push(paramChart(name, ordered));
  return elem("div", { class: "charts" }, charts);
}

// Fills the run page's #run-charts (its .trials set by the page) with the curves and trial plots.
async function runCharts(box, runid) {
  const holder = box.querySelector("#run-charts");
  if (!holder) return box;
  try {
    const curves = await getJson(`/api/runs/${encodeURIComponent(runid)}/curves`);
    holder.append(elem("h2", {}, "Training curves"), curveCharts(curves));
    const trials = trialCharts(holder.trials, curves.objective);
    if (trials) holder.append(elem("h2", {}, "Trials"), trials);
  } catch (err) {
    holder.append(elem("div", { class: "error" }, `charts: ${err.message}`));
  }
  return box;
}

// -- serving --------------------------------------------------------------------------------
function servingChart(model, series, key, title, what) {
  const revs = series.revisions;
  const xs = revs.length ? revs[0].points.t : [];
  const ys = revs.flatMap((r) => what.map((w) => r.points[w]));
  const labels = revs.flatMap((r, i) => what.map((w, j) =>
    line(`${r.id} (${r.percent} %)${what.length > 1 ? ` ${w.replace("_ms", "")}` : ""}`, i,
      j ? { dash: [4, 3] } : {})));
  return chart(`serving-${model}-${key}`, title, [xs, ...ys], labels, { time: true, xLabel: "time" });
}

async function servingCharts(box) {
  for (const holder of box.querySelectorAll("[data-serving]")) {
    const model = holder.getAttribute("data-serving");
    try {
      const series = await getJson(`/api/serving/${encodeURIComponent(model)}/series`);
      holder.append(elem("div", { class: "charts" },
        servingChart(model, series, "rps", "requests/s", ["rps"]),
        servingChart(model, series, "latency", "latency p50 / p99 (ms)", ["p50_ms", "p99_ms"]),
        servingChart(model, series, "errors", "errors/s (5xx)", ["errors"]),
        servingChart(model, series, "replicas", "replicas", ["replicas"])));
    } catch (err) {
      holder.append(elem("div", { class: "error" }, `charts: ${err.message}`));
    }
  }
  return box;
}

window.knflowPlots = { runCharts, servingCharts, curveData, bestSoFar, chart, colorOf };
