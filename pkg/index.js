// @cloudsignal/client — ESM entry. Loads the WebAssembly module once (top-level await), then
// exposes CloudSignalClient: an MQTT 5 client over WebSocket that fetches and refreshes its own
// tokens. Works with bundlers (Vite, webpack 5, esbuild) and <script type="module">.
import init, { Client, version } from './wasm/cloudsignal_client.js';

await init({ module_or_path: new URL('./wasm/cloudsignal_client_bg.wasm', import.meta.url) });

export { version };

function need(cond, what) {
  if (!cond) throw new Error(`not a CloudSignal token response: ${what}`);
}

/**
 * A token response (the JSON your backend or the CloudSignal worker returns), checked. Times
 * are milliseconds since the epoch.
 */
export class TokenResponse {
  /** Parses JSON text (or takes the parsed object); throws an Error that says what is wrong. */
  static parse(json) {
    let v;
    try {
      v = typeof json === 'string' ? JSON.parse(json) : json;
    } catch (e) {
      throw new Error(`not a CloudSignal token response: ${e.message}`);
    }
    need(v && typeof v === 'object', 'not an object');
    const c = v.mqtt_credentials;
    need(c && typeof c === 'object', 'missing mqtt_credentials');
    need(typeof c.username === 'string', 'missing field `username`');
    need(typeof c.password === 'string', 'missing field `password`');
    need(Number.isSafeInteger(v.expires_at) && v.expires_at >= 0, 'expires_at must be Unix seconds');
    need(Number.isSafeInteger(v.refresh_at) && v.refresh_at >= 0, 'refresh_at must be Unix seconds');
    need(v.acl && Array.isArray(v.acl.pub) && Array.isArray(v.acl.sub), 'acl must be {pub: [...], sub: [...]}');
    need(v.broker && typeof v.broker.wss_url === 'string', 'missing broker.wss_url');
    return new TokenResponse(v);
  }

  #v;
  constructor(v) { this.#v = v; }
  /** MQTT username, `<user>@<org>`. */
  get username() { return this.#v.mqtt_credentials.username; }
  /** MQTT password: the `tkn_` token. Treat as a secret. */
  get password() { return this.#v.mqtt_credentials.password; }
  get expiresAt() { return this.#v.expires_at * 1000; }
  get refreshAt() { return this.#v.refresh_at * 1000; }
  get aclJson() { return JSON.stringify({ pub: this.#v.acl.pub, sub: this.#v.acl.sub }); }
  get wssUrl() { return this.#v.broker.wss_url; }
  refreshInMs(nowMs) { return Math.max(0, this.refreshAt - nowMs); }
  isExpired(nowMs) { return nowMs >= this.expiresAt; }
  /** Kept for compatibility: nothing to release. */
  free() {}
}

/**
 * When to refresh a token response (JSON text or object), in milliseconds since the epoch.
 * @param {string | object} response
 * @returns {number}
 */
export function refreshAt(response) {
  return TokenResponse.parse(response).refreshAt;
}

/** What the WebAssembly client reads from a token. */
function normalize(value) {
  const t = TokenResponse.parse(value);
  return { username: t.username, password: t.password, expiresAt: t.expiresAt, refreshAt: t.refreshAt, wssUrl: t.wssUrl };
}

/** An error from the token endpoint that retrying will not fix (401/403: signed out, revoked).
 * `code` and `detail` come from the endpoint's RFC 9457 problem document (the worker's and the
 * control plane's shape; an older `{error, error_description}` body is read too). */
export class TokenRefusedError extends Error {
  constructor(status, body) {
    const code = body?.code ?? body?.error;
    const detail = body?.detail ?? body?.error_description ?? '';
    super(`token endpoint refused: HTTP ${status}${code ? ` ${code}: ${detail}` : ''}`);
    this.name = 'TokenRefusedError';
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.fatal = true;
  }
}

/** A token source from `tokenUrl` (POST, with `headers()` awaited on every fetch). */
function urlTokenSource(tokenUrl, headers) {
  return async () => {
    const h = headers ? await headers() : {};
    const res = await fetch(tokenUrl, { method: 'POST', headers: h, cache: 'no-store' });
    let body = null;
    try {
      body = await res.json();
    } catch {
      // not JSON: reported below
    }
    if (res.status === 401 || res.status === 403) throw new TokenRefusedError(res.status, body);
    if (!res.ok || !body) throw new Error(`token endpoint failed: HTTP ${res.status}`);
    return body;
  };
}

function randomClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return `cs-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/**
 * An MQTT 5 client for browsers that fetches its own short-lived token, refreshes it before
 * expiry over the open connection (MQTT 5 AUTH), reconnects with backoff, resumes its session
 * and replays unacknowledged messages. Events (all `CustomEvent`s, data in `detail`):
 * `state`, `message`, `subscribed`, `subscribe-error`, `unsubscribed`, `delivered`,
 * `token` (re-authenticated), `token-fetched`, `token-error`.
 */
export class CloudSignalClient extends EventTarget {
  #client;

  constructor(options = {}) {
    super();
    const { tokenUrl, headers, getToken, url, clientId, keepAlive, sessionExpiry, maxQueued, protocolVersion } = options;
    if (!getToken && !tokenUrl) throw new TypeError('CloudSignalClient needs tokenUrl or getToken');
    if (getToken && tokenUrl) throw new TypeError('give either tokenUrl or getToken, not both');
    const source = getToken ?? urlTokenSource(tokenUrl, headers);
    this.#client = new Client({
      getToken: async () => normalize(await source()),
      emit: (type, detail) => this.dispatchEvent(new CustomEvent(type, { detail })),
      clientId: clientId ?? randomClientId(),
      url, keepAlive, sessionExpiry, maxQueued, protocolVersion,
    });
  }

  /** Fetches a token and connects; reconnects by itself from then on. Returns this. */
  connect() {
    this.#client.connect();
    return this;
  }

  /** Subscribes now, or on (re)connection; the outcome is a `subscribed` or `subscribe-error` event. */
  subscribe(filter, { qos = 1 } = {}) {
    this.#client.subscribe(filter, qos);
    return this;
  }

  unsubscribe(filter) {
    this.#client.unsubscribe(filter);
    return this;
  }

  /** Publishes a string or bytes; queued while offline (bounded by `maxQueued`). */
  publish(topic, payload, { qos = 0, retain = false } = {}) {
    const bytes = typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
    this.#client.publish(topic, bytes, qos, retain);
    return this;
  }

  /** Fetches and applies a new token now (e.g. after the identity provider refreshed). */
  refreshToken() {
    this.#client.refreshToken();
  }

  /** Disconnects cleanly and stops reconnecting. */
  disconnect() {
    this.#client.disconnect();
  }

  /** `idle`, `connecting`, `connected`, `reconnecting`, `fatal` or `closed`. */
  get state() {
    return this.#client.state;
  }

  /** When the current token expires, ms since the epoch (0 before the first token). */
  get expiresAt() {
    return this.#client.expiresAt;
  }

  /** Publishes queued or awaiting acknowledgement. */
  get pending() {
    return this.#client.pending;
  }

  /** Shorthand: `client.on('message', ({ topic, payload }) => …)`. Returns an unsubscribe function. */
  on(type, handler) {
    const listener = (e) => handler(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }
}

/**
 * Keeps a client in step with a Supabase session (`supabase-js` v2): a token source that sends
 * the current access token, `TOKEN_REFRESHED` / `SIGNED_IN` / `USER_UPDATED` → fetch new MQTT
 * credentials (role changes apply live), `SIGNED_OUT` → disconnect cleanly.
 * Returns a function that detaches.
 */
export function attachSupabase(client, supabase) {
  const { data } = supabase.auth.onAuthStateChange((event) => {
    if (event === 'SIGNED_OUT') client.disconnect();
    else if (event === 'TOKEN_REFRESHED' || event === 'SIGNED_IN' || event === 'USER_UPDATED') {
      if (client.state === 'idle' || client.state === 'closed') client.connect();
      else client.refreshToken();
    }
  });
  return () => data?.subscription?.unsubscribe();
}

/** `headers()` for `tokenUrl` that sends the Supabase session's access token. */
export function supabaseHeaders(supabase) {
  return async () => {
    const { data } = await supabase.auth.getSession();
    const token = data?.session?.access_token;
    if (!token) throw new TokenRefusedError(401, { code: 'signed_out', detail: 'no Supabase session' });
    return { authorization: `Bearer ${token}` };
  };
}
