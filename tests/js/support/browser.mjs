// Serves files from the repository on loopback and drives Debian's Chromium with playwright-core.
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize, extname } from 'node:path';
import { ROOT } from './env.mjs';

const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html', '.json': 'application/json' };
const SERVED = ['pkg/', 'tests/js/fixtures/', 'www/dist/'];

/** A static file server for pkg/ and the test fixtures only; `routes` adds handlers by path. */
export async function startStaticServer(routes = {}, { port = 0 } = {}) {
  const server = createServer(async (req, res) => {
    const route = routes[new URL(req.url, 'http://x').pathname];
    if (route) {
      await route(req, res);
      return;
    }
    let path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^\/+/, '');
    if (`${path}/` === 'www/dist/' || path === '' || path === '.') {
      // the demo's documented URLs: /, /www/dist and /www/dist/
      res.writeHead(302, { location: `/www/dist/${new URL(req.url, 'http://x').search}` }).end();
      return;
    }
    if (path.endsWith('/')) path += 'index.html';
    if (!SERVED.some((p) => path.startsWith(p)) || path.includes('..')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: /${path} (served: ${SERVED.map((p) => `/${p}`).join(', ')})\n`);
      return;
    }
    try {
      const body = await readFile(join(ROOT, path));
      res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: /${path}\n`);
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Headless Chromium with the flags this machine's closed network needs. `insecureTls`
 * accepts the tests' self-signed broker certificate (wss://127.0.0.1). */
export function launchChromium({ insecureTls = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(insecureTls ? ['--ignore-certificate-errors'] : [])],
  });
}
