#!/usr/bin/env bash
# Builds llama.cpp's tools (llama-bench, llama-perplexity, llama-server,
# llama-quantize) from the llama.cpp sources vendored in the llama-cpp-python
# 0.3.36 sdist, the llama.cpp our references come from, and prints the folder
# holding them on stdout. Progress goes to stderr.
#
#   scripts/build-llamacpp.sh [native|avx2] [--configure-only]
#
# native (default): -DGGML_NATIVE=ON, the best this CPU has. avx2: AVX2 + FMA
# + F16C and no AVX-512, as on the reference machine kind of
# shared/PERF-NOTES.md, on a machine that also has AVX-512.
# --configure-only stops after cmake's configure step (to check the flags
# without the ~10 CPU-minutes of a full build).
#
# The build goes to $LLAMA_CPP_CACHE/<isa>/ (default
# ~/.cache/hanzo-candle/llama.cpp), outside the repository, the tools to its
# bin/; a second run finds them there and builds nothing. LLAMA_CPP_BIN=DIR uses an existing
# build instead (its CMakeCache.txt, one level up, is checked against the
# instruction sets asked for when it is there). Needs a C++ compiler and
# make; cmake comes from PyPI into a venv of the cache when `cmake` is
# missing. PYTHON (default python3) runs pip.
set -euo pipefail
VERSION=0.3.36
TOOLS=(llama-bench llama-perplexity llama-server llama-quantize)
ISA=native
CONFIGURE_ONLY=false
for arg in "$@"; do
    case $arg in
    native | avx2) ISA=$arg ;;
    --configure-only) CONFIGURE_ONLY=true ;;
    *)
        echo "scripts/build-llamacpp.sh: unknown argument '$arg' (native, avx2 or --configure-only)" >&2
        exit 2 ;;
    esac
done
case $ISA in
native) FLAGS=(-DGGML_NATIVE=ON) ;;
avx2) FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
    -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF
    -DGGML_AVX_VNNI=OFF) ;;
esac
CACHE=${LLAMA_CPP_CACHE:-$HOME/.cache/hanzo-candle/llama.cpp}
PY=${PYTHON:-python3}
log() { echo "[build-llamacpp] $*" >&2; }
fail() {
    echo "scripts/build-llamacpp.sh: $*" >&2
    exit 1
}

has_tools() { # dir
    local tool
    for tool in "${TOOLS[@]}"; do
        [[ -x $1/$tool ]] || return 1
    done
}

# The value of a BOOL option in a CMakeCache.txt, e.g. ON or OFF.
cached_option() { # cache-file name
    sed -n "s/^$2:BOOL=//p" "$1"
}

if [[ -n ${LLAMA_CPP_BIN:-} ]]; then
    has_tools "$LLAMA_CPP_BIN" ||
        fail "LLAMA_CPP_BIN=$LLAMA_CPP_BIN does not hold all of ${TOOLS[*]}"
    cmake_cache=$LLAMA_CPP_BIN/../CMakeCache.txt
    if [[ ! -f $cmake_cache ]]; then
        log "no $cmake_cache: cannot check that $LLAMA_CPP_BIN was built for $ISA"
    elif [[ $ISA == native && $(cached_option "$cmake_cache" GGML_NATIVE) != ON ]]; then
        fail "$LLAMA_CPP_BIN was not built with GGML_NATIVE=ON (see $cmake_cache)"
    elif [[ $ISA == avx2 && ($(cached_option "$cmake_cache" GGML_NATIVE) != OFF ||
        $(cached_option "$cmake_cache" GGML_AVX2) != ON ||
        $(cached_option "$cmake_cache" GGML_AVX512) != OFF) ]]; then
        fail "$LLAMA_CPP_BIN is not an AVX2 build without AVX-512 (see $cmake_cache)"
    fi
    echo "$LLAMA_CPP_BIN"
    exit 0
fi

BUILD=$CACHE/$ISA
# llama.cpp puts its programs and libraries in bin/ of the build tree.
BIN=$BUILD/bin
if has_tools "$BIN"; then
    echo "$BIN"
    exit 0
fi

SRC=$CACHE/src/llama_cpp_python-$VERSION/vendor/llama.cpp
if [[ ! -f $SRC/CMakeLists.txt ]]; then
    log "downloading the llama-cpp-python $VERSION sdist"
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    "$PY" -m pip download --quiet --no-binary llama-cpp-python --no-deps --dest "$download" \
        "llama-cpp-python==$VERSION" >&2
    mkdir -p "$CACHE/src"
    tar -xzf "$download/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE/src"
    [[ -f $SRC/CMakeLists.txt ]] || fail "the sdist has no llama.cpp at $SRC"
fi

CMAKE=$(command -v cmake || true)
if [[ -z $CMAKE ]]; then
    CMAKE=$CACHE/cmake-venv/bin/cmake
    if [[ ! -x $CMAKE ]]; then
        log "installing cmake from PyPI into $CACHE/cmake-venv"
        "$PY" -m venv "$CACHE/cmake-venv"
        "$CACHE/cmake-venv/bin/pip" install --quiet cmake >&2
    fi
fi

log "configuring llama.cpp ($ISA) in $BUILD"
# No tests or examples; the server's web page is not downloaded (the server
# serves its API without it).
"$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${FLAGS[@]}" \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
if $CONFIGURE_ONLY; then
    log "configured; not building (--configure-only)"
    exit 0
fi
log "building ${TOOLS[*]} (about 10 CPU-minutes)"
"$CMAKE" --build "$BUILD" --config Release --parallel "$(nproc)" --target "${TOOLS[@]}" >&2
has_tools "$BIN" || fail "the build finished without all of ${TOOLS[*]} in $BIN"
echo "$BIN"
