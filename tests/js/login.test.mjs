// `cloudsignal login` end to end, with headless Chromium playing the person: the first owner
// signs up through the one-time link printed at first start, the CLI opens its loopback
// listener and prints the sign-in address, the person signs in, the CLI stores the session
// (0600) and uses it; the session refreshes by itself after its access token expires, and
// `cloudsignal logout` revokes it on the server. Screenshots of each page go to
// target/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT, tempDir, freePort, waitFor } from './support/env.mjs';
import { launchChromium } from './support/browser.mjs';

const PASSWORD = 'correct horse battery staple';
const EMAIL = 'owner@example.test';
const SHOTS = join(ROOT, 'target', 'screenshots');
let serve, api, home, browser, page, setupLink;

/** Runs the CLI with HOME = the test's home; resolves { code, stdout, stderr }. */
function run(...args) {
  return new Promise((resolve) => {
    const p = spawn(CLI, args, { env: { ...process.env, HOME: home } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Resolves with the first match of `re` in `stream`'s output (rejects after 60 s). */
async function shot(name) {
  for (const [label, width] of [['desktop', 1280], ['phone', 390]]) {
    await page.setViewportSize({ width, height: 800 });
    await page.screenshot({ path: join(SHOTS, `login-${name}-${label}.png`), fullPage: true });
  }
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  home = tempDir();
  const [mqtt, control] = [await freePort(), await freePort()];
  api = `http://127.0.0.1:${control}`;
  serve = spawn(CLI, ['serve', '--mqtt-addr', `127.0.0.1:${mqtt}`, '--ws-addr', 'off', '--control-addr', `127.0.0.1:${control}`,
    '--data-dir', join(tempDir(), 'data'), '--session-access-ttl', '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
  serve.stderr.on('data', () => {});
  setupLink = await waitFor(serve.stdout, /(http:\/\/\S+\/setup\?token=\S+)/);
  browser = await launchChromium();
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  serve?.kill('SIGTERM');
});

test('the first owner signs up through the link printed at first start', async () => {
  await page.goto(setupLink);
  await shot('setup');
  await page.getByLabel('E-mail').fill(EMAIL);
  await page.getByLabel('Name').fill('Olivia Owner');
  await page.getByLabel(/^Password/).fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByText('Your account is ready').waitFor();
  await shot('setup-done');
  await page.goto(setupLink);
  await page.getByText('This link is not valid').waitFor();
});

test('cloudsignal login in the browser, commands on the stored session, refresh, logout', async () => {
  const login = spawn(CLI, ['login', '--api', api, '--no-browser'], { env: { ...process.env, HOME: home } });
  let loginOut = '';
  login.stdout.on('data', (d) => { loginOut += d; });
  const exited = new Promise((r) => login.on('close', r));
  const url = await waitFor(login.stdout, /(http:\/\/\S+\/oauth\/authorize\?\S+)/);
  await page.goto(url);
  await page.getByText('Signing in to').waitFor();
  await shot('sign-in');
  // a wrong password first: the page says so and stays
  await page.getByLabel('E-mail').fill(EMAIL);
  await page.getByLabel('Password').fill('not my password!');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Wrong e-mail or password.').waitFor();
  await shot('sign-in-wrong-password');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in to CloudSignal').waitFor();
  await shot('signed-in');
  assert.equal(await exited, 0, loginOut);
  assert.match(loginOut, new RegExp(`Signed in as ${EMAIL} \\(owner\\)`));

  const file = join(home, '.cloudsignal', 'credentials.json');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(join(home, '.cloudsignal')).mode & 0o777, 0o700);
  const first = JSON.parse(readFileSync(file, 'utf8'));

  let r = await run('whoami');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`${EMAIL} \\(owner\\)`));
  r = await run('keys', 'create', '--name', 'from-the-cli', '--scope', 'keys:read');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /secret, shown once:\n\n {4}rk_/);
  r = await run('keys', 'list');
  assert.match(r.stdout, /from-the-cli/);

  // the access token lives 5 s here: after it, the CLI refreshes (rotating the refresh token)
  await new Promise((res) => setTimeout(res, 6_000));
  r = await run('sessions', 'list');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`${EMAIL}\\s+owner\\s+cloudsignal-cli`));
  const second = JSON.parse(readFileSync(file, 'utf8'));
  assert.notEqual(second.refresh_token, first.refresh_token, 'refreshed and rotated');
  assert.equal(second.session, first.session, 'the same session');

  r = await run('logout');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(existsSync(file), false);
  const refused = await fetch(`${api}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: second.refresh_token, client_id: 'cloudsignal-cli' }),
  });
  assert.equal(refused.status, 400, 'the server revoked the session');
  r = await run('whoami');
  assert.equal(r.code, 3);
  assert.match(r.stderr, /cloudsignal login/);
});
