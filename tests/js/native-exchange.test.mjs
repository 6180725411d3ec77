// The control plane's native exchange (POST /v1/token/exchange on `cloudsignal serve`), for
// self-hosters without Cloudflare: the same providers as the worker from the same JSON
// (--providers), keys from each provider's JWKS (OIDC by discovery), on real sockets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir, freePort, startServe } from './support/env.mjs';
import { identityProvider, FIREBASE_PROJECT, AUTH0_AUDIENCE, OIDC_AUDIENCE } from './support/idp.mjs';

const idps = {};
let broker, api, dir;

before(async () => {
  for (const kind of ['firebase', 'auth0', 'oidc']) idps[kind] = await identityProvider(kind);
  dir = tempDir();
  const port = await freePort();
  api = `http://127.0.0.1:${port}`;
  const providers = JSON.stringify([
    { provider: 'firebase', project_id: FIREBASE_PROJECT, jwks_url: idps.firebase.jwksUrl },
    { provider: 'auth0', domain: idps.auth0.url, audience: AUTH0_AUDIENCE },
    { provider: 'oidc', issuer: idps.oidc.issuer, audience: OIDC_AUDIENCE },
  ]);
  broker = await startServe(['--data-dir', dir, '--control-addr', `127.0.0.1:${port}`, '--mqtt-addr', '127.0.0.1:0',
    '--ws-addr', 'off', '--providers', providers], { ports: [port] });
});

after(async () => {
  await broker?.stop();
  for (const idp of Object.values(idps)) await idp.close();
});

const exchange = (jwt) => fetch(`${api}/v1/token/exchange`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } });

test('Firebase, Auth0 and OIDC (by discovery) tokens are exchanged natively; keys fetched once each', async () => {
  assert.match(broker.logs, /POST \/v1\/token\/exchange enabled.*firebase.*auth0.*oidc/);
  for (const kind of ['firebase', 'auth0', 'oidc']) {
    for (let i = 0; i < 2; i++) {
      const { jwt, claims } = await idps[kind].mint();
      const res = await exchange(jwt);
      const body = await res.json();
      assert.equal(res.status, 200, `${kind}: ${JSON.stringify(body)}`);
      assert.equal(body.mqtt_credentials.username.split('@')[0], claims.sub);
      assert.match(body.mqtt_credentials.password, /^tkn_/);
    }
    assert.equal(idps[kind].server.hits, 1, `${kind}: JWKS fetched once`);
  }
  assert.equal(idps.oidc.server.discoveryHits, 1);
});

test('an unknown issuer and a wrong audience are refused with problem documents', async () => {
  const unknown = await exchange((await idps.auth0.mint({ iss: 'https://evil.example/' })).jwt);
  assert.equal(unknown.status, 401);
  assert.match((await unknown.json()).detail ?? '', /unknown issuer/);
  const aud = await exchange((await idps.firebase.mint({ aud: 'another-project' })).jwt);
  assert.equal(aud.status, 401);
  assert.match(aud.headers.get('content-type'), /application\/problem\+json/);
});
