// `cargo xtask dev` as a newcomer uses it, on non-default ports (every port moved, as when 5173
// and 1883 are taken): the demo (a Vite app built from the npm-packed package) is served at its
// documented URL, and the same app served from another origin, allowed through
// CLOUDSIGNAL_DEV_ORIGINS, signs in, connects and receives what a backend publishes with the
// admin key of the printed org. Ctrl-C stops everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ORG, ROOT, tempDir, freePort } from './support/env.mjs';
import { startStaticServer, launchChromium } from './support/browser.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('cargo xtask dev on other ports: the documented demo URL, an app on another origin, a backend in the same org, a clean Ctrl-C', async () => {
  const dir = tempDir();
  const ports = {};
  for (const k of ['PORT', 'MQTT_PORT', 'WS_PORT', 'CONTROL_PORT', 'DEMO_PORT']) ports[k] = await freePort();
  const app = await startStaticServer(); // "your app", somewhere else
  const env = { ...process.env, CLOUDSIGNAL_DEV_DIR: dir, CLOUDSIGNAL_DEV_ORIGINS: app.url, CLOUDSIGNAL_DEV_TOKEN_TTL: '30' };
  for (const [k, v] of Object.entries(ports)) env[`CLOUDSIGNAL_DEV_${k}`] = String(v);
  const dev = spawn('node', ['tests/js/support/dev.mjs'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  dev.stdout.on('data', (d) => { out += d; });
  dev.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((r) => dev.on('close', (code, signal) => r({ code, signal })));
  let browser;
  try {
    for (let i = 0; i < 600 && !out.includes('Press Ctrl-C'); i += 1) await sleep(100);
    assert.match(out, /Press Ctrl-C/, out);
    const demo = `http://127.0.0.1:${ports.DEMO_PORT}`;
    assert.ok(out.includes(`${demo}/www/dist/`) && out.includes(`org ${ORG}`) && out.includes(`admin@${ORG}`), out);
    // the documented URL answers the demo, with and without the trailing slash
    for (const path of ['/www/dist/', '/www/dist']) {
      const res = await fetch(`${demo}${path}`);
      assert.equal(res.status, 200, path);
      assert.match(await res.text(), /CloudSignal demo/);
    }
    browser = await launchChromium();
    const page = await browser.newPage();
    const sub = crypto.randomUUID();
    const q = new URLSearchParams({ worker: `http://127.0.0.1:${ports.PORT}`, idp: `${demo}/idp/token`, sub });
    await page.goto(`${app.url}/www/dist/?autostart&${q}`);
    const read = () => page.evaluate(() => JSON.parse(JSON.stringify(window.log ?? null)));
    let log;
    for (let i = 0; i < 300; i += 1) {
      log = await read();
      if (log?.states.at(-1)?.state === 'connected' && log.subscribed.length) break;
      await sleep(100);
    }
    assert.equal(log?.states.at(-1)?.state, 'connected', JSON.stringify(log));
    // a backend with the printed admin key reaches the signed-in user: one org
    const admin = readFileSync(`${dir}/data-${ORG}/admin.key`, 'utf8').trim();
    execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(ports.MQTT_PORT), '-V', 'mqttv5', '-q', '1',
      '-u', `admin@${ORG}`, '-P', admin, '-t', `users/${sub}/notifications`, '-m', 'from the backend']);
    for (let i = 0; i < 100 && !log.messages.length; i += 1) {
      await sleep(100);
      log = await read();
    }
    assert.deepEqual(log.messages.map((m) => m.text), ['from the backend']);
    // signing out leaves nothing of the session on the page
    await page.click('#signout');
    assert.equal(await page.textContent('#state'), 'signed out');
    assert.equal(await page.textContent('#user'), '—');
    assert.equal(await page.locator('#messages li').count(), 0);
  } finally {
    await browser?.close();
    await app.close();
    process.kill(-dev.pid, 'SIGINT'); // Ctrl-C: the whole process group
  }
  const { code, signal } = await exited;
  assert.ok(code === 0 || code === 130 || signal === 'SIGINT', `${code} ${signal}`);
  assert.doesNotMatch(out, /exited \(/, 'the broker was stopped, not lost');
  for (const p of [ports.MQTT_PORT, ports.CONTROL_PORT]) {
    await assert.rejects(fetch(`http://127.0.0.1:${p}/`), `port ${p} is free again`);
  }
});
