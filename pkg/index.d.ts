/**
 * @cloudsignal/client — short-lived MQTT credentials for browsers.
 *
 * This version handles the token response returned by a CloudSignal token endpoint
 * (the edge worker's `POST /v1/token`, or your backend). Times are milliseconds since the
 * epoch, like `Date.now()`.
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

/** A parsed token response. Call `free()` when done to release its WebAssembly memory. */
export class TokenResponse {
  /** Parses the JSON text of a token response; throws an Error explaining what is wrong. */
  static parse(json: string): TokenResponse;
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
  /** Releases the WebAssembly memory held by this object. */
  free(): void;
}

/** When to refresh a token response (JSON text or object), in milliseconds since the epoch. */
export function refreshAt(response: string | TokenResponseJson): number;

/** The package version. */
export function version(): string;
