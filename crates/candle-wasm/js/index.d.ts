export * from './simd/candle_wasm.js';
import type { InitInput, InitOutput, TokenStream } from './simd/candle_wasm.js';

/** Whether this engine runs WebAssembly SIMD128 (and so gets the SIMD build). */
export const simd: boolean;
/** The `.wasm` file this engine uses, relative to the package. */
export const wasmFile: string;
/** Instantiates the chosen build (in a browser, fetching its `.wasm`). */
export default function init(options?: { module_or_path?: InitInput | Promise<InitInput> }): Promise<InitOutput>;
/** A stream's text as it is generated; stopping the iteration cancels it. */
export function streamText(stream: TokenStream, signal?: AbortSignal): AsyncGenerator<string, void, void>;
