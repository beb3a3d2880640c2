// Labeller front end: paged thumbnail grid / single view, tag buttons, keyboard.
// All changes are requests to the kernel, sent as custom messages (`model.send`, read by
// the widget's `on_msg` handler), so no action is saved with the notebook's widget state;
// the view redraws from the state the kernel sends back, so nothing shows as done before
// it is on disk.

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "imgclass-labeller";
  root.tabIndex = 0;
  // Keep JupyterLab's notebook shortcuts (1-6, arrows, Enter) away while labelling.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  el.appendChild(root);
  let urls = [];

  function tagFor(key) {
    return model.get("tags").find((t) => t.key === key);
  }

  function current() {
    const items = model.get("items");
    return items[model.get("cursor")];
  }

  function labelWith(tag) {
    if (!current() || !tag) return;
    // No image id: the kernel labels the image at ITS cursor, so fast typing is applied in
    // order (label, advance, label, ...) even before this view has caught up.
    model.send({ action: "label", tag: tag.negative ? "__negative__" : tag.name });
  }

  function draw() {
    // A redraw replaces the focused element; keep the keys with the widget.
    const hadFocus = root === document.activeElement || root.contains(document.activeElement);
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = [];
    root.innerHTML = "";
    const items = model.get("items");
    const cursor = model.get("cursor");
    const mode = model.get("mode");

    const bar = document.createElement("div");
    bar.className = "imgclass-labeller-bar";
    const progress = document.createElement("span");
    progress.className = "imgclass-labeller-progress";
    progress.textContent = model.get("progress");
    bar.appendChild(progress);

    const filter = document.createElement("select");
    filter.className = "imgclass-labeller-filter";
    for (const f of model.get("filter_options")) {
      const o = document.createElement("option");
      o.value = f;
      const views = { untagged: "untagged", all: "all", tagged: "tagged", suggested: "suggested next (model's guess)", review: "review served images" };
      o.textContent = views[f] || `tag: ${f}`;
      if (f === model.get("filter")) o.selected = true;
      filter.appendChild(o);
    }
    filter.onchange = () => { model.set("filter", filter.value); model.save_changes(); };
    bar.appendChild(filter);

    const modeBtn = document.createElement("button");
    modeBtn.className = "imgclass-labeller-mode";
    modeBtn.textContent = mode === "grid" ? "One at a time" : "Grid";
    modeBtn.onclick = (e) => {
      e.stopPropagation();
      model.set("mode", mode === "grid" ? "single" : "grid");
      model.save_changes();
      root.focus({ preventScroll: true }); // the keys work at once in the new view
    };
    bar.appendChild(modeBtn);

    const undo = document.createElement("button");
    undo.className = "imgclass-labeller-undo";
    undo.textContent = "Undo";
    undo.onclick = () => model.send({ action: "undo" });
    bar.appendChild(undo);

    const pager = document.createElement("span");
    pager.className = "imgclass-labeller-pager";
    const prev = document.createElement("button");
    prev.textContent = "‹";
    prev.disabled = model.get("page") <= 0;
    prev.onclick = () => { model.set("page", model.get("page") - 1); model.save_changes(); };
    const next = document.createElement("button");
    next.textContent = "›";
    next.disabled = model.get("page") >= model.get("n_pages") - 1;
    next.onclick = () => { model.set("page", model.get("page") + 1); model.save_changes(); };
    const pageText = document.createElement("span");
    pageText.textContent = ` page ${model.get("page") + 1} of ${model.get("n_pages")} (${model.get("total")} images) `;
    pager.append(prev, pageText, next);
    bar.appendChild(pager);
    // A click on the header's text focuses the widget and shows which card the keys act on.
    bar.onclick = (e) => {
      if (e.target.closest("button, select, input")) return;
      root.focus({ preventScroll: true });
      showCurrent();
    };
    root.appendChild(bar);

    const tagbar = document.createElement("div");
    tagbar.className = "imgclass-labeller-tags";
    const cur = items[cursor];
    for (const t of model.get("tags")) {
      const b = document.createElement("button");
      b.className = "imgclass-tag-button" + (t.negative ? " negative" : "");
      if (cur && cur.tags.includes(t.name)) b.classList.add("active");
      b.textContent = `${t.key ? t.key + " " : ""}${t.name} (${t.count})`;
      b.dataset.tag = t.name;
      b.onclick = () => labelWith(t);
      tagbar.appendChild(b);
    }
    if (!model.get("tags").some((t) => t.negative)) {
      const b = document.createElement("button");
      b.className = "imgclass-tag-button negative";
      b.textContent = "0 Negative";
      b.onclick = () => labelWith({ name: "Negative", negative: true });
      tagbar.appendChild(b);
    }
    const input = document.createElement("input");
    input.className = "imgclass-labeller-newtag";
    input.placeholder = "new tag…";
    input.setAttribute("data-lm-suppress-shortcuts", "true");
    input.onkeydown = (e) => {
      e.stopPropagation();
      if (e.key === "Enter" && input.value.trim()) {
        model.send({ action: "new_tag", name: input.value.trim() });
        input.value = "";
      }
    };
    const add = document.createElement("button");
    add.className = "imgclass-labeller-addtag";
    add.textContent = "+ tag";
    add.onclick = () => { if (input.value.trim()) { model.send({ action: "new_tag", name: input.value.trim() }); input.value = ""; } };
    tagbar.append(input, add);
    root.appendChild(tagbar);

    const err = model.get("error");
    if (err) {
      const e = document.createElement("div");
      e.className = "imgclass-error";
      e.textContent = err;
      root.appendChild(e);
    }

    const grid = document.createElement("div");
    grid.className = mode === "grid" ? "imgclass-labeller-grid" : "imgclass-labeller-single";
    if (!items.length) {
      const empty = document.createElement("div");
      empty.className = "imgclass-labeller-empty";
      empty.textContent = "No images match this filter.";
      grid.appendChild(empty);
    }
    const shown = mode === "grid" ? items.map((it, k) => [it, k]) : (cur ? [[cur, cursor]] : []);
    for (const [it, k] of shown) {
      const card = document.createElement("div");
      card.className = "imgclass-card" + (k === cursor ? " current" : "") + (it.tags.length ? " labelled" : "");
      card.dataset.imageId = String(it.id);
      const img = document.createElement("img");
      const preview = model.get("preview") || {};
      const big = mode === "single" && preview.id === it.id && preview.data && preview.data.byteLength;
      const bytes = big ? preview.data : it.thumb;
      if (bytes && bytes.byteLength) {
        const url = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
        urls.push(url);
        img.src = url;
      }
      if (mode === "single") {
        img.className = big ? "imgclass-preview" : "imgclass-preview pending";
        // The image at its own size; a small one by a whole factor, pixels kept sharp.
        img.onload = () => {
          const side = Math.max(img.naturalWidth, img.naturalHeight) || 1;
          const factor = side >= 240 ? 1 : Math.max(1, Math.floor(320 / side));
          img.style.width = `${img.naturalWidth * factor}px`;
          img.style.height = `${img.naturalHeight * factor}px`;
          img.classList.toggle("upscaled", factor > 1);
        };
      }
      img.alt = it.name;
      const cap = document.createElement("div");
      cap.className = "imgclass-card-tags";
      cap.textContent = it.tags.length ? it.tags.join(", ") : "—";
      card.append(img, cap);
      if (!it.tags.length && it.guess) {  // the model's guess, accepted with Enter
        const guess = document.createElement("div");
        guess.className = "imgclass-card-guess";
        guess.textContent = `guess: ${it.guess} (Enter)`;
        card.appendChild(guess);
      }
      card.onclick = () => { model.set("cursor", k); model.save_changes(); root.focus(); };
      grid.appendChild(card);
    }
    root.appendChild(grid);

    const help = document.createElement("div");
    help.className = "imgclass-labeller-help";
    help.textContent = "Keys: 1–9 tag · 0 negative · ←/→ move · Enter accept the guess / next · Backspace/Ctrl+Z undo · S skip";
    const focusNote = document.createElement("div");
    focusNote.className = "imgclass-labeller-focus";
    const status = document.createElement("div");
    status.className = "imgclass-labeller-status";
    status.textContent = model.get("status");
    root.append(status, focusNote, help);
    noteFocus();
    if (hadFocus) {
      root.focus({ preventScroll: true });
      showCurrent();
    }
  }

  // Which card the keys act on, said in words beside the highlight.
  function noteFocus() {
    const note = root.querySelector(".imgclass-labeller-focus");
    if (!note) return;
    const cur = current();
    const focused = root === document.activeElement || root.contains(document.activeElement);
    if (!cur) note.textContent = "";
    else if (focused) note.textContent = `Keys act on the highlighted image: ${cur.name}`;
    else note.textContent = "Click an image (or here) to label with the keys";
    root.classList.toggle("keys-on", focused);
  }

  function showCurrent() {
    const card = root.querySelector(".imgclass-card.current");
    if (card && card.scrollIntoView) card.scrollIntoView({ block: "nearest" });
  }

  function onKey(e) {
    if (e.target && e.target.tagName === "INPUT") return;
    const k = e.key;
    let handled = true;
    if (/^[0-9]$/.test(k) && !e.ctrlKey && !e.metaKey) {
      if (k === "0") {
        labelWith(tagFor("0") || { name: "Negative", negative: true });
      } else {
        labelWith(tagFor(k));
      }
    } else if (k === "ArrowRight" || k === "ArrowDown") {
      model.send({ action: "move", step: 1 });
    } else if (k === "ArrowLeft" || k === "ArrowUp") {
      model.send({ action: "move", step: -1 });
    } else if (k === "Enter") {
      model.send({ action: "confirm" });
    } else if (k === "Backspace" || ((e.ctrlKey || e.metaKey) && (k === "z" || k === "Z"))) {
      model.send({ action: "undo" });
    } else if (k === "s" || k === "S") {
      model.send({ action: "skip" });
    } else {
      handled = false;
    }
    if (handled) {
      e.preventDefault();
      e.stopPropagation();
    }
  }
  root.addEventListener("keydown", onKey);
  root.addEventListener("focusin", noteFocus);
  root.addEventListener("focusout", () => setTimeout(noteFocus, 0));

  const keys = ["items", "tags", "cursor", "mode", "progress", "page", "n_pages", "filter",
    "filter_options", "error", "status", "total", "preview"];
  for (const key of keys) model.on(`change:${key}`, draw);
  draw();
  return () => {
    for (const key of keys) model.off(`change:${key}`, draw);
    root.removeEventListener("keydown", onKey);
    root.removeEventListener("focusin", noteFocus);
    urls.forEach((u) => URL.revokeObjectURL(u));
  };
}

export default { render };
