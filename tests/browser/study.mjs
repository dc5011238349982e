// A scripted participant in real headless Chromium (Debian's /usr/bin/chromium through
// playwright-core): takes the demo study of a running `deper serve` with the mouse, reloads the page
// in the middle of a trial, describes every picture, waits for the in-page z_s and the caption
// preview, then opens the researcher dashboard. Writes screenshots and prints one JSON object with
// every pointer position it produced (image-normalised), for the Rust test to compare with the database.
//
// node tests/browser/study.mjs --base http://127.0.0.1:PORT --token RESEARCHER_TOKEN --shots DIR
//   [--moves 40] [--reload-trial 1]

import { mkdirSync } from 'node:fs';
import { launch, parseArgs } from './launch.mjs';
import { join } from 'node:path';

const args = parseArgs(process.argv.slice(2));
const base = args.base;
const shots = args.shots;
const moves = Number(args.moves || 40);
const reloadTrial = Number(args['reload-trial'] ?? 1);
if (!base || !shots || !args.token) {
  console.error('usage: study.mjs --base URL --token TOKEN --shots DIR [--moves N] [--reload-trial K]');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const { browser, page, log } = await launch({ viewport: { width: 1100, height: 900 } });

const result = { expected: [], trials: 0, reloads: 0, log };
try {
  await page.goto(`${base}/`);
  await page.click('#take-demo');
  await page.waitForSelector('#consent-agree');
  await page.click('#consent-agree');
  await page.waitForSelector('#begin');
  // Keyboard only from here on where the page allows it.
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.body.dataset.deperReady === '1', null, { timeout: 120000 });
  result.backend = await page.evaluate(() => document.body.dataset.deperBackend);

  for (let trial = 0; ; trial++) {
    const what = await Promise.race([
      page.waitForSelector('#stimulus', { timeout: 60000 }).then(() => 'view'),
      page.waitForSelector('#completion-code', { timeout: 60000 }).then(() => 'done'),
    ]);
    if (what === 'done') break;
    await page.waitForFunction(() => {
      const img = document.getElementById('stimulus');
      return img && img.complete && img.naturalWidth > 0;
    });
    const progress = await page.textContent('#progress');
    if (trial === 0) await page.screenshot({ path: join(shots, 'study.png') });
    let box = await page.locator('#stimulus').boundingBox();
    // Start outside the picture, so every recorded move is one of ours.
    await page.mouse.move(box.x - 20, box.y - 20);
    for (let i = 0; i < moves; i++) {
      if (trial === reloadTrial && i === Math.floor(moves / 2)) {
        // Reload in the middle of looking: the samples so far must arrive once, the trial goes on.
        await page.reload();
        result.reloads++;
        await page.waitForSelector('#stimulus');
        await page.waitForFunction(() => document.getElementById('stimulus').complete);
        box = await page.locator('#stimulus').boundingBox();
        await page.mouse.move(box.x - 20, box.y - 20);
      }
      // Whole CSS pixels, well inside the picture: three dwells (small deterministic jitter around a
      // centre that moves with the trial), so the trajectory has steps to show.
      const dwell = Math.floor((3 * i) / moves);
      const cx = 0.2 + 0.3 * ((dwell + trial) % 3);
      const cy = 0.25 + 0.25 * ((dwell * 2 + trial) % 3);
      const fx = cx + 0.004 * (((i * 7) % 5) - 2);
      const fy = cy + 0.004 * (((i * 3) % 5) - 2);
      const px = Math.round(box.x + fx * box.width);
      const py = Math.round(box.y + fy * box.height);
      await page.mouse.move(px, py);
      result.expected.push({ trial, x: (px - box.x) / box.width, y: (py - box.y) / box.height, px_per_unit: box.width });
      await page.waitForTimeout(40);
    }
    // Leave the picture before finishing, so no move of the next step lands on it.
    await page.mouse.move(box.x - 20, box.y - 20);
    await page.waitForFunction(() => !document.getElementById('done-looking').disabled, null, { timeout: 30000 });
    await page.keyboard.press('Enter');
    await page.waitForSelector('#description');
    await page.fill('#description', `Picture ${trial + 1}: a ${trial % 2 ? 'red' : 'blue'} shape near the ${trial % 3 ? 'left' : 'top'} with small objects around it.`);
    if (trial === 0) await page.screenshot({ path: join(shots, 'describe.png') });
    await page.keyboard.press('Control+Enter');
    await page.waitForFunction((p) => !document.getElementById('progress') || document.getElementById('progress').textContent !== p
      || document.getElementById('completion-code'), progress, { timeout: 60000 }).catch(() => {});
    result.trials++;
  }
  result.completion_code = (await page.textContent('#completion-code')).trim();
  result.state = await page.evaluate(() => {
    const key = Object.keys(localStorage).find((k) => k.startsWith('deper:study:'));
    const st = JSON.parse(localStorage.getItem(key));
    return { session_id: st.session_id, participant: st.participant, pending: st.pending.length, refused: st.refused || 0 };
  });
  // The preview: z_s computed in the page, captions streamed from the server.
  await page.waitForSelector('#preview-slot[data-done="1"], #preview-status', { timeout: 60000 });
  await page.waitForFunction(() => document.querySelector('#preview-slot').dataset.done === '1'
    || /could not/.test(document.querySelector('#preview-status')?.textContent || ''), null, { timeout: 300000 });
  result.preview_status = await page.textContent('#preview-status');
  result.embedding = await page.evaluate(() => window.deperLastEmbedding || null);
  result.stats = await page.evaluate(() => window.deperStats);
  result.captions = {
    generic: await page.textContent('#caption-generic').catch(() => null),
    personal: await page.textContent('#caption-personal').catch(() => null),
  };
  await page.screenshot({ path: join(shots, 'preview.png'), fullPage: true });

  await page.goto(`${base}/?researcher`);
  await page.fill('#token', args.token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#studies');
  // The researcher's preview: the participant's caption style by pseudonym, and the study's map.
  const row = `[data-session="${result.state.session_id}"]`;
  await page.locator(`tr:has(${row}) button`).first().click();
  await page.waitForFunction((sel) => {
    const el = document.querySelector(sel);
    return el && el.textContent && el.textContent !== '…';
  }, row, { timeout: 120000 });
  result.dashboard_caption = await page.textContent(row);
  await page.click('text=Subject-embedding map');
  await page.waitForSelector('#embedding-map', { timeout: 30000 });
  await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true });
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error && error.stack || error);
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
