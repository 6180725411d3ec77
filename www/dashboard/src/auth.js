// Sign-in for the dashboard: OAuth 2.1 authorization code with PKCE (S256) against the control
// plane that serves it (client `cloudsignal-dashboard`), the same accounts and single sign-on
// as `cloudsignal login`. Tokens live in sessionStorage (this tab only); the access token is
// refreshed before it expires, and on a 401 once.

const CLIENT_ID = 'cloudsignal-dashboard';
const KEY = 'cloudsignal.dashboard.session';
const PENDING = 'cloudsignal.dashboard.pending';

const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));
const base = () => location.origin;
const redirectUri = () => `${base()}/dashboard/callback`;

function load() {
  try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; }
}
function save(s) {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s)); else sessionStorage.removeItem(KEY);
}

/** Sends the browser to the sign-in page. */
export async function signIn() {
  const verifier = random(32);
  const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const state = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const q = new URLSearchParams({
    response_type: 'code', client_id: CLIENT_ID, redirect_uri: redirectUri(),
    code_challenge: challenge, code_challenge_method: 'S256', state,
  });
  location.assign(`${base()}/oauth/authorize?${q}`);
}

async function tokenRequest(form) {
  const r = await fetch(`${base()}/oauth/token`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error_description ?? `sign-in failed (HTTP ${r.status})`);
  return { access: body.access_token, refresh: body.refresh_token, expires: Date.now() + body.expires_in * 1000, user: body.user };
}

/** On /dashboard/callback: checks `state`, redeems the code. Returns whether it handled one. */
export async function completeSignIn() {
  if (!location.pathname.endsWith('/dashboard/callback')) return false;
  const q = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? 'null');
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, '', `${base()}/dashboard/#/overview`);
  if (!pending || q.get('state') !== pending.state) throw new Error('This sign-in answer does not belong to this tab (state mismatch). Sign in again.');
  if (q.get('error')) throw new Error(`Sign-in refused: ${q.get('error_description') ?? q.get('error')}`);
  save(await tokenRequest({
    grant_type: 'authorization_code', code: q.get('code'), redirect_uri: redirectUri(), client_id: CLIENT_ID, code_verifier: pending.verifier,
  }));
  return true;
}

export const signedIn = () => load() !== null;

async function refresh() {
  const s = load();
  if (!s) throw new Error('not signed in');
  try {
    save(await tokenRequest({ grant_type: 'refresh_token', refresh_token: s.refresh, client_id: CLIENT_ID }));
  } catch (e) {
    save(null);
    throw e;
  }
}

async function bearer() {
  const s = load();
  if (!s) throw new Error('not signed in');
  if (Date.now() > s.expires - 30_000) await refresh();
  return load().access;
}

/** An API error with the problem document's code and detail. */
export class ApiError extends Error {
  constructor(status, doc) {
    super(doc?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.code = doc?.code ?? 'error';
  }
}

/** Calls the admin API as the signed-in person. */
export async function api(method, path, body) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const r = await fetch(`${base()}${path}`, {
      method,
      headers: { authorization: `Bearer ${await bearer()}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (r.status === 401 && attempt === 0) { await refresh(); continue; }
    const doc = await r.json().catch(() => null);
    if (!r.ok) throw new ApiError(r.status, doc);
    return doc;
  }
  throw new ApiError(401, { code: 'invalid_session', detail: 'sign in again' });
}

/** Reads a server-sent event stream as the signed-in person; calls `onEvent(data)` per event. */
export async function stream(path, onEvent, signal) {
  const r = await fetch(`${base()}${path}`, { headers: { authorization: `Bearer ${await bearer()}` }, signal });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}

/** Signs out: the session is revoked on the server, the tab forgets it. */
export async function signOut() {
  const s = load();
  save(null);
  if (s) {
    await fetch(`${base()}/oauth/revoke`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: s.refresh }),
    }).catch(() => {});
  }
}
