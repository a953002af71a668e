// The demo page: talks to the model in worker.js, renders what it says.
// Query parameters: `model=URL` loads that model at start (from Cache
// Storage when it is there), `build=nosimd` forces the plain build.
// `document.body.dataset.state` (starting, idle, loading, ready, generating)
// and `window.lastResult` (the last generation's figures) are there for
// tests to wait on.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const workerUrl = new URL('worker.js', import.meta.url);
if (params.get('build')) workerUrl.searchParams.set('build', params.get('build'));
const worker = new Worker(workerUrl, { type: 'module' });

const messages = [];
let reply = null; // the assistant message element being streamed into
let hasModel = false;

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating' || state === 'starting';
  for (const id of ['file', 'url', 'url-load']) $(id).disabled = busy;
  for (const button of $('cached').querySelectorAll('button')) button.disabled = busy;
  $('send').disabled = busy || !hasModel;
  $('clear').disabled = busy;
  $('stop').disabled = state !== 'generating';
}
setState('starting');

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text;
  $('log').append(div);
  $('log').scrollTop = $('log').scrollHeight;
  return div;
}

function load(request) {
  setState('loading');
  $('progress').hidden = false;
  $('progress').removeAttribute('value');
  $('status').textContent = 'Loading…';
  worker.postMessage({ type: 'load', ...request });
}

const handlers = {
  ready({ simd }) {
    $('build').textContent = `Engine: ${simd ? 'WebAssembly SIMD128 build' : 'plain WebAssembly build (no SIMD)'}, one thread, in a Web Worker.`;
    setState('idle');
    worker.postMessage({ type: 'list' });
    if (params.get('model')) load({ url: params.get('model') });
  },
  progress({ received, total, source }) {
    if (total) $('progress').value = received / total;
    const from = { network: 'downloading', cache: 'reading from Cache Storage', file: 'reading the file' }[source];
    $('status').textContent = `Loading (${from}): ${mib(received)}${total ? ` of ${mib(total)}` : ''}`;
  },
  loaded({ name, source, ms, info, wasm_mib, cache_error }) {
    hasModel = true;
    $('progress').hidden = true;
    $('chat').hidden = false;
    const from = { network: 'downloaded', cache: 'from Cache Storage', file: 'from the file' }[source];
    $('status').textContent =
      `${name}: ${info.architecture}, ${info.layers} layers, vocabulary ${info.vocab_size}, ` +
      `context ${info.context}${info.has_chat_template ? ', own chat template' : ''}. ` +
      `Loaded ${from} in ${(ms / 1000).toFixed(1)} s; wasm memory ${wasm_mib} MiB.` +
      (cache_error ? ` (${cache_error})` : '');
    document.body.dataset.source = source;
    setState('ready');
    worker.postMessage({ type: 'list' });
  },
  cached({ entries }) {
    const box = $('cached');
    box.replaceChildren();
    if (entries.length) box.append('In Cache Storage: ');
    for (const { key, name, bytes } of entries) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = `${name.split('/').pop()}${bytes ? ` (${mib(bytes)})` : ''}`;
      button.title = name;
      button.onclick = () => load({ key });
      box.append(button);
    }
  },
  token({ text }) {
    reply.textContent += text;
    $('log').scrollTop = $('log').scrollHeight;
  },
  done(result) {
    // The last step's text has arrived as a token; the result's text is
    // the whole reply (empty when stopped, so keep what streamed then).
    if (result.finish_reason !== 'cancelled') reply.textContent = result.text;
    messages.push({ role: 'assistant', content: reply.textContent });
    const rate = (n, ms) => (ms > 0 ? (n / (ms / 1000)).toFixed(1) : '–');
    const prefill = result.prompt_tokens - result.cached_tokens;
    $('speed').textContent =
      `${result.generated} tokens, ${rate(Math.max(result.generated - 1, 0), result.decode_ms)} tok/s` +
      (result.prompt_tokens ? ` | prompt ${result.prompt_tokens} tokens (${result.cached_tokens} reused), ${rate(prefill, result.prefill_ms)} tok/s` : '') +
      ` | ${result.finish_reason} | wasm memory ${result.wasm_mib} MiB`;
    window.lastResult = result;
    reply = null;
    setState('ready');
  },
  error({ during, message }) {
    if (during === 'chat') {
      messages.pop();
      reply?.remove();
      reply = null;
      addMessage('error', message);
    } else {
      $('progress').hidden = true;
      $('status').textContent = `Error: ${message}`;
    }
    setState(hasModel ? 'ready' : 'idle');
  },
};

worker.onmessage = ({ data }) => handlers[data.type](data);
worker.onerror = (e) => {
  $('status').textContent = `The worker failed: ${e.message}`;
};

$('file').onchange = () => {
  const file = $('file').files[0];
  if (file) load({ file });
};
const drop = $('drop');
drop.ondragover = (e) => {
  e.preventDefault();
  drop.classList.add('over');
};
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const file = e.dataTransfer.files[0];
  if (file && document.body.dataset.state !== 'loading') load({ file });
};
$('url-form').onsubmit = (e) => {
  e.preventDefault();
  if ($('url').value) load({ url: $('url').value });
};

$('send-form').onsubmit = (e) => {
  e.preventDefault();
  const content = $('prompt').value.trim();
  if (!content || !hasModel) return;
  $('prompt').value = '';
  messages.push({ role: 'user', content });
  addMessage('user', content);
  reply = addMessage('assistant', '');
  setState('generating');
  worker.postMessage({
    type: 'chat',
    messages,
    options: { max_tokens: Number($('max-tokens').value), temperature: Number($('temperature').value) },
  });
};
$('prompt').onkeydown = (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    $('send-form').requestSubmit();
  }
};
$('stop').onclick = () => worker.postMessage({ type: 'stop' });
$('clear').onclick = () => {
  messages.length = 0;
  $('log').replaceChildren();
  $('speed').textContent = '';
};
