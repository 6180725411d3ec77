// `cargo xtask dev`: the token-exchange worker in workerd on http://127.0.0.1:8787 with
// development secrets kept in .dev/ (mode 0600, git-ignored), and a ready-to-run example.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { ROOT, ORG, cli, jose, startWorker } from './env.mjs';

const DEV = join(ROOT, '.dev');
const PORT = Number(process.env.CLOUDSIGNAL_DEV_PORT ?? 8787);
mkdirSync(DEV, { recursive: true, mode: 0o700 });

const keyFile = join(DEV, 'signing-key.json');
if (!existsSync(keyFile)) {
  const r = await cli('keygen', '--kid', 'dev-1', '--out', keyFile);
  if (r.code !== 0) throw new Error(`cloudsignal keygen failed: ${r.stderr}`);
}
const secretFile = join(DEV, 'supabase-jwt-secret');
if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
const secret = readFileSync(secretFile, 'utf8').trim();

const issuer = `http://127.0.0.1:${PORT}`;
const { url, mf } = await startWorker({
  CLOUDSIGNAL_SIGNING_KEY: readFileSync(keyFile, 'utf8'),
  CLOUDSIGNAL_ISSUER: issuer,
  CLOUDSIGNAL_ORG: ORG,
  SUPABASE_JWT_SECRET: secret,
  CLOUDSIGNAL_BROKER_WSS_URL: 'ws://127.0.0.1:18884/mqtt',
  CLOUDSIGNAL_BROKER_MQTTS_URL: 'mqtt://127.0.0.1:1883',
}, { port: PORT });

// A Supabase-shaped access token signed with the dev secret, as supabase-js would hold.
const now = Math.floor(Date.now() / 1000);
const sample = await new jose.SignJWT({
  iss: 'http://127.0.0.1:54321/auth/v1', aud: 'authenticated', sub: randomUUID(), role: 'authenticated',
  email: 'dev@example.com', iat: now, exp: now + 3600,
}).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(secret));

console.log(`
CloudSignal token exchange is running in workerd at ${url}
  signing key   ${keyFile} (kid dev-1, mode 0600)
  Supabase      HS256 secret in ${secretFile} (issuer: any .../auth/v1)

Exchange a Supabase access token for MQTT credentials:
  curl -s -X POST ${url}/v1/token -H 'Authorization: Bearer ${sample}'

Public keys:  curl -s ${url}/.well-known/jwks.json
Press Ctrl-C to stop.`);

const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
