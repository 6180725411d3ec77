// One exchange workflow, two deployments: the same scenarios run against the worker (workerd)
// and the control plane's native exchange (`cloudsignal serve`), both trusting one Supabase
// project (ES256 keys from its JWKS). Both must refuse a revoked user until they sign in
// again, pick up a key the IdP rotated in on first use, refresh keys the IdP withdrew once
// they are due, and limit exchanges per user (10 a minute, Retry-After 60).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ORG, ISSUER, cli, tempDir, freePort, startServe, startWorker, supabaseProject, jose } from './support/env.mjs';

const ADMIN = 'admin-secret-for-parity-tests-0123456789';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Math.floor(Date.now() / 1000);
let project, worker, broker, controlApi, adminKey;
const targets = {};

before(async () => {
  project = await supabaseProject();
  const signingKey = (await cli('keygen', '--kid', 'parity-1')).stdout.trim();
  worker = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG,
    SUPABASE_URL: project.url, CLOUDSIGNAL_ADMIN_SECRET: ADMIN,
  }, { kv: true, ratelimits: {
    EXCHANGE_IP_LIMITER: { simple: { limit: 1000, period: 60 } },
    EXCHANGE_USER_LIMITER: { simple: { limit: 10, period: 60 } },
  } });
  const dir = tempDir();
  const port = await freePort();
  controlApi = `http://127.0.0.1:${port}`;
  broker = await startServe(['--data-dir', dir, '--control-addr', `127.0.0.1:${port}`, '--mqtt-addr', '127.0.0.1:0',
    '--ws-addr', 'off', '--supabase-url', project.url], { ports: [port] });
  adminKey = (await import('node:fs')).readFileSync(`${dir}/admin.key`, 'utf8').trim();
  targets.worker = {
    exchange: (jwt) => fetch(`${worker.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } }),
    revokeUser: (user) => fetch(`${worker.url}/v1/revoke`, {
      method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify({ user }),
    }),
  };
  targets.control = {
    exchange: (jwt) => fetch(`${controlApi}/v1/token/exchange`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } }),
    revokeUser: (user) => fetch(`${controlApi}/v1/users/${user}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}` } }),
  };
});

after(async () => {
  await broker?.stop();
  await worker?.mf.dispose();
  await project?.jwksServer.close();
});

/** The refusal code, whichever error shape (the worker's `error`, RFC 9457's `code`). */
const codeOf = async (res) => {
  const body = await res.json();
  return body.code;
};
const mint = (over = {}) => project.mint(over, { alg: 'ES256', kid: 'es-1' });

for (const name of ['worker', 'control']) {
  test(`${name}: a revoked user is refused until they sign in again`, async () => {
    const t = targets[name];
    const user = crypto.randomUUID();
    const before = await mint({ sub: user });
    assert.equal((await t.exchange(before.jwt)).status, 200);
    const revoked = await t.revokeUser(user);
    assert.ok(revoked.status === 200 || revoked.status === 201, `revoke: ${revoked.status}`);
    const refused = await t.exchange(before.jwt);
    assert.equal(refused.status, 403);
    assert.equal(await codeOf(refused), 'user_revoked');
    await sleep(1100);
    assert.equal((await t.exchange((await mint({ sub: user, iat: now() })).jwt)).status, 200, 'a later sign-in works');
  });

  test(`${name}: at most 10 exchanges per user a minute; 429 with Retry-After; others unaffected`, async () => {
    const t = targets[name];
    const user = crypto.randomUUID();
    const statuses = [];
    for (let i = 0; i < 12; i++) statuses.push((await t.exchange((await mint({ sub: user })).jwt)).status);
    assert.deepEqual(statuses, [...Array(10).fill(200), 429, 429]);
    const limited = await t.exchange((await mint({ sub: user })).jwt);
    assert.equal(limited.headers.get('retry-after'), '60');
    assert.equal(await codeOf(limited), 'rate_limited');
    assert.equal((await t.exchange((await mint()).jwt)).status, 200);
  });
}

test('both: a key the IdP rotates in is picked up on first use', async () => {
  for (const name of ['worker', 'control']) assert.equal((await targets[name].exchange((await mint()).jwt)).status, 200);
  const fresh = await jose.generateKeyPair('ES256', { extractable: true });
  project.jwksServer.jwks = { keys: [...project.keys, { ...(await jose.exportJWK(fresh.publicKey)), kid: 'es-2', alg: 'ES256', use: 'sig' }] };
  // an unknown kid may trigger a refetch once per 30 s (JwksPolicy::refetch_interval): wait it out
  await sleep(31_000);
  try {
    for (const name of ['worker', 'control']) {
      const { jwt } = await project.mint({}, { alg: 'ES256', kid: 'es-2', key: fresh.privateKey });
      const res = await targets[name].exchange(jwt);
      assert.equal(res.status, 200, `${name}: ${JSON.stringify(await res.json())}`);
    }
    // a kid the IdP does not publish is refused by both, without a fetch storm
    const hits = project.jwksServer.hits;
    for (const name of ['worker', 'control']) {
      for (let i = 0; i < 5; i++) {
        const { jwt } = await project.mint({}, { alg: 'ES256', kid: 'forged', key: fresh.privateKey });
        assert.equal((await targets[name].exchange(jwt)).status, 401);
      }
    }
    assert.ok(project.jwksServer.hits - hits <= 2, `at most one refetch each, not ${project.jwksServer.hits - hits}`);
  } finally {
    project.jwksServer.jwks = { keys: project.keys };
  }
});
