// The worker's production concerns in workerd: CORS allowlist and preflight, per-address and
// per-user rate limits (Cloudflare's rate-limiting bindings), JWKS shared by isolates through
// the Cache API, a role map kept in KV, and revocation in KV: POST /v1/revoke, the feed brokers poll, and a running
// `cloudsignal serve` closing a revoked user's live session because of it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { ORG, ISSUER, cli, tempDir, writeTemp, supabaseProject, startWorker, startServe, mosquittoSub, freePort } from './support/env.mjs';
import { APP_ORIGIN } from './support/idp.mjs';

const ADMIN = 'admin-secret-for-tests-0123456789abcdef';
const FEED = 'feed-secret-for-tests-0123456789abcdef';
const feedOf = (w, after, secret = FEED) =>
  fetch(`${w.url}/v1/revocations?after=${after}`, secret ? { headers: { authorization: `Bearer ${secret}` } } : {});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Math.floor(Date.now() / 1000);
let project, signingKey;

before(async () => {
  project = await supabaseProject();
  signingKey = (await cli('keygen', '--kid', 'edge-1')).stdout.trim();
});
after(async () => { await project?.jwksServer.close(); });

const base = () => ({ CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG, SUPABASE_URL: project.url });
const exchange = (w, jwt, headers = {}) =>
  fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${jwt}`, ...headers } });
const mint = (over = {}) => project.mint(over, { alg: 'ES256', kid: 'es-1' });

test('a role map kept in KV applies without a redeploy; a broken one fails closed; without it the var applies', async () => {
  const varMap = { roles: { editor: { pub: ['posts/#'], sub: ['posts/#'] } } };
  const w = await startWorker({ ...base(), CLOUDSIGNAL_ROLE_MAP: JSON.stringify(varMap), CLOUDSIGNAL_ROLE_MAP_TTL: '0' }, { kv: true });
  try {
    const config = await w.mf.getKVNamespace('CONFIG');
    const acl = async () => {
      const res = await exchange(w, (await mint({ app_metadata: { roles: ['editor'] } })).jwt);
      return { status: res.status, body: await res.json() };
    };
    let r = await acl();
    assert.equal(r.status, 200);
    assert.ok(r.body.acl.pub.includes('posts/#'), 'no key in KV: the var applies');

    await config.put('role-map', JSON.stringify({ roles: { editor: { pub: ['drafts/#'], sub: ['drafts/#'] } } }));
    r = await acl();
    assert.ok(r.body.acl.pub.includes('drafts/#') && !r.body.acl.pub.includes('posts/#'), JSON.stringify(r.body.acl));

    await config.put('role-map', '{"roles": {"editor": ');
    r = await acl();
    assert.equal(r.status, 500);
    assert.equal(r.body.code, 'server_misconfigured');
    assert.match(w.logs.join(''), /KV CONFIG key role-map/);

    await config.delete('role-map');
    r = await acl();
    assert.ok(r.body.acl.pub.includes('posts/#'), 'key removed: the var applies again');
  } finally {
    await w.mf.dispose();
  }
});

test('CORS: allowed origins get a preflight and readable responses; others are refused before any token is read', async () => {
  const w = await startWorker({ ...base(), CLOUDSIGNAL_ALLOWED_ORIGINS: `${APP_ORIGIN}, http://localhost:5173` });
  try {
    const pre = await fetch(`${w.url}/v1/token`, {
      method: 'OPTIONS',
      headers: { origin: APP_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), APP_ORIGIN);
    assert.match(pre.headers.get('access-control-allow-methods'), /POST/);
    assert.match(pre.headers.get('access-control-allow-headers'), /authorization/);
    assert.equal(pre.headers.get('access-control-max-age'), '600');
    assert.match(pre.headers.get('vary') ?? '', /Origin/);

    const evilPre = await fetch(`${w.url}/v1/token`, {
      method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(evilPre.status, 403);
    assert.equal(evilPre.headers.get('access-control-allow-origin'), null);

    const ok = await exchange(w, (await mint()).jwt, { origin: 'http://localhost:5173' });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'http://localhost:5173');
    // errors are readable too, so the page can show why
    const bad = await exchange(w, 'x.y.z', { origin: APP_ORIGIN });
    assert.equal(bad.status, 401);
    assert.equal(bad.headers.get('access-control-allow-origin'), APP_ORIGIN);

    const evil = await exchange(w, (await mint()).jwt, { origin: 'https://evil.example' });
    assert.equal(evil.status, 403);
    assert.equal((await evil.json()).code, 'origin_not_allowed');
    assert.equal(evil.headers.get('access-control-allow-origin'), null);
    // no Origin header (a backend, curl): not a browser, CORS does not apply
    assert.equal((await exchange(w, (await mint()).jwt)).status, 200);
  } finally {
    await w.mf.dispose();
  }
});

test('rate limits: per user after verification, per address before any cryptography; 429 with Retry-After', async () => {
  const w = await startWorker(base(), {
    ratelimits: {
      EXCHANGE_IP_LIMITER: { simple: { limit: 12, period: 60 } },
      EXCHANGE_USER_LIMITER: { simple: { limit: 3, period: 60 } },
    },
  });
  try {
    const alice = crypto.randomUUID();
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await exchange(w, (await mint({ sub: alice })).jwt)).status);
    assert.deepEqual(statuses, [200, 200, 200, 429, 429], 'the fourth exchange for one user is limited');
    const limited = await exchange(w, (await mint({ sub: alice })).jwt);
    assert.equal(limited.headers.get('retry-after'), '60');
    assert.equal((await limited.json()).code, 'rate_limited');
    // another user from the same address is not affected by alice's limit
    assert.equal((await exchange(w, (await mint()).jwt)).status, 200);
    // the address limit counts every request, even garbage that never reaches a verifier
    let n = 7;
    let status;
    while ((status = (await exchange(w, 'garbage')).status) === 401) n++;
    assert.equal(status, 429);
    assert.equal(n, 12, `address limited after ${n} requests`);
    assert.equal((await exchange(w, (await mint()).jwt)).status, 429, 'a valid token from a limited address waits too');
    assert.match(w.logs.join(''), /"error":"rate_limited"/);
  } finally {
    await w.mf.dispose();
  }
});

test('a fresh isolate gets the IdP keys from the Cache API: no IdP call, even when the IdP is down', async () => {
  const p = await supabaseProject();
  const cachePersist = tempDir();
  const env = { ...base(), SUPABASE_URL: p.url };
  try {
    const first = await startWorker(env, { cachePersist });
    assert.equal((await exchange(first, (await p.mint({}, { alg: 'ES256', kid: 'es-1' })).jwt)).status, 200);
    await first.mf.dispose();
    assert.equal(p.jwksServer.hits, 1);
    p.jwksServer.down = true;
    const second = await startWorker(env, { cachePersist });
    try {
      for (const alg of ['ES256', 'RS256']) {
        const t = await p.mint({}, { alg, kid: alg === 'ES256' ? 'es-1' : 'rs-1' });
        assert.equal((await exchange(second, t.jwt)).status, 200, alg);
      }
      assert.equal(p.jwksServer.hits, 1, 'the new isolate never called the IdP');
    } finally {
      await second.mf.dispose();
    }
  } finally {
    await p.jwksServer.close();
  }
});

const revoke = (w, body, secret = ADMIN) =>
  fetch(`${w.url}/v1/revoke`, { method: 'POST', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

test('POST /v1/revoke: admin secret, validated bodies; user revocations stop exchanges of older IdP tokens', async () => {
  const w = await startWorker({ ...base(), CLOUDSIGNAL_ADMIN_SECRET: ADMIN }, { kv: true });
  try {
    const user = crypto.randomUUID();
    const before = await mint({ sub: user });
    assert.equal((await exchange(w, before.jwt)).status, 200);

    assert.equal((await revoke(w, { user }, 'wrong-secret-wrong-secret-wrong-secret')).status, 401);
    assert.equal((await fetch(`${w.url}/v1/revoke`, { method: 'POST', body: '{}' })).status, 401);
    for (const body of [{}, { user, jti: 'abc' }, { user: 'a/b' }, { jti: 'x'.repeat(65) }, { user, exp: 5 }, { user, extra: 1 }, { user, at: now() + 400 * 86400 }]) {
      const res = await revoke(w, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal((await res.json()).code, 'invalid_request');
    }

    const res = await revoke(w, { user });
    assert.equal(res.status, 201);
    const { revocation } = await res.json();
    assert.equal(revocation.kind, 'user');
    assert.equal(revocation.user, user);
    assert.equal(revocation.org, ORG);

    const refused = await exchange(w, before.jwt);
    assert.equal(refused.status, 403);
    assert.equal((await refused.json()).code, 'user_revoked');
    // signing in again (an IdP token issued after the revocation) works
    await sleep(1100);
    assert.equal((await exchange(w, (await mint({ sub: user, iat: now() })).jwt)).status, 200);

    // a suspension: revoked until a future time; even fresh IdP tokens are refused until then
    const suspended = crypto.randomUUID();
    assert.equal((await revoke(w, { user: suspended, at: now() + 3600 })).status, 201);
    assert.equal((await exchange(w, (await mint({ sub: suspended, iat: now() })).jwt)).status, 403);
    assert.equal((await exchange(w, (await mint({ sub: crypto.randomUUID() })).jwt)).status, 200, 'others are unaffected');
  } finally {
    await w.mf.dispose();
  }
});

test('GET /v1/revocations: the feed in order, with a cursor, only for its secret; revoke is 501 without its secret', async () => {
  const w = await startWorker({ ...base(), CLOUDSIGNAL_ADMIN_SECRET: ADMIN, CLOUDSIGNAL_FEED_SECRET: FEED }, { kv: true });
  try {
    // the feed names users and tokens: nobody reads it without a credential
    for (const secret of [null, 'wrong-secret-wrong-secret-wrong-secret', `${FEED}x`]) {
      const res = await feedOf(w, 0, secret);
      assert.equal(res.status, 401, String(secret));
      assert.equal((await res.json()).code, 'invalid_token');
    }
    assert.equal((await feedOf(w, 0, ADMIN)).status, 200, 'the admin secret reads it too');
    const empty = await (await feedOf(w, 0)).json();
    assert.deepEqual(empty, { revocations: [], next: 0 });
    assert.equal((await revoke(w, { jti: '00112233445566778899aabbccddeeff', exp: now() + 600 })).status, 201);
    assert.equal((await revoke(w, { user: 'alice' })).status, 201);
    const feed = await (await feedOf(w, 0)).json();
    assert.deepEqual(feed.revocations.map((e) => e.kind), ['token', 'user']);
    assert.ok(feed.revocations[0].seq < feed.revocations[1].seq);
    assert.equal(feed.revocations[0].jti, '00112233445566778899aabbccddeeff');
    // the cursor trails the present by KV's propagation window, so entries this recent come again
    assert.ok(feed.next <= feed.revocations[1].seq);
    const later = await (await feedOf(w, feed.revocations[0].seq)).json();
    assert.deepEqual(later.revocations.map((e) => e.kind), ['user']);
    assert.equal((await feedOf(w, -1)).status, 400);
  } finally {
    await w.mf.dispose();
  }
  const noSecret = await startWorker(base(), { kv: true });
  try {
    const res = await revoke(noSecret, { user: 'alice' });
    assert.equal(res.status, 501);
    assert.match((await res.json()).detail, /CLOUDSIGNAL_ADMIN_SECRET/);
    const feed = await feedOf(noSecret, 0);
    assert.equal(feed.status, 501, 'no feed secret configured: the feed is off, never public');
    assert.match((await feed.json()).detail, /CLOUDSIGNAL_FEED_SECRET/);
  } finally {
    await noSecret.mf.dispose();
  }
});

test("a revocation posted to the worker reaches cloudsignal serve through the feed and closes that user's live session", async () => {
  const w = await startWorker({ ...base(), CLOUDSIGNAL_ADMIN_SECRET: ADMIN, CLOUDSIGNAL_FEED_SECRET: FEED }, { kv: true });
  const port = await freePort();
  const feedFile = writeTemp(tempDir(), 'feed.secret', FEED);
  const broker = await startServe(['--control-addr', 'off', '--mqtt-addr', `127.0.0.1:${port}`, '--ws-addr', 'off',
    '--issuer', ISSUER, '--issuer-jwks', `${w.url}/.well-known/jwks.json`, '--revocation-poll', '1',
    '--issuer-revocations-token-file', feedFile], { ports: [port] });
  const subs = [];
  try {
    const creds = async () => {
      const { jwt, claims } = await mint();
      const body = await (await exchange(w, jwt)).json();
      return { sub: claims.sub, ...body.mqtt_credentials };
    };
    const alice = await creds();
    const bob = await creds();
    const listen = (c) => {
      const p = mosquittoSub(['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv5', '-u', c.username, '-P', c.password,
        '-t', `users/${c.sub}/#`, '-v']);
      subs.push(p);
      return p;
    };
    const a = listen(alice);
    const b = listen(bob);
    await Promise.all([a.subscribed, b.subscribed]);
    const t0 = Date.now();
    assert.equal((await revoke(w, { user: alice.sub })).status, 201);
    const code = await Promise.race([a.exited, sleep(10_000).then(() => 'still connected')]);
    assert.notEqual(code, 'still connected', 'the revoked session was closed');
    const elapsed = Date.now() - t0;
    assert.match(broker.logs, /revo/i);
    // bob is untouched and still receives
    await new Promise((r, j) => execFile('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv5', '-u', bob.username,
      '-P', bob.password, '-t', `users/${bob.sub}/x`, '-m', 'still here', '-q', '1'], (e) => (e ? j(e) : r())));
    for (let i = 0; i < 200 && !b.out.includes('still here'); i++) await sleep(50);
    assert.match(b.out, /still here/);
    // alice's token no longer connects
    const again = await new Promise((r) => execFile('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv5',
      '-u', alice.username, '-P', alice.password, '-t', `users/${alice.sub}/x`, '-m', 'x'], (e, so, se) => r(se)));
    assert.match(again, /not authori[sz]ed|Bad User Name or Password|revoked/i);
    console.log(`# revocation via the worker's feed closed the session after ${elapsed} ms (poll 1 s)`);
  } finally {
    for (const s of subs) s.kill('SIGTERM');
    await broker.stop();
    await w.mf.dispose();
  }
});
