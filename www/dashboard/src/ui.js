// Small DOM helpers: elements from data (never from HTML strings), times, CSV.

/** An element: `h('button', { onclick }, 'Save')`. Text children are text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== ''));
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export const time = (t) => (t ? new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '-');

export function ago(t) {
  if (!t) return '-';
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

/** Time left until Unix time `t`, as m:ss (or h:mm:ss); "expired" after it. */
export function countdown(t) {
  if (!t) return 'never';
  const s = Math.round(t - Date.now() / 1000);
  if (s <= 0) return 'expired';
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${String(ss).padStart(2, '0')}` : `${mm}:${String(ss).padStart(2, '0')}`;
}

/** A message for a few seconds, announced to screen readers. */
export function toast(text, error = false) {
  let box = document.getElementById('toast');
  if (!box) {
    box = h('div', { id: 'toast', role: 'status', 'aria-live': 'polite' });
    document.body.append(box);
  }
  box.className = error ? 'error' : 'ok';
  box.textContent = text;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => { box.textContent = ''; box.className = ''; }, 6000);
}

/** CSV (RFC 4180) of `rows` by `cols`. */
export function csv(cols, rows) {
  const cell = (v) => {
    const s = String(v ?? '');
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [cols.join(','), ...rows.map((r) => cols.map((c) => cell(r[c])).join(','))].join('\r\n') + '\r\n';
}

export function download(name, text) {
  const a = h('a', { href: URL.createObjectURL(new Blob([text], { type: 'text/csv' })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}
