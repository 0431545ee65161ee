// Status: live health of every provider (breaker) and key (state, in flight, outcomes, usage
// against its limits), refreshed every 5 seconds.

import { api } from './api.js';
import { el, num, pill, table, usage } from './ui.js';

export function render(main) {
  const updated = el('p', { class: 'muted', id: 'status-updated' });
  const list = el('div', { class: 'providers', id: 'status-providers' });
  const err = el('p', { class: 'error' });
  main.append(el('h1', {}, 'Status'), updated, err, list);

  async function load() {
    try {
      const status = await api('GET', '/admin/status');
      err.textContent = '';
      const keys = status.providers.flatMap((p) => p.keys);
      const usable = keys.filter((k) => k.state === 'active').length;
      updated.textContent = `Config generation ${status.generation} · ${usable} of ${keys.length} keys usable · updated ${new Date().toLocaleTimeString()} (every 5 s)`;
      list.replaceChildren(...status.providers.map(providerCard));
    } catch (e) {
      err.textContent = `Cannot load status: ${e.message}`;
    }
  }
  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}

function providerCard(p) {
  return el(
    'section',
    { class: 'card' },
    el(
      'div',
      { class: 'provider-head' },
      el('h3', {}, p.name),
      el('span', { class: 'muted' }, `${p.kind} · weight ${p.weight}`),
      p.enabled ? pill('enabled', 'ok') : pill('disabled'),
      el('span', {}, 'breaker ', pill(p.breaker)),
    ),
    table(
      [
        { title: 'Key', value: (k) => el('code', {}, k.key) },
        { title: 'State', value: (k) => pill(k.state) },
        { title: 'Retry in', value: (k) => (k.retry_in_s ? `${k.retry_in_s} s` : '–'), num: true },
        { title: 'In flight', value: (k) => num(k.in_flight), num: true },
        { title: 'Successes', value: (k) => num(k.successes), num: true },
        { title: 'Failures', value: (k) => num(k.failures), num: true },
        {
          title: 'Usage / limits',
          value: (k) => {
            const parts = Object.entries(k.limits || {}).map(([n, u]) => el('div', {}, `${n} `, usage(u.used, u.limit)));
            return parts.length ? el('div', {}, parts) : 'no limits';
          },
        },
      ],
      p.keys,
    ),
  );
}
