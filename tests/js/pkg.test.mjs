// The built npm package (pkg/) in headless Chromium: ESM import, WASM instantiation, token timing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStaticServer, launchChromium } from './support/browser.mjs';

let server, browser, page;
const RESPONSE = {
  mqtt_credentials: { username: 'u1@org_k7xm4pqr2n5t', password: 'tkn_example' },
  expires_at: 1_800_003_600,
  refresh_at: 1_800_003_240,
  acl: { pub: ['users/u1/#'], sub: ['users/u1/#'] },
  broker: { wss_url: 'wss://localhost:18885/mqtt', mqtts_url: 'mqtts://localhost:8883' },
};

before(async () => {
  server = await startStaticServer();
  browser = await launchChromium();
  page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${server.url}/tests/js/fixtures/blank.html`);
  assert.deepEqual(errors, []);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('@cloudsignal/client loads in Chromium and computes refreshAt for a token response', async () => {
  const result = await page.evaluate(async (response) => {
    const m = await import('/pkg/index.js');
    const parsed = m.TokenResponse.parse(JSON.stringify(response));
    const out = {
      version: m.version(),
      refreshAt: m.refreshAt(response),
      refreshAtFromText: m.refreshAt(JSON.stringify(response)),
      expiresAt: parsed.expiresAt,
      username: parsed.username,
      acl: JSON.parse(parsed.aclJson),
      refreshIn: parsed.refreshInMs(1_800_003_000_000),
      expired: parsed.isExpired(1_800_003_600_000),
    };
    parsed.free();
    return out;
  }, RESPONSE);
  assert.equal(result.version, '0.1.0');
  assert.equal(result.refreshAt, RESPONSE.refresh_at * 1000);
  assert.equal(result.refreshAtFromText, RESPONSE.refresh_at * 1000);
  assert.equal(result.expiresAt, RESPONSE.expires_at * 1000);
  assert.equal(result.username, 'u1@org_k7xm4pqr2n5t');
  assert.deepEqual(result.acl, RESPONSE.acl);
  assert.equal(result.refreshIn, 240_000);
  assert.equal(result.expired, true);
});

test('a malformed token response throws an Error that says why', async () => {
  const message = await page.evaluate(async () => {
    const m = await import('/pkg/index.js');
    try {
      m.TokenResponse.parse('{"mqtt_credentials": {}}');
      return null;
    } catch (e) {
      return String(e.message);
    }
  });
  assert.match(message, /not a CloudSignal token response: missing field `username`/);
});
