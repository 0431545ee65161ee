// Small DOM helpers shared by the pages: element building, number formats, tables, toasts.

/** el('div', {class: 'x', onclick: f}, 'text', child) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function num(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 1 });
}

export function pct(x) {
  return x === undefined || x === null ? '–' : `${(x * 100).toFixed(1)} %`;
}

export function ms(x) {
  return x === undefined || x === null ? '–' : `${num(Math.round(x))} ms`;
}

export function when(tsMs) {
  if (!tsMs) return '–';
  return new Date(tsMs).toISOString().replace('T', ' ').slice(0, 19);
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago" (future times read "now"). */
export function ago(tsMs) {
  if (!tsMs) return '–';
  const s = Math.max(0, Math.round((Date.now() - tsMs) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function pill(text, kind) {
  return el('span', { class: `pill ${kind || text}` }, text);
}

/** A progress bar of used against limit (no bar when unlimited). */
export function usage(used, limit) {
  if (limit === undefined || limit === null || limit < 0) return `${num(used)} / ∞`;
  const bar = el('span', { class: 'bar' }, el('span'));
  bar.firstChild.style.width = `${Math.min(100, limit ? (100 * used) / limit : 100)}%`;
  return el('span', {}, `${num(used)} / ${num(limit)}`, bar);
}

/**
 * A table: columns are [{title, value(row) -> Node|string, num?: bool}].
 * `onRow(row, tr)` makes rows clickable; `rowAttrs(row)` gives each row's attributes.
 */
export function table(columns, rows, onRow, rowAttrs) {
  const head = el('tr', {}, columns.map((c) => el('th', { class: c.num ? 'num' : '' }, c.title)));
  const body = rows.map((row) => {
    const tr = el('tr', { class: onRow ? 'clickable' : '', ...(rowAttrs ? rowAttrs(row) : {}) });
    for (const c of columns) tr.append(el('td', { class: c.num ? 'num' : '' }, c.value(row)));
    if (onRow) tr.addEventListener('click', () => onRow(row, tr));
    return tr;
  });
  if (rows.length === 0) {
    body.push(el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, 'Nothing here yet.')));
  }
  return el('div', { class: 'scroll' }, el('table', {}, el('thead', {}, head), el('tbody', {}, body)));
}

export function tile(label, value, id) {
  return el('div', { class: 'card tile', id }, el('div', { class: 'value' }, value), el('div', { class: 'label' }, label));
}

export function toast(message) {
  for (const old of document.querySelectorAll('.toast')) old.remove();
  const t = el('div', { class: 'toast', role: 'status' }, message);
  document.body.append(t);
  setTimeout(() => t.remove(), 3500);
}

/** A labelled <select> of [value, text] options. */
export function select(label, name, options, value) {
  const s = el('select', { name, id: `f-${name}` }, options.map(([v, t]) => el('option', { value: v }, t)));
  s.value = value;
  return el('label', {}, label, s);
}

/** A labelled text input. */
export function input(label, name, placeholder = '') {
  return el('label', {}, label, el('input', { name, id: `f-${name}`, placeholder }));
}
