// knflow dashboard comparison: runs (or trials) picked in the runs table, side by side from GET /api/compare,
// the fields that differ highlighted, and their training curves in one chart per metric (charts.js draws them).
"use strict";

const knflowCompare = (() => {
  const selected = new Set(); // ids picked in the runs table; kept across the page's re-renders

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }

  function updateButton() {
    const button = document.getElementById("compare-selected");
    if (!button) return;
    button.disabled = selected.size < 2;
    button.textContent = `Compare ${selected.size} selected`;
  }

  // A checkbox for a run (or "runid/trial") in a table row; clicking it does not open the row.
  function checkbox(id) {
    return el("input", {
      type: "checkbox", "data-compare": id, checked: selected.has(id),
      onclick: (e) => {
        e.stopPropagation();
        if (e.target.checked) selected.add(id); else selected.delete(id);
        updateButton();
      },
    });
  }

  function button() {
    const b = el("button", { id: "compare-selected", type: "button",
      onclick: () => {
        location.hash = `#/compare/${[...selected].map(encodeURIComponent).join(",")}`;
        selected.clear(); // compared: the next comparison starts from a fresh pick
      } });
    b.disabled = selected.size < 2;
    b.textContent = `Compare ${selected.size} selected`;
    return b;
  }

  // The rows of the comparison: identity fields, then every params.*, metrics.* and data.* key of any item.
  const IDENTITY = ["experiment", "dataset", "status", "model"];
  function rowsOf(items) {
    const keys = [...IDENTITY];
    for (const group of ["params", "metrics", "data"]) {
      const names = new Set(items.flatMap((item) => Object.keys(item[group] || {})));
      keys.push(...[...names].sort().map((n) => `${group}.${n}`));
    }
    return keys;
  }

  function valueOf(item, key) {
    const [group, ...rest] = key.split(".");
    const v = rest.length ? (item[group] || {})[rest.join(".")] : item[group];
    if (v === null || v === undefined) return "";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(5);
    if (group === "model" && typeof v === "object") return `${v.name} v${v.version}`;
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  // A cell; a long value (a data version's sha256) shows its start, the whole of it on hover.
  function cell(text) {
    return text.length > 40 ? el("td", { title: text }, el("code", {}, `${text.slice(0, 16)}…`)) : el("td", {}, text);
  }

  function table(d) {
    const differs = new Set(d.differs || []);
    const head = el("tr", {}, el("th", {}, "field"), d.items.map((item) => el("th", {},
      el("a", { href: `#/runs/${encodeURIComponent(item.runid)}` }, item.runid), item.trial ? ` / ${item.trial}` : "")));
    const body = rowsOf(d.items).map((key) => el("tr", { "data-field": key, class: differs.has(key) ? "differs" : null },
      el("th", {}, key), d.items.map((item) => cell(valueOf(item, key)))));
    return el("table", { id: "compare-table" }, el("thead", {}, head), el("tbody", {}, body));
  }

  // One series per compared item: its trial's curve, or the run's own training, else its best trial's (else all).
  function curvesOf(item, curves) {
    const wanted = item.trial || null;
    let picked = curves.series.filter((s) => s.trial === wanted);
    if (!picked.length && !wanted) picked = curves.series.filter((s) => s.trial === curves.best);
    if (!picked.length) picked = curves.series;
    return picked.map((s) => ({ ...s, trial: `${item.runid}${s.trial ? "/" + s.trial : ""}` }));
  }

  async function curveCharts(items) {
    const all = [];
    for (const item of items) {
      const response = await fetch(`/api/runs/${encodeURIComponent(item.runid)}/curves`, { credentials: "same-origin" });
      if (response.ok) all.push(...curvesOf(item, await response.json()));
    }
    if (!all.length) return el("p", { class: "empty" }, "no training curves");
    const plots = window.knflowPlots;
    const series = all.map((s, i) => ({ label: s.trial, stroke: plots.colorOf(i), width: 2 }));
    const metrics = ["train_loss", "val_loss", "val_accuracy", "val_rmse"].filter((m) => all.some((s) => s.metrics[m]));
    return el("div", { class: "charts" }, metrics.map((m) =>
      plots.chart(`compare-${m}`, `${m} per epoch`, plots.curveData(all, m), series,
      { xLabel: "epoch", axes: [{ incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, {}] })));
  }

  async function view(ids) {
    const box = el("section", { class: "panel", "data-panel": "compare" }, el("h1", {}, "Compare"));
    try {
      const response = await fetch(`/api/compare?runs=${ids.map(encodeURIComponent).join(",")}`,
        { credentials: "same-origin" });
      const d = await response.json();
      if (!response.ok) throw new Error(d.error || `HTTP ${response.status}`);
      box.append(el("p", { class: "muted" }, `${d.items.length} runs · highlighted: the ${(d.differs || []).length} `
        + "fields that differ"), table(d), el("h2", {}, "Training curves"), await curveCharts(d.items));
    } catch (err) {
      box.append(el("div", { class: "error" }, `/api/compare: ${err.message}`));
    }
    return box;
  }

  return { selected, checkbox, button, view };
})();
window.knflowCompare = knflowCompare;
