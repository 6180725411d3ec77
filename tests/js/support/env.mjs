// Shared helpers for the end-to-end suites: real processes on loopback, stopped by the tests.
import * as jose from 'jose';
import { Miniflare } from 'miniflare';
import { createServer } from 'node:http';
import { createServer as createTcpServer, createConnection } from 'node:net';
import { execFile, spawn } from 'node:child_process';
import { readFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = process.env.CLOUDSIGNAL_BIN ?? join(ROOT, 'target', 'debug', 'cloudsignal');
export const VECTORS = JSON.parse(readFileSync(join(ROOT, 'crates/core/testdata/jose-vectors.json'), 'utf8'));
export const ORG = 'org_k7xm4pqr2n5t';
export const ISSUER = 'https://cloudsignal.test';

const run = promisify(execFile);

/** Runs the native `cloudsignal` CLI; resolves to { code, stdout, stderr }. */
export async function cli(...args) {
  try {
    const { stdout, stderr } = await run(CLI, args);
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'cloudsignal-test-'));
}

export function writeTemp(dir, name, contents) {
  const p = join(dir, name);
  writeFileSync(p, contents, { mode: 0o600 });
  return p;
}

/** A TCP port on 127.0.0.1 that is free right now. */
export async function freePort() {
  const srv = createTcpServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * A JWKS server on loopback standing in for an IdP. `state.down = true` makes it answer 503.
 * With `state.discovery` set, `/.well-known/openid-configuration` serves that document.
 * `state.hits` counts JWKS fetches, `state.discoveryHits` discovery fetches.
 */
export async function startJwksServer(jwks, { maxAge = 600 } = {}) {
  const state = { jwks, down: false, hits: 0, discoveryHits: 0, discovery: null };
  const server = createServer((req, res) => {
    const isDiscovery = req.url.endsWith('/.well-known/openid-configuration');
    if (isDiscovery) state.discoveryHits += 1;
    else state.hits += 1;
    if (state.down) {
      res.writeHead(503).end('down');
      return;
    }
    if (isDiscovery && !state.discovery) {
      res.writeHead(404).end('no discovery');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': `public, max-age=${maxAge}` });
    res.end(JSON.stringify(isDiscovery ? state.discovery : state.jwks));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  state.url = `http://127.0.0.1:${port}`;
  state.close = () => new Promise((r) => server.close(r));
  return state;
}

/** A fresh Supabase-like project: keys, a JWKS server, and a token minter. */
export async function supabaseProject() {
  const es = await jose.generateKeyPair('ES256', { extractable: true });
  const rs = await jose.generateKeyPair('RS256', { extractable: true });
  const secret = 'local-dev-supabase-jwt-secret-0123456789abcdef';
  const keys = [
    { ...(await jose.exportJWK(es.publicKey)), kid: 'es-1', alg: 'ES256', use: 'sig' },
    { ...(await jose.exportJWK(rs.publicKey)), kid: 'rs-1', alg: 'RS256', use: 'sig' },
  ];
  const jwksServer = await startJwksServer({ keys });
  // SUPABASE_URL points at the JWKS server, so the issuer is <server>/auth/v1
  const url = jwksServer.url;
  const iss = `${url}/auth/v1`;
  const now = () => Math.floor(Date.now() / 1000);
  const claims = (over = {}) => ({
    iss, aud: 'authenticated', sub: crypto.randomUUID(), role: 'authenticated',
    email: 'user@example.com', app_metadata: { provider: 'email', roles: [] }, user_metadata: {},
    iat: now() - 5, exp: now() + 3600, session_id: crypto.randomUUID(), is_anonymous: false, ...over,
  });
  const mint = async (over = {}, { alg = 'ES256', kid, key } = {}) => {
    const c = claims(over);
    const signer = new jose.SignJWT(c).setProtectedHeader({ alg, typ: 'JWT', ...(kid ? { kid } : {}) });
    if (alg === 'HS256') return { jwt: await signer.sign(key ?? new TextEncoder().encode(secret)), claims: c };
    if (alg === 'RS256') return { jwt: await signer.sign(key ?? rs.privateKey), claims: c };
    return { jwt: await signer.sign(key ?? es.privateKey), claims: c };
  };
  return { es, rs, secret, url, iss, jwksServer, mint, keys };
}

/** Starts the built worker (worker/build) in workerd via Miniflare; returns { url, mf, logs }.
 * `kv: true` binds the REVOCATIONS and CONFIG namespaces (`mf.getKVNamespace(name)`); `ratelimits` binds EXCHANGE_*_LIMITER; `cachePersist`
 * keeps the Cache API across instances (a fresh isolate in the same location). */
export async function startWorker(bindings, { port = 0, kv = false, ratelimits, cachePersist } = {}) {
  const logs = [];
  const mf = new Miniflare({
    host: '127.0.0.1',
    port,
    logRequests: false,
    cf: false,
    handleStructuredLogs: (log) => {
      logs.push(`${log.message ?? JSON.stringify(log)}\n`);
    },
    workers: [{
      name: 'cloudsignal-worker',
      modules: true,
      scriptPath: join(ROOT, 'worker/build/index.js'),
      modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'], fallthrough: true }],
      compatibilityDate: '2026-04-01',
      bindings,
      ...(kv ? { kvNamespaces: ['REVOCATIONS', 'CONFIG'] } : {}),
      ...(ratelimits ? { ratelimits } : {}),
    }],
    ...(cachePersist ? { cachePersist } : {}),
  });
  const url = String(await mf.ready).replace(/\/$/, '');
  return { url, mf, logs };
}

export { jose };

const connectable = (port) => new Promise((r) => {
  const s = createConnection(port, '127.0.0.1', () => { s.destroy(); r(true); });
  s.on('error', () => r(false));
});

/**
 * Starts `cloudsignal serve ...args` and resolves once every port in `ports` accepts
 * connections. The process gets `.logs` (its stderr so far) and `.stop()` (SIGTERM, resolves on
 * exit). Rejects with the broker's log if it exits first or has not listened within a minute
 * (a loaded CI machine is slow, never wrong).
 */
export async function startServe(args, { ports, env = {} }) {
  const proc = spawn(CLI, ['serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  proc.logs = '';
  proc.stderr.on('data', (d) => { proc.logs += d; });
  proc.exited = new Promise((r) => proc.once('close', (code) => r(code ?? 'signal')));
  proc.stop = () => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM'); return proc.exited; };
  const deadline = Date.now() + 60_000;
  for (;;) {
    const open = await Promise.all(ports.map(connectable));
    if (open.every(Boolean)) return proc;
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`cloudsignal serve exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${proc.logs}`);
    }
    if (Date.now() > deadline) {
      proc.kill('SIGTERM');
      throw new Error(`cloudsignal serve did not listen on ${ports.join(', ')} within 60 s:\n${proc.logs}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

const MOSQUITTO_DEBUG = /^(Client |Subscribed \(mid|Warning: )/;

/**
 * `mosquitto_sub -d ...args`: `.subscribed` resolves once its SUBACK has arrived (so a publish
 * after it cannot be missed, however slow the machine) and rejects if it exits first (or after
 * 30 s);
 * `.messages()` are the payload lines so far; `.exited` resolves to the exit code.
 */
export function mosquittoSub(args) {
  // line-buffered: its stdout is a pipe here, and the SUBACK line must arrive when it happens
  const p = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-d', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.out = '';
  // 'close', not 'exit': 'exit' may come before the last of its output has been read
  p.exited = new Promise((r) => p.once('close', (code) => r(code ?? 'signal')));
  p.subscribed = new Promise((resolve, reject) => {
    const seen = () => { if (/^Subscribed \(mid/m.test(p.out)) resolve(); };
    p.stdout.on('data', (d) => { p.out += d; seen(); });
    p.stderr.on('data', (d) => { p.out += d; });
    p.exited.then((code) => reject(new Error(`mosquitto_sub exited (${code}) before subscribing:\n${p.out}`)));
    setTimeout(() => reject(new Error(`mosquitto_sub not subscribed after 30 s:\n${p.out}`)), 30_000).unref();
  });
  p.subscribed.catch(() => {}); // observed by whoever awaits it
  p.messages = () => p.out.split('\n').filter((l) => l && !MOSQUITTO_DEBUG.test(l));
  return p;
}

/** Resolves with the first group of the first match of `re` in `stream`'s output so far
 * (rejects after 60 s, showing what was seen). */
export function waitFor(stream, re) {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`not seen ${re} in:\n${seen}`)), 60_000);
    stream.on('data', (d) => {
      seen += d;
      const m = seen.match(re);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
}
