// Logs: request records, newest first, with filters, paging, a detail view and clear.

import { api, query } from './api.js';
import { el, input, ms, num, pill, table, toast, when } from './ui.js';

const PAGE = 50;
const FIELDS = ['model', 'client', 'provider', 'status', 'since', 'until'];

export function render(main) {
  const state = { offset: 0, filters: {} };
  const form = el(
    'form',
    { class: 'controls', id: 'logs-filters' },
    input('Model', 'model', 'e.g. gpt-4o-mini'),
    input('Client', 'client'),
    input('Provider', 'provider'),
    input('Status', 'status', 'e.g. 429'),
    input('Since', 'since', 'e.g. 2026-01-31T00:00:00Z'),
    input('Until', 'until', 'Unix s, ms or ISO date'),
    el('button', { type: 'submit', id: 'logs-apply' }, 'Filter'),
    el('button', { type: 'reset', class: 'secondary' }, 'Reset'),
  );
  const clear = el('button', { class: 'danger', id: 'logs-clear' }, 'Clear all logs');
  const summary = el('span', { class: 'muted', id: 'logs-summary' });
  const prev = el('button', { class: 'secondary', id: 'logs-prev' }, '← Newer');
  const next = el('button', { class: 'secondary', id: 'logs-next' }, 'Older →');
  const list = el('div', { id: 'logs-table' });
  const detail = el('div', { class: 'detail', id: 'logs-detail' });
  const err = el('p', { class: 'error' });
  main.append(el('h1', {}, 'Logs'), form, el('div', { class: 'pager' }, prev, next, summary, el('span', { class: 'grow' }), clear), err, list, detail);

  async function load() {
    try {
      const page = await api('GET', `/admin/logs${query({ ...state.filters, limit: PAGE, offset: state.offset })}`);
      err.textContent = '';
      const rows = page.data || [];
      const first = rows.length ? state.offset + 1 : 0;
      summary.textContent = `${num(first)}–${num(state.offset + rows.length)} of ${num(page.total)}`;
      prev.disabled = state.offset === 0;
      next.disabled = state.offset + rows.length >= page.total;
      list.replaceChildren(logTable(rows, detail));
      detail.replaceChildren();
    } catch (e) {
      err.textContent = `Cannot load logs: ${e.message}`;
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    state.filters = Object.fromEntries(FIELDS.map((f) => [f, (data.get(f) || '').trim()]));
    state.offset = 0;
    load();
  });
  form.addEventListener('reset', () => {
    state.filters = {};
    state.offset = 0;
    setTimeout(load);
  });
  prev.addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE);
    load();
  });
  next.addEventListener('click', () => {
    state.offset += PAGE;
    load();
  });
  clear.addEventListener('click', async () => {
    if (!clear.dataset.armed) {
      clear.dataset.armed = '1';
      clear.textContent = 'Click again to delete every log';
      return;
    }
    delete clear.dataset.armed;
    clear.textContent = 'Clear all logs';
    try {
      await api('DELETE', '/admin/logs');
      toast('Logs cleared');
      state.offset = 0;
      load();
    } catch (e) {
      err.textContent = `Clear failed: ${e.message}`;
    }
  });
  load();
}

function statusPill(status) {
  return pill(String(status), status >= 400 ? 'bad' : 'ok');
}

function logTable(rows, detail) {
  return table(
    [
      { title: 'Time (UTC)', value: (r) => when(r.ts) },
      { title: 'Status', value: (r) => statusPill(r.status) },
      { title: 'Client', value: (r) => r.client || '–' },
      { title: 'Endpoint', value: (r) => r.endpoint },
      { title: 'Model', value: (r) => r.model || '–' },
      { title: 'Provider', value: (r) => r.provider || '–' },
      { title: 'Key', value: (r) => r.key || '–' },
      { title: 'Tokens in/out', value: (r) => `${num(r.prompt_tokens)} / ${num(r.completion_tokens)}`, num: true },
      { title: 'Latency', value: (r) => ms(r.latency_ms), num: true },
      { title: 'Stream', value: (r) => (r.stream ? 'yes' : '') },
    ],
    rows,
    (row, tr) => {
      for (const t of tr.parentNode.children) t.classList.remove('selected');
      tr.classList.add('selected');
      showDetail(detail, row);
    },
  );
}

function showDetail(detail, row) {
  const shown = (k, v) => (k === 'ts' ? `${v} (${when(v)})` : v === null || v === undefined || v === '' ? '–' : String(v));
  const items = Object.entries(row).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, shown(k, v))]);
  detail.replaceChildren(el('div', { class: 'card' }, el('h2', {}, `Request ${row.request_id}`), el('dl', {}, items)));
  detail.scrollIntoView({ block: 'nearest' });
}
