// The whole chain on loopback: a Supabase-shaped JWT (npm jose) is exchanged at the worker in
// workerd; the tkn_ it returns authenticates real mosquitto clients at `cloudsignal serve`,
// which enforces the token's ACL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer as httpServer } from 'node:http';
import { promisify } from 'node:util';
import { ORG, ISSUER, cli, tempDir, writeTemp, supabaseProject, startWorker, startServe, mosquittoSub, freePort } from './support/env.mjs';

const exec = promisify(execFile);
let project, worker, broker, port;


before(async () => {
  project = await supabaseProject();
  const key = (await cli('keygen', '--kid', 'e2e-1')).stdout.trim();
  worker = await startWorker({ CLOUDSIGNAL_SIGNING_KEY: key, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG, SUPABASE_JWT_SECRET: project.secret });
  const jwks = await (await fetch(`${worker.url}/.well-known/jwks.json`)).text();
  const jwksFile = writeTemp(tempDir(), 'jwks.json', jwks);
  port = await freePort();
  broker = await startServe(['--control-addr', 'off', '--mqtt-addr', `127.0.0.1:${port}`, '--ws-addr', 'off', '--issuer', ISSUER,
    '--issuer-jwks', jwksFile], { ports: [port] });
});

after(async () => {
  await broker?.stop();
  await worker?.mf.dispose();
  await project?.jwksServer.close();
});

async function credentials() {
  const { jwt, claims } = await project.mint({}, { alg: 'HS256' });
  const res = await fetch(`${worker.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } });
  assert.equal(res.status, 200);
  const body = await res.json();
  return { sub: claims.sub, username: body.mqtt_credentials.username, password: body.mqtt_credentials.password };
}

const mqtt = (bin, c, ...args) =>
  exec(bin, ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv5', '-u', c.username, '-P', c.password, ...args], { timeout: 10_000 })
    .catch((e) => e);

test('a tkn_ from the worker authenticates mosquitto clients at cloudsignal serve', async () => {
  const c = await credentials();
  const sub = mosquittoSub(['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv5', '-u', c.username, '-P', c.password,
    '-t', `users/${c.sub}/notifications`, '-C', '1', '-q', '1']);
  await sub.subscribed;
  const pub = await mqtt('mosquitto_pub', c, '-t', `users/${c.sub}/notifications`, '-m', 'hello from the edge', '-q', '1');
  assert.equal(pub.stderr ?? '', '');
  assert.equal(await sub.exited, 0);
  assert.deepEqual(sub.messages(), ['hello from the edge']);
});

test("the token's ACL is enforced: another user's topics are refused", async () => {
  const alice = await credentials();
  const bob = await credentials();
  const denied = await mqtt('mosquitto_sub', alice, '-t', `users/${bob.sub}/notifications`, '-C', '1', '-W', '2');
  assert.match(denied.stderr, /All subscription requests were denied/);
  const wildcard = await mqtt('mosquitto_sub', alice, '-t', 'users/+/notifications', '-C', '1', '-W', '2');
  assert.match(wildcard.stderr, /All subscription requests were denied/);
  // someone else's token under my username is refused at CONNECT
  const swapped = await mqtt('mosquitto_sub', { username: alice.username, password: bob.password }, '-t', 'x', '-C', '1');
  assert.match(swapped.stderr, /Bad User Name or Password/);
  assert.match(broker.logs, /connect refused/);
  assert.ok(!broker.logs.includes(bob.password), 'tokens never reach the broker log');
});

test('cloudsignal serve trusts the worker by JWKS URL; a slow JWKS host neither delays the listeners nor refuses an early CONNECT', async () => {
  // the worker's JWKS behind a gate: requests are held until the test opens it
  let open;
  const gate = new Promise((r) => { open = r; });
  let requests = 0;
  const proxy = httpServer(async (req, res) => {
    requests++;
    await gate;
    const upstream = await fetch(`${worker.url}${req.url}`);
    res.writeHead(upstream.status, { 'content-type': 'application/json' }).end(await upstream.text());
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const p = await freePort();
  const b = await startServe(['--control-addr', 'off', '--mqtt-addr', `127.0.0.1:${p}`, '--ws-addr', 'off', '--issuer', ISSUER,
    '--issuer-jwks', `http://127.0.0.1:${proxy.address().port}/.well-known/jwks.json`, '--issuer-revocations', 'off'], { ports: [p] });
  try {
    assert.doesNotMatch(b.logs, /issuer keys loaded/, 'listening before the JWKS answered');
    const c = await credentials();
    const args = ['-h', '127.0.0.1', '-p', String(p), '-V', 'mqttv5', '-u', c.username, '-P', c.password, '-t', `users/${c.sub}/x`];
    // a CONNECT while the start-up fetch is in flight waits for it instead of being refused
    const sub = mosquittoSub([...args, '-C', '1']);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(requests, 1, 'the waiting CONNECT does not start a second fetch');
    open();
    await sub.subscribed;
    await exec('mosquitto_pub', [...args, '-m', 'via jwks url'], { timeout: 10_000 });
    assert.equal(await sub.exited, 0);
    assert.deepEqual(sub.messages(), ['via jwks url']);
    assert.match(b.logs, /issuer keys loaded/);
    assert.equal(requests, 1);
  } finally {
    await b.stop();
    proxy.close();
  }
});

test('mqtt.js with a Topic Alias Maximum gets server-assigned aliases and resolves every topic', async () => {
  const { default: mqttjs } = await import('mqtt');
  const { username, password, sub } = await credentials();
  const topic = `users/${sub}/sensors/a-rather-long-topic-name-worth-an-alias`;
  const connect = (props) => new Promise((resolve, reject) => {
    const c = mqttjs.connect(`mqtt://127.0.0.1:${port}`, { username, password, protocolVersion: 5, reconnectPeriod: 0, properties: props });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
  const receiver = await connect({ topicAliasMaximum: 4 });
  const seen = [];
  receiver.on('message', (t, payload, packet) => seen.push({ t, body: String(payload), alias: packet.properties?.topicAlias }));
  await new Promise((r, j) => receiver.subscribe(topic, { qos: 1 }, (e) => (e ? j(e) : r())));
  const sender = await connect({});
  for (const n of [1, 2, 3]) await new Promise((r, j) => sender.publish(topic, `m${n}`, { qos: 1 }, (e) => (e ? j(e) : r())));
  for (let i = 0; i < 100 && seen.length < 3; i += 1) await new Promise((r) => setTimeout(r, 50));
  sender.end();
  receiver.end();
  assert.deepEqual(seen.map((m) => [m.t, m.body]), [[topic, 'm1'], [topic, 'm2'], [topic, 'm3']]);
  assert.ok(seen.every((m) => m.alias === 1), `the server aliased the topic: ${JSON.stringify(seen.map((m) => m.alias))}`);
});
