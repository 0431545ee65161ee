// Keys: the runtime key pool (`/admin/keys`): each key with its provider, source, state,
// balance, usage against its limits and last error; add, remove, validate, export.
// On a build without runtime key management (404), it says so and shows the pool read-only
// from `/admin/status`.

import { api, ApiError } from './api.js';
import { el, num, pill, table, toast, usage, when } from './ui.js';

export function render(main) {
  const notice = el('div', { id: 'keys-notice' });
  const actions = el('div', { class: 'controls', id: 'keys-actions' });
  const list = el('div', { id: 'keys-table' });
  const err = el('p', { class: 'error', id: 'keys-error' });
  main.append(el('h1', {}, 'Keys'), notice, actions, err, list);
  load({ notice, actions, list, err });
}

async function load(view) {
  let answer;
  try {
    answer = await api('GET', '/admin/keys');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return readOnly(view);
    view.err.textContent = `Cannot load keys: ${e.message}`;
    return;
  }
  view.err.textContent = '';
  const rows = rowsOf(answer);
  view.notice.replaceChildren();
  view.actions.replaceChildren(...actionBar(view, rows));
  view.list.replaceChildren(keyTable(view, rows));
}

/** The list answer as rows, whatever its wrapping (`{data:[..]}`, `{keys:[..]}` or `[..]`). */
function rowsOf(answer) {
  const rows = Array.isArray(answer) ? answer : answer.data || answer.keys || [];
  return rows.map((r) => ({ ...r, provider: r.provider ?? r.provider_name ?? '', key: r.key ?? r.masked ?? '' }));
}

function limitsCell(r) {
  const limits = r.limits || r.usage || {};
  const parts = Object.entries(limits).map(([name, u]) => el('div', {}, `${name} `, usage(u.used, u.limit)));
  return parts.length ? el('div', {}, parts) : '–';
}

function keyTable(view, rows) {
  return table(
    [
      { title: 'Provider', value: (r) => r.provider },
      { title: 'Key', value: (r) => el('code', {}, r.key) },
      { title: 'Source', value: (r) => r.source || r.origin || '–' },
      { title: 'State', value: (r) => pill(r.state || 'unknown') },
      { title: 'Balance', value: (r) => (r.balance === undefined || r.balance === null ? '–' : num(r.balance)), num: true },
      { title: 'Usage / limits', value: limitsCell },
      { title: 'Last error', value: (r) => r.last_error || '–' },
      { title: 'Checked', value: (r) => when(r.last_validated || r.validated_at) },
      {
        title: '',
        value: (r) => el('button', { class: 'danger', 'data-key': r.key, onclick: (e) => askRemove(view, r, e.target) }, 'Remove'),
      },
    ],
    rows,
  );
}

function actionBar(view, rows) {
  const providers = [...new Set(rows.map((r) => r.provider))];
  const provider = el('input', { id: 'add-provider', list: 'provider-names', placeholder: 'provider name' });
  const names = el('datalist', { id: 'provider-names' }, providers.map((p) => el('option', { value: p })));
  const keys = el('textarea', { id: 'add-keys', placeholder: 'one key per line' });
  const add = el('button', { id: 'add-submit', type: 'submit' }, 'Add keys');
  const form = el(
    'form',
    { class: 'card controls', id: 'add-form' },
    el('label', {}, 'Provider', provider, names),
    el('label', { class: 'grow' }, 'Keys', keys),
    add,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const list = keys.value.split('\n').map((k) => k.trim()).filter(Boolean);
    if (!provider.value || list.length === 0) return;
    try {
      await api('POST', '/admin/keys', { provider: provider.value.trim(), keys: list });
      keys.value = '';
      toast(`Added ${list.length} key(s) to ${provider.value}`);
      load(view);
    } catch (err) {
      view.err.textContent = `Add failed: ${err.message}`;
    }
  });
  const validate = el('button', { id: 'validate-all', class: 'secondary', onclick: () => runValidate(view) }, 'Validate all');
  const exportButton = el('button', { id: 'export', class: 'secondary', onclick: () => exportKeys(view) }, 'Export');
  return [form, validate, exportButton];
}

async function runValidate(view) {
  const button = document.getElementById('validate-all');
  button.disabled = true;
  button.textContent = 'Validating…';
  try {
    await api('POST', '/admin/keys/validate');
    toast('Validation finished');
  } catch (e) {
    view.err.textContent = `Validate failed: ${e.message}`;
  }
  load(view);
}

// The list shows keys masked, and removal takes the key itself: the row asks for it, which
// also guards against a slip of the mouse.
function askRemove(view, row, button) {
  const cell = button.parentNode;
  const secret = el('input', { class: 'remove-key', placeholder: `paste the full key ending ${row.key.slice(-4)}`, type: 'password' });
  const confirm = el('button', { class: 'danger', type: 'submit' }, 'Remove');
  const cancel = el('button', { class: 'link', type: 'button', onclick: () => load(view) }, 'Cancel');
  const form = el('form', { class: 'controls' }, secret, confirm, cancel);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = secret.value.trim();
    if (!key.endsWith(row.key.replace('…', ''))) {
      view.err.textContent = `That key does not end in ${row.key.replace('…', '')}.`;
      return;
    }
    try {
      await api('DELETE', '/admin/keys', { provider: row.provider, key });
      toast(`Removed ${row.key} from ${row.provider}`);
    } catch (err) {
      view.err.textContent = `Remove failed: ${err.message}`;
    }
    load(view);
  });
  cell.replaceChildren(form);
  secret.focus();
}

async function exportKeys(view) {
  try {
    const data = await api('GET', '/admin/keys/export');
    const blob = new Blob([typeof data === 'string' ? data : JSON.stringify(data, null, 2)], { type: 'application/json' });
    const a = el('a', { href: URL.createObjectURL(blob), download: 'rotor-keys.json' });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  } catch (e) {
    view.err.textContent = `Export failed: ${e.message}`;
  }
}

/** No `/admin/keys` here: the pool from `/admin/status`, without the management actions. */
async function readOnly(view) {
  view.notice.replaceChildren(
    el(
      'div',
      { class: 'notice', id: 'keys-unavailable' },
      el('strong', {}, 'Key management is not available in this build. '),
      'Keys come from the config file only; below is the pool as configured, read-only.',
    ),
  );
  view.actions.replaceChildren();
  try {
    const status = await api('GET', '/admin/status');
    const rows = status.providers.flatMap((p) => p.keys.map((k) => ({ ...k, provider: p.name, source: 'config' })));
    view.list.replaceChildren(
      table(
        [
          { title: 'Provider', value: (r) => r.provider },
          { title: 'Key', value: (r) => el('code', {}, r.key) },
          { title: 'Source', value: (r) => r.source },
          { title: 'State', value: (r) => pill(r.state) },
          { title: 'Usage / limits', value: limitsCell },
          { title: 'Failures', value: (r) => num(r.failures), num: true },
        ],
        rows,
      ),
    );
  } catch (e) {
    view.err.textContent = `Cannot load the pool: ${e.message}`;
  }
}
