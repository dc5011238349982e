// Serves the repository's web/ (with web/pkg built) and a data folder over HTTP on 127.0.0.1,
// opens web/test/embed.html in headless Chromium (Debian's, with WebGPU on SwiftShader) and
// prints the page's result as JSON on stdout. Run by tests/tests/web_embed_parity.rs:
//
//   node tests/browser/embed_parity.mjs --web web --data DIR [--prefer webgpu,cpu]
//
// DIR holds run.json, model.mpk and triplets.json. Exit status 1 with a message on failure.
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, createReadStream, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    web: { type: 'string' },
    data: { type: 'string' },
    prefer: { type: 'string', default: 'webgpu,cpu' },
    timeout: { type: 'string', default: '300' },
  },
});
if (!args.web || !args.data) {
  console.error('usage: embed_parity.mjs --web DIR --data DIR [--prefer webgpu,cpu]');
  process.exit(2);
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };
const roots = { web: resolve(args.web), data: resolve(args.data) };

const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const [, mount, ...rest] = path.split('/');
  if (path === '/favicon.ico') {
    res.writeHead(204).end();
    return;
  }
  const root = roots[mount];
  const file = root && resolve(root, rest.join('/'));
  if (!file || !(file === root || file.startsWith(root + sep))) {
    res.writeHead(404).end();
    return;
  }
  let size;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new Error('not a file');
    size = st.size;
  } catch {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, {
    'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
    'content-length': size,
    'cache-control': 'no-store',
  });
  createReadStream(file).pipe(res);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}`;

const profile = mkdtempSync(join(tmpdir(), 'deper-chromium-'));
let context;
let status = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.DEPER_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu',
    ],
  });
  const page = await context.newPage();
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
  const q = new URLSearchParams({
    run: '/data/run.json', model: '/data/model.mpk', triplets: '/data/triplets.json', prefer: args.prefer,
  });
  await page.goto(`${base}/web/test/embed.html?${q}`);
  await page.waitForFunction(() => document.body.dataset.done === '1', null, { timeout: Number(args.timeout) * 1000 });
  const result = await page.evaluate(() => window.deperResult);
  if (result.error) {
    console.error(`page failed: ${result.error}`);
    status = 1;
  }
  process.stdout.write(JSON.stringify(result) + '\n');
} catch (e) {
  console.error(`embed_parity: ${e.stack ?? e}`);
  status = 1;
} finally {
  if (context) await context.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
