// Overview: totals for the chosen range, and a chart of requests or tokens per hour, day or
// month, one line per model, provider, key or client (uPlot, vendored).

import { api, query } from './api.js';
import { el, ms, num, pct, select, table, tile } from './ui.js';

const RANGE_MS = { hour: 48 * 3600e3, day: 31 * 86400e3, month: 366 * 86400e3 };
const STEP_S = { hour: 3600, day: 86400, month: 30 * 86400 };
const COLOURS = ['#2f6fed', '#e8590c', '#2b8a3e', '#ae3ec9', '#c92a2a', '#1098ad', '#f08c00', '#5c7cfa', '#495057'];
const METRICS = {
  requests: (r) => r.requests,
  errors: (r) => r.errors,
  tokens: (r) => r.prompt_tokens + r.completion_tokens,
  avg_latency_ms: (r) => r.avg_latency_ms,
};

/** "2026-01-31T12:00" | "2026-01-31" | "2026-01" (UTC) -> Unix seconds. */
function bucketSeconds(bucket) {
  const iso = bucket.length === 7 ? `${bucket}-01T00:00:00Z` : bucket.length === 10 ? `${bucket}T00:00:00Z` : `${bucket}:00Z`;
  return Date.parse(iso) / 1000;
}

export function render(main) {
  const state = { period: 'hour', group_by: 'model', metric: 'requests', scope: 'instance' };
  const tiles = el('div', { class: 'tiles', id: 'overview-tiles' });
  const chart = el('div', { class: 'card chart', id: 'overview-chart' });
  const groups = el('div', { id: 'overview-groups' });
  const err = el('p', { class: 'error' });
  const controls = el(
    'div',
    { class: 'controls' },
    select('Period', 'period', [['hour', 'By hour (48 h)'], ['day', 'By day (31 days)'], ['month', 'By month (1 year)']], state.period),
    select('Split by', 'group_by', [['model', 'Model'], ['provider', 'Provider'], ['key', 'Key'], ['client', 'Client']], state.group_by),
    select('Show', 'metric', [['requests', 'Requests'], ['errors', 'Errors'], ['tokens', 'Tokens'], ['avg_latency_ms', 'Avg latency (ms)']], state.metric),
  );
  // With [cluster] on, the whole fleet (rollups every instance publishes to Redis) or this one.
  api('GET', '/admin/status')
    .then((status) => {
      if (!status.cluster) return;
      const scope = select('Scope', 'scope', [['instance', `This instance (${status.cluster.instance})`], ['cluster', 'Whole fleet']], state.scope);
      controls.prepend(scope);
    })
    .catch(() => {});
  controls.addEventListener('change', (e) => {
    state[e.target.name] = e.target.value;
    load();
  });
  main.append(el('h1', {}, 'Overview'), el('p', { class: 'muted', id: 'overview-range' }), tiles, controls, err, chart, el('h2', {}, 'Totals by group'), groups);
  let plot = null;
  let timer = null;

  async function load() {
    const since = Date.now() - RANGE_MS[state.period];
    main.querySelector('#overview-range').textContent = `Since ${new Date(since).toUTCString()} · updates every 30 s`;
    try {
      const [totals, stats] = await Promise.all([
        api('GET', `/admin/stats/overview${query({ since, scope: state.scope })}`),
        api('GET', `/admin/stats${query({ period: state.period, group_by: state.group_by, since, scope: state.scope })}`),
      ]);
      err.textContent = '';
      showTiles(tiles, totals);
      if (plot) plot.destroy();
      plot = drawChart(chart, stats.data || [], state, since);
      groups.replaceChildren(groupTable(stats.data || []));
    } catch (e) {
      err.textContent = `Cannot load statistics: ${e.message}`;
    }
  }
  load();
  timer = setInterval(load, 30000);
  const onResize = () => plot && plot.setSize(size(chart));
  window.addEventListener('resize', onResize);
  return () => {
    clearInterval(timer);
    window.removeEventListener('resize', onResize);
    if (plot) plot.destroy();
  };
}

function showTiles(tiles, t) {
  tiles.replaceChildren(
    tile('Requests', num(t.requests), 'tile-requests'),
    tile('Success rate', pct(t.success_rate)),
    tile('Errors', num(t.errors)),
    tile('Tokens in', num(t.prompt_tokens)),
    tile('Tokens out', num(t.completion_tokens)),
    tile('Cached tokens', num(t.cached_tokens)),
    tile('Reasoning tokens', num(t.reasoning_tokens)),
    tile('Avg latency', ms(t.avg_latency_ms)),
    tile('Avg added overhead', `${num((t.avg_overhead_us || 0) / 1000)} ms`),
  );
}

function size(container) {
  return { width: Math.max(320, container.clientWidth - 32), height: 300 };
}

/**
 * Stacked bars, one colour per group, over the whole range. uPlot draws series in order, so
 * each group is drawn as the running total up to it, tallest first; the legend shows each
 * group's own value.
 */
function drawChart(container, rows, state, since) {
  container.replaceChildren();
  if (rows.length === 0) {
    container.append(el('p', { class: 'empty' }, 'No requests in this range yet: send some traffic and this chart fills in.'));
    return null;
  }
  const value = METRICS[state.metric];
  const step = STEP_S[state.period];
  const xs = [...new Set(rows.map((r) => bucketSeconds(r.bucket)))].sort((a, b) => a - b);
  const names = [...new Set(rows.map((r) => r.group || '(none)'))];
  const own = names.map(() => xs.map(() => 0));
  for (const r of rows) {
    own[names.indexOf(r.group || '(none)')][xs.indexOf(bucketSeconds(r.bucket))] += value(r);
  }
  const running = xs.map(() => 0);
  const stacked = own.map((values) => values.map((v, j) => (running[j] += v)));
  const order = names.map((_, i) => i).reverse();
  const bars = window.uPlot.paths.bars({ size: [0.7, 40] });
  const from = Math.min(xs[0], since / 1000) - step / 2;
  const to = Math.max(xs[xs.length - 1], Date.now() / 1000) + step / 2;
  const opts = {
    ...size(container),
    scales: { x: { time: true, range: () => [from, to] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
    series: [
      {},
      ...order.map((i) => ({
        label: names[i],
        stroke: COLOURS[i % COLOURS.length],
        fill: COLOURS[i % COLOURS.length],
        width: 1,
        paths: bars,
        points: { show: false },
        value: (u, v, si, idx) => (idx === null || idx === undefined ? '–' : num(own[i][idx])),
      })),
    ],
    axes: [{}, { size: 60 }],
  };
  // The global from the vendored script (loaded before this module runs: both are deferred).
  return new window.uPlot(opts, [xs, ...order.map((i) => stacked[i])], container);
}

function groupTable(rows) {
  const byGroup = new Map();
  for (const r of rows) {
    const g = byGroup.get(r.group) || { group: r.group, requests: 0, errors: 0, prompt: 0, completion: 0, cached: 0, latency: 0 };
    g.requests += r.requests;
    g.errors += r.errors;
    g.prompt += r.prompt_tokens;
    g.completion += r.completion_tokens;
    g.cached += r.cached_tokens || 0;
    g.latency += r.avg_latency_ms * r.requests;
    byGroup.set(r.group, g);
  }
  return table(
    [
      { title: 'Group', value: (g) => g.group || '(none)' },
      { title: 'Requests', value: (g) => num(g.requests), num: true },
      { title: 'Errors', value: (g) => num(g.errors), num: true },
      { title: 'Tokens in', value: (g) => num(g.prompt), num: true },
      { title: 'Tokens out', value: (g) => num(g.completion), num: true },
      { title: 'Cached', value: (g) => num(g.cached), num: true },
      { title: 'Avg latency', value: (g) => ms(g.requests ? g.latency / g.requests : 0), num: true },
    ],
    [...byGroup.values()].sort((a, b) => b.requests - a.requests),
  );
}
