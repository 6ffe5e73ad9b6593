// Error-analysis view. Builds the table from the synced `props` (text is set with
// textContent, never parsed as HTML) and sends one message per action; Python
// (errors_widget.ErrorsWidget.handle_message) applies it and re-syncs `props`.

const KINDS = ["all", "wrong", "fp", "fn", "uncertain"];
const NAMES = { fp: "false positive", fn: "false negative", tp: "true positive", tn: "true negative" };

function node(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = String(text);
  return n;
}

function fmt(v) {
  return v === null || v === undefined ? "n/a" : Number(v).toFixed(3);
}

function metricsTable(before, after) {
  const t = node("table", "lmpj-table lmpj-errors-metrics");
  const head = node("tr");
  head.append(node("th"), node("th", "", "before"));
  if (after) head.append(node("th", "", "after"));
  t.append(head);
  const lines = [
    ["AUROC", (m) => `${fmt(m.auroc)} [${fmt(m.auroc_lo)}, ${fmt(m.auroc_hi)}]`],
    ["TPR@FPR", (m) => `${fmt(m.tpr_at_fpr)} [${fmt(m.tpr_lo)}, ${fmt(m.tpr_hi)}]`],
    ["TP / FP", (m) => `${m.confusion.tp} / ${m.confusion.fp}`],
    ["FN / TN", (m) => `${m.confusion.fn} / ${m.confusion.tn}`],
  ];
  for (const [name, f] of lines) {
    const tr = node("tr");
    tr.append(node("th", "", name), node("td", "", f(before)));
    if (after) tr.append(node("td", "", f(after)));
    t.append(tr);
  }
  return t;
}

function render({ model, el }) {
  el.classList.add("lmpj-widget", "lmpj-errors-widget");
  let kind = "all";
  let search = "";
  const send = (msg) => model.send(msg);

  const bar = node("div", "lmpj-errors-bar");
  const buttons = KINDS.map((k) => {
    const b = node("button", "lmpj-errors-filter", k);
    b.addEventListener("click", () => { kind = k; draw(); });
    return b;
  });
  const box = node("input", "lmpj-errors-search");
  box.placeholder = "search text";
  box.addEventListener("input", () => { search = box.value.toLowerCase(); draw(); });
  const refit = node("button", "lmpj-errors-refit", "refit on corrected labels");
  refit.addEventListener("click", () => send({ action: "refit" }));
  bar.append(...buttons, box, refit);
  const status = node("div", "lmpj-muted");
  const err = node("div", "lmpj-errors-error");
  const metrics = node("div");
  const detail = node("div", "lmpj-errors-detail");
  const table = node("table", "lmpj-table lmpj-errors-table");
  el.append(bar, status, err, metrics, detail, table);

  function draw() {
    const p = model.get("props") || {};
    const rows = (p.rows || []).filter((r) => {
      if (kind === "wrong" && !(r.kind === "fp" || r.kind === "fn")) return false;
      if ((kind === "fp" || kind === "fn") && r.kind !== kind) return false;
      if (kind === "uncertain" && !r.uncertain) return false;
      return !search || r.text.toLowerCase().includes(search);
    });
    buttons.forEach((b, i) => b.classList.toggle("lmpj-active", KINDS[i] === kind));
    status.textContent = `threshold ${fmt(p.threshold)} (${p.threshold_source}); ` +
      `${rows.length} of ${p.n} rows shown` + (model.get("busy") ? " · refitting…" : "");
    err.textContent = model.get("error") || "";
    metrics.replaceChildren();
    if (p.refit) {
      metrics.append(metricsTable(p.refit.before, p.refit.after));
      metrics.append(node("div", "lmpj-muted",
        `changed side: ${p.refit.changed.length} (${p.refit.changed.join(", ")}); ` +
        `forward passes: ${p.refit.forward_passes}; ` +
        (p.refit.in_sample ? "after is in-sample" : "held out")));
    } else if (p.metrics) {
      metrics.append(metricsTable(p.metrics, null));
    }
    table.replaceChildren();
    const head = node("tr");
    for (const c of ["#", "kind", "score", "label", ...(p.columns || []), "exclude", "text"]) {
      head.append(node("th", "", c));
    }
    table.append(head);
    for (const r of rows) {
      const tr = node("tr", `lmpj-err-${r.kind}` + (r.excluded ? " lmpj-excluded" : ""));
      tr.dataset.index = r.index;
      const label = node("button", "lmpj-errors-label", r.label);
      label.title = "click to flip the label";
      label.addEventListener("click", () => send({ action: "flip", index: r.index }));
      const ex = node("input");
      ex.type = "checkbox";
      ex.checked = r.excluded;
      ex.addEventListener("change", () =>
        send({ action: "exclude", index: r.index, excluded: ex.checked }));
      const text = node("td", "lmpj-errors-text", r.text);
      text.addEventListener("click", () => send({ action: "select", index: r.index }));
      const labelCell = node("td");
      labelCell.append(label);
      if (r.label !== r.original_label) labelCell.append(node("span", "lmpj-muted", ` (was ${r.original_label})`));
      tr.append(node("td", "", r.index), node("td", "", NAMES[r.kind] + (r.uncertain ? " · uncertain" : "")),
        node("td", "", fmt(r.score)), labelCell);
      for (const c of p.columns || []) tr.append(node("td", "", r.metadata[c]));
      const exCell = node("td");
      exCell.append(ex);
      tr.append(exCell, text);
      table.append(tr);
    }
  }

  function drawDetail() {
    const d = model.get("detail") || {};
    detail.replaceChildren();
    if (d.index === undefined) return;
    detail.append(node("div", "lmpj-title", `example ${d.index}`));
    const line = node("div", "lmpj-errors-tokens");
    (d.tokens || []).forEach((t, i) => {
      const s = d.scores[i];
      const span = node("span", "lmpj-tok", t);
      span.title = s === null ? "not scored" : `score ${fmt(s)}`;
      span.style.backgroundColor = s === null ? "#ddd" :
        `rgba(${Math.round(255 * s)}, 80, ${Math.round(255 * (1 - s))}, 0.35)`;
      line.append(span);
    });
    detail.append(line, node("div", "lmpj-muted", d.note || ""));
    detail.append(node("div", "lmpj-title", "nearest training examples (cosine)"));
    if (d.neighbours_note) detail.append(node("div", "lmpj-muted", d.neighbours_note));
    for (const n of d.neighbours || []) {
      detail.append(node("div", "", `${fmt(n.similarity)} · ${n.label} · ${n.prompt}`));
    }
  }

  const onProps = () => draw();
  model.on("change:props", onProps);
  model.on("change:error", onProps);
  model.on("change:busy", onProps);
  model.on("change:detail", drawDetail);
  draw();
  drawDetail();
  return () => {
    model.off("change:props", onProps);
    model.off("change:error", onProps);
    model.off("change:busy", onProps);
    model.off("change:detail", drawDetail);
  };
}

export default { render };
