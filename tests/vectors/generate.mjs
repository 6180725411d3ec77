// Generates crates/core/testdata/jose-vectors.json: JWTs, JWKS and keys minted by npm `jose`,
// an implementation independent of CloudSignal's, for core's known-answer tests.
// Run: node tests/vectors/generate.mjs   (output is committed; keys are fresh on every run)
import * as jose from 'jose';
import { generateKeyPairSync, createPrivateKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';

const T0 = 1_800_000_000; // the fixed "now" of core's tests
const SUPA_URL = 'https://abcdefghijklmnopqrst.supabase.co';
const SUPA_ISS = `${SUPA_URL}/auth/v1`;
// Supabase's published local-development secret: fine for tests, never for production.
const SUPA_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';
const SUB = '3f1c2a9e-1b2c-4d5e-8f90-123456789abc';

const pub = async (key, extra) => ({ ...(await jose.exportJWK(key)), ...extra });
const es = await jose.generateKeyPair('ES256', { extractable: true });
const rs = await jose.generateKeyPair('RS256', { extractable: true });
const ed = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
const rsEnc = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsWeak = generateKeyPairSync('rsa', { modulusLength: 1024 });
const ps = generateKeyPairSync('rsa', { modulusLength: 2048 });

const jwks = {
  keys: [
    await pub(es.publicKey, { kid: 'es-1', alg: 'ES256', use: 'sig' }),
    await pub(rs.publicKey, { kid: 'rs-1', alg: 'RS256', use: 'sig' }),
    await pub(ed.publicKey, { kid: 'ed-1', alg: 'EdDSA' }),
    { kty: 'oct', kid: 'oct-1', k: jose.base64url.encode(SUPA_SECRET) },
    await pub(rsEnc.publicKey, { kid: 'enc-1', use: 'enc' }),
    await pub(rsWeak.publicKey, { kid: 'rs-weak', alg: 'RS256' }),
    await pub(ps.publicKey, { kid: 'ps-1', alg: 'PS256' }),
  ],
};

// CloudSignal's own Ed25519 signing key for tests, from a fixed seed (0x2a * 32).
const seed = Buffer.alloc(32, 0x2a);
const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
const csKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
const csJwk = { ...csKey.export({ format: 'jwk' }), kid: 'cs-test-1', alg: 'EdDSA', use: 'sig' };

const supaClaims = (over = {}) => ({
  iss: SUPA_ISS, aud: 'authenticated', sub: SUB, role: 'authenticated',
  email: 'alice@example.com', app_metadata: { provider: 'email', roles: ['editor'] },
  user_metadata: {}, iat: T0 - 10, exp: T0 + 3600, session_id: 'b1a2', is_anonymous: false,
  ...over,
});
const sign = (claims, alg, key, header = {}) =>
  new jose.SignJWT(claims).setProtectedHeader({ alg, typ: 'JWT', ...header }).sign(key);
const hs = new TextEncoder().encode(SUPA_SECRET);

const v = {};
v.t0 = T0;
v.supabase_url = SUPA_URL;
v.supabase_secret = SUPA_SECRET;
v.sub = SUB;
v.jwks = jwks;
v.cs_signing_jwk = csJwk;
v.supa_hs256 = await sign(supaClaims(), 'HS256', hs);
v.supa_hs256_with_kid = await sign(supaClaims(), 'HS256', hs, { kid: 'legacy' });
v.supa_es256 = await sign(supaClaims(), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_rs256 = await sign(supaClaims(), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.supa_service_role = await sign(supaClaims({ role: 'service_role', app_metadata: {} }), 'HS256', hs);
v.supa_anon_key = await sign({ iss: SUPA_ISS, role: 'anon', iat: T0 - 10, exp: T0 + 3600, aud: 'authenticated' }, 'HS256', hs);
v.supa_wrong_iss = await sign(supaClaims({ iss: 'https://zzzzzzzzzzzzzzzzzzzz.supabase.co/auth/v1' }), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_wrong_aud = await sign(supaClaims({ aud: 'anon-service' }), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_expired = await sign(supaClaims({ iat: T0 - 7200, exp: T0 - 100 }), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_nbf_future = await sign(supaClaims({ nbf: T0 + 1000 }), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_iat_future = await sign(supaClaims({ iat: T0 + 1000 }), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_unknown_kid = await sign(supaClaims(), 'ES256', es.privateKey, { kid: 'es-404' });
v.supa_exp_string = await sign(supaClaims({ exp: String(T0 + 3600) }), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_no_exp = await sign((({ exp, ...c }) => c)(supaClaims()), 'ES256', es.privateKey, { kid: 'es-1' });
v.supa_alg_none = new jose.UnsecuredJWT(supaClaims()).encode();
// HS256 "signed" with the RS/ES public keys as the HMAC secret (algorithm confusion)
const rsPem = await jose.exportSPKI(rs.publicKey);
v.supa_hs_confusion_rs = await sign(supaClaims(), 'HS256', new TextEncoder().encode(rsPem), { kid: 'rs-1' });
v.supa_hs_confusion_jwk = await sign(supaClaims(), 'HS256', new TextEncoder().encode(JSON.stringify(jwks.keys[0])), { kid: 'es-1' });
// a token whose signature belongs to another token
{
  const a = v.supa_es256.split('.');
  const b = (await sign(supaClaims({ sub: 'mallory' }), 'ES256', es.privateKey, { kid: 'es-1' })).split('.');
  v.supa_spliced = `${b[0]}.${b[1]}.${a[2]}`;
}
v.supa_truncated = v.supa_es256.slice(0, v.supa_es256.lastIndexOf('.') + 10);
v.supa_not_base64 = v.supa_es256.replace('.', '.*');
v.supa_two_segments = v.supa_es256.split('.').slice(0, 2).join('.');
v.supa_jwe_shape = 'eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d';
// duplicate "sub" key: built by hand, signed over the exact bytes
{
  const enc = (s) => jose.base64url.encode(s);
  const header = enc(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = enc(`{"iss":"${SUPA_ISS}","aud":"authenticated","sub":"${SUB}","sub":"admin","role":"authenticated","iat":${T0 - 10},"exp":${T0 + 3600}}`);
  const { createHmac } = await import('node:crypto');
  const sig = createHmac('sha256', SUPA_SECRET).update(`${header}.${body}`).digest('base64url');
  v.supa_duplicate_sub = `${header}.${body}.${sig}`;
}

// Other providers' exact claim shapes, signed with the same JWKS keys (rs-1, es-1).
const FB_PROJECT = 'cloudsignal-demo';
const FB_UID = 'kX7pQ2mN9rT4vW8yZ1aB3cD5eF6g';
const fbClaims = (over = {}) => ({
  name: 'Alice', iss: `https://securetoken.google.com/${FB_PROJECT}`, aud: FB_PROJECT, auth_time: T0 - 100,
  user_id: FB_UID, sub: FB_UID, iat: T0 - 10, exp: T0 + 3600, email: 'alice@example.com', email_verified: true,
  firebase: { identities: { email: ['alice@example.com'] }, sign_in_provider: 'password' }, role: 'editor', ...over,
});
v.firebase_project = FB_PROJECT;
v.firebase_uid = FB_UID;
v.fb_rs256 = await sign(fbClaims(), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.fb_auth_time_future = await sign(fbClaims({ auth_time: T0 + 600 }), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.fb_no_auth_time = await sign((({ auth_time, ...c }) => c)(fbClaims()), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.fb_wrong_aud = await sign(fbClaims({ aud: 'another-project' }), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.fb_empty_sub = await sign(fbClaims({ sub: '' }), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.fb_es256 = await sign(fbClaims(), 'ES256', es.privateKey, { kid: 'es-1' });

const A0_DOMAIN = 'cloudsignal.eu.auth0.com';
const A0_API = 'https://api.cloudsignal.example';
const a0Claims = (over = {}) => ({
  'https://cloudsignal.example/roles': ['editor', 'ops'], iss: `https://${A0_DOMAIN}/`, sub: 'auth0|64f1c2a9e1b2c4d5e8f90123',
  aud: [A0_API, `https://${A0_DOMAIN}/userinfo`], iat: T0 - 10, exp: T0 + 3600, scope: 'openid profile email',
  azp: 'Xq3tV9cN2bM7kL4pR8sW1yZ6', permissions: ['read:messages'], ...over,
});
v.auth0_domain = A0_DOMAIN;
v.auth0_audience = A0_API;
v.a0_rs256 = await sign(a0Claims(), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.a0_wrong_aud = await sign(a0Claims({ aud: `https://${A0_DOMAIN}/userinfo` }), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.a0_no_trailing_slash_iss = await sign(a0Claims({ iss: `https://${A0_DOMAIN}` }), 'RS256', rs.privateKey, { kid: 'rs-1' });

const CLERK_ISS = 'https://clerk.cloudsignal.example';
const CLERK_ORIGIN = 'https://app.cloudsignal.example';
const clerkClaims = (over = {}) => ({
  azp: CLERK_ORIGIN, exp: T0 + 60, fva: [0, -1], iat: T0 - 5, iss: CLERK_ISS, nbf: T0 - 15,
  sid: 'sess_2abcDEFghiJKLmnoPQRstuVWXyz', sub: 'user_2NNEqL2nrIRdJ194ndJqAHwEfxC', v: 2,
  o: { id: 'org_2xyzABC', rol: 'admin', slg: 'acme' }, ...over,
});
v.clerk_issuer = CLERK_ISS;
v.clerk_origin = CLERK_ORIGIN;
v.clerk_rs256 = await sign(clerkClaims(), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.clerk_v1_org_role = await sign((({ o, v: _v, ...c }) => ({ ...c, org_id: 'org_2xyzABC', org_role: 'org:admin' }))(clerkClaims()), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.clerk_foreign_azp = await sign(clerkClaims({ azp: 'https://evil.example' }), 'RS256', rs.privateKey, { kid: 'rs-1' });
v.clerk_no_azp = await sign((({ azp, ...c }) => c)(clerkClaims()), 'RS256', rs.privateKey, { kid: 'rs-1' });

const OIDC_ISS = 'https://idp.example.com';
const oidcClaims = (over = {}) => ({
  iss: OIDC_ISS, aud: 'cloudsignal-app', sub: '248289761001', roles: ['viewer'], iat: T0 - 10, exp: T0 + 600,
  email: 'jane@example.com', nonce: 'n-0S6_WzA2Mj', ...over,
});
v.oidc_issuer = OIDC_ISS;
v.oidc_es256 = await sign(oidcClaims(), 'ES256', es.privateKey, { kid: 'es-1' });
v.oidc_hs_confusion_rs = await sign(oidcClaims(), 'HS256', new TextEncoder().encode(rsPem), { kid: 'rs-1' });
v.oidc_email_sub = await sign(oidcClaims({ sub: 'jane@example.com' }), 'ES256', es.privateKey, { kid: 'es-1' });

// A tkn_ token minted by jose in CloudSignal's format: core must accept it.
v.tkn_by_jose = 'tkn_' + await new jose.SignJWT({
  iss: 'https://cloudsignal.test', sub: 'alice', org: 'org_k7xm4pqr2n5t', aud: 'mqtt', jti: '00112233445566778899aabbccddeeff',
  acl: { pub: ['users/alice/#'], sub: ['users/alice/#'] }, iat: T0, nbf: T0, exp: T0 + 3600,
}).setProtectedHeader({ alg: 'EdDSA', kid: 'cs-test-1', typ: 'tkn+jwt' }).sign(csKey);
// the same claims, but a plain JWT typ: must be refused as a tkn_ (cross-JWT confusion)
v.tkn_wrong_typ = 'tkn_' + await new jose.SignJWT({
  iss: 'https://cloudsignal.test', sub: 'alice', org: 'org_k7xm4pqr2n5t', aud: 'mqtt', jti: '00112233445566778899aabbccddeeff',
  acl: { pub: [], sub: [] }, iat: T0, nbf: T0, exp: T0 + 3600,
}).setProtectedHeader({ alg: 'EdDSA', kid: 'cs-test-1', typ: 'JWT' }).sign(csKey);

writeFileSync(new URL('../../crates/core/testdata/jose-vectors.json', import.meta.url), JSON.stringify(v, null, 2) + '\n');
console.log('wrote crates/core/testdata/jose-vectors.json');
