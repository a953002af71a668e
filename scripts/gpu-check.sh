#!/usr/bin/env bash
# The engine's GPU path on a machine with a GPU: builds with the backend's
# feature, runs the tensor-path tests there (HANZO_TEST_DEVICE makes them
# use the device instead of the CPU), then generates from the default model
# on the device. Not part of CI, which has no GPU.
#   scripts/gpu-check.sh               # cuda:0; needs the CUDA toolkit (nvcc)
#   scripts/gpu-check.sh metal:0       # on macOS
# The tiny-model tests need only the repository; the real-model ones need
# scripts/fetch-models.sh to have run (the models are not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda:0}"
feature="${device%%:*}"
if [[ "$feature" == cuda ]] && ! command -v nvcc >/dev/null; then
    echo "gpu-check: nvcc not found; candle's CUDA kernels are built with the CUDA toolkit" >&2
    exit 1
fi
export HANZO_TEST_DEVICE="$device"
echo "== tensor path on $device: tiny models of every family against transformers"
cargo test --release --features "$feature" -p candle-engine --test decoder --test families
models="${HANZO_CANDLE_MODELS:-$HOME/.cache/hanzo-candle/models}"
if [[ -f "$models/SmolLM2-135M-Instruct.Q4_1.gguf" && -f "$models/gemma-3-270m-q4_k_m.gguf" ]]; then
    echo "== tensor path on $device: SmolLM2 and Gemma-3 against llama.cpp and transformers"
    cargo test --release --features "$feature" -p candle-engine \
        --test real_model --test safetensors_real -- tensor_path f32_
    echo "== hanzo-candle generate --device $device"
    cargo run --release --features "$feature" -p hanzo-candle -- \
        generate --device "$device" -n 32 "The capital of France is"
else
    echo "gpu-check: real models not in $models; run scripts/fetch-models.sh for the rest" >&2
fi
