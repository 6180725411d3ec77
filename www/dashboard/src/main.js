// The CloudSignal dashboard: a few pages over the control plane's API, signed in as a person.
// Hash routes; role-aware (a viewer sees no write buttons, and the API refuses them anyway);
// every list has loading, empty and error states.
import './style.css';
import { api, completeSignIn, signIn, signOut, signedIn, ApiError } from './auth.js';
import { h, clear, time, ago, countdown, toast } from './ui.js';
import { overview } from './overview.js';
import { keysPage } from './keys.js';
import { usagePage } from './usage.js';

const main = document.getElementById('main');
let me = null;
let leave = null; // the current page's cleanup (streams, timers)

export const canWrite = () => me && (me.role === 'owner' || me.role === 'admin');

function state(kind, text) {
  return h('p', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text);
}

async function load(fn, ...args) {
  try {
    return await fn(...args);
  } catch (e) {
    clear(main).append(state('error', e instanceof ApiError ? `${e.message} (${e.code})` : String(e.message ?? e)));
    return null;
  }
}

/** What revoking a session's credential means: its key, its token, or its certificate. */
function revocation(s) {
  const c = s.credential ?? {};
  if (c.key_id) return [`API key ${s.username}`, 'DELETE', `/v1/keys/${encodeURIComponent(c.key_id)}`];
  if (c.jti) return [`${s.username}'s token`, 'DELETE', `/v1/tokens/${encodeURIComponent(c.jti)}`];
  if (c.cert) return [`${s.username}'s certificate`, 'POST', `/v1/certificates/${c.cert}/revoke`];
  return null;
}

function sessionsPage() {
  const search = h('input', { type: 'search', id: 'search', placeholder: 'identity, client id or address', 'aria-label': 'Search sessions' });
  const method = h('select', { id: 'method', 'aria-label': 'Authentication method' },
    ...['all', 'token', 'api_key', 'mtls', 'webhook', 'anonymous'].map((m) => h('option', { value: m }, m)));
  const body = h('tbody');
  const table = h('table', {}, h('thead', {}, h('tr', {}, ...['Identity', 'Client id', 'Address', 'Protocol', 'Listener', 'Method', 'Connected', 'Expires', ''].map((c) => h('th', { scope: 'col' }, c)))), body);
  const status = state('loading', 'Loading sessions…');
  clear(main).append(h('h1', {}, 'Live sessions'), h('div', { class: 'filters' }, search, method), status, h('div', { class: 'scroll' }, table));
  let rows = [];
  const render = () => {
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter((s) => (method.value === 'all' || s.method === method.value)
      && (!q || [s.username, s.identity, s.client_id, s.address].some((v) => String(v).toLowerCase().includes(q))));
    clear(body).append(...shown.map((s) => h('tr', { 'data-client': s.client_id },
      h('td', { title: s.identity }, s.username), h('td', {}, s.client_id), h('td', {}, s.address), h('td', {}, s.protocol),
      h('td', {}, s.listener), h('td', {}, s.method), h('td', {}, ago(s.connected_at)),
      h('td', { 'data-expires': s.expires_at ?? '' }, countdown(s.expires_at)),
      h('td', {}, ...(canWrite() ? [
        h('button', { onclick: () => act(`Kicked ${s.client_id}`, 'POST', `/v1/sessions/${s.id}/kick`) }, 'Kick'),
        revocation(s) && h('button', {
          class: 'danger',
          onclick: () => {
            const [what, m, path] = revocation(s);
            if (confirm(`Revoke ${what}? Every session using it closes now, and it cannot connect again.`)) act(`Revoked ${what}`, m, path);
          },
        }, 'Revoke'),
      ] : [])))));
    status.replaceWith(status);
    status.textContent = shown.length ? `${shown.length} of ${rows.length} sessions` : (rows.length ? 'No session matches.' : 'No client is connected.');
    status.className = shown.length ? 'muted' : 'empty';
  };
  const act = async (what, m, path) => {
    try {
      const r = await api(m, path);
      toast(`${what}: done${r?.closed_sessions !== undefined ? ` (${r.closed_sessions} closed)` : ''}`);
      await refresh();
    } catch (e) { toast(`${what}: ${e.message}`, true); }
  };
  const refresh = async () => {
    try {
      rows = (await api('GET', '/v1/sessions')).sessions;
      render();
    } catch (e) { status.className = 'error'; status.textContent = e.message; }
  };
  search.oninput = render;
  method.onchange = render;
  refresh();
  const timer = setInterval(refresh, 1000);
  const tick = setInterval(() => body.querySelectorAll('[data-expires]').forEach((td) => { td.textContent = countdown(Number(td.dataset.expires) || null); }), 1000);
  return () => { clearInterval(timer); clearInterval(tick); };
}

function usersPage() {
  const who = h('input', { id: 'who-user', required: true, placeholder: 'user id', 'aria-label': 'User to look up' });
  const found = h('div', { 'aria-live': 'polite' });
  const user = h('input', { id: 'user', required: true, placeholder: 'user id', 'aria-label': 'User id' });
  const jti = h('input', { id: 'jti', required: true, placeholder: 'token id (jti)', 'aria-label': 'Token id' });
  const out = h('div', { 'aria-live': 'polite' });
  const run = async (what, m, path) => {
    try {
      const r = await api(m, path);
      out.replaceChildren(state('ok', `${what}: ${r.closed_sessions} live sessions closed.`));
    } catch (e) { out.replaceChildren(state('error', `${what}: ${e.message}`)); }
  };
  // a user's live sessions and the tokens they use (tokens are stateless: the live ones are
  // what can be listed)
  const lookUp = async () => {
    found.replaceChildren(state('loading', 'Looking…'));
    try {
      const mine = (await api('GET', '/v1/sessions')).sessions.filter((x) => x.credential?.user === who.value && x.credential?.jti);
      found.replaceChildren(mine.length ? h('div', { class: 'scroll' }, h('table', {},
        h('thead', {}, h('tr', {}, ...['Client id', 'Token (jti)', 'Address', 'Connected', 'Expires', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, ...mine.map((x) => h('tr', {}, h('td', {}, x.client_id), h('td', {}, h('code', {}, x.credential.jti)), h('td', {}, x.address),
          h('td', {}, ago(x.connected_at)), h('td', {}, countdown(x.expires_at)),
          h('td', {}, canWrite() ? h('button', { class: 'danger', onclick: () => run(`Revoked token ${x.credential.jti}`, 'DELETE', `/v1/tokens/${x.credential.jti}`).then(lookUp) }, 'Revoke token') : '')))))) : state('empty', `${who.value} has no live session with a token.`));
    } catch (e) { found.replaceChildren(state('error', e.message)); }
  };
  const forms = canWrite() ? [
    h('form', { onsubmit: (e) => { e.preventDefault(); run(`Revoked every token of ${user.value}`, 'POST', `/v1/users/${encodeURIComponent(user.value)}/revoke`); } },
      h('label', { for: 'user' }, 'Revoke everything of a user'), user, h('button', { class: 'danger' }, 'Revoke all tokens')),
    h('form', { onsubmit: (e) => { e.preventDefault(); run(`Revoked token ${jti.value}`, 'DELETE', `/v1/tokens/${encodeURIComponent(jti.value)}`); } },
      h('label', { for: 'jti' }, 'Revoke one token'), jti, h('button', { class: 'danger' }, 'Revoke token')),
  ] : [state('muted', 'Viewers cannot revoke tokens.')];
  clear(main).append(h('h1', {}, 'Users & tokens'),
    h('form', { onsubmit: (e) => { e.preventDefault(); lookUp(); } }, h('label', { for: 'who-user' }, 'A user\'s live sessions and tokens'), who, h('button', {}, 'Look up')),
    found, ...forms, out);
}

async function identityPage() {
  clear(main).append(h('h1', {}, 'Identity'), state('loading', 'Loading…'));
  const [id, jwks, audit] = await Promise.all([
    api('GET', '/v1/identity'), fetch('/.well-known/jwks.json').then((r) => r.json()), api('GET', '/v1/audit?limit=1000').catch(() => ({ entries: [] })),
  ]);
  const rotate = canWrite() ? h('button', {
    onclick: async () => {
      try { const r = await api('POST', '/v1/signing-keys/rotate'); toast(`New signing key ${r.kid}`); identityPage(); } catch (e) { toast(e.message, true); }
    },
  }, 'Rotate signing key') : '';
  clear(main).append(
    h('h1', {}, 'Identity'),
    h('h2', {}, 'Token issuers'),
    h('ul', {}, ...id.issuers.map((i) => h('li', {}, i))),
    h('h2', {}, 'Identity providers (token exchange)'),
    id.providers.length ? h('ul', {}, ...id.providers.map((p) => h('li', {}, p))) : state('empty', 'None configured.'),
    h('h2', {}, 'Single sign-on'), h('p', {}, id.sso ?? 'Not configured.'),
    h('h2', {}, 'Signing keys'),
    h('ul', {}, ...jwks.keys.map((k) => h('li', {}, `${k.kid} (${k.alg ?? k.kty})`))), rotate,
    h('h2', {}, 'Audit log'),
    audit.entries.length ? h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, ...['When', 'Who', 'Action', 'Target', 'Outcome'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, ...audit.entries.slice(-100).reverse().map((e) => h('tr', {}, h('td', {}, time(e.at)), h('td', {}, e.actor), h('td', {}, e.action), h('td', {}, e.target ?? ''), h('td', {}, e.outcome)))))) : state('empty', 'Nothing yet.'),
  );
}

const PAGES = { overview, sessions: sessionsPage, keys: keysPage, users: usersPage, usage: usagePage, identity: identityPage };

async function route() {
  if (leave) { leave(); leave = null; }
  const name = location.hash.replace(/^#\//, '') || 'overview';
  const page = PAGES[name] ?? PAGES.overview;
  document.querySelectorAll('#nav a').forEach((a) => a.toggleAttribute('aria-current', a.getAttribute('href') === `#/${name}`));
  const done = await load(page, { canWrite: canWrite() });
  if (typeof done === 'function') leave = done;
  main.focus({ preventScroll: true });
}

async function start() {
  try {
    await completeSignIn();
  } catch (e) {
    clear(main).append(state('error', e.message));
  }
  if (!signedIn()) {
    clear(main).append(h('h1', {}, 'CloudSignal dashboard'), h('p', {}, 'Sign in with your CloudSignal account (or single sign-on).'),
      h('button', { id: 'sign-in', onclick: signIn }, 'Sign in'));
    return;
  }
  me = await load(api, 'GET', '/v1/me');
  if (!me) { clear(main).append(h('button', { onclick: signIn }, 'Sign in again')); return; }
  document.getElementById('nav').hidden = false;
  document.getElementById('who').replaceChildren(`${me.email} (${me.role}) `, h('button', { class: 'link', onclick: async () => { await signOut(); location.reload(); } }, 'Sign out'));
  window.addEventListener('hashchange', route);
  await route();
}

start();
