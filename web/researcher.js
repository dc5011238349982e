// Researcher dashboard (`/?researcher`): studies with their images and arriving sessions, a form to
// create a study and upload images, training jobs with live progress (server-sent events), exports.
// Every call carries the researcher token (kept in sessionStorage for this tab only).

import { api, streamCaption } from './api.js';
import { h, show, status } from './dom.js';
import { embeddingMap } from './map.js';

const TOKEN_KEY = 'deper:researcher-token';

export async function researcher() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    login();
    return;
  }
  try {
    await dashboard(token);
  } catch (error) {
    if (error.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      login('That token was not accepted.');
    } else {
      throw error;
    }
  }
}

/** Downloads an authenticated URL as a file. */
async function download(token, url, name) {
  const response = await api(url, { token });
  const blob = await response.blob();
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

function login(problem) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', size: 70 });
  const form = h('form', { onsubmit: (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    researcher();
  } },
  h('label', { for: 'token' }, 'Researcher token (printed by `deper serve` at its first start; also in DATA/researcher-token)'),
  input, h('button', { class: 'primary', type: 'submit' }, 'Open the dashboard'));
  show(h('h1', {}, 'Researcher dashboard'), problem ? h('p', { class: 'error' }, problem) : null, form);
  input.focus();
}

async function dashboard(token) {
  const studies = await api('/api/studies', { token });
  const jobs = await api('/api/jobs', { token });
  const list = h('div', { id: 'studies' });
  for (const study of studies) list.append(await studyCard(token, study));
  show(
    h('h1', {}, 'Researcher dashboard'),
    h('section', {}, h('h2', {}, 'Studies'), studies.length ? list : h('p', { class: 'muted' }, 'No study yet.')),
    h('section', {}, h('h2', {}, 'New study'), newStudyForm(token)),
    h('section', {}, h('h2', {}, 'Training jobs'), jobTable(token, jobs), newJobForm(token, studies)),
  );
  // Sessions arrive while the page is open.
  setTimeout(() => { if (document.getElementById('studies')) refreshSessions(token, studies); }, 5000);
}

async function sessionRows(token, study, stimuli) {
  const sessions = await api(`/api/studies/${study.id}/sessions`, { token });
  const rows = [];
  for (const s of sessions) {
    // The webcam validation, when the session calibrated.
    let validation = '';
    if (study.capture_mode !== 'mouse') {
      const records = await api(`/api/studies/${study.id}/sessions/${s.id}/calibrations`, { token }).catch(() => []);
      const last = records.length ? records[records.length - 1].validation : null;
      validation = last ? `${Math.round(last.mean_px)} px (${last.mean_deg.toFixed(1)}°)` : 'none';
    }
    const caption = h('span', { class: 'caption', 'data-session': s.id });
    const preview = stimuli.length ? h('button', { onclick: async () => {
      caption.textContent = '…';
      try {
        await streamCaption({ image: stimuli[0].sha256, subject: s.participant }, (text) => { caption.textContent = text; }, { token });
      } catch (error) {
        caption.textContent = error.status === 404 ? 'no z_s stored for this participant yet' : error.message;
      }
    } }, 'Caption in their style') : null;
    rows.push(h('tr', {},
      h('td', {}, s.participant),
      h('td', {}, s.state),
      h('td', {}, String(s.current_trial)),
      h('td', {}, s.completion_code || ''),
      h('td', {}, validation),
      // The store keeps milliseconds since the epoch.
      h('td', {}, new Date(s.created_at > 1e11 ? s.created_at : s.created_at * 1000).toLocaleString()),
      h('td', {}, preview, ' ', caption)));
  }
  return rows;
}

async function refreshSessions(token, studies) {
  for (const study of studies) {
    const body = document.getElementById(`sessions-${study.id}`);
    if (!body) return;
    // Keep rows whose caption is being shown; refresh the others.
    if (body.querySelector('.caption:not(:empty)')) continue;
    try {
      const detail = await api(`/api/studies/${study.id}`, { token });
      body.replaceChildren(...await sessionRows(token, study, detail.stimuli));
    } catch (_) { return; }
  }
  setTimeout(() => refreshSessions(token, studies), 5000);
}

async function studyCard(token, study) {
  const link = `${location.origin}/?study=${study.id}`;
  const detail = await api(`/api/studies/${study.id}`, { token });
  const sessions = h('tbody', { id: `sessions-${study.id}` }, ...await sessionRows(token, study, detail.stimuli));
  const upload = h('input', { type: 'file', accept: 'image/png,image/jpeg', multiple: true, 'aria-label': `Add images to study ${study.id}` });
  upload.addEventListener('change', async () => {
    for (const file of upload.files) {
      status(`uploading ${file.name}…`);
      const form = new FormData();
      form.append('file', file);
      const stimulus = await api('/api/stimuli', { method: 'POST', token, raw: form });
      await api(`/api/studies/${study.id}/stimuli`, { method: 'POST', token, body: { stimulus_id: stimulus.id } });
    }
    status(`${upload.files.length} image(s) added`);
    researcher();
  });
  const exportButton = h('button', { onclick: () => download(token, `/api/studies/${study.id}/export.zip`, `study-${study.id}.zip`) },
    'Download export (.zip)');
  const mapSlot = h('div', {});
  const mapButton = h('button', { onclick: async () => {
    const map = await api(`/api/studies/${study.id}/embeddings`, { token });
    mapSlot.replaceChildren(map.points.length ? embeddingMap(map, null) : h('p', { class: 'muted' }, 'No embeddings yet.'));
  } }, 'Subject-embedding map');
  return h('article', { class: 'card', 'data-study': study.id },
    h('h3', {}, `${study.id}. ${study.title}`),
    h('p', {}, 'Participant link: ', h('a', { href: link }, link), ` · capture: ${study.capture_mode} · description: ${study.description_mode}`),
    h('p', {}, h('label', {}, 'Add PNG or JPEG images: ', upload), ' ', exportButton, ' ', mapButton),
    mapSlot,
    h('p', { class: 'muted' }, `${detail.stimuli.length} images`),
    editForm(token, study),
    h('table', {}, h('thead', {}, h('tr', {}, ...['participant', 'state', 'trial', 'code', 'webcam error', 'joined', 'their style'].map((c) => h('th', {}, c)))), sessions));
}

/** Edit a study's texts, capture mode and whether participants see the caption preview. */
function editForm(token, study) {
  const title = h('input', { value: study.title, 'aria-label': 'Title' });
  const instructions = h('textarea', { rows: 2, 'aria-label': 'Instructions' });
  instructions.value = study.instructions;
  const consent = h('textarea', { rows: 2, 'aria-label': 'Consent text' });
  consent.value = study.consent;
  const capture = h('select', { 'aria-label': 'Capture' }, ...['mouse', 'gaze', 'both'].map((m) => h('option', { value: m, selected: m === study.capture_mode }, m)));
  const describe = h('select', { 'aria-label': 'Description' }, ...['typed', 'narrative'].map((m) => h('option', { value: m, selected: m === study.description_mode }, m)));
  const preview = h('input', { type: 'checkbox', checked: study.settings.preview === true });
  return h('details', {}, h('summary', {}, 'Edit'), h('form', { onsubmit: async (e) => {
    e.preventDefault();
    await api(`/api/studies/${study.id}`, { method: 'PUT', token, body: {
      title: title.value, instructions: instructions.value, consent: consent.value,
      capture_mode: capture.value, description_mode: describe.value,
      settings: { ...study.settings, preview: preview.checked },
    } });
    researcher();
  } }, title, instructions, consent, capture, describe,
  h('label', {}, preview, ' participants see the caption preview'),
  h('p', {}, h('button', { type: 'submit' }, 'Save'))));
}

function newStudyForm(token) {
  const title = h('input', { id: 'new-title', required: true, size: 40 });
  const instructions = h('textarea', { id: 'new-instructions', rows: 2 });
  const consent = h('textarea', { id: 'new-consent', rows: 2 });
  const capture = h('select', { id: 'new-capture' }, ...['mouse', 'gaze', 'both'].map((m) => h('option', { value: m }, m)));
  return h('form', { onsubmit: async (e) => {
    e.preventDefault();
    await api('/api/studies', { method: 'POST', token, body: {
      title: title.value, instructions: instructions.value, consent: consent.value, capture_mode: capture.value,
    } });
    researcher();
  } },
  h('label', { for: 'new-title' }, 'Title'), title,
  h('label', { for: 'new-instructions' }, 'Instructions'), instructions,
  h('label', { for: 'new-consent' }, 'Consent text'), consent,
  h('label', { for: 'new-capture' }, 'Capture'), capture,
  h('p', {}, h('button', { type: 'submit' }, 'Create study')));
}

function jobTable(token, jobs) {
  const body = h('tbody', {});
  for (const job of jobs) {
    const progress = h('progress', { max: 1, value: job.progress || 0 });
    const message = h('span', {}, describeJob(job));
    const downloads = h('td', {});
    if (job.state === 'succeeded') {
      api(`/api/jobs/${job.id}`, { token }).then((full) => {
        for (const a of full.artifacts || []) {
          downloads.append(h('button', { onclick: () => download(token, `/api/artifacts/${a.id}/download`, `${a.kind}-${a.id}`) }, a.kind), ' ');
        }
      }).catch(() => {});
    }
    body.append(h('tr', {}, h('td', {}, String(job.id)), h('td', {}, job.kind), h('td', { class: 'state' }, job.state),
      h('td', {}, progress, ' ', message), downloads));
    if (job.state === 'queued' || job.state === 'running') follow(token, job.id, progress, message);
  }
  return h('table', { id: 'jobs' }, h('thead', {}, h('tr', {}, ...['job', 'kind', 'state', 'progress', 'results'].map((c) => h('th', {}, c)))), body);
}

/** Live progress of a job over server-sent events (EventSource cannot send headers: token in the query). */
function follow(token, id, progress, message) {
  const events = new EventSource(`/api/jobs/${id}/events?access_token=${encodeURIComponent(token)}`);
  events.addEventListener('progress', (e) => {
    const data = JSON.parse(e.data);
    if (typeof data.progress === 'number') progress.value = data.progress;
    message.textContent = describeJob(data);
  });
  events.addEventListener('end', (e) => {
    const data = JSON.parse(e.data);
    message.textContent = data.error ? `${data.state}: ${data.error}` : data.state;
    progress.value = 1;
    events.close();
  });
  events.onerror = () => events.close();
}

/** One line for a job's progress detail (epoch, loss, …). */
function describeJob(job) {
  const detail = job.progress_detail && typeof job.progress_detail === 'object' ? job.progress_detail : {};
  const parts = Object.entries(detail).filter(([, v]) => typeof v !== 'object')
    .map(([k, v]) => `${k} ${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v}`);
  return parts.join(' · ') || job.error || '';
}

function newJobForm(token, studies) {
  const study = h('select', { id: 'job-study' }, ...studies.map((s) => h('option', { value: s.id }, `${s.id}. ${s.title}`)));
  const epochs = h('input', { id: 'job-epochs', type: 'number', min: 1, value: 5, size: 4 });
  return h('form', { onsubmit: async (e) => {
    e.preventDefault();
    await api('/api/jobs', { method: 'POST', token, body: {
      kind: 'train_stage1', params: { study_id: Number(study.value), preset: 'tiny', epochs: Number(epochs.value) },
    } });
    researcher();
  } },
  h('label', { for: 'job-study' }, 'Train DEPER (stage 1) on study'), study,
  h('label', { for: 'job-epochs' }, 'epochs'), epochs,
  h('button', { type: 'submit' }, 'Start training'));
}
