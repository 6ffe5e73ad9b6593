// Sweep-curve widget view. The SVG chart comes ready-made from Python
// (render.render_sweep_curve, synced as `_html`); this file makes each layer
// clickable and writes the choice back to the synced `selected_layer` trait.

function showSelection(root, layer, status) {
  const line = root.querySelector(".lmpj-selected-line");
  const hit = layer === null ? null : root.querySelector(`.lmpj-hit[data-layer="${layer}"]`);
  if (line) {
    if (hit) {
      line.setAttribute("x1", hit.dataset.x);
      line.setAttribute("x2", hit.dataset.x);
      line.setAttribute("visibility", "visible");
    } else {
      line.setAttribute("visibility", "hidden");
    }
  }
  for (const point of root.querySelectorAll(".lmpj-point")) {
    point.classList.toggle("lmpj-selected", hit !== null && point.dataset.layer === String(layer));
  }
  status.textContent = hit ? `selected: layer ${layer}` : "click a layer to select it";
}

function render({ model, el }) {
  el.classList.add("lmpj-widget", "lmpj-sweep-widget");
  const body = document.createElement("div");
  body.className = "lmpj-body";
  const status = document.createElement("div");
  status.className = "lmpj-status";
  el.appendChild(body);
  el.appendChild(status);

  const onClick = (event) => {
    const target = event.target.closest("[data-layer]");
    if (!target || !body.contains(target)) return;
    const layer = parseInt(target.dataset.layer, 10);
    model.set("selected_layer", layer);
    model.save_changes();
    showSelection(body, layer, status);
  };
  const mount = () => {
    body.innerHTML = model.get("_html");
    showSelection(body, model.get("selected_layer"), status);
  };
  const onSelected = () => showSelection(body, model.get("selected_layer"), status);

  body.addEventListener("click", onClick);
  model.on("change:_html", mount);
  model.on("change:selected_layer", onSelected);
  mount();

  return () => {
    body.removeEventListener("click", onClick);
    model.off("change:_html", mount);
    model.off("change:selected_layer", onSelected);
  };
}

export default { render };
