// MQTT over WebSocket at `cloudsignal serve` with mqtt.js (a client nobody here wrote), plus the
// upgrade rules: `mqtt` subprotocol required, paths / and /mqtt only, origin allowlist.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { createServer } from 'node:net';
import mqtt from 'mqtt';
import { ORG, ISSUER, CLI, cli, tempDir, writeTemp } from './support/env.mjs';

let broker, wsPort, keyFile;

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

before(async () => {
  const dir = tempDir();
  keyFile = `${dir}/key.json`;
  await cli('keygen', '--kid', 'ws-1', '--out', keyFile);
  const jwksFile = writeTemp(dir, 'jwks.json', (await cli('jwks', keyFile)).stdout);
  wsPort = await freePort();
  const mqttPort = await freePort();
  broker = spawn(CLI, ['serve', '--mqtt-addr', `127.0.0.1:${mqttPort}`, '--ws-addr', `127.0.0.1:${wsPort}`,
    '--ws-allowed-origins', 'https://app.example,http://localhost:5173', '--issuer', ISSUER, '--issuer-jwks', jwksFile],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  broker.logs = '';
  broker.stderr.on('data', (d) => { broker.logs += d; });
  for (let i = 0; i < 100 && !broker.logs.includes('WebSocket listening'); i++) await new Promise((r) => setTimeout(r, 50));
});

after(() => broker?.kill('SIGTERM'));

async function token(user) {
  const r = await cli('token', 'issue', '--key', keyFile, '--issuer', ISSUER, '--user', user, '--org', ORG, '--ttl', '600',
    '--pub', 'users/{user}/#', '--sub', 'users/{user}/#');
  return r.stdout.trim();
}

function connect(path, user, password, protocolVersion) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`ws://127.0.0.1:${wsPort}${path}`, {
      username: `${user}@${ORG}`, password, protocolVersion, reconnectPeriod: 0, connectTimeout: 5000,
      wsOptions: { headers: { origin: 'https://app.example' } },
    });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

for (const [path, version] of [['/mqtt', 5], ['/', 4]]) {
  test(`mqtt.js over WebSocket ${path}, MQTT ${version === 5 ? '5' : '3.1.1'}: subscribe, publish, ACL`, async () => {
    const c = await connect(path, 'carol', await token('carol'), version);
    try {
      const granted = await c.subscribeAsync('users/carol/#', { qos: 1 });
      assert.equal(granted[0].qos, 1);
      // the subscription outside the ACL is refused: SUBACK 0x87 (v5) / 0x80 (v3.1.1)
      await assert.rejects(c.subscribeAsync('users/+/notifications', { qos: 1 }), version === 5 ? /Not authorized/ : /Unspecified error/);
      const got = new Promise((r) => c.once('message', (topic, payload) => r([topic, String(payload)])));
      await c.publishAsync('users/carol/notifications', 'over websocket', { qos: 1 });
      assert.deepEqual(await got, ['users/carol/notifications', 'over websocket']);
    } finally {
      await c.endAsync();
    }
  });
}

function upgrade(headers, path = '/mqtt') {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: wsPort, path, headers: {
      connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers,
    } });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('response', (res) => resolve(res.statusCode));
    req.on('error', () => resolve('error'));
    req.end();
  });
}

test('WebSocket upgrades: mqtt subprotocol required, known paths only, origin allowlist', async () => {
  assert.equal(await upgrade({ 'sec-websocket-protocol': 'mqtt', origin: 'https://app.example' }), 101);
  assert.equal(await upgrade({ origin: 'https://app.example' }), 400);
  assert.equal(await upgrade({ 'sec-websocket-protocol': 'mqtt', origin: 'https://evil.example' }), 403);
  assert.equal(await upgrade({ 'sec-websocket-protocol': 'mqtt', origin: 'https://app.example' }, '/other'), 404);
  assert.match(broker.logs, /WebSocket upgrade refused.*origin/);
});
