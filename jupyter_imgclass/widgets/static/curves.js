// Loss and accuracy curves (train solid, validation dashed) as SVG, redrawn in place.
// Axes fit the data (accuracy stays within 0–1), ticks carry the digits that matter,
// epochs label the x axis, and the legend sits above the plot, clear of the lines.
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// The same rule as vocabulary.figure, with `span` deciding the digits of a tick.
function tick(v, span) {
  const scale = Math.max(Math.abs(span), Math.abs(v) * 1e-3, 1e-12);
  const decimals = Math.min(8, Math.max(0, 2 - Math.floor(Math.log10(scale))));
  return v.toFixed(decimals);
}

function range(vals, bounded) {
  let lo = Math.min(...vals), hi = Math.max(...vals);
  const span = hi - lo;
  const margin = span > 0 ? span * 0.08 : Math.max(Math.abs(hi) * 0.1, 1e-6);
  const positive = lo >= 0;  // losses and accuracies never go below 0
  lo -= margin; hi += margin;
  if (positive) lo = Math.max(0, lo);
  if (bounded) hi = Math.min(1, hi);
  if (hi - lo <= 0) { lo = Math.max(0, hi - 0.1); }
  return [lo, hi];
}

function panel(history, keys, title, w, h, bounded) {
  const svg = el("svg", { width: w, height: h, class: "imgclass-curve-panel" });
  svg.dataset.title = title;
  const pts = history.filter((p) => typeof p.epoch === "number");
  const vals = [];
  for (const p of pts) for (const k of keys) if (typeof p[k] === "number" && isFinite(p[k])) vals.push(p[k]);
  const [lo, hi] = vals.length ? range(vals, bounded) : [0, 1];
  const ticks = [0, 0.5, 1].map((f) => tick(lo + f * (hi - lo), hi - lo));
  // The y labels decide the left margin, so "0.000357" is never cut.
  const left = Math.max(36, 10 + 6.5 * Math.max(...ticks.map((t) => t.length)));
  const top = 24, right = 10, bottom = 30;
  const pw = w - left - right, ph = h - top - bottom;
  svg.appendChild(el("text", { x: 4, y: 14, class: "imgclass-curve-title" }, title));
  const labels = { loss: "train", val_loss: "validation", accuracy: "train", val_accuracy: "validation" };
  keys.forEach((k, i) => {  // legend in the title row, right of the title
    const x = w - right - 150 + 80 * i;
    svg.appendChild(el("line", { x1: x, y1: 10, x2: x + 16, y2: 10, class: `imgclass-legend-swatch ${i === 0 ? "train" : "val"}` }));
    svg.appendChild(el("text", { x: x + 20, y: 14, class: `imgclass-legend ${i === 0 ? "train" : "val"}` }, labels[k] || k));
  });
  svg.appendChild(el("rect", { x: left, y: top, width: pw, height: ph, class: "imgclass-curve-axis" }));
  svg.appendChild(el("text", { x: left + pw / 2, y: h - 2, "text-anchor": "middle", class: "imgclass-axis-title" }, "epoch"));
  if (!pts.length || !vals.length) return svg;
  const e0 = pts[0].epoch, e1 = Math.max(pts[pts.length - 1].epoch, e0 + 1);
  const X = (e) => left + ((e - e0) / (e1 - e0)) * pw;
  const Y = (v) => top + (1 - (v - lo) / (hi - lo)) * ph;
  [0, 0.5, 1].forEach((f, i) => {  // y ticks: bottom, middle, top
    const y = Y(lo + f * (hi - lo));
    if (f > 0 && f < 1) svg.appendChild(el("line", { x1: left, y1: y, x2: left + pw, y2: y, class: "imgclass-curve-grid" }));
    svg.appendChild(el("text", { x: left - 4, y: y + 4, "text-anchor": "end", class: "imgclass-ytick" }, ticks[i]));
  });
  const step = Math.max(1, Math.ceil((e1 - e0) / 5));  // whole epochs, at most 6 ticks
  for (let e = e0; e <= e1; e += step) {
    svg.appendChild(el("text", { x: X(e), y: top + ph + 14, "text-anchor": "middle", class: "imgclass-xtick" }, String(e)));
  }
  keys.forEach((k, i) => {
    const d = pts.filter((p) => typeof p[k] === "number" && isFinite(p[k])).map((p) => `${X(p.epoch)},${Y(p[k])}`).join(" ");
    if (!d) return;
    svg.appendChild(el("polyline", { points: d, class: `imgclass-curve ${i === 0 ? "train" : "val"}` }));
    if (pts.length <= 20) {  // a dot per epoch: a one-epoch run (the quick budget) is not an empty chart
      for (const p of pts) {
        if (typeof p[k] !== "number" || !isFinite(p[k])) continue;
        svg.appendChild(el("circle", { cx: X(p.epoch), cy: Y(p[k]), r: 3.5, class: `imgclass-curve-dot ${i === 0 ? "train" : "val"}` }));
      }
    }
  });
  return svg;
}

function render({ model, el: host }) {
  const root = document.createElement("div");
  root.className = "imgclass-curves";
  host.appendChild(root);
  const draw = () => {
    const h = model.get("history");
    root.innerHTML = "";
    root.append(
      panel(h, ["loss", "val_loss"], "loss", 320, 190, false),
      panel(h, ["accuracy", "val_accuracy"], "accuracy", 320, 190, true),
    );
    const note = document.createElement("div");
    note.className = "imgclass-curves-note";
    note.textContent = h.length ? `${h.length} epoch(s)` : "waiting for the first epoch…";
    root.appendChild(note);
  };
  model.on("change:history", draw);
  draw();
  return () => model.off("change:history", draw);
}

export default { render };
