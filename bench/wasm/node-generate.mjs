#!/usr/bin/env node
// Greedy generation with the built package (crates/candle-wasm/pkg) under
// Node, single-threaded: load time, prefill and decode tokens/s, the wasm
// memory size afterwards, and the generated ids. Preliminary figures; see
// docs/BENCHMARKS.md.
//   node bench/wasm/node-generate.mjs MODEL.gguf [PROMPT] [TOKENS]
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const [modelPath, prompt = 'The capital of France is', count = '32'] = process.argv.slice(2);
if (!modelPath) {
  console.error('usage: node bench/wasm/node-generate.mjs MODEL.gguf [PROMPT] [TOKENS]');
  process.exit(2);
}
const pkg = new URL('../../crates/candle-wasm/pkg/', import.meta.url);
const { default: init, Model, simd, wasmFile } = await import(new URL('index.js', pkg));
const wasm = await init({ module_or_path: await readFile(fileURLToPath(new URL(wasmFile, pkg))) });

const bytes = await readFile(modelPath);
let t = performance.now();
const model = new Model(bytes, { context: 512 });
const loadMs = performance.now() - t;
const ids = model.encode(prompt);
const stream = model.stream(ids, { max_tokens: Number(count) });
t = performance.now();
let first = null;
for (;;) {
  const step = stream.next();
  if (first === null) first = performance.now() - t;
  if (step.done) break;
}
const totalMs = performance.now() - t;
const result = stream.result;
const generated = result.tokens.length;
console.log(JSON.stringify({
  simd,
  load_ms: Math.round(loadMs),
  prompt_tokens: ids.length,
  prefill_tok_s: +(ids.length / (first / 1000)).toFixed(1),
  decode_tok_s: +((generated - 1) / ((totalMs - first) / 1000)).toFixed(1),
  wasm_memory_mib: +(wasm.memory.buffer.byteLength / 2 ** 20).toFixed(1),
  tokens: Array.from(result.tokens),
  text: result.text,
}));
