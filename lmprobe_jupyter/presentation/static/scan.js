// Sample-scan widget view: the tokens x layers PNG (one pixel per cell, scaled up here)
// with a hover read-out of the token, the layer and its top three components. Row 0 is
// the model's surprise at each token.

function fmt(v) {
  return v === null || v === undefined ? "n/a" : Number(v).toFixed(3);
}

function render({ model, el }) {
  el.classList.add("lmpj-widget", "lmpj-scan");
  const title = document.createElement("div");
  title.className = "lmpj-scan-title";
  const frame = document.createElement("div");
  frame.className = "lmpj-scan-frame";
  const img = document.createElement("img");
  const tip = document.createElement("div");
  tip.className = "lmpj-scan-tip";
  const tokens = document.createElement("div");
  tokens.className = "lmpj-scan-tokens";
  frame.appendChild(img);
  frame.appendChild(tip);
  el.appendChild(title);
  el.appendChild(frame);
  el.appendChild(tokens);

  const draw = () => {
    const p = model.get("props");
    const cell = model.get("cell");
    const n = p.tokens.length;
    title.textContent = `${p.signal}: top 3 components as RGB; row 0 = surprise, then layers 0..${p.n_layers - 1}`;
    img.src = p.png;
    img.width = cell * n;
    img.height = cell * (p.n_layers + 1);
    img.alt = `sample scan of ${p.prompt.slice(0, 80)}`;
    tokens.replaceChildren(
      ...p.tokens.map((t) => {
        const s = document.createElement("span");
        s.style.width = `${cell}px`;
        s.textContent = t.trim() || "\u00b7";
        s.title = t;
        return s;
      }),
    );
  };

  const onMove = (ev) => {
    const p = model.get("props");
    const cell = model.get("cell");
    const rect = img.getBoundingClientRect();
    const col = Math.floor((ev.clientX - rect.left) / cell);
    const row = Math.floor((ev.clientY - rect.top) / cell);
    if (col < 0 || col >= p.tokens.length || row < 0 || row > p.n_layers) {
      tip.style.display = "none";
      return;
    }
    const token = JSON.stringify(p.tokens[col]);
    let text;
    if (row === 0) {
      text = `token ${token} (#${col})\nsurprise ${fmt(p.surprise[col])} nats`;
    } else {
      const layer = row - 1;
      const [a, b, c] = p.top[layer][col];
      text = `token ${token} (#${col})\nlayer ${layer}\nPC1 ${fmt(a)}  PC2 ${fmt(b)}  PC3 ${fmt(c)}`;
    }
    tip.textContent = text;
    tip.style.left = `${ev.clientX - rect.left + 12}px`;
    tip.style.top = `${ev.clientY - rect.top + 12}px`;
    tip.style.display = "block";
  };
  const onLeave = () => {
    tip.style.display = "none";
  };

  img.addEventListener("mousemove", onMove);
  img.addEventListener("mouseleave", onLeave);
  model.on("change:props", draw);
  model.on("change:cell", draw);
  draw();
  return () => {
    img.removeEventListener("mousemove", onMove);
    img.removeEventListener("mouseleave", onLeave);
    model.off("change:props", draw);
    model.off("change:cell", draw);
  };
}

export default { render };
