// Worker benchmarks: upload size, exchange latency in local workerd, isolate start.
//   cargo xtask build && node bench/worker.mjs [--n 2000]
// Latency is measured from a loopback client (Node fetch → Miniflare → workerd) with the IdP's
// keys cached, sequentially, after a warm-up; GET /healthz (no cryptography) is the baseline
// for what the HTTP path alone costs.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ROOT, ORG, ISSUER, cli, supabaseProject, startWorker } from '../tests/js/support/env.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('n', 2000);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const fmt = (ms) => `${ms.toFixed(3)}`;

const wasm = readFileSync(join(ROOT, 'worker/build/index_bg.wasm'));
const js = readFileSync(join(ROOT, 'worker/build/index.js'));
const shim = readFileSync(join(ROOT, 'worker/build/worker/shim.mjs'));
const gz = (b) => gzipSync(b, { level: 9 }).length;
const sizeKb = (gz(wasm) + gz(js) + gz(shim)) / 1024;


const project = await supabaseProject();
const key = (await cli('keygen', '--kid', 'bench-1')).stdout.trim();
const env = {
  CLOUDSIGNAL_SIGNING_KEY: key, CLOUDSIGNAL_ISSUER: ISSUER, CLOUDSIGNAL_ORG: ORG,
  SUPABASE_URL: project.url, SUPABASE_JWT_SECRET: project.secret,
};
// A fresh isolate: workerd start (process, script compile, wasm instantiation) to ready; the
// first exchange (HS256: configuration parsed, code warmed), then the first ES256 one (the
// IdP's JWKS fetched and put in the Cache API). Median of 5 fresh workers.
const starts = [];
const firsts = [];
const firstsEs = [];
for (let i = 0; i < 5; i++) {
  const hs = (await project.mint({}, { alg: 'HS256' })).jwt;
  const es = (await project.mint({}, { alg: 'ES256', kid: 'es-1' })).jwt;
  const t0 = performance.now();
  const w = await startWorker(env);
  starts.push(performance.now() - t0);
  for (const [jwt, into] of [[hs, firsts], [es, firstsEs]]) {
    const t = performance.now();
    const res = await fetch(`${w.url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${jwt}` } });
    await res.arrayBuffer();
    into.push(performance.now() - t);
  }
  await w.mf.dispose();
}
const worker = await startWorker(env);

// one keep-alive connection, like a backend or an edge location's steady traffic (Node's
// fetch adds ~2 ms of its own per request here, which would hide the worker's cost)
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function request(method, path, headers = {}) {
  const u = new URL(worker.url);
  return new Promise((resolve, reject) => {
    const r = http.request({ host: u.hostname, port: u.port, method, path, headers, agent }, (resp) => {
      resp.resume();
      resp.on('end', () => resolve(resp.statusCode));
    });
    r.on('error', reject);
    r.end();
  });
}

async function measure(label, send) {
  for (let i = 0; i < 200; i++) await send(i); // warm-up
  const xs = [];
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    const status = await send(i + 200);
    xs.push(performance.now() - t);
    if (status !== 200) throw new Error(`${label}: HTTP ${status}`);
  }
  return { label, p50: pct(xs, 50), p99: pct(xs, 99), max: Math.max(...xs) };
}

// tokens are minted ahead of the timed request, so only the exchange is measured
const tokens = {};
for (const alg of ['HS256', 'RS256', 'ES256']) {
  tokens[alg] = [];
  for (let i = 0; i < N + 400; i++) {
    tokens[alg].push((await project.mint({}, { alg, kid: alg === 'RS256' ? 'rs-1' : alg === 'ES256' ? 'es-1' : undefined })).jwt);
  }
}
const rows = [];
rows.push(await measure('GET /healthz (HTTP path only)', () => request('GET', '/healthz')));
for (const alg of ['HS256', 'RS256', 'ES256']) {
  rows.push(await measure(`exchange ${alg}`, (i) => request('POST', '/v1/token', { authorization: `Bearer ${tokens[alg][i]}` })));
}
await worker.mf.dispose();
await project.jwksServer.close();

console.log(`\nworker upload (wasm + JS, gzip -9): ${sizeKb.toFixed(1)} KB (aim <= 250 KB)`);
console.log(`fresh isolate (median of 5): workerd start to ready ${pct(starts, 50).toFixed(0)} ms; first exchange (HS256) ${fmt(pct(firsts, 50))} ms; then first ES256 (JWKS fetched) ${fmt(pct(firstsEs, 50))} ms`);
console.log(`\n| request (loopback, ${N} sequential, JWKS cached) | p50 ms | p99 ms | max ms |`);
console.log('|---|---:|---:|---:|');
for (const r of rows) console.log(`| ${r.label} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${fmt(r.max)} |`);
const base = rows[0];
console.log(`\nexchange cost above the HTTP path (p50): ${rows.slice(1).map((r) => `${r.label.split(' ')[1]} ${fmt(r.p50 - base.p50)} ms`).join(', ')}`);
