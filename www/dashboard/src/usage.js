// Usage analytics: per key and user, for a day or by hour of that day (UTC), with a uPlot
// chart of messages and a CSV export of exactly what the table shows.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { api } from './auth.js';
import { h, clear, csv, download } from './ui.js';

const COLS = ['kind', 'subject', 'connects', 'auth_failures', 'published', 'published_bytes', 'delivered', 'delivered_bytes'];

function state(kind, text) {
  return h('p', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** Messages in and out per hour of the day, summed over subjects. */
function hourlyChart(box, rows) {
  const hours = Array.from({ length: 24 }, (_, i) => i);
  const sum = (k) => hours.map((hr) => rows.filter((r) => Number(r.hour.slice(-2)) === hr).reduce((n, r) => n + r[k], 0));
  // side by side: published left of the hour's tick, delivered right of it
  const bars = (align) => uPlot.paths.bars({ size: [0.4, 30], align });
  return new uPlot({
    width: Math.max(280, box.clientWidth || 600), height: 200,
    scales: { x: { time: false } },
    axes: [{ label: 'hour (UTC)' }, { label: 'messages' }],
    series: [{}, { label: 'published', stroke: '#2563eb', fill: '#2563eb55', paths: bars(-1) }, { label: 'delivered', stroke: '#16a34a', fill: '#16a34a55', paths: bars(1) }],
  }, [hours, sum('published'), sum('delivered')], box);
}

export async function usagePage() {
  const main = document.getElementById('main');
  const day = h('input', { type: 'date', id: 'day', value: new Date().toISOString().slice(0, 10) });
  const by = h('select', { id: 'by' }, h('option', { value: 'day' }, 'the day'), h('option', { value: 'hour' }, 'each hour'));
  const holder = h('div');
  clear(main).append(h('h1', {}, 'Usage'),
    h('div', { class: 'filters' }, h('label', { for: 'day' }, 'Day (UTC)'), day, h('label', { for: 'by' }, 'Totals for'), by), holder);
  let plot = null;
  const show = async () => {
    plot?.destroy();
    plot = null;
    holder.replaceChildren(state('loading', 'Loading usage…'));
    try {
      const hourly = by.value === 'hour';
      const u = await api('GET', `/v1/usage?day=${day.value}${hourly ? '&by=hour' : ''}`);
      const rows = [...u.keys.map((r) => ({ kind: 'key', ...r })), ...u.users.map((r) => ({ kind: 'user', ...r }))];
      if (hourly) rows.sort((a, b) => a.hour.localeCompare(b.hour) || a.subject.localeCompare(b.subject));
      if (!rows.length) { holder.replaceChildren(state('empty', 'No usage on this day.')); return; }
      const cols = hourly ? ['hour', ...COLS] : COLS;
      const max = Math.max(1, ...rows.map((r) => r.published + r.delivered));
      const chart = h('div', { class: 'chart', role: 'img', 'aria-label': 'Messages published and delivered per hour' });
      holder.replaceChildren(
        h('button', { onclick: () => download(`cloudsignal-usage-${u.day}${hourly ? '-hourly' : ''}.csv`, csv(cols, rows)) }, 'Export CSV'),
        hourly ? chart : '',
        h('div', { class: 'scroll' }, h('table', { id: 'usage' },
          h('thead', {}, h('tr', {}, ...cols.map((c) => h('th', { scope: 'col' }, c.replace('_', ' '))), h('th', { scope: 'col' }, 'messages'))),
          h('tbody', {}, ...rows.map((r) => h('tr', { 'data-subject': r.subject }, ...cols.map((c) => h('td', { 'data-col': c }, String(r[c]))),
            h('td', {}, h('span', { class: 'bar', style: `width:${Math.round(((r.published + r.delivered) / max) * 100)}%`, 'aria-hidden': 'true' }))))))));
      if (hourly) plot = hourlyChart(chart, rows);
    } catch (e) { holder.replaceChildren(state('error', e.message)); }
  };
  day.onchange = show;
  by.onchange = show;
  const resize = () => plot?.setSize({ width: Math.max(280, plot.root.parentElement.clientWidth), height: 200 });
  window.addEventListener('resize', resize);
  await show();
  return () => { window.removeEventListener('resize', resize); plot?.destroy(); };
}
