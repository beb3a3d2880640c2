// Image under test, one probability bar per tag, and a drop zone for image files.
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "imgclass-bars";
  el.appendChild(root);
  let url = null;
  const draw = () => {
    if (url) URL.revokeObjectURL(url);
    url = null;
    root.innerHTML = "";
    const drop = document.createElement("div");
    drop.className = "imgclass-drop";
    const data = model.get("image");
    if (data && data.byteLength) {
      const img = document.createElement("img");
      url = URL.createObjectURL(new Blob([data]));
      img.src = url;
      img.alt = model.get("name");
      drop.appendChild(img);
    } else {
      drop.textContent = "Drop an image here";
    }
    drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
    drop.ondragleave = () => drop.classList.remove("over");
    drop.ondrop = async (e) => {
      e.preventDefault();
      e.stopPropagation();
      drop.classList.remove("over");
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (!file) return;
      const buf = await file.arrayBuffer();
      model.set("dropped_name", file.name);
      model.set("dropped", new DataView(buf));
      model.save_changes();
    };
    const bars = document.createElement("div");
    bars.className = "imgclass-bar-list";
    for (const p of model.get("predictions")) {
      const row = document.createElement("div");
      row.className = "imgclass-bar-row";
      row.dataset.tag = p.tag;
      const name = document.createElement("span");
      name.className = "imgclass-bar-name";
      name.textContent = p.tag;
      const track = document.createElement("div");
      track.className = "imgclass-bar-track";
      const fill = document.createElement("div");
      fill.className = "imgclass-bar-fill";
      fill.style.width = `${Math.round(100 * p.probability)}%`;
      track.appendChild(fill);
      const pct = document.createElement("span");
      pct.className = "imgclass-bar-value";
      pct.textContent = `${(100 * p.probability).toFixed(1)}%`;
      row.append(name, track, pct);
      bars.appendChild(row);
    }
    root.append(drop, bars);
  };
  const keys = ["image", "predictions"];
  keys.forEach((k) => model.on(`change:${k}`, draw));
  draw();
  return () => { keys.forEach((k) => model.off(`change:${k}`, draw)); if (url) URL.revokeObjectURL(url); };
}

export default { render };
