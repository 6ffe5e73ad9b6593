/**
 * lmprobe-jupyter: draws every lmprobe_jupyter rich output from its saved JSON
 * (`application/vnd.lmprobe.v1+json`, built by `lmprobe_jupyter/presentation/payload.py`),
 * so a notebook reopened without a kernel shows its sweeps, batteries, token highlights,
 * scans, monitor transcripts, error analyses and robustness reports instead of "Error displaying widget: model not found".
 *
 * JupyterLab draws one mime type per output, the lowest rank first. ipywidgets registers
 * its widget-view renderer at rank -10 in each notebook; ours sits at -20, so it always
 * wins, and it mounts the live widget itself (through the notebook's own widget-view
 * renderer) whenever the kernel still holds the widget's model and the output is
 * trusted. Otherwise it keeps the read-only drawing, with a one-line note.
 *
 * Safety: the payload is data. Every string goes through `textContent` or an SVG
 * attribute set with `setAttribute`; nothing from the notebook is parsed as HTML.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Panel, Widget } from '@lumino/widgets';

export const MIME_TYPE = 'application/vnd.lmprobe.v1+json';
export const SCHEMA_VERSION = 1;
const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
/** Before ipywidgets' widget-view renderer (-10) */
export const RANK = -20;
/** Tokens drawn per output; a hand-made payload with more is cut with a note. */
const MAX_TOKENS = 20000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const LIVE_NOTE =
  'Read-only view drawn from the saved output; clicking needs a running kernel (re-run the cell).';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

// ------------------------------------------------------------------ DOM helpers

function el(
  tag: string,
  cls?: string,
  text?: string,
  parent?: Element
): HTMLElement {
  const node = document.createElement(tag);
  if (cls) {
    node.className = cls;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

function svg(
  tag: string,
  attrs: { [k: string]: string | number },
  parent?: Element
): SVGElement {
  const node = document.createElementNS(SVG_NS, tag);
  for (const k of Object.keys(attrs)) {
    node.setAttribute(k, String(attrs[k]));
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

function svgText(
  parent: Element,
  x: number,
  y: number,
  text: string,
  anchor = 'middle',
  cls = ''
): SVGElement {
  const t = svg('text', { x, y, 'text-anchor': anchor }, parent);
  if (cls) {
    t.setAttribute('class', cls);
  }
  t.textContent = text;
  return t;
}

function isNum(v: unknown): v is number {
  return typeof v === 'number' && isFinite(v);
}

/** Largest finite value (null if none); a loop, since Math.max(...a) overflows the
 * stack for the million-token arrays a hand-made payload can hold. */
function maxOf(values: unknown[]): number | null {
  let m: number | null = null;
  for (const v of values) {
    if (isNum(v) && (m === null || v > m)) {
      m = v;
    }
  }
  return m;
}

function minOf(values: unknown[]): number | null {
  const m = maxOf(values.map(v => (isNum(v) ? -v : v)));
  return m === null ? null : -m;
}

function fmt(v: unknown, digits = 3): string {
  return isNum(v) ? v.toFixed(digits) : 'n/a';
}

function need(data: Json, field: string, check: (v: unknown) => boolean, what: string): Json {
  if (data === null || typeof data !== 'object' || !(field in data)) {
    throw new Error(`the saved output has no '${field}' field`);
  }
  if (!check(data[field])) {
    throw new Error(`'${field}' is not ${what}`);
  }
  return data[field];
}

const isArray = (v: unknown): boolean => Array.isArray(v);

// ------------------------------------------------------------------ colours (as Python)

const NEG = [0x21, 0x66, 0xac];
const MID = [0xff, 0xff, 0xff];
const POS = [0xb2, 0x18, 0x2b];
const NAN_COLOR = '#e0e0e0';

function hex(rgb: number[]): string {
  return '#' + rgb.map(v => v.toString(16).padStart(2, '0')).join('');
}

function mix(a: number[], b: number[], t: number): number[] {
  return a.map((x, i) => Math.floor(x + (b[i] - x) * t + 0.5));
}

/** The same blue-white-red scale as `presentation.score_color`. */
export function scoreColor(score: unknown, vmin = 0, vmax = 1): string {
  if (!isNum(score)) {
    return NAN_COLOR;
  }
  let t = (score - vmin) / (vmax - vmin);
  t = Math.min(1, Math.max(0, t));
  return t >= 0.5 ? hex(mix(MID, POS, (t - 0.5) * 2)) : hex(mix(MID, NEG, (0.5 - t) * 2));
}

function luminance(color: string): number {
  const c = [1, 3, 5].map(i => parseInt(color.slice(i, i + 2), 16) / 255);
  const lin = c.map(s => (s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4)));
  return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
}

/** Black or white, whichever contrasts more with `background` (as `text_color`). */
export function textColor(background: string): string {
  const l = luminance(background);
  const dark = (l + 0.05) / 0.05;
  const light = 1.05 / (l + 0.05);
  return light > dark ? '#ffffff' : '#000000';
}

function visibleToken(token: string): string {
  return token.replace(/\r\n/g, '\n').replace(/\n/g, '\u21b5\n');
}

// ------------------------------------------------------------------ kinds

type Drawer = (root: HTMLElement, data: Json) => void;

function drawSweep(root: HTMLElement, data: Json): void {
  const layers: number[] = need(data, 'layers', isArray, 'a list of layers');
  if (layers.length === 0) {
    throw new Error("'layers' is empty");
  }
  const train: (number | null)[] | null = data.train_scores ?? null;
  const test: (number | null)[] | null = data.test_scores ?? null;
  if (!train && !test) {
    throw new Error('the saved sweep has neither train_scores nor test_scores');
  }
  const metric = String(data.metric ?? 'score');
  const best = isNum(data.best_layer) ? data.best_layer : null;
  const by = data.best_by === 'cv' ? 'CV' : data.best_by === 'test' ? 'test' : null;

  const head = el('div', 'lmpx-legend', undefined, root);
  if (train) {
    const s = el('span', '', undefined, head);
    el('span', 'lmpx-swatch', undefined, s).style.background = '#1f77b4';
    s.appendChild(document.createTextNode('train (CV)'));
  }
  if (test) {
    const s = el('span', '', undefined, head);
    el('span', 'lmpx-swatch', undefined, s).style.background = '#d62728';
    s.appendChild(document.createTextNode('test'));
  }
  if (best !== null) {
    const i = layers.indexOf(best);
    let text = `best layer ${best}`;
    if (by === 'CV') {
      text += ` (chosen by CV ${fmt(train?.[i])}; test ${fmt(test?.[i])})`;
    } else if (by === 'test') {
      text += ` (chosen by test ${fmt(test?.[i])})`;
    }
    // the label is theme-coloured text (green on white is 3.7:1); the swatch is green
    const s = el('span', '', undefined, head);
    el('span', 'lmpx-swatch', undefined, s).style.background = '#1a9850';
    el('span', 'lmpx-best-label', text, s);
  }

  const W = 520;
  const H = 280;
  const [left, right, top, bottom] = [52, 16, 20, 42];
  const pw = W - left - right;
  const ph = H - top - bottom;
  const values = [...(train ?? []), ...(test ?? [])];
  const ylo = Math.min(0, minOf(values) ?? 0);
  const yhi = Math.max(1, maxOf(values) ?? 1);
  const lmin = minOf(layers) ?? 0;
  const lmax = maxOf(layers) ?? 0;
  const x = (l: number): number =>
    left + (lmax === lmin ? pw / 2 : ((l - lmin) / (lmax - lmin)) * pw);
  const y = (v: number): number => top + ph - ((v - ylo) / (yhi - ylo || 1)) * ph;

  const chart = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img' }, root);
  chart.setAttribute('class', 'lmpx-chart');
  svg('title', {}, chart).textContent = `${metric} per layer`;
  for (let k = 0; k <= 4; k++) {
    const v = ylo + ((yhi - ylo) * k) / 4;
    svg('line', { x1: left, x2: left + pw, y1: y(v), y2: y(v), class: 'lmpx-grid' }, chart);
    svgText(chart, left - 6, y(v) + 4, v.toFixed(2), 'end', 'lmpx-ytick');
  }
  svg('path', { d: `M${left},${top}V${top + ph}H${left + pw}`, class: 'lmpx-axis' }, chart);
  const step = Math.max(1, Math.ceil(layers.length / 12));
  layers.forEach((l, i) => {
    if (i % step === 0 || i === layers.length - 1) {
      svg('line', { x1: x(l), x2: x(l), y1: top + ph, y2: top + ph + 4, class: 'lmpx-axis' }, chart);
      svgText(chart, x(l), top + ph + 16, String(l), 'middle', 'lmpx-xtick');
    }
  });
  svgText(chart, left + pw / 2, H - 6, 'layer', 'middle', 'lmpx-xlabel');
  const yl = svgText(chart, 14, top + ph / 2, metric, 'middle', 'lmpx-ylabel');
  yl.setAttribute('transform', `rotate(-90 14 ${top + ph / 2})`);
  if (isNum(data.selected_layer)) {
    const sx = x(data.selected_layer);
    svg('line', { x1: sx, x2: sx, y1: top, y2: top + ph, class: 'lmpx-selected' }, chart);
  }
  if (best !== null) {
    svg('line', { x1: x(best), x2: x(best), y1: top, y2: top + ph, class: 'lmpx-best' }, chart);
  }
  const readout = el('div', 'lmpx-readout lmpx-muted', 'hover a point for its values', root);
  const series: [string, (number | null)[] | null][] = [
    ['train', train],
    ['test', test]
  ];
  for (const [name, vals] of series) {
    if (!vals) {
      continue;
    }
    let d = '';
    vals.forEach((v, i) => {
      d += isNum(v) ? `${d && !d.endsWith(' ') ? 'L' : 'M'}${x(layers[i])},${y(v)}` : ' ';
    });
    svg('path', { d: d.trim(), class: `lmpx-${name} lmpx-line` }, chart);
    vals.forEach((v, i) => {
      if (!isNum(v)) {
        return;
      }
      const c = svg('circle', { cx: x(layers[i]), cy: y(v), r: 4, class: `lmpx-${name} lmpx-point` }, chart);
      c.setAttribute('data-layer', String(layers[i]));
      const label = `layer ${layers[i]}: ${name === 'train' ? 'train (CV)' : 'test'} ${metric} ${fmt(v)}`;
      svg('title', {}, c).textContent = label;
      c.addEventListener('mouseenter', () => {
        readout.textContent = label;
      });
      if (layers[i] === best) {
        svg('circle', { cx: x(layers[i]), cy: y(v), r: 7, class: 'lmpx-ring' }, chart);
      }
    });
  }
}

function drawBattery(root: HTMLElement, data: Json): void {
  const rows: Json[] = need(data, 'rows', isArray, 'a list of rows');
  const metric = String(data.metric ?? 'score');
  el('div', 'lmpx-title', `baseline battery: ${metric} on the test set`, root);
  if (rows.length === 0) {
    el('div', 'lmpx-muted', 'no baselines', root);
    return;
  }
  const hi = Math.max(1, maxOf(rows.map(r => r.score)) ?? 1);
  const grid = el('div', 'lmpx-bars', undefined, root);
  for (const r of rows) {
    el('span', r.is_probe ? 'lmpx-title' : '', String(r.name ?? '?'), grid);
    const track = el('div', '', undefined, grid);
    const bar = el('div', 'lmpx-bar' + (r.is_probe ? ' lmpx-probe' : ''), undefined, track);
    bar.style.width = `${isNum(r.score) ? Math.max(0, (r.score / hi) * 100) : 0}%`;
    const times = isNum(r.fit_s) ? ` · fit ${r.fit_s.toFixed(2)} s` : '';
    el('span', 'lmpx-muted', `${fmt(r.score)}${times}`, grid);
  }
}

function drawMetrics(root: HTMLElement, data: Json): void {
  const rows: Json[] = need(data, 'rows', isArray, 'a list of rows');
  el('div', 'lmpx-title', String(data.title ?? 'evaluation'), root);
  const wrap = el('div', 'lmpx-legend', undefined, root);
  const table = el('table', '', undefined, wrap);
  for (const r of rows) {
    const tr = el('tr', '', undefined, table);
    el('th', '', String(r.name), tr);
    el('td', 'lmpx-num', r.text !== null && r.text !== undefined ? String(r.text) : fmt(r.value, 4), tr);
  }
  const roc = data.roc;
  if (roc && Array.isArray(roc.fpr) && Array.isArray(roc.tpr)) {
    const S = 220;
    const pad = 30;
    const chart = svg('svg', { width: S + pad + 10, height: S + pad + 10 }, wrap);
    chart.setAttribute('class', 'lmpx-roc');
    svg('path', { d: `M${pad},10V${S + 10}H${S + pad}`, class: 'lmpx-axis' }, chart);
    svg('line', { x1: pad, y1: S + 10, x2: S + pad, y2: 10, class: 'lmpx-grid' }, chart);
    let d = '';
    roc.fpr.forEach((f: unknown, i: number) => {
      const t = roc.tpr[i];
      if (isNum(f) && isNum(t)) {
        d += `${d ? 'L' : 'M'}${pad + f * S},${10 + S - t * S}`;
      }
    });
    svg('path', { d, class: 'lmpx-test' }, chart);
    svgText(chart, pad + S / 2, S + 36, 'false positive rate');
    const t = svgText(chart, 10, 10 + S / 2, 'true positive rate');
    t.setAttribute('transform', `rotate(-90 10 ${10 + S / 2})`);
  }
}

function tokenSpans(
  parent: HTMLElement,
  tokens: unknown[],
  scores: unknown[],
  threshold: number | null,
  vmin: number,
  vmax: number,
  flaggedAt: number | null = null
): void {
  const frag = document.createDocumentFragment();
  tokens.forEach((tok, i) => {
    const s = scores[i];
    const bg = scoreColor(s, vmin, vmax);
    const span = document.createElement('span');
    let cls = 'lmpx-tok';
    if (!isNum(s)) {
      cls += ' lmpx-nan';
    } else if (threshold !== null && s > threshold) {
      cls += ' lmpx-over';
    }
    if (i === flaggedAt) {
      cls += ' lmpx-flag';
    }
    span.className = cls;
    span.style.backgroundColor = bg;
    span.style.color = textColor(bg);
    const text = String(tok);
    span.textContent = visibleToken(text);
    span.title = `${JSON.stringify(text)} score ${isNum(s) ? s.toFixed(3) : 'not scored'}`;
    frag.appendChild(span);
  });
  parent.appendChild(frag);
}

function legend(root: HTMLElement, vmin: number, vmax: number, threshold: number | null): void {
  const lg = el('div', 'lmpx-legend lmpx-muted', undefined, root);
  lg.appendChild(document.createTextNode('score'));
  el('span', '', vmin.toFixed(2), lg);
  el('span', 'lmpx-colorbar', undefined, lg);
  el('span', '', vmax.toFixed(2), lg);
  if (threshold !== null) {
    el('span', '', `outlined: over threshold ${threshold.toFixed(2)}`, lg);
  }
  const grey = el('span', 'lmpx-tok lmpx-nan', 'grey', lg);
  grey.style.backgroundColor = NAN_COLOR;
  grey.style.color = '#000000';
  lg.appendChild(document.createTextNode('not scored (attention sink, special tokens)'));
}

function drawTokens(root: HTMLElement, data: Json): void {
  const texts: Json[] = need(data, 'texts', isArray, 'a list of texts');
  const vmin = isNum(data.vmin) ? data.vmin : 0;
  const vmax = isNum(data.vmax) && data.vmax > vmin ? data.vmax : vmin + 1;
  const threshold = isNum(data.threshold) ? data.threshold : null;
  legend(root, vmin, vmax, threshold);
  if (data.note) {
    el('div', 'lmpx-muted', String(data.note), root);
  }
  let budget = MAX_TOKENS;
  let total = 0;
  texts.forEach((t, i) => {
    const tokens: unknown[] = need(t, 'tokens', isArray, 'a list of tokens');
    const scores: unknown[] = need(t, 'scores', isArray, 'a list of scores');
    total += tokens.length;
    if (budget <= 0) {
      return;
    }
    const n = Math.min(tokens.length, budget);
    budget -= n;
    const max = maxOf(scores);
    let over = 0;
    for (const s of scores) {
      if (isNum(s) && threshold !== null && s > threshold) {
        over++;
      }
    }
    const block = el('div', 'lmpx-text', undefined, root);
    block.setAttribute('data-index', String(i));
    el(
      'div',
      'lmpx-texthead lmpx-muted',
      `text ${i + 1} · max ${fmt(max)} · ${over} of ${t.n ?? tokens.length} tokens over threshold`,
      block
    );
    const body = el('div', 'lmpx-tokbody', undefined, block);
    tokenSpans(body, tokens.slice(0, n), scores.slice(0, n), threshold, vmin, vmax);
  });
  if (total > MAX_TOKENS) {
    el('div', 'lmpx-note', `showing the first ${MAX_TOKENS} of ${total} tokens`, root);
  }
  if (texts.length === 0) {
    el('div', 'lmpx-muted', 'no texts', root);
  }
}

function drawMonitor(root: HTMLElement, data: Json): void {
  const tokens: unknown[] = need(data, 'tokens', isArray, 'a list of tokens');
  const scores: unknown[] = need(data, 'scores', isArray, 'a list of scores');
  const threshold = isNum(data.threshold) ? data.threshold : 0.5;
  const flagged = isNum(data.flagged_at) ? data.flagged_at : null;
  const head = `${data.n ?? tokens.length} tokens · max score ${fmt(maxOf(scores))} · threshold ${fmt(threshold)} · ${String(data.status ?? 'done')}`;
  el('div', 'lmpx-muted', head, root);
  if (flagged !== null) {
    el('div', 'lmpx-banner', `flagged at token ${flagged + 1}`, root);
  }
  legend(root, 0, 1, threshold);
  const pt: unknown[] = Array.isArray(data.prompt_tokens) ? data.prompt_tokens : [];
  if (pt.length) {
    const det = el('details', '', undefined, root);
    el('summary', 'lmpx-muted', `prompt (${pt.length} tokens${data.chat_template ? ', chat template' : ''})`, det);
    const body = el('div', 'lmpx-tokbody', undefined, det);
    tokenSpans(body, pt.slice(0, MAX_TOKENS), data.prompt_scores ?? [], threshold, 0, 1);
  }
  const body = el('div', 'lmpx-tokbody', undefined, root);
  tokenSpans(body, tokens.slice(0, MAX_TOKENS), scores, threshold, 0, 1, flagged);
  if (tokens.length > MAX_TOKENS) {
    el('div', 'lmpx-note', `showing the first ${MAX_TOKENS} of ${tokens.length} tokens`, root);
  }
}

function drawScan(root: HTMLElement, data: Json): void {
  const png = String(need(data, 'png', v => typeof v === 'string', 'a PNG data URI'));
  if (!png.startsWith('data:image/png;base64,')) {
    throw new Error("'png' is not a data:image/png;base64 URI (nothing is fetched)");
  }
  const tokens: unknown[] = need(data, 'tokens', isArray, 'a list of tokens');
  const nLayers = Number(need(data, 'n_layers', isNum, 'a number'));
  const cell = 14;
  const top: Json[] = Array.isArray(data.top) ? data.top : [];
  el('div', 'lmpx-muted', `${String(data.signal ?? '')}: top 3 components as RGB, layers 0 (top) to ${nLayers - 1}, tokens left to right`, root);
  const wrap = el('div', 'lmpx-scan', undefined, root);
  const img = document.createElement('img');
  img.src = png;
  img.width = tokens.length * cell;
  img.height = nLayers * cell;
  img.alt = 'tokens x layers picture';
  wrap.appendChild(img);
  const row = el('div', 'lmpx-scan-tokens', undefined, wrap);
  for (const t of tokens) {
    el('span', '', String(t).trim() || '·', row).style.width = `${cell}px`;
  }
  const readout = el('div', 'lmpx-readout lmpx-muted', 'hover the picture for token, layer, components', root);
  img.addEventListener('mousemove', (ev: MouseEvent) => {
    const r = img.getBoundingClientRect();
    const ti = Math.floor(((ev.clientX - r.left) / r.width) * tokens.length);
    const li = Math.floor(((ev.clientY - r.top) / r.height) * nLayers);
    if (ti < 0 || ti >= tokens.length || li < 0 || li >= nLayers) {
      return;
    }
    const comps = top?.[li]?.[ti];
    readout.textContent = `token ${ti} ${JSON.stringify(String(tokens[ti]))} · layer ${li}${Array.isArray(comps) ? ' · ' + comps.map((c: unknown) => fmt(c)).join(', ') : ''}`;
  });
}

function drawTable(root: HTMLElement, data: Json): void {
  const rows: Json[] = need(data, 'rows', isArray, 'a list of rows');
  if (data.title) {
    el('div', 'lmpx-title', String(data.title), root);
  }
  const table = el('table', '', undefined, root);
  const columns: unknown[] = Array.isArray(data.columns) ? data.columns : [];
  if (columns.length) {
    const tr = el('tr', '', undefined, el('thead', '', undefined, table));
    for (const c of columns) {
      el('th', '', String(c), tr);
    }
  }
  const tbody = el('tbody', '', undefined, table);
  for (const r of rows) {
    const tr = el('tr', '', undefined, tbody);
    for (const c of Array.isArray(r) ? r : [r]) {
      el('td', '', String(c), tr);
    }
  }
  if (data.note) {
    el('div', 'lmpx-muted', String(data.note), root);
  }
}

/** "0.912 [0.850, 0.960]" from a value and its interval (no interval: the value). */
function withCi(v: unknown, lo: unknown, hi: unknown): string {
  if (!isNum(v)) {
    return 'n/a';
  }
  return isNum(lo) && isNum(hi) ? `${fmt(v)} [${fmt(lo)}, ${fmt(hi)}]` : fmt(v);
}

const KIND_NAMES: { [k: string]: string } = {
  fp: 'false positive',
  fn: 'false negative',
  tp: 'true positive',
  tn: 'true negative'
};

function metricsTable(root: HTMLElement, cols: [string, Json][]): void {
  const table = el('table', 'lmpx-errors-metrics', undefined, root);
  const head = el('tr', '', undefined, table);
  el('th', '', '', head);
  for (const [name] of cols) {
    el('th', '', name, head);
  }
  const lines: [string, (m: Json) => string][] = [
    ['AUROC', m => withCi(m.auroc, m.auroc_lo, m.auroc_hi)],
    [`TPR@${isNum(cols[0][1].fpr) ? cols[0][1].fpr : 0.01} FPR`, m => withCi(m.tpr_at_fpr, m.tpr_lo, m.tpr_hi)],
    ['TP / FP', m => `${m.confusion?.tp ?? '?'} / ${m.confusion?.fp ?? '?'}`],
    ['FN / TN', m => `${m.confusion?.fn ?? '?'} / ${m.confusion?.tn ?? '?'}`]
  ];
  for (const [name, f] of lines) {
    const tr = el('tr', '', undefined, table);
    el('th', '', name, tr);
    for (const [, m] of cols) {
      el('td', 'lmpx-num', m ? f(m) : 'n/a', tr);
    }
  }
}

function highlightBlock(parent: HTMLElement, hl: Json, threshold: number | null): void {
  if (!hl || !Array.isArray(hl.tokens) || !Array.isArray(hl.scores)) {
    return;
  }
  const body = el('div', 'lmpx-tokbody', undefined, parent);
  tokenSpans(body, hl.tokens, hl.scores, threshold, 0, 1);
  if (isNum(hl.n) && hl.n > hl.tokens.length) {
    el('div', 'lmpx-note', `showing the first ${hl.tokens.length} of ${hl.n} tokens`, parent);
  }
}

function drawErrors(root: HTMLElement, data: Json): void {
  const rows: Json[] = need(data, 'rows', isArray, 'a list of rows');
  const threshold = isNum(data.threshold) ? data.threshold : null;
  let fp = 0;
  let fn = 0;
  for (const r of rows) {
    fp += r.kind === 'fp' ? 1 : 0;
    fn += r.kind === 'fn' ? 1 : 0;
  }
  el(
    'div',
    'lmpx-title',
    `Error analysis: ${data.n ?? rows.length} examples, threshold ${fmt(threshold)} (${String(data.threshold_source ?? '')}), ${fp} false positives, ${fn} false negatives`,
    root
  );
  el('div', 'lmpx-note', 'Relabeling, excluding and refitting need a running kernel (re-run the cell).', root);
  if (data.metrics) {
    const cols: [string, Json][] = [['now', data.metrics]];
    if (data.refit && data.refit.before && data.refit.after) {
      cols.splice(0, 1, ['before refit', data.refit.before], ['after refit', data.refit.after]);
    }
    metricsTable(root, cols);
    if (data.refit && Array.isArray(data.refit.changed)) {
      el(
        'div',
        'lmpx-muted',
        `changed side: ${data.refit.changed.length}; forward passes ${String(data.refit.forward_passes ?? 0)}`,
        root
      );
    }
  }
  const table = el('table', 'lmpx-errors-table', undefined, root);
  const head = el('tr', '', undefined, el('thead', '', undefined, table));
  for (const c of ['#', 'kind', 'score', 'label', 'text']) {
    el('th', '', c, head);
  }
  const tbody = el('tbody', '', undefined, table);
  for (const r of rows) {
    const tr = el('tr', r.excluded ? 'lmpx-excluded' : '', undefined, tbody);
    tr.setAttribute('data-index', String(r.index));
    el('td', 'lmpx-num', String(r.index), tr);
    el('td', '', (KIND_NAMES[String(r.kind)] ?? String(r.kind)) + (r.uncertain ? ' · uncertain' : '') + (r.excluded ? ' · excluded' : ''), tr);
    el('td', 'lmpx-num', fmt(r.score), tr);
    const relabeled = r.original_label !== undefined && String(r.original_label) !== String(r.label);
    el('td', '', String(r.label) + (relabeled ? ` (was ${String(r.original_label)})` : ''), tr);
    const cell = el('td', 'lmpx-errors-text', undefined, tr);
    if (r.highlight) {
      highlightBlock(cell, r.highlight, threshold);
    } else {
      cell.textContent = String(r.text ?? '');
    }
  }
  if (data.note) {
    el('div', 'lmpx-muted', String(data.note), root);
  }
}

function drawRobustness(root: HTMLElement, data: Json): void {
  const rows: Json[] = need(data, 'rows', isArray, 'a list of transforms');
  const fpr = isNum(data.fpr) ? data.fpr : 0.01;
  el('div', 'lmpx-title', `Robustness: AUROC per transform (95% bootstrap CI), TPR at ${fpr * 100}% FPR`, root);
  // a dot per transform with its interval; the clean AUROC as a dashed line
  const rowH = 22;
  const left = 140;
  const width = 320;
  const h = rows.length * rowH + 30;
  const chart = svg('svg', { width: left + width + 20, height: h, class: 'lmpx-robust-svg' }, root);
  const x = (v: number): number => left + Math.min(1, Math.max(0, v)) * width;
  svg('path', { d: `M${left},${h - 20}H${left + width}`, class: 'lmpx-axis' }, chart);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg('line', { x1: x(t), y1: 4, x2: x(t), y2: h - 20, class: 'lmpx-grid' }, chart);
    svgText(chart, x(t), h - 6, t.toFixed(2));
  }
  const clean = rows.find(r => r.transform === 'clean');
  if (clean && isNum(clean.auroc)) {
    svg('line', { x1: x(clean.auroc), y1: 4, x2: x(clean.auroc), y2: h - 20, class: 'lmpx-best' }, chart);
  }
  rows.forEach((r, i) => {
    const y = 4 + i * rowH + rowH / 2;
    svgText(chart, left - 8, y + 4, String(r.transform), 'end');
    if (isNum(r.auroc_lo) && isNum(r.auroc_hi)) {
      svg('line', { x1: x(r.auroc_lo), y1: y, x2: x(r.auroc_hi), y2: y, class: 'lmpx-axis' }, chart);
    }
    if (isNum(r.auroc)) {
      const dot = svg('circle', { cx: x(r.auroc), cy: y, r: 4, class: 'lmpx-test' }, chart);
      const title = svg('title', {}, dot);
      title.textContent = `${String(r.transform)}: AUROC ${withCi(r.auroc, r.auroc_lo, r.auroc_hi)}`;
    }
  });
  const table = el('table', 'lmpx-robust-table', undefined, root);
  const head = el('tr', '', undefined, el('thead', '', undefined, table));
  for (const c of ['transform', 'family', 'n', 'AUROC [95% CI]', `TPR@${fpr} FPR [95% CI]`, 'AUROC drop']) {
    el('th', '', c, head);
  }
  const tbody = el('tbody', '', undefined, table);
  for (const r of rows) {
    const tr = el('tr', '', undefined, tbody);
    el('td', '', String(r.transform), tr);
    el('td', 'lmpx-muted', String(r.family ?? ''), tr);
    el('td', 'lmpx-num', String(r.n ?? ''), tr);
    el('td', 'lmpx-num', withCi(r.auroc, r.auroc_lo, r.auroc_hi), tr);
    el('td', 'lmpx-num', withCi(r.tpr_at_fpr, r.tpr_lo, r.tpr_hi), tr);
    el('td', 'lmpx-num', r.transform === 'clean' ? '' : (isNum(r.auroc_drop) ? (r.auroc_drop >= 0 ? '+' : '') + r.auroc_drop.toFixed(3) : 'n/a'), tr);
  }
  const worst: Json[] = Array.isArray(data.worst) ? data.worst : [];
  if (worst.length) {
    el('div', 'lmpx-title', 'Worst examples', root);
    for (const w of worst) {
      const block = el('div', 'lmpx-text', undefined, root);
      el(
        'div',
        'lmpx-texthead lmpx-muted',
        `${String(w.transform)} · label ${String(w.label)} · score ${fmt(w.score)} (clean ${fmt(w.clean_score)})`,
        block
      );
      if (w.highlight) {
        highlightBlock(block, w.highlight, null);
      } else {
        el('div', 'lmpx-tokbody', String(w.text ?? ''), block);
      }
    }
  }
}

export const DRAWERS: { [kind: string]: Drawer } = {
  sweep: drawSweep,
  battery: drawBattery,
  metrics: drawMetrics,
  tokens: drawTokens,
  monitor: drawMonitor,
  scan: drawScan,
  table: drawTable,
  errors: drawErrors,
  robustness: drawRobustness
};

function plainCopy(root: HTMLElement, bundle: Json): void {
  const text = bundle?.['text/plain'];
  if (text !== undefined) {
    el('pre', 'lmpx-plain', Array.isArray(text) ? text.join('') : String(text), root);
  }
}

/** Draw a payload into a fresh `.lmpx` element; a bad payload gives an inline message. */
export function drawPayload(payload: Json, bundle: Json): HTMLElement {
  const kind = payload && typeof payload === 'object' ? payload.kind : undefined;
  const root = el('div', `lmpx lmpx-kind-${String(kind ?? 'invalid').replace(/[^a-z_]/g, '')}`);
  root.setAttribute('data-kind', String(kind ?? 'invalid'));
  if (!payload || typeof payload !== 'object') {
    el('div', 'lmpx-error', 'This lmprobe output has no readable data (expected a JSON object).', root);
    plainCopy(root, bundle);
    return root;
  }
  if (payload.version !== SCHEMA_VERSION) {
    el(
      'div',
      'lmpx-error',
      `This lmprobe output uses schema version ${String(payload.version)}; this extension reads version ${SCHEMA_VERSION}. Upgrade lmprobe-jupyter; the text copy follows.`,
      root
    );
    plainCopy(root, bundle);
    return root;
  }
  const draw = DRAWERS[String(kind)];
  if (!draw) {
    el('div', 'lmpx-error', `This extension cannot draw lmprobe outputs of kind '${String(kind)}' yet; the text copy follows.`, root);
    plainCopy(root, bundle);
    return root;
  }
  if (Array.isArray(payload.notes)) {
    for (const n of payload.notes) {
      el('div', 'lmpx-note', String(n), root);
    }
  }
  const body = el('div', 'lmpx-body', undefined, root);
  try {
    draw(body, payload.data ?? {});
  } catch (err) {
    body.textContent = '';
    el('div', 'lmpx-error', `Could not draw this lmprobe ${String(kind)} output: ${(err as Error).message}.`, body);
    plainCopy(body, bundle);
  }
  return root;
}

// ------------------------------------------------------------------ the renderer

/** True once the delegated widget-view renderer shows a real view (not its messages). */
function isLive(node: HTMLElement): boolean {
  const text = node.textContent ?? '';
  if (text.includes('Error displaying widget') || text.startsWith('Loading widget')) {
    return false;
  }
  return node.children.length > 0;
}

export class LmprobeRenderer extends Panel implements IRenderMime.IRenderer {
  constructor(
    private _options: IRenderMime.IRendererOptions,
    private _registry: IRenderMimeRegistry | null
  ) {
    super();
    this.addClass('lmpx-output');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this._observer?.disconnect();
    this._stopTimer();
    this._live = null;
    this.removeClass('lmpx-live');
    while (this.widgets.length) {
      this.widgets[0].dispose();
    }
    const bundle = model.data as Json;
    const drawing = new Widget({ node: drawPayload(bundle[this._options.mimeType], bundle) });
    this.addWidget(drawing);
    if (!(WIDGET_MIME in bundle)) {
      return;
    }
    const note = document.createElement('div');
    note.className = 'lmpx-note lmpx-kernel-note';
    note.textContent = model.trusted
      ? LIVE_NOTE
      : 'Read-only view: this notebook is not trusted, so its widgets stay off.';
    drawing.node.insertBefore(note, drawing.node.firstChild);
    // a live widget runs the notebook's own code: only for trusted outputs
    const registry = this._registry;
    if (!model.trusted || !registry || !registry.getFactory(WIDGET_MIME)) {
      return;
    }
    this._mountLive(model, registry, drawing);
    // Outputs drawn before the kernel connects get ipywidgets' placeholder renderer, which
    // it only upgrades when the renderer is a direct child of the output (ours is nested):
    // when the notebook's widget factory changes, mount again with the new one.
    let tries = 0;
    this._timer = window.setInterval(() => {
      tries++;
      if (this.isDisposed || this.hasClass('lmpx-live') || tries > 120) {
        this._stopTimer();
      } else if (registry.getFactory(WIDGET_MIME) !== this._factory) {
        this._mountLive(model, registry, drawing);
      }
    }, 500);
  }

  private _mountLive(
    model: IRenderMime.IMimeModel,
    registry: IRenderMimeRegistry,
    drawing: Widget
  ): void {
    this._observer?.disconnect();
    this._live?.dispose();
    this._factory = registry.getFactory(WIDGET_MIME);
    const live = registry.createRenderer(WIDGET_MIME);
    this._live = live;
    live.addClass('lmpx-hidden');
    this.addWidget(live);
    const check = (): void => {
      if (!live.isDisposed && isLive(live.node)) {
        live.removeClass('lmpx-hidden');
        drawing.addClass('lmpx-hidden');
        this.addClass('lmpx-live');
        this._stopTimer();
      }
    };
    // the widget-view renderer fills in later when the manager restores the model
    this._observer = new MutationObserver(check);
    this._observer.observe(live.node, { childList: true, characterData: true, subtree: false });
    // not awaited: ipywidgets' placeholder renderer waits for a manager that may never come
    live.renderModel(model).then(check, err =>
      console.warn('lmprobe: the live widget did not mount', err)
    );
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  dispose(): void {
    this._observer?.disconnect();
    this._stopTimer();
    super.dispose();
  }

  private _observer: MutationObserver | null = null;
  private _live: IRenderMime.IRenderer | null = null;
  private _factory: IRenderMime.IRendererFactory | undefined = undefined;
  private _timer: number | null = null;
}

function factory(registry: IRenderMimeRegistry | null): IRenderMime.IRendererFactory {
  return {
    safe: true, // draws data only; the live widget is mounted for trusted outputs only
    mimeTypes: [MIME_TYPE],
    defaultRank: RANK,
    createRenderer: options => new LmprobeRenderer(options, registry)
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'lmprobe-jupyter:renderer',
  description: 'Draws lmprobe_jupyter outputs from their saved JSON, with or without a kernel.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [INotebookTracker],
  activate: (
    _app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    tracker: INotebookTracker | null
  ) => {
    rendermime.addFactory(factory(null), RANK);
    if (tracker) {
      // each notebook has its own registry (a clone) where ipywidgets puts its renderer
      const attach = (panel: { content: { rendermime: IRenderMimeRegistry } }): void => {
        const reg = panel.content.rendermime;
        reg.addFactory(factory(reg), RANK);
      };
      tracker.forEach(attach);
      tracker.widgetAdded.connect((_sender, panel) => attach(panel));
    }
  }
};

export default plugin;
