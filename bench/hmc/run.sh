#!/usr/bin/env bash
# NUTS benchmark: candle-hamiltonian vs NumPyro on the same machine, same
# targets, same settings (4 chains, f64, diagonal mass, target acceptance
# 0.8, max tree depth 10, Stan-style warm-up), both scored by the same ESS
# estimator (min over coordinates of Stan's bulk ESS, computed in Rust).
#
#   bench/hmc/run.sh [CHAINS] [WARMUP] [DRAWS] [SEED]
#
# Needs: the venv /root/venvs/ref (or $PYTHON) with `pip install numpyro jax`.
set -euo pipefail
cd "$(dirname "$0")/../.."
CHAINS=${1:-4}
WARMUP=${2:-1000}
DRAWS=${3:-1000}
SEED=${4:-0}
PY=${PYTHON:-/root/venvs/ref/bin/python}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT

cargo build --release -q -p candle-hamiltonian --example hmc_bench
BIN=$CARGO_TARGET_DIR/release/examples/hmc_bench
"$PY" bench/hmc/make_targets.py "$DATA"
for target in gaussian logistic; do
  "$PY" bench/hmc/numpyro_side.py "$DATA" $target "$CHAINS" "$WARMUP" "$DRAWS" "$SEED" > "$DATA/numpyro_$target.json"
  "$BIN" "$DATA" $target "$CHAINS" "$WARMUP" "$DRAWS" "$SEED" "$DATA/numpyro_$target.json"
  "$BIN" "$DATA" $target-tensor "$CHAINS" "$WARMUP" "$DRAWS" "$SEED"
  "$BIN" "$DATA" $target "$CHAINS" "$WARMUP" "$DRAWS" "$SEED" --separate-adaptation
  "$BIN" "$DATA" $target "$CHAINS" "$WARMUP" "$DRAWS" "$SEED" --separate-adaptation --numpyro-criterion
done
