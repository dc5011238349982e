// The page's side of the compute worker (web/deper-worker.js, which runs the deper-web wasm module):
// one promise per request, progress events to a callback.

export class Compute {
  constructor(onProgress = () => {}) {
    this.worker = new Worker(new URL('./deper-worker.js', import.meta.url), { type: 'module' });
    this.nextId = 1;
    this.waiting = new Map();
    this.onProgress = onProgress;
    this.worker.onmessage = (event) => this.receive(event.data);
    this.worker.onerror = (event) => {
      const error = new Error(`compute worker failed: ${event.message || 'could not load'}`);
      for (const { reject } of this.waiting.values()) reject(error);
      this.waiting.clear();
    };
  }

  receive(message) {
    if (message.op === 'progress') {
      this.onProgress(message);
      return;
    }
    const entry = this.waiting.get(message.id);
    if (!entry) return;
    this.waiting.delete(message.id);
    if (message.ok) entry.resolve(message.result);
    else entry.reject(new Error(message.error));
  }

  call(op, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, ...fields });
    });
  }

  /** Chooses WebGPU when it works (unless `prefer` is "cpu"); resolves with "webgpu" or "cpu". */
  start(prefer) {
    return this.call('start', { prefer });
  }
}
