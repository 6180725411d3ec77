// @cloudsignal/client — ESM entry. Loads the WebAssembly module once (top-level await), then
// exposes CloudSignalClient: an MQTT 5 client over WebSocket that fetches and refreshes its own
// tokens. Works with bundlers (Vite, webpack 5, esbuild) and <script type="module">.
import init, { Client, TokenResponse, version } from './wasm/cloudsignal_client.js';

await init({ module_or_path: new URL('./wasm/cloudsignal_client_bg.wasm', import.meta.url) });

export { TokenResponse, version };

/**
 * Parses a token response (the JSON your backend or the CloudSignal worker returns) and
 * returns when to refresh it, in milliseconds since the epoch.
 * @param {string | object} response
 * @returns {number}
 */
export function refreshAt(response) {
  const json = typeof response === 'string' ? response : JSON.stringify(response);
  const parsed = TokenResponse.parse(json);
  try {
    return parsed.refreshAt;
  } finally {
    parsed.free();
  }
}

/** An error from the token endpoint that retrying will not fix (401/403: signed out, revoked). */
export class TokenRefusedError extends Error {
  constructor(status, body) {
    super(`token endpoint refused: HTTP ${status}${body?.error ? ` ${body.error}: ${body.error_description ?? ''}` : ''}`);
    this.name = 'TokenRefusedError';
    this.status = status;
    this.code = body?.error;
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
    this.#client = new Client({
      getToken: getToken ?? urlTokenSource(tokenUrl, headers),
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
    if (!token) throw new TokenRefusedError(401, { error: 'signed_out', error_description: 'no Supabase session' });
    return { authorization: `Bearer ${token}` };
  };
}
