// The dashboard against a real `cloudsignal serve`, with Chromium (playwright-core) playing the
// operator: sign in, create a key and connect mosquitto_pub/mosquitto_sub with it, see the
// session appear live, revoke it from the page and see mosquitto_sub's connection closed 0x98,
// usage equal to what the test sent, and a viewer who cannot act. Screenshots of every page at
// desktop and phone width go to target/screenshots/dashboard-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { CLI, ROOT, tempDir, freePort, waitFor } from './support/env.mjs';
import { launchChromium } from './support/browser.mjs';

const SHOTS = join(ROOT, 'target', 'screenshots');
const OWNER = 'owner@example.test', VIEWER = 'viewer@example.test', PASSWORD = 'correct horse battery staple';
let serve, api, mqttPort, data, browser, owner;

async function shots(page, name) {
  for (const [label, width] of [['desktop', 1280], ['phone', 390]]) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(150);
    await page.screenshot({ path: join(SHOTS, `dashboard-${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function createAccount(link, email) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(link);
  if (await page.getByLabel('E-mail').count()) await page.getByLabel('E-mail').fill(email);
  await page.getByLabel(/^Password/).fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByText('Your account is ready').waitFor();
  await ctx.close();
}

async function signIn(email) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const t0 = Date.now();
  await page.goto(`${api}/dashboard/`);
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  const firstRender = Date.now() - t0;
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  return { ctx, page, firstRender };
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  [mqttPort] = [await freePort()];
  const control = await freePort();
  api = `http://127.0.0.1:${control}`;
  data = join(tempDir(), 'data');
  serve = spawn(CLI, ['serve', '--mqtt-addr', `127.0.0.1:${mqttPort}`, '--ws-addr', 'off', '--control-addr', `127.0.0.1:${control}`,
    '--data-dir', data, '--auth-failure-delay-ms', '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
  serve.stderr.on('data', () => {});
  const link = await waitFor(serve.stdout, /(http:\/\/\S+\/setup\?token=\S+)/);
  browser = await launchChromium();
  await createAccount(link, OWNER);
  const invite = spawnSync(CLI, ['admin', 'create-user', '--data-dir', data, '--email', VIEWER, '--role', 'viewer', '--public-url', api], { encoding: 'utf8' });
  await createAccount(invite.stdout.match(/(http:\/\/\S+\/setup\?token=\S+)/)[1], VIEWER);
});

after(async () => {
  await browser?.close();
  serve?.kill('SIGTERM');
});

test('the bundle is small and the dashboard renders fast', async () => {
  const dir = join(ROOT, 'www', 'dashboard', 'dist', 'assets');
  const gz = readdirSync(dir).filter((f) => /\.(js|css)$/.test(f)).reduce((n, f) => n + gzipSync(readFileSync(join(dir, f))).length, 0);
  console.log(`[dashboard] js+css gzip: ${(gz / 1024).toFixed(1)} KiB`);
  assert.ok(gz > 0);
});

test('an owner signs in, creates a key, watches its session live, revokes it (0x98), sees its usage', { timeout: 180_000 }, async () => {
  owner = await signIn(OWNER);
  const { page } = owner;
  console.log(`[dashboard] first render (sign-in button visible): ${owner.firstRender} ms`);
  await page.locator('#connections').filter({ hasText: /^\d+$/ }).waitFor();
  await shots(page, 'overview');

  await page.getByRole('link', { name: 'API keys' }).click();
  await page.getByLabel('Name').fill('sensor-1');
  await page.getByLabel('MQTT publish filters (comma-separated)').fill('sensors/#');
  await page.getByLabel('MQTT subscribe filters').fill('sensors/#');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = (await page.locator('#new-secret').textContent()).trim();
  assert.match(secret, /^rk_/);
  await shots(page, 'keys');
  // a wrong filter is refused before any request
  await page.getByLabel('Name').fill('bad');
  await page.getByLabel('MQTT publish filters (comma-separated)').fill('a/#/b');
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.getByText('# must be last').waitFor();

  const username = (await page.locator('.secret .muted').textContent()).replace('MQTT username: ', '').trim();
  assert.match(username, /^sensor-1@org_/);
  const sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(mqttPort), '-V', 'mqttv5', '-i', 'dash-sub', '-u', username, '-P', secret, '-t', 'sensors/#', '-d', '-q', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let subOut = '';
  sub.stdout.on('data', (d) => { subOut += d; });
  sub.stderr.on('data', (d) => { subOut += d; });
  const subExit = new Promise((r) => sub.on('close', r));
  await page.getByRole('link', { name: 'Live sessions' }).click();
  const row = page.locator('tr[data-client="dash-sub"]');
  await row.waitFor();
  assert.match(await row.textContent(), /sensor-1/);
  for (let i = 0; i < 5; i += 1) {
    const p = spawnSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(mqttPort), '-V', 'mqttv5', '-u', username, '-P', secret, '-t', 'sensors/t', '-m', `m${i}`, '-q', '1'], { encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
  }
  await page.getByPlaceholder('identity, client id or address').fill('dash');
  await shots(page, 'sessions');
  page.once('dialog', (d) => d.accept());
  await row.getByRole('button', { name: 'Revoke' }).click();
  await subExit;
  assert.match(subOut, /DISCONNECT \(152\)|0x98|administrative/i, subOut);
  assert.equal(subOut.match(/^m\d$/gm)?.length, 5, subOut);
  await row.waitFor({ state: 'detached' });

  await page.getByRole('link', { name: 'Usage' }).click();
  const keyRow = page.locator('#usage tr').filter({ hasText: 'key' }).first();
  await keyRow.waitFor();
  const cell = (col) => keyRow.locator(`td[data-col="${col}"]`).textContent();
  assert.equal(await cell('published'), '5');
  assert.equal(await cell('delivered'), '5');
  await shots(page, 'usage');
  // by hour: the same 5 in this hour's row, and a chart
  await page.getByLabel('Totals for').selectOption('hour');
  const hourRow = page.locator('#usage tr').filter({ hasText: 'key' }).first();
  await hourRow.locator('td[data-col="hour"]').waitFor();
  assert.equal(await hourRow.locator('td[data-col="published"]').textContent(), '5');
  await page.locator('.chart canvas').waitFor();
  await shots(page, 'usage-hourly');
  await page.getByRole('link', { name: 'Users & tokens' }).click();
  await shots(page, 'users');
  await page.getByRole('link', { name: 'Identity' }).click();
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  await shots(page, 'identity');
  // the overview after the traffic: the audit log has the revocation, the chart has points
  await page.getByRole('link', { name: 'Overview' }).click();
  await page.waitForTimeout(3_000);
  await shots(page, 'overview-after');
});

test('a viewer sees no write buttons, and the API refuses them anyway', { timeout: 120_000 }, async () => {
  const { page, ctx } = await signIn(VIEWER);
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.locator('#keys table').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Create key' }).count(), 0);
  assert.equal(await page.getByRole('button', { name: 'Revoke' }).count(), 0);
  await shots(page, 'keys-viewer');
  const status = await page.evaluate(async () => {
    const s = JSON.parse(sessionStorage.getItem('cloudsignal.dashboard.session'));
    const r = await fetch('/v1/keys', { method: 'POST', headers: { authorization: `Bearer ${s.access}`, 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'sk', name: 'mine' }) });
    return r.status;
  });
  assert.equal(status, 403);
  await ctx.close();
});
