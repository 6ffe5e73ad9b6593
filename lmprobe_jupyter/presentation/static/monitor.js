// Live generation-monitor view. Python renders the markup (monitor_widget.render_monitor,
// synced as `_html`) so the live view and the static text/html fallback are the same;
// this file mounts it as tokens arrive, keeps the newest token in view and mirrors the
// alarm state on the widget's element so the frame can pulse.

function render({ model, el }) {
  el.classList.add("lmpj-widget", "lmpj-monitor-widget");
  const body = document.createElement("div");
  body.className = "lmpj-body";
  el.appendChild(body);

  const mount = () => {
    const generated = body.querySelector(".lmpj-generated");
    const atBottom =
      !generated || generated.scrollHeight - generated.scrollTop - generated.clientHeight < 8;
    body.innerHTML = model.get("_html");
    const alarm = model.get("flagged_at") !== null && model.get("flagged_at") !== undefined;
    el.classList.toggle("lmpj-monitor-alarm", alarm);
    el.dataset.status = model.get("status");
    const fresh = body.querySelector(".lmpj-generated");
    if (fresh && atBottom) fresh.scrollTop = fresh.scrollHeight;
  };

  model.on("change:_html", mount);
  mount();
  return () => model.off("change:_html", mount);
}

export default { render };
