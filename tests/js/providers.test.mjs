// Every identity-provider profile in the real Workers runtime (workerd via Miniflare): one
// worker configured with Supabase, Firebase, Auth0, Clerk and a generic OIDC issuer at once;
// tokens with each provider's exact claim shape minted by npm jose, keys served by local
// stand-ins at the providers' real paths. The token's `iss` selects the profile.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ORG, ISSUER, cli, jose, startWorker } from './support/env.mjs';
import { identityProvider, FIREBASE_PROJECT, AUTH0_AUDIENCE, APP_ORIGIN, OIDC_AUDIENCE } from './support/idp.mjs';

const ROLE_MAP = JSON.stringify({
  default: { pub: ['users/{user}/#'], sub: ['users/{user}/#'] },
  roles: {
    editor: { pub: ['orgs/{org}/posts/#'], sub: ['orgs/{org}/posts/#'] },
    admin: { pub: [], sub: ['orgs/{org}/admin/#'] },
  },
  deny_roles: ['anon'],
});

const idps = {};
const KINDS = ['supabase', 'firebase', 'auth0', 'clerk', 'oidc'];
let worker;
/** Keys no provider publishes, to forge signatures under a provider's kid. */
const FOREIGN = {};
const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  for (const alg of ['RS256', 'ES256']) FOREIGN[alg] = await jose.generateKeyPair(alg);
  for (const kind of KINDS) idps[kind] = await identityProvider(kind);
  const key = (await cli('keygen', '--kid', 'providers-1')).stdout.trim();
  worker = await startWorker({
    CLOUDSIGNAL_SIGNING_KEY: key, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG, CLOUDSIGNAL_ROLE_MAP: ROLE_MAP,
    CLOUDSIGNAL_JWKS_REFETCH_INTERVAL: '1',
    SUPABASE_URL: idps.supabase.url,
    FIREBASE_PROJECT_ID: FIREBASE_PROJECT, FIREBASE_JWKS_URL: idps.firebase.jwksUrl,
    AUTH0_DOMAIN: idps.auth0.url, AUTH0_AUDIENCE,
    CLERK_ISSUER: idps.clerk.url, CLERK_AUTHORIZED_PARTIES: APP_ORIGIN,
    CLOUDSIGNAL_PROVIDERS: JSON.stringify([{ provider: 'oidc', issuer: idps.oidc.issuer, audience: OIDC_AUDIENCE }]),
  });
});

after(async () => {
  await worker?.mf.dispose();
  for (const idp of Object.values(idps)) await idp.close();
});

const exchange = (jwt) => fetch(`${worker.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } });
const tknClaims = (tkn) => JSON.parse(Buffer.from(tkn.slice(4).split('.')[1], 'base64url'));

/** The ACL each provider's default token maps to under ROLE_MAP. */
const EXPECTED = {
  supabase: (sub) => ({ pub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`], sub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`] }),
  firebase: (sub) => ({ pub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`], sub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`] }),
  auth0: (sub) => ({ pub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`], sub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`] }),
  clerk: (sub) => ({ pub: [`users/${sub}/#`], sub: [`users/${sub}/#`, `orgs/${ORG}/admin/#`] }),
  oidc: (sub) => ({ pub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`], sub: [`users/${sub}/#`, `orgs/${ORG}/posts/#`] }),
};

async function accepted(idp, jwt, sub) {
  const res = await exchange(jwt);
  const text = await res.text();
  assert.equal(res.status, 200, `${idp.kind}: ${text}`);
  const body = JSON.parse(text);
  assert.equal(body.mqtt_credentials.username, `${sub}@${ORG}`);
  assert.deepEqual(body.acl, EXPECTED[idp.kind](sub), idp.kind);
  const claims = tknClaims(body.mqtt_credentials.password);
  assert.deepEqual(claims.acl, body.acl, `${idp.kind}: the tkn_ carries the mapped ACL`);
  assert.equal(claims.sub, sub);
  return body;
}

for (const kind of KINDS) {
  test(`${kind}: a token with the provider's claim shape is exchanged; the tkn_ carries the mapped ACL`, async () => {
    const idp = idps[kind];
    for (const alg of kind === 'oidc' || kind === 'supabase' ? ['RS256', 'ES256'] : ['RS256']) {
      const { jwt, claims } = await idp.mint({}, { alg });
      await accepted(idp, jwt, claims.sub);
    }
    assert.ok(idp.server.hits <= 1, `${kind}: JWKS fetched ${idp.server.hits} times`);
    if (kind === 'oidc') assert.equal(idp.server.discoveryHits, 1, 'discovery fetched once');
  });

  test(`${kind}: wrong issuer, wrong audience, expired, future nbf, unknown kid, alg none, HS/RS confusion are refused`, async () => {
    const idp = idps[kind];
    const rsa = idp.keys.find((k) => k.alg === 'RS256');
    const pem = new TextEncoder().encode(await jose.exportSPKI(rsa.publicKey));
    const base = (await idp.mint()).claims;
    const cases = {
      wrongIssuer: await idp.mint({ iss: 'https://evil.example/' }),
      // Clerk session tokens carry no aud: the authorized party (azp) is their audience check
      wrongAudience: kind === 'clerk' ? await idp.mint({ azp: 'https://evil.example' }) : await idp.mint({ aud: 'someone-else' }),
      expired: await idp.mint({ iat: now() - 7200, nbf: undefined, exp: now() - 3600, auth_time: now() - 7300 }),
      futureNbf: await idp.mint({ nbf: now() + 3600 }),
      unknownKid: await idp.mint({}, { kid: `${kind}-404` }),
      hsRsConfusion: await idp.mint({}, { alg: 'HS256', kid: rsa.kid, key: pem }),
      algNone: { jwt: new jose.UnsecuredJWT(base).encode() },
      // the provider's kid, someone else's key: WebCrypto checks the signature and says no
      foreignRsaKey: await idp.mint({}, { alg: 'RS256', key: FOREIGN.RS256.privateKey }),
    };
    if (kind === 'supabase' || kind === 'oidc') cases.foreignEcKey = await idp.mint({}, { alg: 'ES256', key: FOREIGN.ES256.privateKey });
    if (kind === 'firebase') cases.authTimeInFuture = await idp.mint({ auth_time: now() + 600 });
    if (kind === 'clerk') cases.noAzp = await idp.mint({ azp: undefined });
    // each is refused for its own reason, not by accident
    const why = {
      wrongIssuer: /unknown issuer/, wrongAudience: kind === 'clerk' ? /"azp".*not an allowed origin/ : /wrong audience/,
      expired: /expired/, futureNbf: /not yet valid/, unknownKid: new RegExp(`no trusted key for kid "${kind}-404"`),
      hsRsConfusion: /algorithm "HS256" is not allowed/, algNone: /algorithm "none" is not allowed/,
      authTimeInFuture: /"auth_time".*future/, noAzp: /"azp".*missing/,
      foreignRsaKey: /signature does not verify/, foreignEcKey: /signature does not verify/,
    };
    for (const [name, { jwt }] of Object.entries(cases)) {
      const res = await exchange(jwt);
      const body = await res.json();
      assert.equal(res.status, 401, `${kind} ${name}: ${JSON.stringify(body)}`);
      assert.equal(body.code, 'invalid_token', `${kind} ${name}`);
      assert.match(body.detail, why[name], `${kind} ${name}`);
    }
    const logs = worker.logs.join('');
    for (const { jwt } of Object.values(cases)) assert.ok(!logs.includes(jwt), 'tokens never reach the logs');
  });

  test(`${kind}: a key rotation at the IdP is picked up on first use; old tokens stay valid while published`, async () => {
    const idp = idps[kind];
    const old = await idp.mint();
    await accepted(idp, old.jwt, old.claims.sub);
    const hits = idp.server.hits;
    await sleep(1100); // CLOUDSIGNAL_JWKS_REFETCH_INTERVAL=1: an unknown kid may refetch
    const newKid = await idp.rotate();
    const fresh = await idp.mint();
    assert.equal(JSON.parse(Buffer.from(fresh.jwt.split('.')[0], 'base64url')).kid, newKid);
    await accepted(idp, fresh.jwt, fresh.claims.sub);
    assert.equal(idp.server.hits, hits + 1, 'one refetch for the new kid');
    await accepted(idp, old.jwt, old.claims.sub);
    // a burst of forged kids cannot make the worker hammer the IdP
    for (let i = 0; i < 5; i++) assert.equal((await exchange((await idp.mint({}, { kid: `forged-${i}` })).jwt)).status, 401);
    assert.ok(idp.server.hits <= hits + 2, `${idp.server.hits - hits} refetches for 5 forged kids`);
  });
}

test('exchange logs name the provider and never carry tokens', async () => {
  const logs = worker.logs.join('');
  for (const kind of KINDS) {
    assert.match(logs, new RegExp(`"outcome":"ok".*"provider":"${kind}"|"provider":"${kind}".*"outcome":"ok"`), kind);
  }
  assert.ok(!/eyJ[\w-]{10,}\.eyJ/.test(logs), 'no JWT in the logs');
  // every token here is RS256 or ES256: the runtime's WebCrypto checked each signature
  const ok = logs.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    .filter((e) => e.event === 'exchange' && e.outcome === 'ok');
  assert.ok(ok.length >= KINDS.length);
  assert.deepEqual([...new Set(ok.map((e) => e.signature))], ['webcrypto']);
});
