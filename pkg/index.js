// @cloudsignal/client — ESM entry. Loads the WebAssembly module once (top-level await), then
// re-exports it. Works with bundlers (Vite, webpack 5, esbuild) and <script type="module">.
import init, { TokenResponse, version } from './wasm/cloudsignal_client.js';

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
