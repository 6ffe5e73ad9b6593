// Token-highlight widget view. The coloured spans come ready-made from Python
// (render.render_token_highlights, synced as `_html`) so the live view and the
// static text/html fallback are the same markup; this file only adds the
// threshold slider and re-marks tokens over it.

function applyThreshold(root, threshold) {
  for (const block of root.querySelectorAll(".lmpj-text")) {
    let nOver = 0;
    for (const tok of block.querySelectorAll(".lmpj-tok")) {
      const score = parseFloat(tok.dataset.score);
      const over = !Number.isNaN(score) && score > threshold;
      tok.classList.toggle("lmpj-over", over);
      if (over) nOver += 1;
    }
    const counter = block.querySelector(".lmpj-n-over");
    if (counter) counter.textContent = String(nOver);
  }
  const shown = root.querySelector(".lmpj-threshold-value");
  if (shown) shown.textContent = threshold.toFixed(2);
  const body = root.querySelector(".lmpj-tokens");
  if (body) body.dataset.threshold = String(threshold);
}

function render({ model, el }) {
  el.classList.add("lmpj-widget", "lmpj-token-widget");

  const controls = document.createElement("div");
  controls.className = "lmpj-controls";
  const label = document.createElement("label");
  label.textContent = "threshold ";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.className = "lmpj-threshold-slider";
  const value = document.createElement("span");
  value.className = "lmpj-slider-value";
  label.appendChild(slider);
  controls.appendChild(label);
  controls.appendChild(value);

  const body = document.createElement("div");
  body.className = "lmpj-body";
  el.appendChild(controls);
  el.appendChild(body);

  const syncSlider = () => {
    const vmin = model.get("vmin");
    const vmax = model.get("vmax");
    slider.min = String(vmin);
    slider.max = String(vmax);
    slider.step = String((vmax - vmin) / 100);
    slider.value = String(model.get("threshold"));
    value.textContent = Number(model.get("threshold")).toFixed(2);
  };
  const mount = () => {
    body.innerHTML = model.get("_html");
    applyThreshold(body, model.get("threshold"));
  };
  const onThreshold = () => {
    syncSlider();
    applyThreshold(body, model.get("threshold"));
  };
  const onRange = () => {
    syncSlider();
    mount();
  };

  slider.addEventListener("input", () => {
    const t = parseFloat(slider.value);
    value.textContent = t.toFixed(2);
    applyThreshold(body, t);
    model.set("threshold", t);
    model.save_changes();
  });

  model.on("change:threshold", onThreshold);
  model.on("change:_html", mount);
  model.on("change:vmin", onRange);
  model.on("change:vmax", onRange);
  syncSlider();
  mount();

  return () => {
    model.off("change:threshold", onThreshold);
    model.off("change:_html", mount);
    model.off("change:vmin", onRange);
    model.off("change:vmax", onRange);
  };
}

export default { render };
