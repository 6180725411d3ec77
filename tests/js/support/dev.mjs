// `cargo xtask dev`: CloudSignal on this machine. The broker (`cloudsignal serve`) on
// mqtt://127.0.0.1:1883 trusts the tokens of the token-exchange worker, which runs in workerd on
// http://127.0.0.1:8787. Development secrets live in .dev/ (mode 0600, git-ignored).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ROOT, ORG, CLI, cli, jose, startWorker } from './env.mjs';
import { startStaticServer } from './browser.mjs';

const DEV = join(ROOT, '.dev');
const PORT = Number(process.env.CLOUDSIGNAL_DEV_PORT ?? 8787);
const MQTT_PORT = Number(process.env.CLOUDSIGNAL_DEV_MQTT_PORT ?? 1883);
mkdirSync(DEV, { recursive: true, mode: 0o700 });

const keyFile = join(DEV, 'signing-key.json');
if (!existsSync(keyFile)) {
  const r = await cli('keygen', '--kid', 'dev-1', '--out', keyFile);
  if (r.code !== 0) throw new Error(`cloudsignal keygen failed: ${r.stderr}`);
}
const secretFile = join(DEV, 'supabase-jwt-secret');
if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
const secret = readFileSync(secretFile, 'utf8').trim();
const adminFile = join(DEV, 'worker-admin-secret');
if (!existsSync(adminFile)) writeFileSync(adminFile, randomBytes(32).toString('hex'), { mode: 0o600 });

const issuer = `http://127.0.0.1:${PORT}`;
const { url, mf } = await startWorker({
  CLOUDSIGNAL_SIGNING_KEY: readFileSync(keyFile, 'utf8'),
  CLOUDSIGNAL_ISSUER: issuer,
  CLOUDSIGNAL_ORG: ORG,
  SUPABASE_JWT_SECRET: secret,
  CLOUDSIGNAL_BROKER_WSS_URL: 'ws://127.0.0.1:18884/mqtt',
  CLOUDSIGNAL_BROKER_MQTTS_URL: 'mqtt://127.0.0.1:1883',
  CLOUDSIGNAL_ALLOWED_ORIGINS: 'http://localhost:5173,http://127.0.0.1:5173',
  CLOUDSIGNAL_ADMIN_SECRET: readFileSync(adminFile, 'utf8').trim(),
}, { port: PORT, kv: true });

// The broker, trusting the worker's signing key.
const jwksFile = join(DEV, 'jwks.json');
writeFileSync(jwksFile, (await cli('jwks', keyFile)).stdout, { mode: 0o600 });
const broker = spawn(CLI, ['serve', '--mqtt-addr', `127.0.0.1:${MQTT_PORT}`, '--issuer', issuer, '--issuer-jwks', jwksFile,
  '--issuer-revocations', `${issuer}/v1/revocations`, '--issuer-revocations-token-file', adminFile,
  '--data-dir', join(DEV, 'data'), '--control-addr', '127.0.0.1:8080'], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
broker.on('exit', (code) => {
  console.error(`cloudsignal serve exited (${code})`);
  process.exit(code ?? 1);
});

// A Supabase-shaped access token signed with the dev secret, as supabase-js would hold.
const supabaseToken = (sub) => {
  const now = Math.floor(Date.now() / 1000);
  return new jose.SignJWT({
    iss: 'http://127.0.0.1:54321/auth/v1', aud: 'authenticated', sub, role: 'authenticated',
    email: 'dev@example.com', iat: now, exp: now + 3600,
  }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(secret));
};
const sample = await supabaseToken(randomUUID());

// The demo app (www/dist, built by `cargo xtask build`) with a sign-in stand-in at /idp/token.
const demo = await startStaticServer({
  '/idp/token': async (req, res) => {
    const sub = new URL(req.url, 'http://x').searchParams.get('sub') || randomUUID();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: await supabaseToken(sub), sub }));
  },
}, { port: 5173 });

console.log(`
CloudSignal is running:
  broker          mqtt://127.0.0.1:${MQTT_PORT}   (cloudsignal serve, trusts tokens from ${issuer})
  token exchange  ${url}   (the worker, in workerd)
  control plane   http://127.0.0.1:8080   (API keys, POST /v1/tokens, revocation; admin key in ${join(DEV, 'data', 'admin.key')})
  signing key     ${keyFile} (kid dev-1, mode 0600)
  Supabase        HS256 secret in ${secretFile} (issuer: any .../auth/v1)
  demo app        ${demo.url}/www/dist/index.html   (sign in, watch the token refresh; publish to users/<id>/notifications)

Get MQTT credentials for a signed-in Supabase user, then use them:
  RESP=$(curl -s -X POST ${url}/v1/token -H 'Authorization: Bearer ${sample}')
  U=$(echo "$RESP" | node -pe 'JSON.parse(require("fs").readFileSync(0)).mqtt_credentials.username')
  P=$(echo "$RESP" | node -pe 'JSON.parse(require("fs").readFileSync(0)).mqtt_credentials.password')
  mosquitto_sub -h 127.0.0.1 -p ${MQTT_PORT} -V mqttv5 -u "$U" -P "$P" -t "users/\${U%@*}/#" -v &
  mosquitto_pub -h 127.0.0.1 -p ${MQTT_PORT} -V mqttv5 -u "$U" -P "$P" -t "users/\${U%@*}/notifications" -m hello

Press Ctrl-C to stop.`);

const stop = async () => {
  broker.kill('SIGTERM');
  await mf.dispose();
  await demo.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
