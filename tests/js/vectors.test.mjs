// Cross-implementation checks between cloudsignal-core (via the native CLI) and npm `jose`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, VECTORS, ORG, ISSUER, cli, jose, tempDir, writeTemp } from './support/env.mjs';

const KAT = readFileSync(join(ROOT, 'crates/core/testdata/tkn-kat.txt'), 'utf8').trim();

test("core's known-answer tkn_ token verifies in jose, byte for byte", async () => {
  const key = await jose.importJWK(VECTORS.cs_signing_jwk, 'EdDSA');
  const { d, ...publicJwk } = VECTORS.cs_signing_jwk;
  const jws = KAT.slice('tkn_'.length);
  const { payload, protectedHeader } = await jose.jwtVerify(jws, await jose.importJWK(publicJwk, 'EdDSA'), {
    issuer: ISSUER, audience: 'mqtt', typ: 'tkn+jwt', algorithms: ['EdDSA'],
    currentDate: new Date(VECTORS.t0 * 1000),
  });
  assert.equal(protectedHeader.kid, 'cs-test-1');
  assert.equal(payload.sub, 'alice');
  assert.equal(payload.org, ORG);
  assert.deepEqual(payload.acl, { pub: ['users/alice/#'], sub: ['users/alice/#'] });
  // jose signs the same header and payload to the very same bytes (deterministic Ed25519)
  const [h, p] = jws.split('.');
  const again = await new jose.CompactSign(Buffer.from(p, 'base64url'))
    .setProtectedHeader(JSON.parse(Buffer.from(h, 'base64url')))
    .sign(key);
  assert.equal(again, jws);
});

test('a tkn_ issued by the native CLI verifies in jose; a jose-minted tkn_ verifies in the CLI', async () => {
  const dir = tempDir();
  const keyFile = writeTemp(dir, 'key.json', JSON.stringify(VECTORS.cs_signing_jwk));
  const issued = await cli('token', 'issue', '--key', keyFile, '--issuer', ISSUER, '--user', 'bob', '--org', ORG,
    '--ttl', '600', '--pub', 'users/{user}/#', '--sub', 'users/{user}/#');
  assert.equal(issued.code, 0, issued.stderr);
  const token = issued.stdout.trim();
  assert.match(token, /^tkn_/);
  const jwks = jose.createLocalJWKSet(JSON.parse((await cli('jwks', keyFile)).stdout));
  const { payload } = await jose.jwtVerify(token.slice(4), jwks, { issuer: ISSUER, audience: 'mqtt', typ: 'tkn+jwt' });
  assert.equal(payload.exp - payload.iat, 600);
  assert.deepEqual(payload.acl.pub, ['users/bob/#']);

  const jwksFile = writeTemp(dir, 'jwks.json', (await cli('jwks', keyFile)).stdout);
  const ok = await cli('token', 'verify', '--jwks', jwksFile, '--issuer', ISSUER, '--username', `alice@${ORG}`,
    '--at', String(VECTORS.t0), VECTORS.tkn_by_jose);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).jti, '00112233445566778899aabbccddeeff');
  const wrongUser = await cli('token', 'verify', '--jwks', jwksFile, '--issuer', ISSUER, '--username', `bob@${ORG}`,
    '--at', String(VECTORS.t0), VECTORS.tkn_by_jose);
  assert.notEqual(wrongUser.code, 0);
  assert.match(wrongUser.stderr, /username does not match/);
  const expired = await cli('token', 'verify', '--jwks', jwksFile, '--issuer', ISSUER, '--at', String(VECTORS.t0 + 7200), VECTORS.tkn_by_jose);
  assert.match(expired.stderr, /token expired/);
});

test('keygen writes a 0600 key file and refuses to overwrite it', async () => {
  const dir = tempDir();
  const path = join(dir, 'signing.json');
  const first = await cli('keygen', '--kid', 'k-test', '--out', path);
  assert.equal(first.code, 0, first.stderr);
  const { statSync } = await import('node:fs');
  assert.equal(statSync(path).mode & 0o777, 0o600);
  const jwk = JSON.parse(readFileSync(path, 'utf8'));
  assert.equal(jwk.kid, 'k-test');
  assert.equal(jwk.crv, 'Ed25519');
  const second = await cli('keygen', '--out', path);
  assert.notEqual(second.code, 0);
});
