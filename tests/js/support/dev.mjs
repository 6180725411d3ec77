// `cargo xtask dev`: CloudSignal on this machine. The broker (`cloudsignal serve`) trusts the
// tokens of the token-exchange worker (workerd); the control plane's keys and the worker's
// users are one org (tenant), so a backend key reaches the demo's users. Development secrets
// live in the dev directory (mode 0600, git-ignored).
//
// Every port and the browser origins allowed to call the worker can be changed:
//   CLOUDSIGNAL_DEV_PORT          worker (token exchange)        default 8787
//   CLOUDSIGNAL_DEV_MQTT_PORT     broker, MQTT over TCP          default 1883
//   CLOUDSIGNAL_DEV_WS_PORT       broker, MQTT over WebSocket    default 18884
//   CLOUDSIGNAL_DEV_CONTROL_PORT  control plane HTTP API         default 8080
//   CLOUDSIGNAL_DEV_DEMO_PORT     demo app + sign-in stand-in    default 5173
//   CLOUDSIGNAL_DEV_ORIGINS       more allowed origins, comma-separated (your app's, e.g.
//                                 http://localhost:3000); the demo's and Vite's 5173/5174 always
//   CLOUDSIGNAL_DEV_TOKEN_TTL     token lifetime in seconds      default 120 (watch a refresh)
//   CLOUDSIGNAL_DEV_DIR           secrets and data               default .dev/
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { ROOT, ORG, CLI, cli, jose, startWorker } from './env.mjs';
import { startStaticServer } from './browser.mjs';

const port = (name, fallback) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw new Error(`${name}=${process.env[name]} is not a port`);
  return v;
};
const PORT = port('CLOUDSIGNAL_DEV_PORT', 8787);
const MQTT_PORT = port('CLOUDSIGNAL_DEV_MQTT_PORT', 1883);
const WS_PORT = port('CLOUDSIGNAL_DEV_WS_PORT', 18884);
const CONTROL_PORT = port('CLOUDSIGNAL_DEV_CONTROL_PORT', 8080);
const DEMO_PORT = port('CLOUDSIGNAL_DEV_DEMO_PORT', 5173);
const TTL = Number(process.env.CLOUDSIGNAL_DEV_TOKEN_TTL ?? 120);
const DEV = process.env.CLOUDSIGNAL_DEV_DIR ?? join(ROOT, '.dev');
const ORIGINS = [...new Set([
  ...[DEMO_PORT, 5173, 5174].flatMap((p) => [`http://localhost:${p}`, `http://127.0.0.1:${p}`]),
  ...(process.env.CLOUDSIGNAL_DEV_ORIGINS ?? '').split(',').map((o) => o.trim().replace(/\/$/, '')).filter(Boolean),
])];
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
  CLOUDSIGNAL_TOKEN_TTL: String(TTL),
  SUPABASE_JWT_SECRET: secret,
  CLOUDSIGNAL_BROKER_WSS_URL: `ws://127.0.0.1:${WS_PORT}/mqtt`,
  CLOUDSIGNAL_BROKER_MQTTS_URL: `mqtt://127.0.0.1:${MQTT_PORT}`,
  CLOUDSIGNAL_ALLOWED_ORIGINS: ORIGINS.join(','),
  CLOUDSIGNAL_ADMIN_SECRET: readFileSync(adminFile, 'utf8').trim(),
}, { port: PORT, kv: true });

// The broker, trusting the worker's signing key for its org, with the control plane in the
// same org (one data directory per org id: an older .dev/data of another org is left alone).
const jwksFile = join(DEV, 'jwks.json');
writeFileSync(jwksFile, (await cli('jwks', keyFile)).stdout, { mode: 0o600 });
const dataDir = join(DEV, `data-${ORG}`);
let stopping = false;
const broker = spawn(CLI, ['serve', '--mqtt-addr', `127.0.0.1:${MQTT_PORT}`, '--ws-addr', `127.0.0.1:${WS_PORT}`,
  '--issuer', issuer, '--issuer-jwks', jwksFile, '--issuer-org', ORG,
  '--issuer-revocations', `${issuer}/v1/revocations`, '--issuer-revocations-token-file', adminFile,
  '--data-dir', dataDir, '--org', ORG, '--control-addr', `127.0.0.1:${CONTROL_PORT}`], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
broker.on('exit', (code) => {
  if (stopping) return;
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

// The demo app (www/dist, built by `cargo xtask build`) with a sign-in stand-in at /idp/token
// (any origin may call it: it signs in whoever asks, which is all a development IdP does).
const demo = await startStaticServer({
  '/idp/token': async (req, res) => {
    const sub = new URL(req.url, 'http://x').searchParams.get('sub') || randomUUID();
    res.writeHead(200, { 'content-type': 'application/json', 'access-control-allow-origin': '*' })
      .end(JSON.stringify({ access_token: await supabaseToken(sub), sub }));
  },
}, { port: DEMO_PORT });

// the broker's first start writes the admin key; wait for it (and for the broker to listen)
const adminKey = join(dataDir, 'admin.key');
for (let i = 0; i < 600 && !existsSync(adminKey); i += 1) await new Promise((r) => setTimeout(r, 50));

console.log(`
CloudSignal is running (org ${ORG}: the worker's users and the control plane's keys are one tenant):
  broker          mqtt://127.0.0.1:${MQTT_PORT}, ws://127.0.0.1:${WS_PORT}/mqtt   (cloudsignal serve, trusts tokens from ${issuer})
  token exchange  ${url}   (the worker, in workerd; tokens live ${TTL} s; browser origins: ${ORIGINS.join(' ')})
  control plane   http://127.0.0.1:${CONTROL_PORT}   (API keys, POST /v1/tokens, revocation)
  dashboard       http://127.0.0.1:${CONTROL_PORT}/dashboard/   (people sign in: a first start prints the owner's setup link above; cloudsignal login for the CLI)
  admin key       ${adminKey}   (MQTT username admin@${ORG})
  signing key     ${keyFile} (kid dev-1, mode 0600)
  Supabase        HS256 secret in ${secretFile} (issuer: any .../auth/v1)
  demo app        ${demo.url}/www/dist/   (sign in, watch the token refresh; publish to users/<id>/notifications)

Sign in as alice, get MQTT credentials for her, then use them (works whenever you paste it):
  JWT=$(curl -s "${demo.url}/idp/token?sub=alice" | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')
  RESP=$(curl -s -X POST ${url}/v1/token -H "Authorization: Bearer $JWT")
  U=$(echo "$RESP" | node -pe 'const r = JSON.parse(require("fs").readFileSync(0)); r.mqtt_credentials?.username ?? (console.error(r.detail ?? r), process.exit(1))')
  P=$(echo "$RESP" | node -pe 'JSON.parse(require("fs").readFileSync(0)).mqtt_credentials.password')
  mosquitto_sub -h 127.0.0.1 -p ${MQTT_PORT} -V mqttv5 -u "$U" -P "$P" -t "users/alice/#" -v &
  mosquitto_pub -h 127.0.0.1 -p ${MQTT_PORT} -V mqttv5 -u "$U" -P "$P" -t "users/alice/notifications" -m hello
  # from a backend, with the admin key:
  mosquitto_pub -h 127.0.0.1 -p ${MQTT_PORT} -V mqttv5 -u admin@${ORG} -P "$(cat ${adminKey})" -t "users/alice/notifications" -m "from the backend"

Ports and origins: CLOUDSIGNAL_DEV_{PORT,MQTT_PORT,WS_PORT,CONTROL_PORT,DEMO_PORT,ORIGINS,TOKEN_TTL,DIR} (see tests/js/support/dev.mjs).
Press Ctrl-C to stop.`);

const stop = async () => {
  if (stopping) return;
  stopping = true;
  broker.kill('SIGTERM');
  await new Promise((r) => (broker.exitCode !== null || broker.signalCode !== null ? r() : broker.once('exit', r)));
  await mf.dispose();
  await demo.close();
  console.log('CloudSignal stopped.');
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
