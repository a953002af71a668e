"""Writes the benchmark targets shared by both samplers (see run.py).

  /root/venvs/ref/bin/python bench/hmc/make_targets.py DATA_DIR

gaussian_precision.csv: 100x100 precision matrix of an ill-conditioned
Gaussian, covariance S_ij = s_i s_j 0.5^|i-j| with sds s log-spaced from 0.01
to 1 (variance condition number ~1e4 before the correlation).
logistic.csv: N=1000 rows, D=25 standard-normal predictors x1..x25 and a 0/1
label y drawn from a logistic model with coefficients ~ N(0, 0.5^2).
"""
import sys

import numpy as np

data_dir = sys.argv[1]
rng = np.random.default_rng(20261125)

dim = 100
scales = np.logspace(-2, 0, dim)
lags = np.abs(np.arange(dim)[:, None] - np.arange(dim)[None, :])
covariance = np.outer(scales, scales) * 0.5**lags
np.savetxt(f"{data_dir}/gaussian_precision.csv", np.linalg.inv(covariance), delimiter=",", fmt="%.17g")

n, d = 1000, 25
x = rng.standard_normal((n, d))
beta = rng.normal(0.0, 0.5, d)
y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-(0.3 + x @ beta)))).astype(float)
header = ",".join([f"x{i + 1}" for i in range(d)] + ["y"])
np.savetxt(f"{data_dir}/logistic.csv", np.column_stack([x, y]), delimiter=",", header=header,
           comments="", fmt="%.17g")
