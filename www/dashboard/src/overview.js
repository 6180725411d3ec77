// Overview: live figures from GET /v1/stats/stream (server-sent events, one a second) and a
// uPlot chart of the last five minutes.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { stream } from './auth.js';
import { h, clear } from './ui.js';

const WINDOW = 300;

export function overview() {
  const main = document.getElementById('main');
  const figure = (id, label) => h('div', { class: 'card' }, h('span', { class: 'label', id: `${id}-label` }, label), h('strong', { id, 'aria-labelledby': `${id}-label` }, '–'));
  const causes = h('ul', { id: 'refusals', class: 'causes' });
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': 'Messages per second and live connections, last five minutes' });
  const status = h('p', { class: 'loading', role: 'status' }, 'Connecting to the live feed…');
  clear(main).append(
    h('h1', {}, 'Overview'), status,
    h('div', { class: 'cards' }, figure('connections', 'Live connections'), figure('in-rate', 'Messages in / s'), figure('out-rate', 'Messages out / s'),
      figure('failures', 'Authentication failures'), figure('exchanges', 'Token exchanges')),
    h('h2', {}, 'Refusals by cause'), causes, h('h2', {}, 'Last five minutes'), chartBox,
  );
  const data = [[], [], [], []];
  let plot = null;
  const width = () => Math.max(280, chartBox.clientWidth || main.clientWidth - 32);
  const abort = new AbortController();
  let last = null;
  const onEvent = (s) => {
    status.textContent = 'Live';
    status.className = 'muted';
    const rate = (k) => (last ? Math.max(0, (s[k] - last[k]) / Math.max(1, s.t - last.t)) : 0);
    const inRate = rate('published'), outRate = rate('delivered');
    last = s;
    document.getElementById('connections').textContent = s.connections;
    document.getElementById('in-rate').textContent = inRate.toFixed(1);
    document.getElementById('out-rate').textContent = outRate.toFixed(1);
    document.getElementById('failures').textContent = s.auth_failures;
    document.getElementById('exchanges').textContent = s.exchanges;
    const entries = Object.entries(s.refusals ?? {});
    causes.replaceChildren(...(entries.length ? entries.map(([c, n]) => h('li', {}, h('span', {}, c), h('strong', {}, String(n)))) : [h('li', { class: 'empty' }, 'No refusals.')]));
    data[0].push(s.t); data[1].push(inRate); data[2].push(outRate); data[3].push(s.connections);
    while (data[0].length && data[0][0] < s.t - WINDOW) data.forEach((d) => d.shift());
    if (!plot) {
      plot = new uPlot({
        width: width(), height: 220,
        // always the last five minutes, even with one point
        scales: { x: { time: true, range: (u, min, max) => [max - WINDOW, max] } },
        series: [{}, { label: 'in / s', stroke: '#2563eb' }, { label: 'out / s', stroke: '#16a34a' }, { label: 'connections', stroke: '#9333ea', scale: 'n' }],
        axes: [{}, { label: 'msg/s' }, { side: 1, scale: 'n', label: 'connections' }],
      }, data, chartBox);
    } else {
      plot.setData(data);
    }
  };
  stream('/v1/stats/stream', onEvent, abort.signal).catch((e) => {
    if (abort.signal.aborted) return;
    status.textContent = `The live feed stopped: ${e.message}. Reload to retry.`;
    status.className = 'error';
  });
  const resize = () => plot?.setSize({ width: width(), height: 220 });
  window.addEventListener('resize', resize);
  return () => { abort.abort(); window.removeEventListener('resize', resize); plot?.destroy(); };
}
