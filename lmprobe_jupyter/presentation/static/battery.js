// Baseline-battery widget view. The sorted SVG bar chart comes ready-made from
// Python (render.render_battery, synced as `_html`); hovering a row highlights it.

function render({ model, el }) {
  el.classList.add("lmpj-widget", "lmpj-battery-widget");
  const body = document.createElement("div");
  body.className = "lmpj-body";
  el.appendChild(body);

  const mount = () => {
    body.innerHTML = model.get("_html");
  };
  const onOver = (event) => {
    const row = event.target.closest(".lmpj-row");
    for (const r of body.querySelectorAll(".lmpj-row")) r.classList.toggle("lmpj-hover", r === row);
  };
  body.addEventListener("mouseover", onOver);
  model.on("change:_html", mount);
  mount();

  return () => {
    body.removeEventListener("mouseover", onOver);
    model.off("change:_html", mount);
  };
}

export default { render };
