// @cloudsignal/client end to end, every process real and on loopback: the demo app (www/, built
// by Vite against the npm-packed package) in Chromium signs in at a Supabase stand-in, exchanges the JWT at the worker (workerd), connects over WSS to
// `cloudsignal serve`; a backend publishes at QoS 1 over MQTTS with an sk_ key (mqtt.js). With a
// 20-second token the page lives through refreshes over AUTH without a reconnect or a lost or
// duplicated message, survives a broker restart by itself, and ends in a fatal "revoked" state
// without retrying when the user's tokens are revoked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import mqtt from 'mqtt';
import { ORG, ISSUER, CLI, cli, tempDir, writeTemp, supabaseProject, startWorker, startServe, freePort } from './support/env.mjs';
import { startStaticServer, launchChromium } from './support/browser.mjs';

const ADMIN = 'admin-secret-for-client-tests-0123456789';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let project, worker, site, browser, dir, ports, broker, sk, controlOrg;

function startBroker() {
  return startServe(['--data-dir', `${dir}/data`, '--control-addr', `127.0.0.1:${ports.control}`,
    '--mqtt-addr', `127.0.0.1:${ports.mqtt}`, '--ws-addr', 'off', '--tls-addr', `127.0.0.1:${ports.tls}`,
    '--wss-addr', `127.0.0.1:${ports.wss}`, '--tls-cert', `${dir}/cert.pem`, '--tls-key', `${dir}/key.pem`,
    // the control plane's org is the worker's: the backend's key and the app's users are one tenant
    '--org', ORG, '--issuer-org', ORG,
    '--issuer', ISSUER, '--issuer-jwks', `${worker.url}/.well-known/jwks.json`, '--revocation-poll', '1',
    '--issuer-revocations-token-file', writeTemp(dir, 'feed.secret', ADMIN)],
  { ports: [ports.wss, ports.control, ports.tls], env: { CLOUDSIGNAL_LOG: 'info' } });
}

before(async () => {
  dir = tempDir();
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  ports = { control: await freePort(), mqtt: await freePort(), tls: await freePort(), wss: await freePort() };
  project = await supabaseProject();
  // the Supabase stand-in: signs a user in (an HS256 access token with Supabase's claims)
  site = await startStaticServer({
    '/idp/token': async (req, res) => {
      const sub = new URL(req.url, 'http://x').searchParams.get('sub') || crypto.randomUUID();
      const { jwt } = await project.mint({ sub }, { alg: 'HS256' });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: jwt, sub }));
    },
  });
  const key = (await cli('keygen', '--kid', 'client-e2e-1')).stdout.trim();
  worker = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: key, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG, CLOUDSIGNAL_TOKEN_TTL: '20',
    SUPABASE_URL: project.url, SUPABASE_JWT_SECRET: project.secret, CLOUDSIGNAL_ALLOWED_ORIGINS: site.url,
    CLOUDSIGNAL_ADMIN_SECRET: ADMIN, CLOUDSIGNAL_BROKER_WSS_URL: `wss://127.0.0.1:${ports.wss}/mqtt`,
  }, { kv: true });
  broker = await startBroker();
  sk = (await import('node:fs')).readFileSync(`${dir}/data/admin.key`, 'utf8').trim();
  const probe = await fetch(`http://127.0.0.1:${ports.control}/v1/tokens`, {
    method: 'POST', headers: { authorization: `Bearer ${sk}`, 'content-type': 'application/json' }, body: JSON.stringify({ user: 'probe' }),
  });
  controlOrg = (await probe.json()).mqtt_credentials.username.split('@')[1];
  browser = await launchChromium({ insecureTls: true });
});

after(async () => {
  await browser?.close();
  await broker?.stop();
  await worker?.mf.dispose();
  await site?.close();
  await project?.jwksServer.close();
});

/** The backend: mqtt.js over MQTTS with the control plane's sk_ key. */
async function backend() {
  const c = mqtt.connect(`mqtts://127.0.0.1:${ports.tls}`, {
    username: `admin@${controlOrg}`, password: sk, protocolVersion: 5, rejectUnauthorized: false, reconnectPeriod: 0,
  });
  await new Promise((r, j) => { c.once('connect', r); c.once('error', j); });
  return c;
}
const publish = (c, topic, text) => new Promise((r, j) => c.publish(topic, text, { qos: 1 }, (e) => (e ? j(e) : r())));

async function openPage(query) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.errors = errors;
  await page.goto(`${site.url}/www/dist/index.html?worker=${encodeURIComponent(worker.url)}&autostart&${query}`);
  return page;
}
const read = (page) => page.evaluate(() => (window.log ? JSON.parse(JSON.stringify(window.log)) : null));
async function until(page, predicate, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const log = await read(page);
    if (log && predicate(log)) return log;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify({ states: log?.states.map((s) => s.state), tokenErrors: log?.tokenErrors, errors: page.errors })}`);
    await sleep(100);
  }
}

test('refreshes over AUTH with no reconnect and no lost or duplicated QoS 1 message; recovers from a broker restart; a revocation is fatal, without retries', async () => {
  const sub = crypto.randomUUID();
  const topic = `users/${sub}/notifications`;
  const pub = await backend();
  await publish(pub, topic, 'retained-hello').catch(() => {}); // not retained: just warms the route
  const page = await openPage(`sub=${sub}`);
  let log = await until(page, (l) => l.subscribed.length === 1, 'the subscription');
  assert.equal(log.states.at(-1).state, 'connected');

  // 36 s of QoS 1 traffic from the backend across at least three token refreshes
  const sent = [];
  const start = Date.now();
  for (let i = 0; Date.now() - start < 36_000; i++) {
    await publish(pub, topic, `m${i}`);
    sent.push(`m${i}`);
    await sleep(200);
  }
  log = await until(page, (l) => l.messages.filter((m) => m.text.startsWith('m')).length >= sent.length, 'every message');
  const got = log.messages.map((m) => m.text).filter((t) => t.startsWith('m'));
  assert.deepEqual(got, sent, 'every QoS 1 message exactly once, in order');
  assert.ok(log.tokens.length >= 3, `${log.tokens.length} refreshes over AUTH`);
  assert.ok(log.tokens.every((t) => t.via === 'auth'));
  const states = log.states.map((s) => s.state);
  assert.deepEqual(states, ['connecting', 'connected'], `no reconnect during refreshes: ${states}`);
  console.log(`# ${sent.length} QoS 1 messages over ${log.tokens.length} AUTH refreshes, 0 lost, 0 duplicated, 0 reconnects`);

  // the network is cut: the broker restarts; the page recovers by itself
  await broker.stop();
  await until(page, (l) => l.states.at(-1).state === 'reconnecting', 'reconnecting');
  broker = await startBroker();
  const restarted = Date.now();
  log = await until(page, (l) => l.states.at(-1).state === 'connected' && l.states.length > 2, 'reconnected', 30_000);
  const reconnectMs = Date.now() - restarted;
  await until(page, (l) => l.subscribed.length >= 2, 'resubscribed');
  const pub2 = await backend();
  await publish(pub2, topic, 'after-restart');
  log = await until(page, (l) => l.messages.some((m) => m.text === 'after-restart'), 'a message after the restart');
  console.log(`# broker restart: page connected again ${reconnectMs} ms after the broker was back`);

  // the user's tokens are revoked at the worker; the broker follows its feed and closes the session
  const res = await fetch(`${worker.url}/v1/revoke`, {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ user: sub }),
  });
  assert.equal(res.status, 201);
  log = await until(page, (l) => l.states.at(-1).state === 'fatal', 'the fatal state');
  assert.equal(log.states.at(-1).reason, 0x98);
  const fetchedAtFatal = log.fetched.length;
  const statesAtFatal = log.states.length;
  await sleep(3000);
  log = await read(page);
  assert.equal(log.fetched.length, fetchedAtFatal, 'no token fetched after the fatal close');
  assert.equal(log.states.length, statesAtFatal, 'no reconnect attempt after the fatal close');
  assert.match(await page.textContent('#state'), /fatal: Administrative action/);
  assert.match(await page.textContent('#reason'), /0x98/);
  assert.deepEqual(page.errors, []);
  pub.end(true);
  pub2.end(true);
  await page.close();
});

test("a page subscribing to another user's topic is refused with 0x87 and keeps its own subscription", async () => {
  const page = await openPage(`sub=${crypto.randomUUID()}&other=${crypto.randomUUID()}`);
  const log = await until(page, (l) => l.subscribed.length + l.subErrors.length >= 2, 'both SUBACKs');
  assert.equal(log.subErrors.length, 1);
  assert.equal(log.subErrors[0].reason, 0x87);
  assert.equal(log.subErrors[0].reasonName, 'Not authorized');
  assert.equal(log.states.at(-1).state, 'connected', 'a refused subscription does not close the connection');
  assert.match(await page.textContent('#suberror'), /Not authorized \(0x87\)/);
  await page.close();
});

test('time from page load to first message', async () => {
  const sub = crypto.randomUUID();
  const page = await openPage(`sub=${sub}`);
  await until(page, (l) => l.subscribed.length === 1, 'the subscription');
  const pub = await backend();
  await publish(pub, `users/${sub}/notifications`, 'first');
  const log = await until(page, (l) => l.firstMessageMs !== null, 'the first message');
  const connected = log.states.find((s) => s.state === 'connected').at;
  console.log(`# page load → connected ${connected.toFixed(0)} ms (token fetched, WSS open, CONNACK, SUBACK); a message after subscribing arrives at ${log.firstMessageMs.toFixed(0)} ms`);
  pub.end(true);
  await page.close();
});
