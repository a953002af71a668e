#!/usr/bin/env node
// Prefill and decode tokens/s of one GGUF in headless Chromium, all single
// threaded and in the same run: @hanzoai/candle-wasm (SIMD128 build and
// plain build), wllama (llama.cpp compiled to wasm, npm @wllama/wllama,
// served without COOP/COEP and with n_threads 1, so its single-thread
// path), and the native `hanzo-candle generate -t 1`. Greedy, one prompt.
// Also the candle-wasm load time and wasm memory after generating (linear
// memory never shrinks, so that is its peak).
//   scripts/install-node-tools.sh   # playwright-core, @wllama/wllama
//   node bench/wasm/browser-bench.mjs MODEL.gguf HANZO_CANDLE_BINARY [TOKENS] [RUNS]
// Prints one JSON line per engine and run; the figures in docs/BENCHMARKS.md
// are the medians of RUNS (default 3).
import { spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const [modelPath, nativeBinary, tokenArg = '64', runArg = '3'] = process.argv.slice(2);
if (!nativeBinary) {
  console.error('usage: node bench/wasm/browser-bench.mjs MODEL.gguf HANZO_CANDLE_BINARY [TOKENS] [RUNS]');
  process.exit(2);
}
const TOKENS = Number(tokenArg);
const RUNS = Number(runArg);
// About 60 tokens of prose, which SmolLM2 continues without ending early.
const PROMPT =
  'The history of the lighthouse begins in the ancient world, when fires were lit on hilltops to guide ' +
  'ships home at night. Over the centuries these beacons became towers of stone, and their keepers ' +
  'lived lonely lives on rocky islands far from the coast. One such keeper was';
const nodeModules = join(process.env.HANZO_NODE ?? join(homedir(), '.cache/hanzo-candle/node'), 'node_modules');
const { chromium } = createRequire(join(nodeModules, 'noop.js'))('playwright-core');

const routes = {
  '/pkg/': fileURLToPath(new URL('../../crates/candle-wasm/pkg/', import.meta.url)),
  '/wllama/': join(nodeModules, '@wllama/wllama/esm/'),
};
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
const server = createServer(async (request, response) => {
  const path = new URL(request.url, 'http://x').pathname;
  if (path === '/') return response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>bench</title>');
  let file = path === '/model.gguf' ? modelPath : null;
  for (const [prefix, dir] of Object.entries(routes)) {
    if (path.startsWith(prefix)) file = join(dir, normalize(path.slice(prefix.length)));
  }
  try {
    const { size } = await stat(file);
    response.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'content-length': size });
    createReadStream(file).pipe(response);
  } catch {
    response.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

async function candle(page, build) {
  return page.evaluate(async ({ build, prompt, tokens }) => {
    const module = await import(build === 'nosimd' ? '/pkg/nosimd/candle_wasm.js' : '/pkg/simd/candle_wasm.js');
    const wasm = await module.default();
    const response = await fetch('/model.gguf');
    let t = performance.now();
    const loader = new module.ModelLoader(Number(response.headers.get('content-length')));
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      loader.push(value);
    }
    const model = loader.finish({ context: 512 });
    const loadMs = performance.now() - t;
    const ids = model.encode(prompt);
    const stream = model.stream(ids, { max_tokens: tokens });
    t = performance.now();
    let prefill = null;
    for (;;) {
      const step = stream.next();
      if (prefill === null) prefill = performance.now() - t;
      if (step.done) break;
    }
    const total = performance.now() - t;
    const generated = stream.result.tokens.length;
    const out = {
      load_ms: Math.round(loadMs),
      prompt_tokens: ids.length,
      prefill_tok_s: ids.length / (prefill / 1000),
      generated,
      decode_tok_s: (generated - 1) / ((total - prefill) / 1000),
      wasm_memory_mib: wasm.memory.buffer.byteLength / 2 ** 20,
      text: stream.result.text,
    };
    model.free();
    return out;
  }, { build, prompt: PROMPT, tokens: TOKENS });
}

async function wllama(page) {
  return page.evaluate(async ({ prompt, tokens }) => {
    const { Wllama } = await import('/wllama/index.js');
    const engine = new Wllama({ default: '/wllama/wasm/wllama.wasm' });
    let t = performance.now();
    await engine.loadModelFromUrl(`${location.origin}/model.gguf`, { n_threads: 1, n_ctx: 512, useCache: false });
    const loadMs = performance.now() - t;
    const result = await engine.createCompletion({ prompt, max_tokens: tokens, temperature: 0 });
    const timings = result.timings;
    await engine.exit();
    return {
      load_ms: Math.round(loadMs),
      cross_origin_isolated: self.crossOriginIsolated,
      prompt_tokens: timings.prompt_n,
      prefill_tok_s: timings.prompt_per_second,
      generated: timings.predicted_n,
      decode_tok_s: timings.predicted_per_second,
      text: result.choices[0].text,
    };
  }, { prompt: PROMPT, tokens: TOKENS });
}

function nativeFigures() {
  const run = spawnSync(nativeBinary, ['generate', '-m', modelPath, '-c', '512', '-t', '1', '-n', String(TOKENS), PROMPT], {
    encoding: 'utf8',
  });
  if (run.status !== 0) throw new Error(`${nativeBinary} failed: ${run.stderr}`);
  // stderr ends with "prompt P tokens, X tok/s | generated N tokens, Y tok/s | ...".
  const report = run.stderr.match(/prompt (\d+) tokens, ([\d.]+) tok\/s \| generated (\d+) tokens, ([\d.]+) tok\/s/);
  if (!report) throw new Error(`no report in: ${run.stderr}`);
  return {
    prompt_tokens: Number(report[1]),
    prefill_tok_s: Number(report[2]),
    generated: Number(report[3]),
    decode_tok_s: Number(report[4]),
    text: run.stdout.replace(/\n$/, ''),
  };
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
const results = {};
try {
  for (let run = 0; run < RUNS; run += 1) {
    for (const engine of ['candle-wasm simd', 'candle-wasm nosimd', 'wllama', 'native']) {
      let figures;
      if (engine === 'native') {
        figures = nativeFigures();
      } else {
        // A fresh page each time: wasm memory is per instance and never shrinks.
        const page = await browser.newPage();
        await page.goto(`${origin}/`);
        figures = engine === 'wllama' ? await wllama(page) : await candle(page, engine.split(' ')[1]);
        await page.close();
      }
      console.log(JSON.stringify({ engine, run, ...figures }));
      (results[engine] ??= []).push(figures);
    }
  }
  const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
  for (const [engine, runs] of Object.entries(results)) {
    const summary = { engine, runs: runs.length };
    for (const key of ['prefill_tok_s', 'decode_tok_s', 'load_ms', 'wasm_memory_mib']) {
      if (runs[0][key] !== undefined) summary[key] = +median(runs.map((r) => r[key])).toFixed(1);
    }
    console.log(`median ${JSON.stringify(summary)}`);
  }
} finally {
  await browser.close();
  server.close();
}
