// API keys: list with per-key usage, create (scope picker with validation, CIDR allowlist,
// expiry; the secret shown once with a copy button), rotate with a grace period, revoke.
import { api } from './auth.js';
import { h, clear, time, toast } from './ui.js';

const API_SCOPES = ['tokens:issue', 'tokens:revoke', 'keys:read', 'keys:write', 'usage:read', 'audit:read', 'revocations:read', 'directory:read', 'directory:sync', 'sessions:read', 'sessions:write'];
const FILTER = /^([^#+]*\/)*([^#+/]*|\+|#)$/;

/** Checks an MQTT filter the way the broker will (levels, + and # placement). */
function filterError(f) {
  if (!f) return 'empty filter';
  if (f.split('/').some((l) => (l.includes('+') && l !== '+') || (l.includes('#') && l !== '#'))) return `${f}: + and # take a whole level`;
  if (f.includes('#') && !f.endsWith('#')) return `${f}: # must be last`;
  return FILTER.test(f) || f.split('/').every((l) => l === '+' || l === '#' || !/[+#]/.test(l)) ? null : `${f}: not a filter`;
}

function createForm(onCreated) {
  const name = h('input', { id: 'key-name', required: true, pattern: '[A-Za-z0-9._:|~-]{1,128}', 'aria-describedby': 'key-name-help' });
  const kind = h('select', { id: 'key-kind' }, h('option', { value: 'rk' }, 'rk_ (only the scopes below)'), h('option', { value: 'sk' }, 'sk_ (every scope)'));
  const boxes = API_SCOPES.map((s) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: s, name: 'scope' }), s));
  const pub = h('input', { id: 'key-pub', placeholder: 'events/#, sensors/+/temp' });
  const sub = h('input', { id: 'key-sub', placeholder: 'commands/#' });
  const cidrs = h('input', { id: 'key-cidrs', placeholder: '10.0.0.0/8, 192.168.1.7' });
  const days = h('input', { id: 'key-days', type: 'number', min: '1', max: '3650', placeholder: 'never' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const list = (v) => v.split(',').map((s) => s.trim()).filter(Boolean);
  const form = h('form', {
    id: 'create-key',
    onsubmit: async (e) => {
      e.preventDefault();
      const filters = [...list(pub.value), ...list(sub.value)];
      const bad = filters.map(filterError).find(Boolean) ?? list(cidrs.value).find((c) => !/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(c));
      if (bad) { error.hidden = false; error.textContent = typeof bad === 'string' && bad.includes(':') ? bad : `${bad}: not an address or CIDR`; return; }
      error.hidden = true;
      const scopes = [...boxes.map((b) => b.firstChild).filter((b) => b.checked).map((b) => b.value),
        ...list(pub.value).map((f) => `mqtt:publish:${f}`), ...list(sub.value).map((f) => `mqtt:subscribe:${f}`)];
      const body = { kind: kind.value, name: name.value, scopes, allow_cidrs: list(cidrs.value) };
      if (days.value) body.expires_at = Math.floor(Date.now() / 1000) + Number(days.value) * 86400;
      try {
        const k = await api('POST', '/v1/keys', body);
        onCreated(k);
        form.reset();
      } catch (err) { error.hidden = false; error.textContent = `${err.message} (${err.code})`; }
    },
  },
  h('h2', {}, 'Create a key'),
  h('label', { for: 'key-name' }, 'Name'), name, h('small', { id: 'key-name-help' }, 'Also its MQTT identity: <name>@<org>. Letters, digits, . _ : | ~ -'),
  h('label', { for: 'key-kind' }, 'Kind'), kind,
  h('fieldset', {}, h('legend', {}, 'API scopes'), ...boxes),
  h('label', { for: 'key-pub' }, 'MQTT publish filters (comma-separated)'), pub,
  h('label', { for: 'key-sub' }, 'MQTT subscribe filters'), sub,
  h('label', { for: 'key-cidrs' }, 'Allowed networks (CIDR, comma-separated; empty: anywhere)'), cidrs,
  h('label', { for: 'key-days' }, 'Expires after (days)'), days,
  error, h('button', { type: 'submit' }, 'Create key'));
  return form;
}

function secretBox(k) {
  const code = h('code', { id: 'new-secret' }, k.key);
  return h('div', { class: 'secret', role: 'alert' },
    h('p', {}, `The secret of ${k.name}, shown once — copy it now:`), code,
    h('button', { onclick: async () => { await navigator.clipboard?.writeText(k.key).catch(() => {}); toast('Copied'); } }, 'Copy'),
    h('p', { class: 'muted' }, `MQTT username: ${k.mqtt_username}`));
}

export async function keysPage({ canWrite: write }) {
  const canWrite = () => write;
  const main = document.getElementById('main');
  const holder = h('div', { id: 'keys' }, h('p', { class: 'loading', role: 'status' }, 'Loading keys…'));
  const secret = h('div', { 'aria-live': 'polite' });
  clear(main).append(h('h1', {}, 'API keys'), secret, holder, canWrite() ? createForm((k) => { secret.replaceChildren(secretBox(k)); show(); }) : '');
  const show = async () => {
    try {
      const [{ keys }, usage] = await Promise.all([api('GET', '/v1/keys'), api('GET', '/v1/usage').catch(() => ({ keys: [] }))]);
      const used = Object.fromEntries(usage.keys.map((u) => [u.subject, u]));
      if (!keys.length) { holder.replaceChildren(h('p', { class: 'empty' }, 'No keys.')); return; }
      holder.replaceChildren(h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, ...['Name', 'Id', 'Kind', 'Scopes', 'Networks', 'Created', 'Expires', 'Today', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, ...keys.map((k) => {
          const u = used[k.id];
          const live = !k.revoked_at;
          return h('tr', { 'data-key': k.name },
            h('td', {}, k.name), h('td', {}, h('code', {}, k.id)), h('td', {}, k.kind), h('td', {}, k.scopes.join(', ') || (k.kind === 'sk' ? 'all' : '-')),
            h('td', {}, k.allow_cidrs.join(', ') || 'anywhere'), h('td', {}, time(k.created_at)), h('td', {}, k.revoked_at ? 'revoked' : time(k.expires_at)),
            h('td', {}, u ? `${u.connects} connects, ${u.published} in, ${u.delivered} out` : '-'),
            h('td', {}, ...(canWrite() && live ? [
              h('button', { onclick: async () => {
                const grace = prompt(`Rotate ${k.name}: seconds the old key keeps working`, '3600');
                if (grace === null) return;
                try { const n = await api('POST', `/v1/keys/${k.id}/rotate`, { grace_seconds: Number(grace) }); secret.replaceChildren(secretBox(n)); show(); } catch (e) { toast(e.message, true); }
              } }, 'Rotate'),
              h('button', { class: 'danger', onclick: async () => {
                if (!confirm(`Revoke ${k.name}? Its live sessions close at once.`)) return;
                try { const r = await api('DELETE', `/v1/keys/${k.id}`); toast(`Revoked ${k.name}; ${r.closed_sessions} sessions closed`); show(); } catch (e) { toast(e.message, true); }
              } }, 'Revoke'),
            ] : [])));
        })))));
    } catch (e) { holder.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message)); }
  };
  await show();
}
