"""Reference posterior of a small Bayesian logistic regression, by NumPyro NUTS.

  /root/venvs/ref/bin/python scripts/hamiltonian_numpyro_logistic.py

Writes, under crates/candle-hamiltonian/tests/fixtures/:
  numpyro_logistic_data.csv       N=200 rows: x1, x2, x3, y (header row)
  numpyro_logistic_posterior.csv  parameter,mean,sd,mcse for intercept, x1..x3
The model matches candle_hamiltonian::models::LogisticRegression with
prior_scale = 2.5: y ~ Bernoulli(sigmoid(a + x.b)), a, b_i ~ N(0, 2.5^2).
NumPyro runs 4 chains x 20000 draws so its own MCSE is small.
"""
import pathlib

import numpy as np
import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.diagnostics import effective_sample_size  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

numpyro.set_host_device_count(1)
out = pathlib.Path(__file__).resolve().parent.parent / "crates/candle-hamiltonian/tests/fixtures"
rng = np.random.default_rng(5)
n, d = 200, 3
x = rng.standard_normal((n, d))
true_beta = np.array([1.0, -0.5, 0.25])
y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(-0.3 + x @ true_beta)))).astype(float)
np.savetxt(out / "numpyro_logistic_data.csv", np.column_stack([x, y]), delimiter=",",
           header="x1,x2,x3,y", comments="", fmt="%.17g")


def model(x, y):
    a = numpyro.sample("a", dist.Normal(0.0, 2.5))
    b = numpyro.sample("b", dist.Normal(0.0, 2.5).expand([d]))
    numpyro.sample("y", dist.Bernoulli(logits=a + x @ b), obs=y)


mcmc = MCMC(NUTS(model), num_warmup=2000, num_samples=20000, num_chains=4,
            chain_method="vectorized", progress_bar=False)
mcmc.run(jax.random.PRNGKey(0), jnp.asarray(x), jnp.asarray(y))
samples = mcmc.get_samples(group_by_chain=True)
draws = np.concatenate([np.asarray(samples["a"])[..., None], np.asarray(samples["b"])], axis=-1)
with open(out / "numpyro_logistic_posterior.csv", "w") as f:
    f.write("parameter,mean,sd,mcse\n")
    for j, name in enumerate(["intercept", "x1", "x2", "x3"]):
        column = draws[..., j]
        ess = float(effective_sample_size(column))
        sd = float(column.std(ddof=1))
        f.write(f"{name},{column.mean():.17g},{sd:.17g},{sd / np.sqrt(ess):.17g}\n")
