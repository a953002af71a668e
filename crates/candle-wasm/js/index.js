// @hanzoai/candle-wasm: picks the SIMD128 build where the engine runs it,
// the plain build elsewhere, and re-exports its API.

// A module whose one function uses a SIMD128 instruction: it validates
// exactly where SIMD128 is supported.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15,
  253, 98, 11,
]);

/** Whether this engine runs WebAssembly SIMD128 (and so gets the SIMD build). */
export const simd = WebAssembly.validate(SIMD_PROBE);

const glue = simd ? await import('./simd/candle_wasm.js') : await import('./nosimd/candle_wasm.js');

export const { Model, ModelLoader, TokenStream } = glue;

/**
 * Instantiates the chosen build. In a browser it fetches the `.wasm` next
 * to this file; elsewhere pass `{ module_or_path }` (bytes or a module).
 */
export default function init(options) {
  return glue.default(options);
}

/** The `.wasm` file this engine uses, relative to the package. */
export const wasmFile = simd ? 'simd/candle_wasm_bg.wasm' : 'nosimd/candle_wasm_bg.wasm';

/**
 * Yields a stream's text as it is generated, giving the event loop a turn
 * between steps; stop iterating (or call `signal.abort()`) to cancel.
 */
export async function* streamText(stream, signal) {
  try {
    for (;;) {
      if (signal?.aborted) return;
      const step = stream.next();
      if (step.text) yield step.text;
      if (step.done) return;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  } finally {
    stream.cancel();
  }
}
