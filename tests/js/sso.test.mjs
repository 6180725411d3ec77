// Single sign-on for people against a real OpenID provider started here (npm oidc-provider,
// its development login and consent pages), with headless Chromium playing the person:
// `cloudsignal login` → the sign-in page → "Sign in with single sign-on" → the provider →
// back with a verified ID token → the rules give a role → the CLI is signed in. A person no
// rule admits is refused, and an unverified e-mail address admits no one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import Provider from 'oidc-provider';
import { CLI, ROOT, tempDir, freePort, jose } from './support/env.mjs';
import { launchChromium } from './support/browser.mjs';

const SECRET = 'sso-client-secret-0123456789abcdef0123';
// the provider's people: login name → claims
const PEOPLE = {
  'ops@corp.example': { email: 'ops@corp.example', email_verified: true, groups: ['mqtt-admins'], name: 'Ops Person' },
  'reader@corp.example': { email: 'reader@corp.example', email_verified: true, groups: [], name: 'Reader' },
  'mallory@evil.example': { email: 'mallory@evil.example', email_verified: true, groups: [] },
  'unverified@corp.example': { email: 'unverified@corp.example', email_verified: false, groups: [] },
};
let idp, serve, api, browser;

function run(home, ...args) {
  return new Promise((resolve) => {
    const p = spawn(CLI, args, { env: { ...process.env, HOME: home } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

before(async () => {
  const [idpPort, mqtt, control] = [await freePort(), await freePort(), await freePort()];
  api = `http://127.0.0.1:${control}`;
  const issuer = `http://127.0.0.1:${idpPort}`;
  const key = await jose.generateKeyPair('RS256', { extractable: true });
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'cloudsignal', client_secret: SECRET, application_type: 'native',
      redirect_uris: [`${api}/oauth/sso/callback`], grant_types: ['authorization_code'], response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    jwks: { keys: [{ ...(await jose.exportJWK(key.privateKey)), kid: 'sso-1', alg: 'RS256', use: 'sig' }] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
    conformIdTokenClaims: false, // the ID token carries email and groups itself
    findAccount: (ctx, id) => PEOPLE[id] && { accountId: id, claims: () => ({ sub: id, ...PEOPLE[id] }) },
    pkce: { required: () => true },
  });
  provider.proxy = false;
  idp = provider.listen(idpPort);
  const dir = tempDir();
  const secretFile = join(dir, 'sso.secret');
  writeFileSync(secretFile, SECRET);
  chmodSync(secretFile, 0o600);
  serve = spawn(CLI, ['serve', '--mqtt-addr', `127.0.0.1:${mqtt}`, '--ws-addr', 'off', '--control-addr', `127.0.0.1:${control}`,
    '--data-dir', join(dir, 'data'), '--sso-issuer', issuer, '--sso-client-id', 'cloudsignal',
    '--sso-client-secret-file', secretFile, '--sso-rule', 'group:mqtt-admins=admin', '--sso-rule', 'domain:corp.example=viewer'],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  serve.logs = '';
  serve.stderr.on('data', (d) => { serve.logs += d; });
  for (let i = 0; i < 600; i += 1) {
    if (await fetch(`${api}/healthz`).then((r) => r.ok, () => false)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  serve?.kill('SIGTERM');
  idp?.close();
});

/** `cloudsignal login` with Chromium signing in as `who` at the provider; resolves the CLI's result. */
async function ssoLogin(who, shots) {
  const home = tempDir();
  const login = spawn(CLI, ['login', '--api', api, '--no-browser'], { env: { ...process.env, HOME: home } });
  let out = '', err = '';
  login.stdout.on('data', (d) => { out += d; });
  login.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => login.on('close', r));
  while (!/oauth\/authorize\?\S+/.test(out)) await new Promise((r) => setTimeout(r, 20));
  const url = out.match(/(http:\/\/\S+\/oauth\/authorize\?\S+)/)[1];
  const context = await browser.newContext(); // a fresh browser: no provider session to reuse
  const page = await context.newPage();
  await page.goto(url);
  if (shots) await page.screenshot({ path: join(ROOT, 'target', 'screenshots', 'login-sso-choice-desktop.png') });
  await page.getByRole('link', { name: 'Sign in with single sign-on' }).click();
  await page.locator('input[name=login]').fill(who);
  await page.locator('input[name=password]').fill('anything');
  await page.getByRole('button', { name: 'Sign-in' }).click();
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.waitForLoadState();
  const text = await page.locator('body').innerText();
  await context.close();
  return { home, text, exited, login, out: () => out, err: () => err };
}

test('a person in the admins group signs in through the provider as an admin', async () => {
  const r = await ssoLogin('ops@corp.example', true);
  assert.match(r.text, /Signed in to CloudSignal/, r.text);
  assert.equal(await r.exited, 0, r.err());
  assert.match(r.out(), /Signed in as ops@corp\.example \(admin\)/);
  const who = await run(r.home, 'whoami');
  assert.match(who.stdout, /ops@corp\.example \(admin\)/);
  const made = await run(r.home, 'keys', 'create', '--name', 'sso-made', '--scope', 'keys:read');
  assert.equal(made.code, 0, made.stderr);
});

test('a verified address at the domain is a viewer, and cannot act', async () => {
  const r = await ssoLogin('reader@corp.example');
  assert.equal(await r.exited, 0, r.err());
  assert.match(r.out(), /\(viewer\)/);
  const made = await run(r.home, 'keys', 'create', '--name', 'nope', '--scope', 'keys:read');
  assert.equal(made.code, 1);
  assert.match(made.stderr, /insufficient_scope/);
});

test('no rule admits another domain, nor an unverified address', async () => {
  for (const who of ['mallory@evil.example', 'unverified@corp.example']) {
    const r = await ssoLogin(who);
    assert.match(r.text, /cannot sign in here/, `${who}: ${r.text}`);
    r.login.kill('SIGTERM');
    await r.exited;
  }
});
