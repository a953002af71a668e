"""Extracts the fixtures of candle-hamiltonian's Stan-diagnostics test.

  /root/venvs/ref/bin/python scripts/hamiltonian_stan_fixtures.py STAN_CHECKOUT

STAN_CHECKOUT is a clone of https://github.com/stan-dev/stan (BSD-3-Clause).
Its unit test src/test/unit/analyze/mcmc/split_rank_normalized_ess_test.cpp
reads test_csv_files/bern{1..4}.csv (CmdStan 2.35 output of the Bernoulli
example model, 1000 draws per chain) and expects bulk/tail ESS of lp__
1512.7684 / 1591.9707 and of theta 1407.5124 / 1291.7131. This script keeps
the three columns that test uses (lp__, divergent__, theta) and writes them to
crates/candle-hamiltonian/tests/fixtures/stan_bern{1..4}.csv.
"""
import csv
import pathlib
import sys

stan = pathlib.Path(sys.argv[1])
source = stan / "src/test/unit/analyze/mcmc/test_csv_files"
target = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-hamiltonian/tests/fixtures"
target.mkdir(parents=True, exist_ok=True)
for chain in range(1, 5):
    lines = [l for l in (source / f"bern{chain}.csv").read_text().splitlines() if not l.startswith("#")]
    rows = list(csv.reader(lines))
    header = rows[0]
    keep = [header.index(name) for name in ("lp__", "divergent__", "theta")]
    with open(target / f"stan_bern{chain}.csv", "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        for row in rows:
            writer.writerow([row[i] for i in keep])
