// The token-exchange worker in the real Workers runtime (workerd via Miniflare), on loopback,
// exchanging Supabase-shaped JWTs minted by npm `jose`. The returned tkn_ is verified natively by
// the Rust CLI (cloudsignal-core) and independently by jose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ORG, ISSUER, cli, jose, tempDir, writeTemp, supabaseProject, startWorker } from './support/env.mjs';

let project, worker, signingKey;
const ROLE_MAP = JSON.stringify({
  default: { pub: ['users/{user}/#'], sub: ['users/{user}/#'] },
  roles: { editor: { pub: ['orgs/{org}/posts/#'], sub: ['orgs/{org}/posts/#'] } },
  deny_roles: ['anon'],
});

async function keygen() {
  const r = await cli('keygen', '--kid', `k-${Date.now()}`);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

before(async () => {
  project = await supabaseProject();
  signingKey = await keygen();
  worker = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: signingKey,
    CLOUDSIGNAL_ISSUER: ISSUER,
    CLOUDSIGNAL_ORG: ORG,
    CLOUDSIGNAL_TOKEN_TTL: '900',
    CLOUDSIGNAL_ROLE_MAP: ROLE_MAP,
    SUPABASE_URL: project.url,
    SUPABASE_JWT_SECRET: project.secret,
  });
});

after(async () => {
  await worker?.mf.dispose();
  await project?.jwksServer.close();
});

const exchange = (jwt, init = {}) =>
  fetch(`${worker.url}/v1/token`, { method: 'POST', headers: jwt ? { authorization: `Bearer ${jwt}` } : {}, ...init });

async function expectError(res, status, code) {
  assert.equal(res.status, status);
  assert.equal(res.headers.get('content-type'), 'application/problem+json');
  const body = await res.json();
  assert.equal(body.code, code, JSON.stringify(body));
  assert.equal(typeof body.detail, 'string');
  return body;
}

test('HS256 (legacy secret): token response, verified natively by the Rust CLI and by jose', async () => {
  const { jwt, claims } = await project.mint({}, { alg: 'HS256' });
  const res = await exchange(jwt);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('cache-control'), 'no-store');
  const body = await res.json();
  const username = `${claims.sub}@${ORG}`;
  assert.equal(body.mqtt_credentials.username, username);
  assert.match(body.mqtt_credentials.password, /^tkn_/);
  assert.deepEqual(body.acl, { pub: [`users/${claims.sub}/#`], sub: [`users/${claims.sub}/#`] });
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Math.abs(body.expires_at - (now + 900)) <= 2, `expires_at ${body.expires_at}`);
  assert.equal(body.refresh_at, body.expires_at - 90);
  assert.deepEqual(Object.keys(body.broker).sort(), ['mqtts_url', 'wss_url']);

  const jwksRes = await fetch(`${worker.url}/.well-known/jwks.json`);
  assert.equal(jwksRes.status, 200);
  const jwks = await jwksRes.json();
  assert.equal(jwks.keys.length, 1);
  assert.equal(jwks.keys[0].d, undefined, 'the private key is never published');

  const file = writeTemp(tempDir(), 'jwks.json', JSON.stringify(jwks));
  const verified = await cli('token', 'verify', '--jwks', file, '--issuer', ISSUER, '--username', username, body.mqtt_credentials.password);
  assert.equal(verified.code, 0, verified.stderr);
  assert.deepEqual(JSON.parse(verified.stdout).acl, body.acl);
  const other = await cli('token', 'verify', '--jwks', file, '--issuer', ISSUER, '--username', `someone@${ORG}`, body.mqtt_credentials.password);
  assert.notEqual(other.code, 0);

  const { payload } = await jose.jwtVerify(body.mqtt_credentials.password.slice(4), jose.createLocalJWKSet(jwks), {
    issuer: ISSUER, audience: 'mqtt', typ: 'tkn+jwt', algorithms: ['EdDSA'],
  });
  assert.equal(payload.sub, claims.sub);
});

test('ES256 and RS256 tokens verify against the project JWKS, fetched once and cached', async () => {
  const hitsBefore = project.jwksServer.hits;
  for (const alg of ['ES256', 'RS256', 'ES256']) {
    const { jwt, claims } = await project.mint({}, { alg, kid: alg === 'ES256' ? 'es-1' : 'rs-1' });
    const res = await exchange(jwt);
    assert.equal(res.status, 200, `${alg}: ${await res.clone().text()}`);
    assert.equal((await res.json()).mqtt_credentials.username, `${claims.sub}@${ORG}`);
  }
  assert.ok(project.jwksServer.hits - hitsBefore <= 1, `JWKS fetched ${project.jwksServer.hits - hitsBefore} times`);
});

test('roles map to ACL grants; a denied role gets 403', async () => {
  const { jwt, claims } = await project.mint({ app_metadata: { roles: ['editor'] } }, { alg: 'HS256' });
  const body = await (await exchange(jwt)).json();
  assert.deepEqual(body.acl.pub, [`users/${claims.sub}/#`, `orgs/${ORG}/posts/#`]);
  const anon = await project.mint({ role: 'anon' }, { alg: 'HS256' });
  await expectError(await exchange(anon.jwt), 403, 'access_denied');
});

test('forged, expired, wrong-audience and other bad JWTs get 401 with a JSON error', async () => {
  const wrongSecret = new TextEncoder().encode('another-projects-secret-0123456789abcdef');
  const rsPem = new TextEncoder().encode(await jose.exportSPKI(project.rs.publicKey));
  const foreign = await jose.generateKeyPair('ES256');
  const now = Math.floor(Date.now() / 1000);
  const cases = {
    forged: (await project.mint({}, { alg: 'HS256', key: wrongSecret })).jwt,
    forgedEs256: (await project.mint({}, { alg: 'ES256', kid: 'es-1', key: foreign.privateKey })).jwt,
    expired: (await project.mint({ iat: now - 7200, exp: now - 3600 }, { alg: 'HS256' })).jwt,
    wrongAudience: (await project.mint({ aud: 'someone-else' }, { alg: 'HS256' })).jwt,
    wrongIssuer: (await project.mint({ iss: 'https://evil.example/auth/v1' }, { alg: 'ES256', kid: 'es-1' })).jwt,
    futureNbf: (await project.mint({ nbf: now + 3600 }, { alg: 'HS256' })).jwt,
    unknownKid: (await project.mint({}, { alg: 'ES256', kid: 'es-404' })).jwt,
    hsWithRsaPublicKey: (await project.mint({}, { alg: 'HS256', kid: 'rs-1', key: rsPem })).jwt,
    algNone: new jose.UnsecuredJWT({ iss: project.iss, aud: 'authenticated', sub: 'x', exp: now + 60 }).encode(),
    garbage: 'not-a-jwt',
  };
  for (const [name, jwt] of Object.entries(cases)) {
    const res = await exchange(jwt);
    assert.equal(res.status, 401, `${name}: ${res.status}`);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token"/, name);
    const body = await expectError(res, 401, 'invalid_token');
    assert.ok(!JSON.stringify(body).includes(jwt.slice(0, 20)), `${name}: the token is not echoed`);
  }
  const logs = worker.logs.join('');
  assert.match(logs, /"event":"exchange"/);
  for (const jwt of Object.values(cases)) assert.ok(!logs.includes(jwt), 'tokens never reach the logs');
});

test('malformed requests: 401 without credentials, 400 bad scheme, 405, 404', async () => {
  await expectError(await exchange(undefined), 401, 'missing_token');
  await expectError(await exchange(undefined, { headers: { authorization: 'Basic dXNlcjpwYXNz' } }), 400, 'invalid_request');
  await expectError(await exchange(undefined, { headers: { authorization: 'Bearer ' } }), 400, 'invalid_request');
  await expectError(await fetch(`${worker.url}/v1/token`), 405, 'method_not_allowed');
  await expectError(await fetch(`${worker.url}/nope`), 404, 'not_found');
  assert.equal((await fetch(`${worker.url}/healthz`)).status, 200);
});

test('the IdP JWKS going down after a first fetch: exchanges keep working from the cache', async () => {
  const p = await supabaseProject();
  const w = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG, SUPABASE_URL: p.url,
  });
  try {
    const first = await p.mint({}, { alg: 'ES256', kid: 'es-1' });
    assert.equal((await fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${first.jwt}` } })).status, 200);
    p.jwksServer.down = true;
    for (const alg of ['ES256', 'RS256']) {
      const t = await p.mint({}, { alg, kid: alg === 'ES256' ? 'es-1' : 'rs-1' });
      const res = await fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${t.jwt}` } });
      assert.equal(res.status, 200, `${alg} with the IdP down`);
    }
  } finally {
    await w.mf.dispose();
    await p.jwksServer.close();
  }
});

test('no cached keys and the IdP down: 503, not 401 or 500', async () => {
  const p = await supabaseProject();
  p.jwksServer.down = true;
  const w = await startWorker({ CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG, SUPABASE_URL: p.url });
  try {
    const t = await p.mint({}, { alg: 'ES256', kid: 'es-1' });
    const res = await fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${t.jwt}` } });
    await expectError(res, 503, 'idp_unavailable');
  } finally {
    await w.mf.dispose();
    await p.jwksServer.close();
  }
});

test('a misconfigured worker answers 500 server_misconfigured and names the variable in its log', async () => {
  const w = await startWorker({ CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: 'not-an-org' });
  try {
    await expectError(await fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: 'Bearer x.y.z' } }), 500, 'server_misconfigured');
    await new Promise((r) => setTimeout(r, 200));
    assert.match(w.logs.join(''), /CLOUDSIGNAL_SIGNING_KEY is not set/);
  } finally {
    await w.mf.dispose();
  }
});
