// knflow dashboard: a run's trace (GET /api/runs/{runid}/trace) as a waterfall in SVG. No build step.
"use strict";

const TRACE_ROW = 22;
const TRACE_LABEL = 340;
const TRACE_WIDTH = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Spans depth first from the roots, children by start time: the order a waterfall reads in.
function traceRows(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const s of spans) {
    const parent = ids.has(s.parent_id) ? s.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const rows = [];
  const walk = (parent, depth) => {
    for (const s of (children.get(parent) || []).sort((a, b) => a.start - b.start)) {
      rows.push({ span: s, depth });
      walk(s.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return rows;
}

function traceView(d) {
  const box = document.createElement("div");
  box.id = "trace";
  const title = document.createElement("h1");
  title.textContent = `Trace ${d.trace_id || ""}`;
  const back = document.createElement("a");
  const runid = (location.hash.split("/")[2] || "");
  back.href = `#/runs/${runid}`;
  back.textContent = `run ${decodeURIComponent(runid)}`;
  box.append(title, back);
  if (!d.spans.length) {
    box.append(Object.assign(document.createElement("p"), { className: "empty", textContent: "no spans" }));
    return box;
  }
  const rows = traceRows(d.spans);
  const t0 = Math.min(...d.spans.map((s) => s.start));
  const t1 = Math.max(...d.spans.map((s) => s.end));
  const scale = (TRACE_WIDTH - TRACE_LABEL - 80) / Math.max(t1 - t0, 1e-3);
  const chart = svg("svg", { class: "waterfall", width: TRACE_WIDTH, height: (rows.length + 1) * TRACE_ROW,
    "data-spans": rows.length });
  chart.append(svg("text", { x: TRACE_LABEL, y: 14, class: "axis" }, "0 s"),
    svg("text", { x: TRACE_WIDTH - 80, y: 14, class: "axis", "text-anchor": "end" }, `${(t1 - t0).toFixed(2)} s`));
  rows.forEach(({ span, depth }, i) => {
    const y = (i + 1) * TRACE_ROW;
    const x = TRACE_LABEL + (span.start - t0) * scale;
    const width = Math.max((span.end - span.start) * scale, 2);
    const row = svg("g", { class: "span-row", "data-span-id": span.span_id, "data-parent-id": span.parent_id || "" });
    const tip = Object.entries(span.attributes || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    row.append(
      svg("title", {}, `${span.name}\n${(span.end - span.start).toFixed(3)} s\n${tip}`),
      svg("text", { x: 4 + depth * 12, y: y + 15, class: "span-label" }, span.name.replace("dev.knflow.", "")),
      svg("rect", { x, y: y + 4, width, height: TRACE_ROW - 8, rx: 3, class: `span-bar span-${span.status}` }),
      svg("text", { x: x + width + 4, y: y + 15, class: "axis" }, `${((span.end - span.start) * 1000).toFixed(0)} ms`),
    );
    chart.append(row);
  });
  box.append(chart);
  return box;
}
