// deper-worker.js: a module Web Worker that runs deper-web (web/pkg, built by web/build.sh) off
// the page's main thread.
//
//   const worker = new Worker(new URL('./deper-worker.js', import.meta.url), { type: 'module' });
//
// Requests are `{id, op, ...}`; every request gets one reply `{id, ok: true, result}` or
// `{id, ok: false, error}` (a message naming the triplet and field where the input was bad).
// While a request runs the worker may post `{op: 'progress', id, stage, ...}` events.
//
//   {op: 'start', prefer: 'webgpu' | 'cpu'}          → 'webgpu' | 'cpu' (the device chosen)
//   {op: 'load', run_url, model_url, cache = true}    → {dim, backend}
//       fetches run.json and model.mpk (progress: stage 'download', loaded, total), keeping them
//       in the Cache API under their URL: give versioned URLs (e.g. with the run's hash) so a
//       retrained run is fetched again; `cache: false` bypasses the cache.
//   {op: 'embed', triplets}                           → Float32Array, the mean z_s (as `deper embed`)
//   {op: 'embed_each', triplets}                      → [Float32Array], z_s per triplet
//   {op: 'trajectory', samples, width, height}        → a deper-core trajectory object
//   {op: 'trajectory_gaze', samples: [{t, x, y}]}     → the same from gaze (fixations → steps, as the export)
//   {op: 'gaze_init', webgpu}                         → 'webgpu' | 'cpu': where the eye patches are computed
//                                                       (loads the bundled face models; WGSL kernels if asked and possible)
//   {op: 'gaze_features', rgba, width, height, check} → Uint8Array(120) eye features, or null (no face);
//                                                       `check`: WebGPU result compared with the CPU reference
//   {op: 'gaze_calibrate' | 'gaze_click', features, x, y} → true (a calibration / in-study click)
//   {op: 'gaze_fit'}                                  → samples used by the ridge fit
//   {op: 'gaze_predict', features, t}                 → [x, y] smoothed (t in seconds)
//   {op: 'gaze_predict_raw', features}                → [x, y] unsmoothed
//   {op: 'gaze_validation', targets, predictions, px_per_cm?, distance_cm?} → validation report
//
// A triplet is {features: Float32Array, grid: [h, w, c], caption: string, trajectory}.
// 'start' must come before 'load'; 'embed' needs a loaded run. Requests run one at a time.

import init, { start, Embedder, trajectory_from_mouse, trajectory_from_gaze, GazeTracker, gaze_validation } from './pkg/deper_web.js';

const CACHE_NAME = 'deper-runs-v1';
const ready = init();
let embedder = null;
let gaze = null; // GazeTracker, made by 'gaze_init'
let crashed = null; // a Rust panic aborts the wasm module: later requests fail with this
let queue = Promise.resolve();

const progress = (id, stage, extra = {}) => self.postMessage({ op: 'progress', id, stage, ...extra });

// The response for `url`, from the Cache API when allowed and present, else from the network
// (read with progress events, then stored).
async function fetchCached(id, url, useCache) {
  const cache = useCache && self.caches ? await self.caches.open(CACHE_NAME) : null;
  const hit = cache && (await cache.match(url));
  if (hit) {
    progress(id, 'download', { url, cached: true });
    return new Uint8Array(await hit.arrayBuffer());
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get('content-length')) || null;
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    progress(id, 'download', { url, loaded, total });
  }
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const c of chunks) {
    bytes.set(c, offset);
    offset += c.length;
  }
  if (cache) await cache.put(url, new Response(bytes));
  return bytes;
}

function needGaze() {
  if (!gaze) throw new Error("no gaze tracker: send {op: 'gaze_init'} first");
  return gaze;
}

function needEmbedder() {
  if (!embedder) throw new Error("no run loaded: send {op: 'load'} first");
  return embedder;
}

async function handle(msg) {
  const { id, op } = msg;
  switch (op) {
    case 'start':
      return start(msg.prefer ?? 'webgpu');
    case 'load': {
      const useCache = msg.cache !== false;
      const runJson = new TextDecoder().decode(await fetchCached(id, msg.run_url, useCache));
      const model = await fetchCached(id, msg.model_url, useCache);
      progress(id, 'load');
      const next = await Embedder.load(runJson, model);
      if (embedder) embedder.free();
      embedder = next;
      return { dim: embedder.dim(), backend: embedder.backend() };
    }
    case 'embed':
      progress(id, 'embed', { triplets: msg.triplets?.length });
      return needEmbedder().embed(msg.triplets);
    case 'embed_each':
      progress(id, 'embed', { triplets: msg.triplets?.length });
      return needEmbedder().embed_each(msg.triplets);
    case 'trajectory':
      return trajectory_from_mouse(msg.samples, msg.width, msg.height);
    case 'trajectory_gaze':
      return trajectory_from_gaze(msg.samples);
    // Webcam gaze: frames are RGBA bytes (a canvas ImageData's), points in page pixels.
    case 'gaze_init':
      if (!gaze) {
        gaze = new GazeTracker();
        // The WGSL eye-patch kernels when WebGPU works here; the CPU reference otherwise.
        if (msg.webgpu) {
          try {
            await gaze.use_webgpu();
          } catch (e) {
            progress(id, 'gaze', { message: `eye patches on the CPU (${e?.message ?? e})` });
          }
        }
      }
      return gaze.preprocessing();
    case 'gaze_features': {
      const features = await needGaze().features(new Uint8Array(msg.rgba.buffer ?? msg.rgba), msg.width, msg.height, !!msg.check);
      return features ?? null;
    }
    case 'gaze_calibrate':
      needGaze().add_calibration(msg.features, msg.x, msg.y);
      return true;
    case 'gaze_click':
      needGaze().add_click(msg.features, msg.x, msg.y);
      return true;
    case 'gaze_fit':
      return needGaze().fit();
    case 'gaze_predict':
      return Array.from(needGaze().predict(msg.features, msg.t));
    case 'gaze_predict_raw':
      return Array.from(needGaze().predict_raw(msg.features));
    case 'gaze_validation':
      return JSON.parse(gaze_validation(new Float64Array(msg.targets), new Float64Array(msg.predictions),
        msg.px_per_cm ?? 0, msg.distance_cm ?? 0));
    default:
      throw new Error(`unknown op ${JSON.stringify(op)}`);
  }
}

self.onmessage = ({ data }) => {
  const id = data?.id;
  // One request at a time: the model and the device are shared state.
  queue = queue.then(async () => {
    try {
      if (crashed) throw new Error(`deper-web stopped after an internal error (${crashed}); reload the page`);
      await ready;
      const result = await handle(data);
      self.postMessage({ id, ok: true, result });
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) crashed = e.message;
      self.postMessage({ id, ok: false, error: String(e?.message ?? e) });
    }
  });
};
