#!/usr/bin/env -S node --no-warnings
// Runs a wasm32-wasip1 binary (a `cargo test` harness) under Node's WASI, so the
// wasm SIMD128 kernels are tested on this machine: cargo uses it as the target's
// runner (.cargo/config.toml) and passes the .wasm path and the harness's arguments.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, env, exit } from "node:process";

const [wasmPath, ...args] = argv.slice(2);
if (!wasmPath) {
  console.error("usage: wasi-run.mjs FILE.wasm [ARGS...]");
  exit(2);
}
const wasi = new WASI({ version: "preview1", args: [wasmPath, ...args], env, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
