// Keys: the key pool of every provider (`GET /admin/keys`): provider, masked key, origin,
// state, balance (and when it was fetched), usage against limits, last error, last validation.
// Actions: add (a pasted list), validate (every key, one provider, one key), remove (a runtime
// key) or disable (a config key) and enable it again, export (a JSON download).
// Rows are addressed by their listed `id`: the page never holds a secret except the keys the
// user pastes (sent once) and the export (handed straight to the download).

import { api } from './api.js';
import { ago, el, num, pill, table, usage, when } from './ui.js';

const REFRESH_MS = 10000;
// Rows drawn at once: a pool may hold 100,000 runtime keys, more than a page can draw.
const MAX_ROWS = 500;

export function render(main) {
  const view = {
    rows: [],
    providers: [],
    filter: el('select', { id: 'keys-provider' }),
    validate: el('button', { id: 'validate-all', class: 'secondary' }, 'Validate all keys'),
    summary: el('p', { class: 'muted', id: 'keys-summary' }),
    message: el('p', { class: 'ok-message', id: 'keys-message', role: 'status' }),
    err: el('p', { class: 'error', id: 'keys-error', role: 'alert' }),
    list: el('div', { id: 'keys-table' }),
    validating: new Set(),
    confirming: false,
  };
  view.filter.addEventListener('change', () => show(view));
  view.validate.addEventListener('click', () => validate(view, filtered(view)));
  const toolbar = el(
    'div',
    { class: 'controls', id: 'keys-actions' },
    el('label', {}, 'Provider', view.filter),
    view.validate,
    el('button', { id: 'export', class: 'secondary', onclick: () => exportKeys(view) }, 'Export keys'),
    el('button', { id: 'keys-refresh', class: 'link', onclick: () => load(view) }, 'Refresh'),
  );
  main.append(el('h1', {}, 'Keys'), view.summary, toolbar, view.message, view.err, view.list, addForm(view));
  load(view);
  const timer = setInterval(() => {
    if (!view.confirming && view.validating.size === 0) load(view, true);
  }, REFRESH_MS);
  return () => clearInterval(timer);
}

/** Fetches the pool and draws it; a background refresh that lands while a row asks for a
 * confirmation or a validation runs leaves the table as it is. */
async function load(view, background = false) {
  try {
    const [keys, status] = await Promise.all([api('GET', '/admin/keys'), api('GET', '/admin/status')]);
    view.rows = keys.data;
    view.providers = status.providers.map((p) => p.name);
    view.err.textContent = '';
  } catch (e) {
    view.err.textContent = `Cannot load keys: ${e.message}`;
    return;
  }
  if (background && (view.confirming || view.validating.size > 0)) return;
  fillProviders(view.filter, [['', 'All providers'], ...view.providers.map((p) => [p, p])]);
  fillProviders(document.getElementById('add-provider'), view.providers.map((p) => [p, p]));
  show(view);
}

/** Replaces a select's options, keeping its choice when it still exists. */
function fillProviders(select, options) {
  if (!select) return;
  const keep = select.value;
  select.replaceChildren(...options.map(([v, t]) => el('option', { value: v }, t)));
  if (options.some(([v]) => v === keep)) select.value = keep;
}

function filtered(view) {
  const p = view.filter.value;
  return p ? view.rows.filter((r) => r.provider === p) : view.rows;
}

function show(view) {
  const rows = filtered(view);
  const p = view.filter.value;
  view.validate.textContent = p ? `Validate ${p}'s keys` : 'Validate all keys';
  const states = {};
  for (const r of rows) states[r.state] = (states[r.state] || 0) + 1;
  const parts = Object.entries(states).map(([s, n]) => `${n} ${s}`);
  const cut = rows.length > MAX_ROWS ? ` · showing the first ${MAX_ROWS}: choose a provider to narrow` : '';
  view.summary.textContent = `${rows.length} key${rows.length === 1 ? '' : 's'}${parts.length ? ` · ${parts.join(' · ')}` : ''}${cut}`;
  view.confirming = false;
  view.list.replaceChildren(keyTable(view, rows.slice(0, MAX_ROWS)));
}

function keyTable(view, rows) {
  return table(
    [
      { title: 'Provider', value: (r) => r.provider },
      { title: 'Key', value: (r) => el('code', { title: `id ${r.id}` }, r.key) },
      { title: 'Origin', value: (r) => r.origin },
      { title: 'State', value: (r) => (view.validating.has(r.id) ? pill('validating…', 'unknown') : pill(r.state)) },
      { title: 'Balance', value: balanceCell, num: true },
      { title: 'Usage / limits', value: usageCell },
      { title: 'Last error', value: (r) => (r.last_error ? el('span', { class: 'wrap' }, r.last_error) : '–') },
      { title: 'Last validated', value: validatedCell },
      { title: '', value: (r) => actions(view, r) },
    ],
    rows,
    null,
    (r) => ({ 'data-id': r.id, 'data-state': r.state }),
  );
}

function balanceCell(r) {
  if (r.balance === null || r.balance === undefined) return '–';
  return el('div', {}, el('div', {}, num(r.balance)), el('div', { class: 'sub', title: when(r.balance_at) }, ago(r.balance_at)));
}

function usageCell(r) {
  const limits = Object.entries(r.limits || {}).map(([name, u]) => el('div', {}, `${name} `, usage(u.used, u.limit)));
  const counts = `${num(r.in_flight)} in flight · ${num(r.successes)} ok · ${num(r.failures)} failed`;
  return el('div', {}, limits.length ? limits : el('div', {}, 'no limits'), el('div', { class: 'sub' }, counts));
}

function validatedCell(r) {
  if (!r.last_validated) return 'never';
  const status = r.last_status ? ` · ${r.last_status}` : '';
  return el('span', { title: when(r.last_validated) }, `${ago(r.last_validated)}${status}`);
}

function actions(view, r) {
  if (r.state === 'disabled') {
    return el('div', { class: 'row-actions' }, button('Enable', 'enable', () => enable(view, r)));
  }
  return el(
    'div',
    { class: 'row-actions' },
    button('Validate', 'validate', () => validate(view, [r], r.provider)),
    button(r.origin === 'runtime' ? 'Remove' : 'Disable', 'remove', (e) => askRemove(view, r, e.target), 'danger'),
  );
}

function button(text, action, onclick, kind = 'secondary') {
  return el('button', { class: `${kind} small`, type: 'button', 'data-action': action, onclick }, text);
}

/** Validates `rows` (all shown keys, or one): their state reads "validating…" meanwhile. */
async function validate(view, rows, provider = view.filter.value) {
  if (rows.length === 0) return;
  const one = rows.length === 1 && provider;
  const body = one ? { provider, ids: [rows[0].id] } : provider ? { provider } : undefined;
  for (const r of rows) view.validating.add(r.id);
  view.validate.disabled = true;
  show(view);
  try {
    const answer = await api('POST', '/admin/keys/validate', body);
    const count = (v) => answer.data.filter((k) => k.valid === v).length;
    say(view, `Validated ${answer.data.length} key(s): ${count(true)} valid, ${count(false)} refused, ${count(null)} without an answer.`);
  } catch (e) {
    view.err.textContent = `Validation failed: ${e.message}`;
  } finally {
    view.validating.clear();
    view.validate.disabled = false;
  }
  await load(view);
}

// A click asks first, in the row itself: a runtime key is deleted, a config key disabled until
// the config file changes (it can be enabled again from its row).
function askRemove(view, r, target) {
  const cell = target.closest('td');
  const what = r.origin === 'runtime' ? `Remove ${r.key}?` : `Disable ${r.key} until the config file changes?`;
  const cancel = el('button', { class: 'link', type: 'button', onclick: () => show(view) }, 'Cancel');
  const yes = button(r.origin === 'runtime' ? 'Yes, remove' : 'Yes, disable', 'confirm', () => remove(view, r), 'danger');
  view.confirming = true;
  cell.replaceChildren(el('div', { class: 'row-actions confirm' }, el('span', {}, what), yes, cancel));
  yes.focus();
}

async function remove(view, r) {
  try {
    const answer = await api('DELETE', '/admin/keys', { provider: r.provider, id: r.id });
    const verb = answer.removed.length ? 'Removed' : 'Disabled';
    say(view, `${verb} ${r.key} (${r.provider}).${persistNote(answer)}`);
  } catch (e) {
    view.err.textContent = `Remove failed: ${e.message}`;
  }
  await load(view);
}

async function enable(view, r) {
  try {
    await api('POST', '/admin/keys', { provider: r.provider, ids: [r.id] });
    say(view, `Enabled ${r.key} (${r.provider}) again.`);
  } catch (e) {
    view.err.textContent = `Enable failed: ${e.message}`;
  }
  await load(view);
}

function addForm(view) {
  const provider = el('select', { id: 'add-provider' });
  const keys = el('textarea', {
    id: 'add-keys',
    rows: 4,
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'Paste keys: one per line (spaces, commas or semicolons separate them too)',
  });
  const submit = el('button', { id: 'add-submit', type: 'submit' }, 'Add keys');
  const form = el(
    'form',
    { class: 'card add-keys', id: 'add-form' },
    el('h2', {}, 'Add keys'),
    el('div', { class: 'controls' }, el('label', {}, 'Provider', provider), el('label', { class: 'grow' }, 'Keys', keys), submit),
    el('p', { class: 'muted' }, 'Added keys serve at once; with a storage file they are kept across restarts and reloads. Keys already in the pool are ignored.'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!provider.value || !keys.value.trim()) {
      view.err.textContent = 'Choose a provider and paste at least one key.';
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api('POST', '/admin/keys', { provider: provider.value, keys: keys.value });
      keys.value = '';
      const dup = answer.duplicates.length ? ` ${answer.duplicates.length} duplicate(s) ignored: ${answer.duplicates.join(', ')}.` : '';
      say(view, `Added ${answer.added.length} key(s) to ${answer.provider}.${dup}${persistNote(answer)}`);
    } catch (err) {
      view.err.textContent = `Add failed: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
    await load(view);
  });
  return form;
}

function persistNote(answer) {
  return answer.persisted === false ? ' Not persisted: storage is in memory, so this lasts until rotor stops.' : '';
}

function say(view, text) {
  view.err.textContent = '';
  view.message.textContent = text;
}

/** Downloads `{"providers":{"p":["k1",...]}}`: the keys in full, so it says so first. */
async function exportKeys(view) {
  try {
    const data = await api('GET', '/admin/keys/export');
    const count = Object.values(data.providers).reduce((n, keys) => n + keys.length, 0);
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
    const name = `rotor-keys-${new Date().toISOString().slice(0, 10)}.json`;
    const a = el('a', { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    say(view, `Exported ${count} key(s) of ${Object.keys(data.providers).length} provider(s) to ${name}. The file holds the keys in full: keep it safe.`);
  } catch (e) {
    view.err.textContent = `Export failed: ${e.message}`;
  }
}
