// HTTP calls to `deper serve` and the sample uploader.
//
// The uploader keeps every batch in a persisted queue (localStorage, via the `persist` callback)
// BEFORE sending it, and sends batches one at a time with a client-chosen id: a retry after a lost
// answer, or after a reload, resends the same id and the server stores it once.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** JSON request; throws ApiError with the server's `error` message on a non-2xx answer. */
export async function api(path, { method = 'GET', token, body, raw, session } = {}) {
  const headers = {};
  if (session) headers['X-Deper-Session'] = String(session);
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      if (data && data.error) message = data.error;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, `${method} ${path}: ${message}`);
  }
  const type = response.headers.get('content-type') || '';
  return type.includes('application/json') ? response.json() : response;
}

/** Whether an error is worth retrying (network down, server busy or restarting). */
export function transient(error) {
  return !(error instanceof ApiError) || error.status >= 500 || error.status === 408 || error.status === 429;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Uploader {
  /**
   * @param {object} state   the participant state; `state.pending` is the queue, `state.batchSeq` the counter
   * @param {() => void} persist  saves `state`
   * @param {(text: string) => void} report  shows upload status
   */
  constructor(state, persist, report) {
    this.state = state;
    this.persist = persist;
    this.report = report;
    this.buffer = [];
    this.bufferTrial = null;
    this.sending = null;
    this.sent = 0;
    this.stopped = false;
  }

  /** Adds samples of `trial`; they go out with the next flush. */
  add(trial, samples) {
    if (this.bufferTrial !== null && this.bufferTrial !== trial) this.seal();
    this.bufferTrial = trial;
    for (const s of samples) this.buffer.push(s);
    if (this.buffer.length >= 200) this.flush();
  }

  /** Moves the buffer into the persisted queue as one batch with a fresh id. */
  seal() {
    if (this.buffer.length === 0) return;
    const st = this.state;
    st.batchSeq = (st.batchSeq || 0) + 1;
    st.pending.push({
      batch_id: `s${st.session_id}-t${this.bufferTrial}-b${st.batchSeq}`,
      trial: this.bufferTrial,
      samples: this.buffer,
    });
    this.buffer = [];
    this.persist();
  }

  /** Seals the buffer and sends the queue; resolves when the queue is empty. */
  flush() {
    this.seal();
    if (!this.sending) {
      this.sending = this.drain().finally(() => { this.sending = null; });
    }
    return this.sending;
  }

  async drain() {
    let wait = 250;
    const st = this.state;
    while (st.pending.length > 0 && !this.stopped) {
      const batch = st.pending[0];
      try {
        const ack = await api(`/api/sessions/${st.session_id}/samples`, {
          method: 'POST', token: st.token, body: batch,
        });
        this.sent += ack.duplicate ? 0 : ack.stored;
        st.pending.shift();
        this.persist();
        wait = 250;
        this.report(st.pending.length ? `uploading… (${st.pending.length} batches left)` : 'all samples uploaded');
      } catch (error) {
        if (!transient(error)) {
          // The server refused this batch for good (it names the field); keep going with the rest.
          console.error('batch refused', batch.batch_id, error);
          this.report(`a sample batch was refused: ${error.message}`);
          st.pending.shift();
          st.refused = (st.refused || 0) + 1;
          this.persist();
          continue;
        }
        this.report(`connection problem, retrying in ${Math.round(wait / 1000)} s…`);
        await sleep(wait);
        wait = Math.min(wait * 2, 10000);
      }
    }
  }
}

/**
 * POST /api/captions with `stream: true`; calls `onToken(textSoFar)` per token and resolves with
 * the final response. Falls back to the plain answer when the server does not stream.
 */
export async function streamCaption(body, onToken, { token, session } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (session) headers['X-Deper-Session'] = String(session);
  const response = await fetch('/api/captions', {
    method: 'POST',
    headers,
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  if (!(response.headers.get('content-type') || '').includes('text/event-stream')) {
    const data = await response.json();
    onToken(data.caption);
    return data;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffered.indexOf('\n\n')) >= 0) {
      const frame = buffered.slice(0, cut);
      buffered = buffered.slice(cut + 2);
      let event = 'message';
      let data = '';
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (!data) continue;
      const parsed = JSON.parse(data);
      if (event === 'token') {
        text += parsed.text;
        onToken(text);
      } else if (event === 'done') {
        onToken(parsed.caption);
        return parsed;
      } else if (event === 'error') {
        throw new ApiError(500, parsed.error || 'caption failed');
      }
    }
  }
  return { caption: text };
}
