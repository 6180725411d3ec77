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

test('attachSupabase follows the session: refreshed → new token, signed out → disconnect, signed in → connect', async () => {
  const result = await page.evaluate(async () => {
    const m = await import('/pkg/index.js');
    // a supabase-js v2 stand-in: the two calls the helpers make
    let listener;
    const supabase = {
      auth: {
        onAuthStateChange(cb) { listener = cb; return { data: { subscription: { unsubscribe() { listener = null; } } } }; },
        async getSession() { return { data: { session: { access_token: 'sb-access-token' } } }; },
      },
    };
    const headers = await m.supabaseHeaders(supabase)();
    const calls = [];
    const token = () => ({
      mqtt_credentials: { username: 'u1@org_k7xm4pqr2n5t', password: 'tkn_x' },
      expires_at: Math.floor(Date.now() / 1000) + 600, refresh_at: Math.floor(Date.now() / 1000) + 540,
      acl: { pub: [], sub: [] }, broker: { wss_url: 'ws://127.0.0.1:9/mqtt', mqtts_url: 'mqtts://127.0.0.1:9' },
    });
    const client = new m.CloudSignalClient({ getToken: async () => { calls.push(Date.now()); return token(); } });
    const states = [];
    client.on('state', (d) => states.push(d.state));
    const detach = m.attachSupabase(client, supabase);
    const tick = () => new Promise((r) => setTimeout(r, 100));
    listener('SIGNED_IN', {});
    await tick();
    const afterSignIn = calls.length;
    listener('TOKEN_REFRESHED', {});
    await tick();
    const afterRefresh = calls.length;
    listener('SIGNED_OUT', null);
    await tick();
    const stateAfterSignOut = client.state;
    listener('SIGNED_IN', {});
    await tick();
    const afterSecondSignIn = calls.length;
    detach();
    client.disconnect();
    return { headers, afterSignIn, afterRefresh, stateAfterSignOut, afterSecondSignIn, detached: listener === null, states };
  });
  assert.deepEqual(result.headers, { authorization: 'Bearer sb-access-token' });
  assert.equal(result.afterSignIn, 1, 'signed in: credentials fetched');
  assert.equal(result.afterRefresh, 2, 'Supabase refreshed its session: a new MQTT token');
  assert.equal(result.stateAfterSignOut, 'closed', 'signed out: disconnected');
  assert.equal(result.afterSecondSignIn, 3, 'signed in again: connects with a new token');
  assert.ok(result.detached);
});

test('a failing token fetch is a state the app sees: connecting, then reconnecting with the cause; a refusal is fatal', async () => {
  const result = await page.evaluate(async () => {
    const m = await import('/pkg/index.js');
    let attempts = 0;
    const failing = new m.CloudSignalClient({ getToken: async () => { attempts += 1; throw new TypeError('Failed to fetch'); } });
    const states = [];
    failing.on('state', (d) => states.push({ state: d.state, reasonName: d.reasonName, reasonString: d.reasonString, retry: d.retryInMs }));
    failing.connect();
    const wait = (ms) => new Promise((r) => setTimeout(r, ms));
    for (let i = 0; i < 100 && states.length < 2; i += 1) await wait(20);
    failing.disconnect();
    // the worker answers 401 with a problem document: fatal, with its code and detail
    const refused = new m.CloudSignalClient({
      getToken: async () => { throw new m.TokenRefusedError(401, { type: 'x', title: 'Unauthorized', status: 401, code: 'invalid_token', detail: 'the token has expired' }); },
    });
    const fatal = [];
    refused.on('state', (d) => fatal.push({ state: d.state, reason: d.reason, reasonName: d.reasonName, reasonString: d.reasonString }));
    refused.connect();
    for (let i = 0; i < 100 && fatal.length < 2; i += 1) await wait(20);
    return { states, attempts, fatal, stateNow: refused.state };
  });
  assert.deepEqual(result.states.map((s) => s.state), ['connecting', 'reconnecting', 'closed'], 'disconnect() ends the retries');
  assert.equal(result.states[1].reasonName, 'Token fetch failed');
  assert.equal(result.states[1].reasonString, 'Failed to fetch');
  assert.ok(result.states[1].retry > 0, 'the next try is announced');
  assert.deepEqual(result.fatal.map((s) => s.state), ['connecting', 'fatal']);
  assert.equal(result.fatal[1].reason, null, 'no MQTT reason code is invented for an HTTP refusal');
  assert.match(result.fatal[1].reasonString, /invalid_token: the token has expired/);
  assert.equal(result.stateNow, 'fatal');
});

test('CloudSignalClient refuses bad options and bad topics with clear errors', async () => {
  const errors = await page.evaluate(async () => {
    const m = await import('/pkg/index.js');
    const out = [];
    const attempt = (f) => { try { f(); out.push(null); } catch (e) { out.push(String(e.message)); } };
    attempt(() => new m.CloudSignalClient({}));
    attempt(() => new m.CloudSignalClient({ tokenUrl: '/t', getToken: async () => ({}) }));
    const c = new m.CloudSignalClient({ getToken: async () => new Promise(() => {}) });
    attempt(() => c.subscribe('a/#/b'));
    attempt(() => c.publish('a/+', 'x'));
    attempt(() => c.publish('a', 'x', { qos: 3 }));
    return out;
  });
  assert.match(errors[0], /needs tokenUrl or getToken/);
  assert.match(errors[1], /either tokenUrl or getToken/);
  assert.match(errors[2], /invalid topic/);
  assert.match(errors[3], /invalid topic/);
  assert.match(errors[4], /qos must be 0, 1 or 2/);
});
