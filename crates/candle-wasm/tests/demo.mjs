#!/usr/bin/env node
// End-to-end test of the demo page (crates/candle-wasm/www) in headless
// Chromium, driven by playwright-core (scripts/test-wasm-demo.sh installs
// it and runs this):
//   HANZO_NODE_MODULES=DIR node demo.mjs MODEL.gguf HANZO_CANDLE_BINARY
//
// 1. The page loads MODEL through its URL field (`?model=`) from a local
//    static server: downloaded once, streamed into the ModelLoader in the
//    page's Web Worker, with the SIMD128 build.
// 2. Each greedy chat reply the page shows (32 tokens, fixed prompts) is
//    bit-identical (token ids and text) to the same .wasm run under Node.
// 3. That reply agrees with the native engine's (`hanzo-candle generate
//    --chat`, one thread): equal, or equal up to the first token where the
//    wasm run was torn between its choice and the token native's text goes
//    on with, their log-probabilities closer than NEAR_TIE.
// 4. Stop ends a long generation between tokens.
// 5. A reload with the plain (non-SIMD) build loads the model from Cache
//    Storage (the server sees no second download); 2 and 3 hold for it too.
// 6. A picked file loads, is kept in Cache Storage, and after a reload the
//    page lists it and loads it from there.
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { basename, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const [modelPath, nativeBinary] = process.argv.slice(2);
if (!nativeBinary) {
  console.error('usage: HANZO_NODE_MODULES=DIR node demo.mjs MODEL.gguf HANZO_CANDLE_BINARY');
  process.exit(2);
}
const MAX_TOKENS = 32;
const PROMPTS = ['What is the capital of France?', 'Name three colors.'];
// The bound the native engine's real-model test (crates/candle-engine/
// tests/real_model.rs, SMOLLM2) puts on llama.cpp: both engines quantize
// activations to 8 bits with the same rounding but sum in different orders
// (here: SIMD128 or scalar code against AVX2, and candle-core's f32 ops
// compiled for wasm), which moves a token's log-probability by up to 0.31;
// calls closer than 0.4 nats may go either way, and after one the greedy
// texts part for good.
const NEAR_TIE = 0.4;
const native = Object.fromEntries(PROMPTS.map((prompt) => [
  prompt,
  // stdout is the reply and one newline.
  execFileSync(nativeBinary, ['generate', '--chat', '-m', modelPath, '-n', String(MAX_TOKENS), '-t', '1', prompt], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  }).replace(/\n$/, ''),
]));

/** The replies of one build under Node, with each token's log-probabilities. */
async function nodeReplies(build) {
  const dir = new URL(`../pkg/${build}/`, import.meta.url);
  const glue = await import(new URL('candle_wasm.js', dir).href);
  await glue.default({ module_or_path: await readFile(new URL('candle_wasm_bg.wasm', dir)) });
  const model = new glue.Model(await readFile(modelPath));
  const replies = {};
  for (const prompt of PROMPTS) {
    const stream = model.chatStream([{ role: 'user', content: prompt }], { max_tokens: MAX_TOKENS, logprobs: 5 });
    const logprobs = [];
    for (;;) {
      const step = stream.next();
      logprobs.push(...step.logprobs);
      if (step.done) break;
    }
    replies[prompt] = { tokens: Array.from(stream.result.tokens), text: stream.result.text, logprobs };
    stream.free();
  }
  return { replies, decode: (ids) => model.decode(Uint32Array.from(ids)) };
}

/** How `reply` agrees with native's `text` (see 3. above). */
function agreement({ tokens, text: ours, logprobs }, text, decode) {
  if (ours === text) return { ok: true, detail: 'equal' };
  let k = 0;
  while (k < tokens.length && text.startsWith(decode(tokens.slice(0, k + 1)))) k += 1;
  const at = logprobs[k];
  if (!at) return { ok: false, detail: `the texts part after token ${k}, where the wasm run ended` };
  const theirs = at.top.find(([id]) => id !== at.token && text.startsWith(decode([...tokens.slice(0, k), id])));
  if (!theirs) return { ok: false, detail: `the texts part at token ${k}, where native's token is not in wasm's top 5` };
  const gap = at.logprob - theirs[1];
  return {
    ok: gap < NEAR_TIE,
    detail: `equal for ${k} tokens, then a near tie: wasm's ${at.token} leads native's ${theirs[0]} by ${gap.toFixed(3)} nats`,
  };
}

const nodeModules = process.env.HANZO_NODE_MODULES;
const { chromium } = createRequire(join(nodeModules, 'noop.js'))('playwright-core');

// The static server: www/ and pkg/ side by side, and the model.
const root = fileURLToPath(new URL('..', import.meta.url));
const MODEL_URL = '/models/model.gguf';
let modelDownloads = 0;
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };
const server = createServer(async (request, response) => {
  const path = new URL(request.url, 'http://x').pathname;
  const file = path === MODEL_URL ? modelPath : join(root, normalize(path));
  if (path === MODEL_URL && request.method === 'GET') modelDownloads += 1;
  if (!file.startsWith(root) && file !== modelPath) return response.writeHead(403).end();
  try {
    const { size } = await stat(file);
    response.writeHead(200, {
      'content-type': types[extname(file)] ?? 'application/octet-stream',
      'content-length': size,
    });
    createReadStream(file).pipe(response);
  } catch {
    response.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
let failures = 0;
const check = (ok, what, detail = '') => {
  console.log(`${ok ? 'ok' : 'FAIL'} - ${what}${ok ? '' : `\n${detail}`}`);
  if (!ok) failures += 1;
};

const state = (page, wanted) =>
  page.waitForFunction((s) => document.body.dataset.state === s, wanted, { timeout: 120_000 });

async function chat(page, prompt, maxTokens) {
  await page.click('#clear');
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#temperature', '0');
  await page.fill('#prompt', prompt);
  await page.evaluate(() => (window.lastResult = undefined));
  await page.click('#send');
  await page.waitForFunction(() => window.lastResult !== undefined, null, { timeout: 120_000 });
  return {
    shown: await page.textContent('#log .msg.assistant:last-of-type'),
    result: await page.evaluate(() => window.lastResult),
  };
}

async function greedyReplies(page, build) {
  const { replies, decode } = await nodeReplies(build);
  for (const prompt of PROMPTS) {
    const { shown, result } = await chat(page, prompt, MAX_TOKENS);
    const node = replies[prompt];
    check(shown === node.text && JSON.stringify(result.tokens) === JSON.stringify(node.tokens),
      `${build}: the page's greedy reply to ${JSON.stringify(prompt)} is bit-identical to Node's`,
      `  page: ${JSON.stringify(shown)} ${result.tokens}\n  node: ${JSON.stringify(node.text)} ${node.tokens}`);
    const { ok, detail } = agreement(node, native[prompt], decode);
    check(ok, `${build}: it agrees with native's (${detail})`,
      `  wasm:   ${JSON.stringify(node.text)}\n  native: ${JSON.stringify(native[prompt])}`);
    const rate = ((result.generated - 1) / (result.decode_ms / 1000)).toFixed(1);
    console.log(`#   ${build}: ${result.generated} tokens, decode ${rate} tok/s, wasm memory ${result.wasm_mib} MiB`);
  }
}

try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => check(false, 'no uncaught page error', e.message));
  const url = (build) => `${origin}/www/index.html?model=${encodeURIComponent(MODEL_URL)}${build ? `&build=${build}` : ''}`;

  await page.goto(url());
  await state(page, 'ready');
  check(await page.evaluate(() => document.body.dataset.source) === 'network', 'the first load downloads the model');
  check((await page.textContent('#build')).includes('SIMD128'), 'the SIMD128 build is chosen by feature detection');
  check(modelDownloads === 1, 'one download', `  downloads: ${modelDownloads}`);
  await greedyReplies(page, 'simd');

  // Stop: a long generation, stopped once its first token is on the page.
  await page.click('#clear');
  await page.fill('#max-tokens', '500');
  await page.fill('#prompt', 'Write a long story about a lighthouse.');
  await page.evaluate(() => (window.lastResult = undefined));
  await page.click('#send');
  await page.waitForFunction(() => document.querySelector('#log .msg.assistant')?.textContent.length > 0);
  await page.click('#stop');
  await page.waitForFunction(() => window.lastResult !== undefined, null, { timeout: 60_000 });
  const stopped = await page.evaluate(() => window.lastResult);
  check(stopped.finish_reason === 'cancelled' && stopped.generated < 500,
    'Stop ends the generation between tokens', JSON.stringify(stopped));
  check(await page.evaluate(() => document.body.dataset.state) === 'ready', 'the page can chat again after Stop');

  await page.goto(url('nosimd'));
  await state(page, 'ready');
  check(await page.evaluate(() => document.body.dataset.source) === 'cache', 'after a reload the model comes from Cache Storage');
  check(modelDownloads === 1, 'no second download', `  downloads: ${modelDownloads}`);
  check((await page.textContent('#build')).includes('plain'), '?build=nosimd runs the plain build');
  await greedyReplies(page, 'nosimd');

  // A picked file is kept in Cache Storage too, listed after a reload.
  await page.setInputFiles('#file', modelPath);
  await state(page, 'ready');
  check(await page.evaluate(() => document.body.dataset.source) === 'file', 'a picked file loads');
  await page.goto(`${origin}/www/index.html`);
  await state(page, 'idle');
  const listed = page.locator('#cached button', { hasText: basename(modelPath) });
  await listed.waitFor();
  await listed.click();
  await state(page, 'ready');
  check(await page.evaluate(() => document.body.dataset.source) === 'cache', 'the picked file reloads from Cache Storage');
} finally {
  await browser.close();
  server.close();
}
if (failures) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
