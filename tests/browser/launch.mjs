// Debian's headless Chromium as the browser tests start it: a fresh profile each run (no cached
// model files, no leftover study state), WebGPU on (SwiftShader here), extra flags per test.

import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** `--name value` pairs of the command line as an object. */
export function parseArgs(argv) {
  return Object.fromEntries(
    argv.reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
  );
}

/** Starts Chromium; resolves with `{ browser, page, log }` (log collects console lines and page errors). */
export async function launch({ viewport, extraArgs = [] }) {
  const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'deper-chromium-')), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport,
    args: [
      '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu', ...extraArgs,
    ],
  });
  const page = browser.pages()[0] || await browser.newPage();
  const log = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  return { browser, page, log };
}
