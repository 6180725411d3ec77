// MQTT over TCP, WebSocket and secure WebSocket at `cloudsignal serve` with mqtt.js (a client nobody
// here wrote), MQTTS with mosquitto clients, and the upgrade rules: `mqtt` subprotocol required,
// paths / and /mqtt only, origin allowlist.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import mqtt from 'mqtt';
import { ORG, ISSUER, cli, tempDir, writeTemp, freePort, startServe, mosquittoSub } from './support/env.mjs';

let broker, wsPort, wssPort, tlsPort, mqttPort, keyFile, ca;


before(async () => {
  const dir = tempDir();
  keyFile = `${dir}/key.json`;
  await cli('keygen', '--kid', 'ws-1', '--out', keyFile);
  const jwksFile = writeTemp(dir, 'jwks.json', (await cli('jwks', keyFile)).stdout);
  // a self-signed certificate for 127.0.0.1 (openssl from Debian)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${dir}/tls-key.pem`, '-out', `${dir}/tls-cert.pem`, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  ca = `${dir}/tls-cert.pem`;
  [wsPort, wssPort, tlsPort] = [await freePort(), await freePort(), await freePort()];
  mqttPort = await freePort();
  broker = await startServe(['--control-addr', 'off', '--mqtt-addr', `127.0.0.1:${mqttPort}`, '--ws-addr', `127.0.0.1:${wsPort}`,
    '--tls-addr', `127.0.0.1:${tlsPort}`, '--wss-addr', `127.0.0.1:${wssPort}`, '--tls-cert', ca, '--tls-key', `${dir}/tls-key.pem`,
    '--ws-allowed-origins', 'https://app.example,http://localhost:5173', '--issuer', ISSUER, '--issuer-jwks', jwksFile],
  { ports: [mqttPort, wsPort, tlsPort, wssPort] });
});

after(() => broker?.stop());

async function token(user) {
  const r = await cli('token', 'issue', '--key', keyFile, '--issuer', ISSUER, '--user', user, '--org', ORG, '--ttl', '600',
    '--pub', 'users/{user}/#', '--sub', 'users/{user}/#');
  return r.stdout.trim();
}

function connect(path, user, password, protocolVersion, secure = false) {
  return new Promise((resolve, reject) => {
    const url = path === 'tcp' ? `mqtt://127.0.0.1:${mqttPort}`
      : secure ? `wss://127.0.0.1:${wssPort}${path}` : `ws://127.0.0.1:${wsPort}${path}`;
    const c = mqtt.connect(url, {
      username: `${user}@${ORG}`, password, protocolVersion, reconnectPeriod: 0, connectTimeout: 5000,
      wsOptions: { headers: { origin: 'https://app.example' }, ca: secure ? readFileSync(ca) : undefined },
    });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

for (const [path, version, secure] of [['/mqtt', 5, false], ['/', 4, false], ['/mqtt', 5, true], ['tcp', 5, false], ['tcp', 4, false]]) {
  test(`mqtt.js over ${path === 'tcp' ? 'TCP' : secure ? 'WSS' : 'WebSocket'} ${path}, MQTT ${version === 5 ? '5' : '3.1.1'}: subscribe, publish, ACL`, async () => {
    const c = await connect(path, 'carol', await token('carol'), version, secure);
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
  assert.match(broker.logs, /connection refused before MQTT.*origin/);
});

test('MQTTS with mosquitto clients (TLS 1.3, certificate checked against its CA)', async () => {
  const tok = await token('dave');
  const common = ['-h', '127.0.0.1', '-p', String(tlsPort), '--cafile', ca, '-u', `dave@${ORG}`, '-P', tok];
  const sub = mosquittoSub([...common, '-V', 'mqttv5', '-t', 'users/dave/x', '-C', '1']);
  await sub.subscribed;
  execFileSync('mosquitto_pub', [...common, '-V', 'mqttv311', '-t', 'users/dave/x', '-m', 'over tls', '-q', '1']);
  assert.equal(await sub.exited, 0);
  assert.deepEqual(sub.messages(), ['over tls']);
});
