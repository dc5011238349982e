// The browser app of `deper serve`: landing page, the participant's study flow (consent →
// instructions → per image: look while the pointer is recorded, then describe → thank you), the
// in-page subject embedding z_s and the personalized-caption preview. `?researcher` opens the
// dashboard (web/researcher.js). The entry module: index.html loads it and no module imports it
// (shared DOM helpers live in dom.js, the embedding map in map.js).
//
// Readiness contract (tests and monitoring): once the wasm module has loaded and a compute device is
// chosen, `document.body.dataset.deperReady = "1"` and `document.body.dataset.deperBackend` is
// `webgpu` or `cpu`. `?backend=cpu` forces the CPU fallback.

import { api, ApiError, Uploader, streamCaption } from './api.js';
import { Compute } from './compute.js';
import { Gaze, calibrate } from './gaze.js';
import { h, show, status } from './dom.js';
import { embeddingMap } from './map.js';

const params = new URLSearchParams(location.search);
// Measurements the browser benchmark reads (tests/browser/study.mjs): handler time per pointer
// event, time to a ready compute device, model load and z_s times.
const stats = { capture: { events: 0, samples: 0, ms: 0 }, ready_ms: null, load_ms: null, embed_ms: null };
window.deperStats = stats;

// ---- compute device (wasm + WebGPU/CPU in a worker) ----------------------------------------------

let compute = null;

/** One status line for a worker progress event. */
function progressText(p) {
  if (p.stage === 'download') {
    if (p.cached) return 'model files from the browser cache';
    const kib = Math.round((p.loaded || 0) / 1024);
    return p.total ? `downloading the model: ${kib} of ${Math.round(p.total / 1024)} KiB` : `downloading the model: ${kib} KiB`;
  }
  if (p.stage === 'load') return 'preparing the model…';
  if (p.stage === 'embed') return `computing your style from ${p.triplets} pictures…`;
  return '';
}
let computeReady = null;

function startCompute() {
  const badge = document.getElementById('backend');
  try {
    compute = new Compute((p) => status(progressText(p)));
  } catch (error) {
    badge.textContent = 'no compute';
    document.body.dataset.deperError = String(error);
    return Promise.resolve(null);
  }
  window.deperCompute = compute; // for tests and the benchmark
  computeReady = compute.start(params.get('backend') || 'auto').then(
    (backend) => {
      stats.ready_ms = performance.now();
      badge.textContent = backend === 'webgpu' ? 'WebGPU' : 'CPU (no WebGPU)';
      badge.title = backend === 'webgpu'
        ? 'The subject encoder runs on this device\'s GPU through WebGPU.'
        : 'WebGPU is not available in this browser: the subject encoder runs on the CPU (slower).';
      document.body.dataset.deperBackend = backend;
      document.body.dataset.deperReady = '1';
      return backend;
    },
    (error) => {
      badge.textContent = 'no compute';
      document.body.dataset.deperError = String(error.message || error);
      console.error(error);
      return null;
    },
  );
  return computeReady;
}

// ---- landing -----------------------------------------------------------------------------------

async function landing() {
  let demo = null;
  try {
    demo = await api('/api/demo');
  } catch (_) { /* no demo on this server */ }
  show(
    h('h1', {}, 'How do you see it?'),
    h('p', {}, 'deper studies how people look at pictures and how they describe them. '
      + 'Where you look, in which order and for how long tells a model about your way of seeing; '
      + 'from a few of your descriptions it learns to caption new pictures in your style.'),
    demo
      ? h('p', {}, h('a', { class: 'button primary', href: demo.study_url, id: 'take-demo' }, 'Take part in the demo study'))
      : h('p', { class: 'muted' }, 'Open the study link your researcher gave you.'),
    h('p', {}, h('a', { href: '/?researcher' }, 'Researcher dashboard')),
  );
}

// ---- participant -------------------------------------------------------------------------------

const stateKey = (studyId) => `deper:study:${studyId}`;

function loadState(studyId) {
  try {
    return JSON.parse(localStorage.getItem(stateKey(studyId)) || 'null');
  } catch (_) {
    return null;
  }
}

class Participant {
  constructor(studyId) {
    this.studyId = studyId;
    this.state = loadState(studyId);
    this.uploader = null;
    this.embedding = null;
    this.gaze = null;
  }

  get gazeMode() {
    return ['gaze', 'both'].includes(this.state.study.capture_mode);
  }

  get mouseMode() {
    return ['mouse', 'both'].includes(this.state.study.capture_mode);
  }

  /** Camera, 9-point calibration and validation (again after a reload: the fit lives in the worker). */
  async calibration() {
    const st = this.state;
    const retry = h('button', { class: 'primary', id: 'calib-retry', onclick: () => this.calibration() }, 'Try again');
    const backend = await computeReady;
    if (!backend) {
      show(h('h1', {}, 'Webcam calibration'), h('p', { class: 'error' }, 'This page could not start its compute module, which the webcam study needs.'), retry);
      return;
    }
    show(h('h1', {}, 'Webcam calibration'), h('p', {}, 'Starting the camera…'));
    try {
      if (!this.gaze) {
        this.gaze = new Gaze(compute);
        await this.gaze.open();
      }
      const report = await calibrate(this.gaze, show, st);
      const summary = report
        ? `Your gaze estimate is off by about ${Math.round(report.mean_px)} px (${report.mean_deg.toFixed(1)}°) on average.`
        : 'Your face was not visible during the check; the estimate may be poor.';
      const next = h('button', { class: 'primary', id: 'calib-continue', onclick: () => this.view() }, 'Continue');
      show(h('h1', {}, 'Calibration done'), h('p', { id: 'validation-report' }, summary), h('p', {}, next));
      next.focus();
    } catch (error) {
      if (this.gaze) this.gaze.close();
      this.gaze = null;
      show(h('h1', {}, 'Webcam calibration'), h('p', { class: 'error', id: 'camera-error' }, error.message), retry);
    }
  }

  save() {
    localStorage.setItem(stateKey(this.studyId), JSON.stringify(this.state));
  }

  async run() {
    if (!this.state) {
      let study;
      try {
        study = await api(`/api/studies/${this.studyId}/brief`);
      } catch (_) { study = null; }
      this.consent(study);
      return;
    }
    this.attachUploader();
    this.uploader.flush();
    this.route();
  }

  attachUploader() {
    this.uploader = new Uploader(this.state, () => this.save(), status);
    window.addEventListener('pagehide', () => { this.uploader.seal(); this.save(); });
  }

  route() {
    const st = this.state;
    if (st.phase === 'instructions') this.instructions();
    else if (st.phase === 'view') this.view();
    else if (st.phase === 'describe') this.describe();
    else if (st.phase === 'done') this.thanks();
    else this.instructions();
  }

  consent(study) {
    const title = study ? study.title : `Study ${this.studyId}`;
    const agree = h('button', { class: 'primary', id: 'consent-agree', onclick: () => this.join(agree) }, 'I agree, start');
    show(
      h('h1', {}, title),
      h('h2', {}, 'Consent'),
      h('p', { id: 'consent-text' }, study && study.consent ? study.consent
        : 'Your pointer movements over the pictures and your descriptions are stored under a random pseudonym.'),
      h('p', {}, agree),
    );
    agree.focus();
  }

  async join(button) {
    button.disabled = true;
    try {
      const joined = await api(`/api/studies/${this.studyId}/join`, { method: 'POST' });
      this.state = {
        session_id: joined.session_id,
        token: joined.token,
        participant: joined.participant,
        trials: joined.trials,
        study: joined.study,
        phase: 'instructions',
        trial: 0,
        pending: [],
        batchSeq: 0,
        triplets: [],
      };
      this.save();
      this.attachUploader();
      this.route();
    } catch (error) {
      button.disabled = false;
      show(h('h1', {}, 'Cannot join'), h('p', { class: 'error' }, error.message));
    }
  }

  instructions() {
    const st = this.state;
    const begin = h('button', { class: 'primary', id: 'begin', onclick: () => {
      st.phase = 'view';
      this.save();
      this.view();
    } }, this.gazeMode ? 'Begin (with the camera)' : 'Begin');
    show(
      h('h1', {}, st.study.title),
      h('h2', {}, 'Instructions'),
      h('p', {}, st.study.instructions || 'Look at each picture, then describe it.'),
      h('p', { class: 'muted' }, `${st.trials} pictures. Move the mouse over what you look at. `
        + 'Press Enter or the button when you are done looking; then type your description and press Ctrl+Enter to send it.'),
      h('p', {}, begin),
    );
    begin.focus();
  }

  async next() {
    const st = this.state;
    const next = await api(`/api/sessions/${st.session_id}/next`, { token: st.token });
    if (next.done) {
      st.phase = 'done';
      this.save();
      return null;
    }
    st.trial = next.trial;
    st.stimulus = next.stimulus;
    this.save();
    return next;
  }

  async view() {
    const st = this.state;
    if (this.gazeMode && !(this.gaze && this.gaze.calibrated)) {
      await this.calibration();
      return;
    }
    let next;
    try {
      next = await this.next();
    } catch (error) {
      show(h('p', { class: 'error' }, `Cannot load the next picture: ${error.message}`),
        h('button', { onclick: () => this.view() }, 'Try again'));
      return;
    }
    if (!next) {
      this.finish();
      return;
    }
    const stim = next.stimulus;
    const img = h('img', { id: 'stimulus', src: stim.url, alt: `Picture ${st.trial + 1}`, draggable: 'false' });
    const narrative = st.study.description_mode === 'narrative';
    const done = h('button', { class: 'primary', id: 'done-looking', disabled: true }, narrative ? 'Done' : 'Done looking');
    const minView = Number((st.study.settings || {}).min_view_ms ?? 1500);
    // Localized-Narratives style: describe while pointing; every word keeps when it was typed.
    const spoken = narrative
      ? h('textarea', { id: 'narrative', rows: 3, 'aria-label': 'Your description, typed while you point',
        placeholder: 'Describe the picture while you move the mouse over what you describe…' })
      : null;
    show(
      h('p', { class: 'muted', id: 'progress' }, `Picture ${st.trial + 1} of ${st.trials}`),
      h('div', { class: 'stage' }, img),
      spoken,
      h('p', {}, done),
    );
    await img.decode().catch(() => {});
    // A reload continues the same trial's clock, so times stay increasing within the trial.
    if (!st.viewStart || st.viewTrial !== st.trial) {
      st.viewStart = performance.timeOrigin + performance.now();
      st.viewTrial = st.trial;
      st.trialSamples = [];
      this.save();
    }
    const trial = st.trial;
    const onMove = (event) => {
      const began = performance.now();
      const rect = img.getBoundingClientRect();
      const events = typeof event.getCoalescedEvents === 'function' ? event.getCoalescedEvents() : [];
      const batch = [];
      for (const e of events.length ? events : [event]) {
        const x = (e.clientX - rect.left) / rect.width;
        const y = (e.clientY - rect.top) / rect.height;
        if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) continue;
        const t = (performance.timeOrigin + e.timeStamp - st.viewStart) / 1000;
        batch.push({ x, y, t, source: 'mouse' });
      }
      if (batch.length > 0) {
        this.uploader.add(trial, batch);
        // Kept for the in-page z_s (positions and seconds, as the server stores them).
        for (const s of batch) st.trialSamples.push([s.x, s.y, s.t]);
      }
      stats.capture.events += 1;
      stats.capture.samples += batch.length;
      stats.capture.ms += performance.now() - began;
    };
    if (this.mouseMode) img.addEventListener('pointermove', onMove);
    const onClick = async (e) => {
      // A click is a moment the participant looks where they click: one more calibration sample.
      if (!this.gaze || !this.gaze.calibrated || !this.gaze.latest) return;
      await compute.call('gaze_click', { features: this.gaze.latest.features, x: e.clientX, y: e.clientY });
      await compute.call('gaze_fit');
    };
    img.addEventListener('click', onClick);
    if (this.gaze) {
      // Gaze points (page pixels) on the picture become samples of source `gaze`.
      this.gaze.onPoint = (p) => {
        const rect = img.getBoundingClientRect();
        const x = (p.x - rect.left) / rect.width;
        const y = (p.y - rect.top) / rect.height;
        st.gazeSamples = (st.gazeSamples || 0) + 1;
        if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) return;
        const t = p.t - st.viewStart / 1000;
        this.uploader.add(trial, [{ x, y, t, source: 'gaze' }]);
        (st.trialGaze = st.trialGaze || []).push([x, y, t]);
      };
    }
    const timer = setInterval(() => { this.uploader.flush(); }, 1000);
    if (spoken) {
      spoken.value = st.draft || '';
      st.wordTimes = st.wordTimes || [];
      spoken.addEventListener('input', () => {
        // The word being typed (the last one) gets its first and latest keystroke times.
        const t = (performance.timeOrigin + performance.now() - st.viewStart) / 1000;
        const words = spoken.value.split(/\s+/).filter(Boolean);
        st.wordTimes.length = Math.min(st.wordTimes.length, words.length);
        const i = words.length - 1;
        if (i >= 0 && !/\s$/.test(spoken.value)) {
          st.wordTimes[i] = { start: st.wordTimes[i] ? st.wordTimes[i].start : t, end: t };
        }
        st.draft = spoken.value;
        this.save();
      });
    }
    const finishLooking = async () => {
      if (done.disabled) return;
      if (narrative && !spoken.value.trim()) {
        spoken.focus();
        return;
      }
      img.removeEventListener('pointermove', onMove);
      img.removeEventListener('click', onClick);
      if (this.gaze) this.gaze.onPoint = null;
      document.removeEventListener('keydown', onKey);
      clearInterval(timer);
      this.uploader.flush();
      if (narrative) {
        done.disabled = true;
        const words = spoken.value.split(/\s+/).filter(Boolean);
        const utterances = words.map((w, i) => {
          const times = st.wordTimes[i] || st.wordTimes[i - 1] || { start: 0, end: 0 };
          return { utterance: w, start_time: times.start, end_time: times.end };
        });
        await this.submitDescription(spoken.value.trim(), utterances, (message) => {
          done.disabled = false;
          status(message);
        });
        return;
      }
      st.phase = 'describe';
      this.save();
      this.describe();
    };
    // Enter ends looking; in narrative mode Enter belongs to the text box, Ctrl+Enter ends.
    const onKey = (e) => { if (e.key === 'Enter' && (!narrative || e.ctrlKey || e.metaKey)) finishLooking(); };
    if (spoken) spoken.focus();
    setTimeout(() => {
      done.disabled = false;
      if (!spoken) done.focus();
    }, minView);
    done.addEventListener('click', finishLooking);
    document.addEventListener('keydown', onKey);
  }

  describe() {
    const st = this.state;
    const text = h('textarea', { id: 'description', rows: 4, 'aria-label': 'Your description', placeholder: 'Describe the picture…' });
    text.value = st.draft || '';
    text.addEventListener('input', () => { st.draft = text.value; this.save(); });
    const send = h('button', { class: 'primary', id: 'send-description' }, 'Send description');
    const error = h('p', { class: 'error', role: 'alert' });
    const submit = async () => {
      const value = text.value.trim();
      if (!value) {
        error.textContent = 'Please write a description first.';
        return;
      }
      send.disabled = true;
      await this.submitDescription(value, [], (message) => {
        send.disabled = false;
        error.textContent = message;
      });
    };
    send.addEventListener('click', submit);
    text.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) submit(); });
    const preview = h('section', { id: 'preview-slot' });
    show(
      h('p', { class: 'muted' }, `Picture ${st.trial + 1} of ${st.trials}`),
      h('div', { class: 'describe' },
        st.stimulus ? h('img', { class: 'thumb', src: st.stimulus.url, alt: 'The picture you just saw' }) : null,
        h('div', {}, h('label', { for: 'description' }, 'What does the picture show?'), text, h('p', {}, send), error)),
      preview,
    );
    text.focus();
    this.maybePreview(preview, st.stimulus);
  }

  /** Sends the trial's description (after its samples), then goes on; `fail(message)` on an error. */
  async submitDescription(text, utterances, fail) {
    const st = this.state;
    try {
      await this.uploader.flush();
      const answer = await api(`/api/sessions/${st.session_id}/descriptions`, {
        method: 'POST', token: st.token, body: { trial: st.trial, text, utterances },
      });
      st.triplets.push({
        trial: st.trial, sha256: st.stimulus.sha256, caption: text, samples: st.trialSamples || [], gaze: st.trialGaze || [],
      });
      st.trialGaze = [];
      st.draft = '';
      st.wordTimes = [];
      st.trialSamples = [];
      st.viewStart = null;
      st.trial = answer.next_trial;
      st.phase = answer.next_trial >= st.trials ? 'done' : 'view';
      this.save();
      if (st.phase === 'done') this.finish();
      else this.view();
    } catch (e) {
      fail(e instanceof ApiError && e.status < 500 ? e.message : `Not sent (${e.message}); try again.`);
    }
  }

  async finish() {
    const st = this.state;
    if (this.gaze) this.gaze.close();
    try {
      await this.uploader.flush();
      if (!st.completion_code) {
        const fin = await api(`/api/sessions/${st.session_id}/finish`, { method: 'POST', token: st.token });
        st.completion_code = fin.completion_code;
        st.phase = 'done';
        this.save();
      }
      this.thanks();
    } catch (error) {
      show(h('p', { class: 'error' }, `Could not finish: ${error.message}`),
        h('button', { onclick: () => this.finish() }, 'Try again'));
    }
  }

  thanks() {
    const st = this.state;
    const last = st.triplets[st.triplets.length - 1];
    const preview = h('section', { id: 'preview-slot' });
    show(
      h('h1', {}, 'Thank you!'),
      h('p', {}, 'Your completion code: ', h('strong', { id: 'completion-code' }, st.completion_code || '…')),
      preview,
    );
    if (last) this.maybePreview(preview, { sha256: last.sha256, url: `/api/images/${last.sha256}` }, true);
  }

  // ---- in-page z_s and preview -------------------------------------------------------------------

  /** Mean z_s over the described triplets, computed in the worker (cached per triplet count). */
  async subjectEmbedding() {
    const st = this.state;
    if (this.embedding && this.embedding.count === st.triplets.length) return this.embedding;
    const backend = await computeReady;
    if (!backend) throw new Error('no compute device in this page');
    const manifest = await api('/api/embedder');
    // An encoder the page cannot run (captions embedded with a VLM's table): the server computes z_s.
    const inPage = manifest.in_page !== false;
    if (inPage) {
      const loadStarted = performance.now();
      // Versioned URLs: the worker caches the files under them, and a retrained encoder has a new version.
      await compute.call('load', {
        run_url: `${manifest.run_json}?v=${manifest.version}`,
        model_url: `${manifest.model}?v=${manifest.version}`,
      });
      stats.load_ms = performance.now() - loadStarted;
    }
    const triplets = [];
    for (const t of st.triplets) {
      // The export's rule: gaze studies use gaze (fixations), `both` uses gaze when there is some.
      const mode = st.study.capture_mode;
      const useGaze = mode === 'gaze' || (mode === 'both' && (t.gaze || []).length > 0);
      const trajectory = useGaze
        ? await compute.call('trajectory_gaze', { samples: (t.gaze || []).map(([x, y, s]) => ({ t: s, x, y })) })
        : await compute.call('trajectory', { samples: t.samples.map(([x, y, s]) => ({ t_ms: s * 1000, x, y })), width: 1, height: 1 });
      if (!inPage) {
        triplets.push({ image: t.sha256, caption: t.caption, trajectory });
        continue;
      }
      const response = await fetch(`/api/images/${t.sha256}/features`);
      if (!response.ok) throw new Error(`features of ${t.sha256}: ${response.status}`);
      const features = new Float32Array(await response.arrayBuffer());
      triplets.push({ features, grid: manifest.grid, caption: t.caption, trajectory });
    }
    const started = performance.now();
    const zs = inPage
      ? await compute.call('embed', { triplets })
      : (await api(`/api/sessions/${st.session_id}/z_s`, { method: 'POST', token: st.token, body: { triplets } })).z_s;
    stats.embed_ms = performance.now() - started;
    this.embedding = {
      count: st.triplets.length,
      z_s: Array.from(zs),
      backend: inPage ? backend : 'server',
      ms: performance.now() - started,
      trajectory: triplets[triplets.length - 1].trajectory,
    };
    // Kept by the server: the researcher sees it on the study's map and can caption by pseudonym.
    await api(`/api/sessions/${st.session_id}/embedding`, {
      method: 'POST', token: st.token, body: {
        z_s: this.embedding.z_s, backend: this.embedding.backend, encoder_version: manifest.version, triplets: st.triplets.length,
      },
    });
    window.deperLastEmbedding = this.embedding;
    return this.embedding;
  }

  async maybePreview(slot, stimulus, always = false) {
    const st = this.state;
    const settings = st.study.settings || {};
    const after = Number(settings.preview_after ?? 5);
    if (settings.preview === false || !stimulus) return;
    if (st.triplets.length < after) {
      if (!always) {
        slot.append(h('p', { class: 'muted' },
          `After ${after} pictures you will see captions written in your style. (${st.triplets.length} of ${after})`));
      }
      return;
    }
    slot.append(h('h2', {}, 'Captions in your style'));
    const note = h('p', { class: 'muted', id: 'preview-status' }, 'Computing your viewing style in this page…');
    slot.append(note);
    let emb;
    try {
      emb = await this.subjectEmbedding();
    } catch (error) {
      note.textContent = `Your style could not be computed here: ${error.message}`;
      return;
    }
    status('');
    note.textContent = `Your style vector (${emb.z_s.length} numbers) from ${emb.count} pictures, `
      + `computed on ${{ webgpu: 'WebGPU', server: 'the server' }[emb.backend] || 'the CPU'} in ${Math.round(emb.ms)} ms.`;
    const generic = h('p', { class: 'caption', id: 'caption-generic' }, '…');
    const personal = h('p', { class: 'caption', id: 'caption-personal' }, '…');
    slot.append(
      h('div', { class: 'preview' },
        replay(stimulus.url, emb.trajectory),
        h('div', {},
          h('h3', {}, 'Generic caption'), generic,
          h('h3', {}, 'Your style'), personal)),
    );
    const run = async (el, body) => {
      try {
        await streamCaption({ image: stimulus.sha256, ...body }, (text) => { el.textContent = text; },
          { token: st.token, session: st.session_id });
      } catch (error) {
        el.textContent = error.status === 503 ? 'The caption model is not loaded on this server.' : `(${error.message})`;
        el.classList.add('muted');
      }
    };
    await run(generic, {});
    await run(personal, { persona: emb.z_s });
    try {
      const map = await api(`/api/studies/${this.studyId}/embeddings`, { token: st.token, session: st.session_id });
      slot.append(h('h3', {}, 'Where your style sits among others'), embeddingMap(map, st.session_id));
    } catch (error) {
      slot.append(h('p', { class: 'muted' }, `(no map: ${error.message})`));
    }
    slot.dataset.done = '1';
  }
}

/** The image with the attention steps drawn over it: numbered, circle area ∝ dwell time. */
function replay(url, trajectory) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 100 100');
  svg.setAttribute('class', 'replay');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'Your attention steps on the last picture, in order');
  const image = document.createElementNS(ns, 'image');
  image.setAttribute('href', url);
  image.setAttribute('width', '100');
  image.setAttribute('height', '100');
  image.setAttribute('preserveAspectRatio', 'none');
  svg.append(image);
  const steps = (trajectory && trajectory.steps) || [];
  const centre = (s) => [50 * (s.bbox.x1 + s.bbox.x2), 50 * (s.bbox.y1 + s.bbox.y2)];
  const maxDur = Math.max(0.001, ...steps.map((s) => s.duration || 0));
  if (steps.length > 1) {
    const path = document.createElementNS(ns, 'polyline');
    path.setAttribute('points', steps.map((s) => centre(s).join(',')).join(' '));
    path.setAttribute('class', 'replay-path');
    svg.append(path);
  }
  steps.forEach((s, i) => {
    const [cx, cy] = centre(s);
    const g = document.createElementNS(ns, 'g');
    g.setAttribute('class', 'replay-step');
    g.style.animationDelay = `${i * 0.35}s`;
    const circle = document.createElementNS(ns, 'circle');
    circle.setAttribute('cx', cx);
    circle.setAttribute('cy', cy);
    circle.setAttribute('r', String(2 + 6 * Math.sqrt((s.duration || 0) / maxDur)));
    const label = document.createElementNS(ns, 'text');
    label.setAttribute('x', cx);
    label.setAttribute('y', cy + 1.2);
    label.textContent = String(i + 1);
    g.append(circle, label);
    svg.append(g);
  });
  return svg;
}

// ---- entry -------------------------------------------------------------------------------------

async function main() {
  startCompute();
  if (params.has('researcher')) {
    const { researcher } = await import('./researcher.js');
    await researcher();
  } else if (params.has('study')) {
    const id = Number(params.get('study'));
    if (!Number.isInteger(id) || id <= 0) {
      show(h('p', { class: 'error' }, 'This study link is broken (no study number).'));
      return;
    }
    const participant = new Participant(id);
    window.deperParticipant = participant;
    await participant.run();
  } else {
    await landing();
  }
}

main().catch((error) => {
  console.error(error);
  show(h('p', { class: 'error' }, `Something went wrong: ${error.message}`));
});
