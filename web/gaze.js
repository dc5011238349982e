// Webcam gaze for studies with capture mode `gaze` or `both`: camera → frames (RGBA, downscaled)
// → the worker's GazeTracker (face landmarks, eye features, ridge, Kalman; crates/deper-web) →
// gaze points in page pixels. A 9-point click calibration fits the ridge map, a 4-point validation
// measures the error (pixels and degrees), shown to the participant and stored with the session.

import { api } from './api.js';
import { h } from './dom.js';

const FRAME_WIDTH = 320;
const FRAME_INTERVAL_MS = 100;

export class Gaze {
  constructor(compute) {
    this.compute = compute;
    this.video = null;
    this.canvas = document.createElement('canvas');
    this.latest = null; // { features, t }
    this.running = false;
    this.onPoint = null;
    this.frames = 0;
    this.faceless = 0;
  }

  /** Opens the camera; throws an Error with a participant-readable message. */
  async open() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('This browser gives no camera access to pages.');
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (error) {
      const refused = error && (error.name === 'NotAllowedError' || error.name === 'SecurityError');
      throw new Error(refused
        ? 'The camera was refused. Allow it in the address bar and try again, or close this study.'
        : `No camera could be opened (${error.name || error}).`);
    }
    this.video = h('video', { autoplay: true, muted: true, playsinline: true, class: 'camera', id: 'camera' });
    this.video.srcObject = stream;
    await this.video.play();
    this.preprocessing = await this.compute.call('gaze_init', { webgpu: document.body.dataset.deperBackend === 'webgpu' });
    document.body.dataset.deperGazePreprocessing = this.preprocessing;
    this.running = true;
    this.loop();
  }

  /** Grabs a frame every FRAME_INTERVAL_MS, computes its features and, once calibrated, a gaze point. */
  async loop() {
    while (this.running) {
      const started = performance.now();
      try {
        await this.step();
      } catch (error) {
        console.error('gaze frame', error);
        document.body.dataset.deperGazeError = String(error.message || error);
      }
      const wait = FRAME_INTERVAL_MS - (performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
    }
  }

  async step() {
    const v = this.video;
    if (!v || v.videoWidth === 0) return;
    const width = FRAME_WIDTH;
    const height = Math.round((v.videoHeight / v.videoWidth) * width);
    this.canvas.width = width;
    this.canvas.height = height;
    const ctx = this.canvas.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(v, 0, 0, width, height);
    const rgba = ctx.getImageData(0, 0, width, height).data;
    const t = (performance.timeOrigin + performance.now()) / 1000;
    // Every 20th frame on WebGPU is also computed on the CPU and compared (a mismatch is an error).
    const check = this.preprocessing === 'webgpu' && this.frames % 20 === 0;
    const features = await this.compute.call('gaze_features', { rgba, width, height, check });
    if (check) document.body.dataset.deperGazeChecks = String(Number(document.body.dataset.deperGazeChecks || 0) + 1);
    this.frames += 1;
    if (!features) {
      this.faceless += 1;
      this.latest = null;
      return;
    }
    this.latest = { features, t };
    if (this.calibrated && this.onPoint) {
      const [x, y] = await this.compute.call('gaze_predict', { features, t });
      this.onPoint({ x, y, t });
    }
  }

  /** Waits (up to `ms`) for features of a frame taken after now. */
  async fresh(ms = 3000) {
    const since = (performance.timeOrigin + performance.now()) / 1000;
    const until = performance.now() + ms;
    while (performance.now() < until) {
      if (this.latest && this.latest.t >= since) return this.latest.features;
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    return null;
  }

  close() {
    this.running = false;
    if (this.video && this.video.srcObject) for (const track of this.video.srcObject.getTracks()) track.stop();
  }
}

const CALIBRATION = [[0.1, 0.1], [0.5, 0.1], [0.9, 0.1], [0.1, 0.5], [0.5, 0.5], [0.9, 0.5], [0.1, 0.9], [0.5, 0.9], [0.9, 0.9]];
const VALIDATION = [[0.3, 0.3], [0.7, 0.3], [0.3, 0.7], [0.7, 0.7]];

/**
 * Runs calibration and validation in `root`, stores the record with the session, resolves with
 * the validation report. `show` replaces the page content.
 */
export async function calibrate(gaze, show, session) {
  const dot = h('button', { class: 'calib-dot', id: 'calib-dot', 'aria-label': 'Calibration point: look at it and click' });
  const note = h('p', { class: 'calib-note', id: 'calib-note' }, 'Look at the dot and click it (or press Space) while looking at it.');
  const stage = h('div', { class: 'calib-stage', id: 'calibration' }, note, dot, gaze.video);
  show(stage);
  const place = ([fx, fy]) => {
    dot.style.left = `${fx * 100}%`;
    dot.style.top = `${fy * 100}%`;
  };
  const centre = () => {
    const r = dot.getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2];
  };
  let clicked = 0;
  for (const point of CALIBRATION) {
    place(point);
    dot.focus();
    for (;;) {
      await new Promise((resolve) => dot.addEventListener('click', resolve, { once: true }));
      const features = await gaze.fresh();
      if (!features) {
        note.textContent = 'Your face is not visible to the camera. Face the screen in good light, then click the dot again.';
        continue;
      }
      const [x, y] = centre();
      await gaze.compute.call('gaze_calibrate', { features, x, y });
      clicked += 1;
      note.textContent = `${clicked} of ${CALIBRATION.length}`;
      break;
    }
  }
  const used = await gaze.compute.call('gaze_fit');
  gaze.calibrated = true;
  // Validation: look at each dot for 1.5 s; the mean of the unsmoothed predictions is compared.
  note.textContent = 'Now just look at each dot until it moves.';
  dot.disabled = true;
  const targets = [];
  const predictions = [];
  for (const point of VALIDATION) {
    place(point);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const seen = [];
    const until = performance.now() + 1000;
    while (performance.now() < until) {
      const features = await gaze.fresh(500);
      if (features) seen.push(await gaze.compute.call('gaze_predict_raw', { features }));
    }
    if (seen.length === 0) continue;
    targets.push(...centre());
    predictions.push(seen.reduce((a, p) => a + p[0], 0) / seen.length, seen.reduce((a, p) => a + p[1], 0) / seen.length);
  }
  const report = targets.length
    ? await gaze.compute.call('gaze_validation', { targets, predictions })
    : null;
  await api(`/api/sessions/${session.session_id}/calibration`, {
    method: 'POST',
    token: session.token,
    body: {
      kind: 'webcam-ridge',
      calibration_points: CALIBRATION.length,
      samples_used: used,
      validation: report,
      viewport: { width: innerWidth, height: innerHeight },
      camera: { width: gaze.video.videoWidth, height: gaze.video.videoHeight },
      frames: gaze.frames,
      frames_without_face: gaze.faceless,
    },
  });
  return report;
}
