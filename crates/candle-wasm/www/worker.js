// The model lives in this Web Worker so that loading and generating never
// block the page. Messages in: {type: 'load', url} | {type: 'load', file}
// | {type: 'load', key} | {type: 'list'} | {type: 'chat', messages, options}
// | {type: 'stop'}. Messages out: see each `post` below.
//
// Models are kept in Cache Storage (cache `CACHE`) under their URL, or for
// a picked file under a `models/file/<name>` key: a reload loads from there
// instead of downloading again. The file streams into a ModelLoader, which
// reserves wasm memory for the whole file once and fills it in place.

const CACHE = 'hanzo-candle-models';
const PKG = new URL('../pkg/', import.meta.url);

const post = (message) => self.postMessage(message);

// `?build=nosimd` on the worker's URL forces the plain build, to try it on
// an engine that has SIMD128.
async function start() {
  const plain = new URL(self.location.href).searchParams.get('build') === 'nosimd';
  const module = plain
    ? await import(new URL('nosimd/candle_wasm.js', PKG))
    : await import(new URL('index.js', PKG));
  const wasm = await module.default();
  const simd = plain ? false : module.simd;
  post({ type: 'ready', simd });
  return { ModelLoader: module.ModelLoader, memory: wasm.memory };
}
const engine = start();

let model = null;
let stopRequested = false;

const wasmMiB = async () => +((await engine).memory.buffer.byteLength / 2 ** 20).toFixed(1);

/** The cache key for a picked file. */
const fileKey = (name) => new URL(`models/file/${encodeURIComponent(name)}`, self.location.href).href;

/** Reads `body` (a ReadableStream of `total` bytes, or of unknown size) into a model. */
async function readModel(body, total, source) {
  const { ModelLoader } = await engine;
  const reader = body.getReader();
  // Without a size the chunks wait in JavaScript until the end; every
  // source here gives one, so that only happens for odd servers.
  const pending = total === null ? [] : null;
  const loader = total === null ? null : new ModelLoader(total);
  let received = 0;
  let lastPost = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (loader) loader.push(value);
    else pending.push(value);
    received += value.byteLength;
    const now = performance.now();
    if (now - lastPost > 100) {
      lastPost = now;
      post({ type: 'progress', received, total, source });
    }
  }
  post({ type: 'progress', received, total: total ?? received, source });
  if (loader) return loader.finish();
  const whole = new ModelLoader(received);
  for (const chunk of pending.splice(0)) whole.push(chunk);
  return whole.finish();
}

const lengthOf = (response) =>
  response.headers.get('content-encoding') ? null : Number(response.headers.get('content-length')) || null;

async function load({ url, file, key }) {
  model?.free();
  model = null;
  const cache = await caches.open(CACHE);
  const started = performance.now();
  let name;
  let source;
  let loaded;
  let stored = Promise.resolve();
  if (file) {
    name = file.name;
    source = 'file';
    // A File is a handle to the disk; caching it does not read it into memory.
    stored = cache.put(fileKey(file.name), new Response(file, {
      headers: { 'content-length': String(file.size), 'x-model-name': file.name },
    }));
    loaded = readModel(file.stream(), file.size, source);
  } else {
    const cacheKey = key ?? new URL(url, self.location.href).href;
    const hit = await cache.match(cacheKey);
    if (hit) {
      name = hit.headers.get('x-model-name') ?? cacheKey;
      source = 'cache';
      loaded = readModel(hit.body, lengthOf(hit), source);
    } else {
      if (!url) throw new Error(`${key} is no longer in Cache Storage`);
      const response = await fetch(url);
      if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status} ${response.statusText}`);
      name = url;
      source = 'network';
      // Cache Storage takes one branch of the body as it arrives.
      stored = cache.put(cacheKey, response.clone());
      loaded = readModel(response.body, lengthOf(response), source);
    }
  }
  model = await loaded;
  let cacheError = null;
  try {
    await stored;
  } catch (e) {
    // A full quota only costs the next reload a download.
    cacheError = `not kept in Cache Storage: ${e.message}`;
  }
  post({
    type: 'loaded',
    name,
    source,
    ms: Math.round(performance.now() - started),
    info: model.info,
    wasm_mib: await wasmMiB(),
    cache_error: cacheError,
  });
}

async function list() {
  const cache = await caches.open(CACHE);
  const entries = [];
  for (const request of await cache.keys()) {
    const response = await cache.match(request);
    entries.push({
      key: request.url,
      name: response.headers.get('x-model-name') ?? request.url,
      bytes: lengthOf(response),
    });
  }
  post({ type: 'cached', entries });
}

// A task boundary without setTimeout's 4 ms clamp, so that a 'stop'
// message is handled between tokens.
function yieldToEvents() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(null);
  });
}

async function chat({ messages, options }) {
  if (!model) throw new Error('no model is loaded');
  stopRequested = false;
  const stream = model.chatStream(messages, options);
  const start = performance.now();
  let prefillEnd = null;
  let decodeSteps = 0;
  try {
    for (;;) {
      if (stopRequested) {
        stream.cancel();
        break;
      }
      const step = stream.next();
      if (prefillEnd === null) {
        if (step.prompt_processed || step.done) prefillEnd = performance.now();
      } else if (!step.done) {
        decodeSteps += 1;
      }
      if (step.text) post({ type: 'token', text: step.text });
      if (step.done) break;
      await yieldToEvents();
    }
    const end = performance.now();
    const result = stream.result;
    const cancelled = result.finish_reason === 'cancelled';
    // The prefill step samples the first token; each later step one more.
    const generated = cancelled ? decodeSteps + (prefillEnd === null ? 0 : 1) : result.tokens.length;
    post({
      type: 'done',
      text: result.text,
      finish_reason: result.finish_reason,
      prompt_tokens: result.prompt_tokens,
      cached_tokens: result.cached_tokens,
      generated,
      tokens: Array.from(result.tokens),
      prefill_ms: prefillEnd === null ? null : prefillEnd - start,
      decode_ms: prefillEnd === null ? null : end - prefillEnd,
      wasm_mib: await wasmMiB(),
    });
  } finally {
    stream.free();
  }
}

const handlers = { load, list, chat };

self.onmessage = async ({ data }) => {
  if (data.type === 'stop') {
    stopRequested = true;
    return;
  }
  try {
    await engine;
    await handlers[data.type](data);
  } catch (e) {
    post({ type: 'error', during: data.type, message: e?.message ?? String(e) });
  }
};
