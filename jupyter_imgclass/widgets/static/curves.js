// Loss and accuracy curves (train solid, validation dashed) as SVG, redrawn in place.
const NS = "http://www.w3.org/2000/svg";

function panel(history, keys, title, w, h) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.classList.add("imgclass-curve-panel");
  const pad = 32;
  const pts = history.filter((p) => typeof p.epoch === "number");
  const vals = [];
  for (const p of pts) for (const k of keys) if (typeof p[k] === "number" && isFinite(p[k])) vals.push(p[k]);
  const t = document.createElementNS(NS, "text");
  t.setAttribute("x", pad);
  t.setAttribute("y", 12);
  t.textContent = title;
  svg.appendChild(t);
  const axis = document.createElementNS(NS, "rect");
  axis.setAttribute("x", pad); axis.setAttribute("y", 18);
  axis.setAttribute("width", w - pad - 8); axis.setAttribute("height", h - 40);
  axis.setAttribute("class", "imgclass-curve-axis");
  svg.appendChild(axis);
  if (!pts.length || !vals.length) return svg;
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const e0 = pts[0].epoch, e1 = Math.max(pts[pts.length - 1].epoch, e0 + 1);
  const X = (e) => pad + ((e - e0) / (e1 - e0)) * (w - pad - 8);
  const Y = (v) => 18 + (1 - (v - lo) / (hi - lo)) * (h - 40);
  for (const [v, y] of [[hi, Y(hi)], [lo, Y(lo)]]) {
    const lab = document.createElementNS(NS, "text");
    lab.setAttribute("x", 2); lab.setAttribute("y", y + 4);
    lab.textContent = v.toFixed(2);
    svg.appendChild(lab);
  }
  keys.forEach((k, i) => {
    const d = pts.filter((p) => typeof p[k] === "number").map((p) => `${X(p.epoch)},${Y(p[k])}`).join(" ");
    if (!d) return;
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", d);
    line.setAttribute("class", `imgclass-curve ${i === 0 ? "train" : "val"}`);
    svg.appendChild(line);
    const leg = document.createElementNS(NS, "text");
    leg.setAttribute("x", w - 90); leg.setAttribute("y", 30 + 12 * i);
    leg.setAttribute("class", `imgclass-legend ${i === 0 ? "train" : "val"}`);
    leg.textContent = k;
    svg.appendChild(leg);
  });
  return svg;
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "imgclass-curves";
  el.appendChild(root);
  const draw = () => {
    const h = model.get("history");
    root.innerHTML = "";
    root.append(panel(h, ["loss", "val_loss"], "loss", 300, 170), panel(h, ["accuracy", "val_accuracy"], "accuracy", 300, 170));
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
