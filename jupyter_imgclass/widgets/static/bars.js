// Image under test, one probability bar per tag, a drop zone for image files, and a
// camera (the browser's getUserMedia) whose captured frame is tested like a dropped file.
function send(model, name, buf) {
  // an action, not state: a custom message with the bytes as its buffer
  model.send({ action: "drop", name }, undefined, [buf]);
}

function camera(model) {
  const box = document.createElement("div");
  box.className = "imgclass-camera";
  const start = document.createElement("button");
  start.className = "imgclass-camera-start";
  start.textContent = "Use camera";
  const note = document.createElement("span");
  note.className = "imgclass-camera-note";
  box.append(start, note);
  let stream = null;
  const stop = () => {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    box.querySelectorAll("video, .imgclass-camera-capture, .imgclass-camera-cancel").forEach((e) => e.remove());
    start.disabled = false;
  };
  start.onclick = async () => {
    note.textContent = "";
    if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
      note.textContent = "camera not available here (the browser needs https or localhost)";
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (err) {
      note.textContent = `camera not available: ${err.message || err.name}`;
      return;
    }
    start.disabled = true;
    const video = document.createElement("video");
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    video.srcObject = stream;
    const capture = document.createElement("button");
    capture.className = "imgclass-camera-capture";
    capture.textContent = "Capture";
    const cancel = document.createElement("button");
    cancel.className = "imgclass-camera-cancel";
    cancel.textContent = "Close camera";
    cancel.onclick = stop;
    capture.onclick = () => {
      if (!video.videoWidth) { note.textContent = "the camera has no picture yet"; return; }
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      canvas.toBlob(async (blob) => send(model, "camera.jpg", await blob.arrayBuffer()), "image/jpeg", 0.92);
    };
    box.append(video, capture, cancel);
  };
  return [box, stop];
}

function render({ model, el }) {
  const outer = document.createElement("div");
  outer.className = "imgclass-tester-view";
  const root = document.createElement("div");
  root.className = "imgclass-bars";
  const [cam, stopCamera] = camera(model);
  outer.append(root, cam);
  el.appendChild(outer);
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
      send(model, file.name, await file.arrayBuffer());
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
  return () => {
    keys.forEach((k) => model.off(`change:${k}`, draw));
    if (url) URL.revokeObjectURL(url);
    stopCamera();
  };
}

export default { render };
