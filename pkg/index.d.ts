/**
 * @cloudsignal/client — an MQTT 5 client for browsers that fetches and refreshes its own
 * short-lived CloudSignal tokens. Times are milliseconds since the epoch, like `Date.now()`.
 */

/** The ACL a token grants: MQTT topic filters the holder may publish and subscribe to. */
export interface Acl {
  pub: string[];
  sub: string[];
}

/** The JSON body of a token response, as sent on the wire (times in Unix seconds). */
export interface TokenResponseJson {
  mqtt_credentials: { username: string; password: string; client_id?: string };
  expires_at: number;
  refresh_at: number;
  acl: Acl;
  broker: { wss_url: string; mqtts_url: string };
}

/** A parsed, checked token response. */
export class TokenResponse {
  /** Parses the JSON text (or object) of a token response; throws an Error explaining what is wrong. */
  static parse(json: string | TokenResponseJson): TokenResponse;
  /** MQTT username, `<user>@<org>`. */
  readonly username: string;
  /** MQTT password: the `tkn_` token. Treat as a secret. */
  readonly password: string;
  /** Expiry, in milliseconds since the epoch. */
  readonly expiresAt: number;
  /** When to fetch a fresh token, in milliseconds since the epoch. */
  readonly refreshAt: number;
  /** The granted ACL as JSON text (`{"pub": [...], "sub": [...]}`). */
  readonly aclJson: string;
  /** The broker's secure WebSocket URL. */
  readonly wssUrl: string;
  /** Milliseconds from `nowMs` until a refresh is due (0 when due already). */
  refreshInMs(nowMs: number): number;
  /** Whether the token has expired at `nowMs`. */
  isExpired(nowMs: number): boolean;
  /** Kept for compatibility (earlier versions held WebAssembly memory): does nothing. */
  free(): void;
}

/** When to refresh a token response (JSON text or object), in milliseconds since the epoch. */
export function refreshAt(response: string | TokenResponseJson): number;

/** The package version. */
export function version(): string;

/** Where the client is. `fatal` needs a user action (signed out, revoked, not authorized). */
export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'fatal' | 'closed';

/** Why a connection ended or an operation failed: an MQTT 5 reason code and its name. */
export interface Reason {
  /** MQTT reason code (e.g. 0x98 = 152 "Administrative action": revoked), or null for a network failure. */
  reason: number | null;
  /** The specification's name for the code, or "Network error" / "Token refused". */
  reasonName: string;
  /** The server's human-readable reason, when it sent one. */
  reasonString?: string;
}

export interface ClientEvents {
  /** The state changed; `connected` carries `sessionPresent`, `reconnecting` carries `retryInMs`. */
  state: Reason & { state: ClientState; sessionPresent?: boolean; retryInMs?: number; url?: string };
  /** A message arrived. */
  message: { topic: string; payload: Uint8Array; qos: 0 | 1 | 2; retain: boolean };
  /** The broker granted a subscription. */
  subscribed: { filter: string; qos: 0 | 1 | 2 };
  /** The broker refused a subscription (e.g. reason 0x87 "Not authorized"). It is not retried. */
  'subscribe-error': Reason & { filter: string };
  unsubscribed: { filter: string };
  /** A QoS 1/2 publish of ours was acknowledged (or refused). */
  delivered: Reason & { topic: string; ok: boolean };
  /** A new token is in force on the open connection (MQTT 5 re-authentication). */
  token: { expiresAt: number; refreshAt: number; username: string; via: 'auth' };
  /** A token was fetched. */
  'token-fetched': { expiresAt: number; refreshAt: number; username: string; via: 'fetch' };
  /** Fetching a token failed; `fatal` when the endpoint refused (401/403). Otherwise retried with backoff. */
  'token-error': { message: string; fatal: boolean };
}

export interface ClientOptions {
  /** Your token endpoint (the CloudSignal worker's `/v1/token`, or your backend). POSTed to. */
  tokenUrl?: string;
  /** Headers for each token request, e.g. `{ authorization: 'Bearer <IdP access token>' }`. */
  headers?: () => Promise<Record<string, string>> | Record<string, string>;
  /** Or: your own token source, resolving to a token response (object or JSON text). */
  getToken?: () => Promise<TokenResponseJson | string>;
  /** Broker URL; default: the token response's `broker.wss_url`. */
  url?: string;
  /** Client identifier (keep it per tab/device to resume sessions). Default: random. */
  clientId?: string;
  /** Keep-alive, seconds. Default 30. */
  keepAlive?: number;
  /** How long the broker keeps the session while we are away, seconds. Default 300. */
  sessionExpiry?: number;
  /** Publishes kept while offline. Default 1000; beyond it `publish` throws. */
  maxQueued?: number;
  /** 5 (default; falls back to 4 when the broker refuses) or 4 (MQTT 3.1.1: refresh by reconnecting). */
  protocolVersion?: 4 | 5;
}

/** Thrown by the default token source when the endpoint answers 401/403 (fatal: no retry). */
export class TokenRefusedError extends Error {
  /** The HTTP status. */
  readonly status: number;
  /** The stable `code` of the endpoint's problem document (e.g. `invalid_token`). */
  readonly code?: string;
  /** Its human `detail`. */
  readonly detail: string;
  readonly fatal: true;
}

/**
 * An MQTT 5 client over WebSocket that fetches its own token, refreshes it before expiry over
 * the open connection, reconnects with backoff and jitter, resumes its session and replays
 * unacknowledged QoS 1/2 publishes. Events are `CustomEvent`s with the data in `detail`.
 */
export class CloudSignalClient extends EventTarget {
  constructor(options: ClientOptions);
  /** Fetches a token and connects; reconnects by itself from then on. */
  connect(): this;
  subscribe(filter: string, options?: { qos?: 0 | 1 | 2 }): this;
  unsubscribe(filter: string): this;
  /** Publishes; queued while offline. Throws on an invalid topic or a full queue. */
  publish(topic: string, payload: string | Uint8Array, options?: { qos?: 0 | 1 | 2; retain?: boolean }): this;
  /** Fetches and applies a new token now. */
  refreshToken(): void;
  /** Disconnects cleanly (the broker forgets the session) and stops reconnecting. */
  disconnect(): void;
  readonly state: ClientState;
  /** Current token's expiry (0 before the first token). */
  readonly expiresAt: number;
  /** Publishes queued or awaiting acknowledgement. */
  readonly pending: number;
  /** `client.on('message', ({ topic, payload }) => …)`; returns a function that removes the listener. */
  on<K extends keyof ClientEvents>(type: K, handler: (detail: ClientEvents[K]) => void): () => void;
}

/** The parts of a supabase-js v2 client the helpers use. */
export interface SupabaseLike {
  auth: {
    onAuthStateChange(cb: (event: string, session: unknown) => void): { data: { subscription: { unsubscribe(): void } } };
    getSession(): Promise<{ data: { session: { access_token: string } | null } }>;
  };
}

/** Follows a Supabase session: refreshed or changed → new MQTT token; signed out → disconnect. Returns a detach function. */
export function attachSupabase(client: CloudSignalClient, supabase: SupabaseLike): () => void;

/** `headers` for `tokenUrl` sending the Supabase session's access token. */
export function supabaseHeaders(supabase: SupabaseLike): () => Promise<Record<string, string>>;
