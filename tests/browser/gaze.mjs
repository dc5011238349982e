// A scripted participant of a webcam-gaze study in headless Chromium with a fake camera
// (--use-file-for-fake-video-capture: a face picture as a .y4m): camera → 9-point calibration
// (clicking each dot) → validation → one trial while gaze samples flow → description → finish.
// Prints one JSON object for the Rust test (crates/deper-server/tests/browser_study.rs).
//
// node tests/browser/gaze.mjs --base URL --study ID --camera FACE.y4m [--shots DIR]

import { launch, parseArgs } from './launch.mjs';
import { join } from 'node:path';

const args = parseArgs(process.argv.slice(2));
if (!args.base || !args.study || !args.camera) {
  console.error('usage: gaze.mjs --base URL --study ID --camera FACE.y4m [--shots DIR]');
  process.exit(2);
}

const { browser, page, log } = await launch({
  viewport: { width: 1100, height: 800 },
  extraArgs: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${args.camera}`],
});
const result = { log, clicks: 0 };
try {
  await page.goto(`${args.base}/?study=${args.study}`);
  await page.click('#consent-agree');
  await page.waitForSelector('#begin');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#calib-dot', { timeout: 120000 });
  for (let k = 1; k <= 9; k++) {
    await page.click('#calib-dot');
    await page.waitForFunction((n) => {
      const note = document.getElementById('calib-note');
      return note && (note.textContent === `${n} of 9` || /not visible/.test(note.textContent) || n === 9);
    }, k, { timeout: 60000 });
    const note = await page.textContent('#calib-note').catch(() => '');
    if (/not visible/.test(note)) throw new Error(`calibration point ${k}: ${note}`);
    result.clicks++;
    if (k === 1 && args.shots) await page.screenshot({ path: join(args.shots, 'calibration.png') });
  }
  await page.waitForSelector('#validation-report', { timeout: 120000 });
  result.validation = await page.textContent('#validation-report');
  result.preprocessing = await page.evaluate(() => document.body.dataset.deperGazePreprocessing);
  result.backend = await page.evaluate(() => document.body.dataset.deperBackend);
  result.gaze_checks = await page.evaluate(() => Number(document.body.dataset.deperGazeChecks || 0));
  result.gaze_error = await page.evaluate(() => document.body.dataset.deperGazeError || null);
  await page.click('#calib-continue');
  await page.waitForSelector('#stimulus', { timeout: 60000 });
  await page.waitForTimeout(3000);
  // Localized-Narratives style: the description is typed while looking, word by word.
  await page.focus('#narrative');
  for (const word of ['a', 'small', 'striped', 'picture']) {
    await page.keyboard.type(`${word} `, { delay: 30 });
    await page.waitForTimeout(150);
  }
  await page.waitForFunction(() => !document.getElementById('done-looking').disabled, null, { timeout: 30000 });
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('#completion-code', { timeout: 60000 });
  result.state = await page.evaluate(() => {
    const key = Object.keys(localStorage).find((k) => k.startsWith('deper:study:'));
    const st = JSON.parse(localStorage.getItem(key));
    return { session_id: st.session_id, pending: st.pending.length, gaze_points: st.gazeSamples || 0 };
  });
  // The page's gaze → trajectory builder on a fixed trace: two 0.4 s fixations at 60 Hz.
  result.trace = [];
  for (let i = 0; i < 48; i++) {
    const second = i >= 24;
    result.trace.push({ t: i / 60, x: second ? 0.7 : 0.3, y: second ? 0.6 : 0.3 });
  }
  result.trace_trajectory = await page.evaluate((samples) => window.deperCompute.call('trajectory_gaze', { samples }), result.trace);
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String((error && error.stack) || error);
  if (args.shots) await page.screenshot({ path: join(args.shots, 'gaze-failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
