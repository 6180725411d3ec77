// Generic OpenID Connect against a real OpenID provider running locally (npm oidc-provider):
// the worker finds the keys by discovery, and a JWT access token the provider issued (client
// credentials grant, RFC 9068 profile) is exchanged for MQTT credentials.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Provider from 'oidc-provider';
import { ORG, ISSUER, cli, jose, startWorker, freePort } from './support/env.mjs';

const RESOURCE = 'https://mqtt.cloudsignal.test';
const CLIENT = { client_id: 'cloudsignal-backend', client_secret: 'oidc-client-secret-0123456789abcdef' };
let server, issuer, worker, discoveryHits = 0, jwksHits = 0;

before(async () => {
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  const key = await jose.generateKeyPair('RS256', { extractable: true });
  const provider = new Provider(issuer, {
    clients: [{ ...CLIENT, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] }],
    jwks: { keys: [{ ...(await jose.exportJWK(key.privateKey)), kid: 'oidc-provider-1', alg: 'RS256', use: 'sig' }] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'mqtt', audience: RESOURCE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
      },
    },
  });
  provider.use(async (ctx, next) => {
    if (ctx.path === '/.well-known/openid-configuration') discoveryHits += 1;
    if (ctx.path === '/jwks') jwksHits += 1;
    await next();
  });
  server = provider.listen(port);
  const signingKey = (await cli('keygen', '--kid', 'oidc-1')).stdout.trim();
  worker = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG,
    OIDC_ISSUER: issuer, OIDC_AUDIENCE: RESOURCE,
  });
});

after(async () => {
  await worker?.mf.dispose();
  await new Promise((r) => server?.close(r));
});

async function accessToken() {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${CLIENT.client_id}:${CLIENT.client_secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'mqtt', resource: RESOURCE }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.access_token;
}

test('a token issued by a real OpenID provider is exchanged; keys found by discovery, fetched once', async () => {
  const token = await accessToken();
  const header = jose.decodeProtectedHeader(token);
  assert.equal(header.alg, 'RS256');
  const claims = jose.decodeJwt(token);
  assert.equal(claims.iss, issuer);
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${worker.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${i === 0 ? token : await accessToken()}` } });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.mqtt_credentials.username, `${claims.sub}@${ORG}`);
    assert.deepEqual(body.acl, { pub: [`users/${claims.sub}/#`], sub: [`users/${claims.sub}/#`] });
  }
  assert.equal(discoveryHits, 1, 'discovery fetched once');
  assert.equal(jwksHits, 1, 'JWKS fetched once');
});

test("the provider's token for another audience is refused", async () => {
  const token = await accessToken();
  // same issuer and keys, but a worker expecting a different audience
  const signingKey = (await cli('keygen', '--kid', 'oidc-2')).stdout.trim();
  const other = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG,
    OIDC_ISSUER: issuer, OIDC_AUDIENCE: 'https://another-api.example',
  });
  try {
    const res = await fetch(`${other.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const body = await res.json();
    assert.equal(res.status, 401);
    assert.match(body.detail, /wrong audience/);
  } finally {
    await other.mf.dispose();
  }
});

test('a discovery document naming another issuer is not trusted (Discovery 1.0 §4.3)', async () => {
  const signingKey = (await cli('keygen', '--kid', 'oidc-3')).stdout.trim();
  // configured with a trailing slash: the provider's discovery document (same URL) names the
  // issuer without it, so its keys must not vouch for tokens claiming the configured issuer
  const w = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: signingKey, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG,
    OIDC_ISSUER: `${issuer}/`, OIDC_AUDIENCE: RESOURCE,
  });
  try {
    const forger = await jose.generateKeyPair('RS256');
    const token = await new jose.SignJWT({ iss: `${issuer}/`, aud: RESOURCE, sub: 'mallory' })
      .setProtectedHeader({ alg: 'RS256', kid: 'oidc-provider-1' }).setIssuedAt().setExpirationTime('5m').sign(forger.privateKey);
    const res = await fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 503);
    assert.equal((await res.json()).code, 'idp_unavailable');
    await new Promise((r) => setTimeout(r, 100));
    assert.match(w.logs.join(''), /"event":"discovery_failed".*§4\.3/);
  } finally {
    await w.mf.dispose();
  }
});
