// Stand-in identity providers on loopback: each serves its JWKS (and OpenID discovery) at the
// provider's real path and mints tokens with that provider's exact claim shape, signed by npm
// jose. Keys rotate like a real IdP's: a new kid is published next to the old one.
import { jose, startJwksServer } from './env.mjs';

const now = () => Math.floor(Date.now() / 1000);

async function keyPair(alg, kid) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  return { alg, kid, publicKey, privateKey, jwk: { ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

export const FIREBASE_PROJECT = 'cloudsignal-demo';
export const AUTH0_AUDIENCE = 'https://api.cloudsignal.test';
export const APP_ORIGIN = 'https://app.cloudsignal.test';
export const OIDC_AUDIENCE = 'cloudsignal-app';

/** Claim shapes, from each provider's documentation of its tokens. */
const SHAPES = {
  supabase: (base) => ({
    issuer: `${base}/auth/v1`, jwksPath: '/auth/v1/.well-known/jwks.json',
    claims: () => ({
      iss: `${base}/auth/v1`, aud: 'authenticated', sub: crypto.randomUUID(), role: 'authenticated',
      email: 'alice@example.com', app_metadata: { provider: 'email', roles: ['editor'] }, user_metadata: {},
      iat: now() - 5, exp: now() + 3600, session_id: crypto.randomUUID(), is_anonymous: false,
    }),
  }),
  firebase: (base) => {
    const uid = Array.from(crypto.getRandomValues(new Uint8Array(21)), (b) => 'abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789'[b % 57]).join('').padEnd(28, 'x');
    return {
      issuer: `https://securetoken.google.com/${FIREBASE_PROJECT}`, jwksPath: '/service_accounts/v1/jwk/securetoken',
      claims: () => ({
        name: 'Alice', iss: `https://securetoken.google.com/${FIREBASE_PROJECT}`, aud: FIREBASE_PROJECT,
        auth_time: now() - 60, user_id: uid, sub: uid, iat: now() - 5, exp: now() + 3600, email: 'alice@example.com',
        email_verified: true, firebase: { identities: { email: ['alice@example.com'] }, sign_in_provider: 'password' },
        role: 'editor',
      }),
    };
  },
  auth0: (base) => ({
    issuer: `${base}/`, jwksPath: '/.well-known/jwks.json',
    claims: () => ({
      'https://cloudsignal.test/roles': ['editor'], iss: `${base}/`, sub: `auth0|${crypto.randomUUID().replaceAll('-', '').slice(0, 24)}`,
      aud: [AUTH0_AUDIENCE, `${base}/userinfo`], iat: now() - 5, exp: now() + 86400, scope: 'openid profile email',
      azp: 'Xq3tV9cN2bM7kL4pR8sW1yZ6', permissions: [],
    }),
  }),
  clerk: (base) => ({
    issuer: base, jwksPath: '/.well-known/jwks.json',
    claims: () => ({
      azp: APP_ORIGIN, exp: now() + 60, fva: [0, -1], iat: now() - 5, iss: base, nbf: now() - 10,
      sid: `sess_${crypto.randomUUID().replaceAll('-', '')}`, sub: `user_${crypto.randomUUID().replaceAll('-', '')}`, v: 2,
      o: { id: 'org_2xyzABC', rol: 'admin', slg: 'acme' },
    }),
  }),
  oidc: (base) => ({
    issuer: base, jwksPath: '/jwks', discovery: true,
    claims: () => ({
      iss: base, aud: OIDC_AUDIENCE, sub: String(Math.floor(Math.random() * 1e12)), roles: ['editor'],
      iat: now() - 5, exp: now() + 600, email: 'jane@example.com',
    }),
  }),
};

/**
 * A provider of `kind` (supabase, firebase, auth0, clerk, oidc) on loopback. Returns { url, issuer,
 * jwksUrl, server, mint(over, {alg, kid, key, header}), rotate(), retire(kid), keys }.
 */
export async function identityProvider(kind, { maxAge = 600 } = {}) {
  const keys = [await keyPair('RS256', `${kind}-rs-1`), await keyPair('ES256', `${kind}-es-1`)];
  const server = await startJwksServer({ keys: keys.map((k) => k.jwk) }, { maxAge });
  const shape = SHAPES[kind](server.url);
  const jwksUrl = `${server.url}${shape.jwksPath}`;
  if (shape.discovery) {
    server.discovery = { issuer: shape.issuer, jwks_uri: jwksUrl, id_token_signing_alg_values_supported: ['RS256', 'ES256'] };
  }
  const publish = () => { server.jwks = { keys: keys.map((k) => k.jwk) }; };
  let current = keys[0];
  const idp = {
    kind, url: server.url, issuer: shape.issuer, jwksUrl, server, keys,
    get currentKid() { return current.kid; },
    /** Mints a token; `over` overrides claims (undefined deletes one). */
    async mint(over = {}, { alg, kid, key, header = {} } = {}) {
      const k = alg ? keys.find((x) => x.alg === alg) ?? current : current;
      const claims = { ...shape.claims(), ...over };
      for (const [name, v] of Object.entries(claims)) if (v === undefined) delete claims[name];
      const a = alg ?? k.alg;
      const jwt = await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: a, typ: 'JWT', kid: kid ?? k.kid, ...header })
        .sign(key ?? k.privateKey);
      return { jwt, claims };
    },
    /** Publishes a new RS256 key next to the old ones and signs with it from now on. */
    async rotate() {
      current = await keyPair('RS256', `${kind}-rs-${keys.length + 1}`);
      keys.push(current);
      publish();
      return current.kid;
    },
    /** Stops publishing `kid`. */
    retire(kid) {
      const i = keys.findIndex((k) => k.kid === kid);
      if (i >= 0) keys.splice(i, 1);
      publish();
    },
    close: () => server.close(),
  };
  return idp;
}
