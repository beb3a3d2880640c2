// Per-tag metrics table and a clickable confusion-matrix heatmap.
const fmt = (v) => (typeof v === "number" ? v.toFixed(3) : "–");

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "imgclass-metrics";
  el.appendChild(root);
  const draw = () => {
    const m = model.get("metrics") || {};
    const classes = model.get("classes") || [];
    root.innerHTML = "";
    const t = document.createElement("table");
    t.className = "imgclass-metrics-table";
    const head = document.createElement("tr");
    for (const h of ["tag", "precision", "recall", "average precision", "count"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    t.appendChild(head);
    const per = m.per_tag || {};
    const rows = Object.keys(per).map((k) => [k, per[k], ""]);
    if (m.overall) rows.push(["overall", m.overall, "overall"]);
    for (const [name, r, cls] of rows) {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      tr.dataset.tag = name;
      for (const v of [name, fmt(r.precision), fmt(r.recall), fmt(r.average_precision), r.count ?? ""]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.appendChild(td);
      }
      t.appendChild(tr);
    }
    root.appendChild(t);
    const o = m.overall || {};
    const line = document.createElement("div");
    line.className = "imgclass-overall";
    line.textContent = `threshold ${model.get("threshold").toFixed(2)}` +
      (typeof o.accuracy === "number" ? ` · accuracy ${fmt(o.accuracy)}` : "") +
      (typeof o.subset_accuracy === "number" ? ` · subset accuracy ${fmt(o.subset_accuracy)}` : "") +
      ` · precision ${fmt(o.precision)} · recall ${fmt(o.recall)}`;
    root.appendChild(line);

    const cm = m.confusion_matrix;
    if (Array.isArray(cm) && cm.length) {
      const title = document.createElement("div");
      title.textContent = "Confusion matrix (rows: true, columns: predicted) — click a cell to see its images";
      root.appendChild(title);
      const max = Math.max(1, ...cm.flat());
      const tab = document.createElement("table");
      tab.className = "imgclass-cm";
      const hr = document.createElement("tr");
      hr.appendChild(document.createElement("th"));
      classes.forEach((c) => { const th = document.createElement("th"); th.textContent = c; hr.appendChild(th); });
      tab.appendChild(hr);
      const sel = model.get("selected") || [];
      cm.forEach((row, i) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.textContent = classes[i] ?? String(i);
        tr.appendChild(th);
        row.forEach((v, j) => {
          const td = document.createElement("td");
          td.className = "imgclass-cm-cell" + (sel[0] === i && sel[1] === j ? " selected" : "");
          td.dataset.row = String(i);
          td.dataset.col = String(j);
          td.textContent = String(v);
          const a = v / max;
          td.style.background = i === j ? `rgba(46,125,50,${0.1 + 0.8 * a})` : `rgba(198,40,40,${v ? 0.15 + 0.7 * a : 0})`;
          td.style.color = a > 0.6 ? "white" : "black";
          td.onclick = () => { model.set("selected", [i, j]); model.save_changes(); };
          tr.appendChild(td);
        });
        tab.appendChild(tr);
      });
      root.appendChild(tab);
    }
  };
  const keys = ["metrics", "classes", "threshold", "selected"];
  keys.forEach((k) => model.on(`change:${k}`, draw));
  draw();
  return () => keys.forEach((k) => model.off(`change:${k}`, draw));
}

export default { render };
