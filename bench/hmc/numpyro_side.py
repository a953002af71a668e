"""NumPyro NUTS side of the Hamiltonian-sampling benchmark (see run.py).

Run through bench/hmc/run.sh; by hand:
  /root/venvs/ref/bin/python bench/hmc/numpyro_side.py DATA_DIR TARGET CHAINS WARMUP DRAWS SEED

Writes DATA_DIR/numpyro_<target>.f64 (draws as float64, [chains, draws, dim])
and prints one JSON line with the timings and gradient counts.
"""
import json
import sys
import time

import numpy as np
import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
from numpyro.infer.hmc import hmc  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402


def load_target(data_dir, target):
    if target == "gaussian":
        precision = jnp.asarray(np.loadtxt(f"{data_dir}/gaussian_precision.csv", delimiter=","))

        def potential(q):
            return 0.5 * q @ (precision @ q)

        return potential, precision.shape[0]
    data = np.loadtxt(f"{data_dir}/logistic.csv", delimiter=",", skiprows=1)
    y, x = jnp.asarray(data[:, -1]), jnp.asarray(data[:, :-1])
    design = jnp.concatenate([jnp.ones((x.shape[0], 1)), x], axis=1)
    prior_precision = 1.0 / 10.0**2

    def potential(beta):
        eta = design @ beta
        return 0.5 * prior_precision * beta @ beta + jnp.sum(jnp.logaddexp(0.0, eta) - y * eta)

    return potential, design.shape[1]


def main():
    data_dir, target = sys.argv[1], sys.argv[2]
    chains, warmup, draws, seed = (int(v) for v in sys.argv[3:7])
    potential, dim = load_target(data_dir, target)
    init_kernel, sample_kernel = hmc(potential_fn=potential, algo="NUTS")

    def one_chain(key, init):
        # NumPyro defaults: diagonal mass, target acceptance 0.8, max tree
        # depth 10, Stan-style windowed adaptation.
        state = init_kernel(init, num_warmup=warmup, rng_key=key)

        def body(s, _):
            s = sample_kernel(s)
            return s, (s.z, s.num_steps, s.diverging)

        _, (z, steps, diverging) = lax.scan(body, state, None, length=warmup + draws)
        return z[warmup:], steps, diverging

    run = jax.jit(jax.vmap(one_chain))
    rng = np.random.default_rng(seed)
    inits = jnp.asarray(rng.uniform(-2.0, 2.0, size=(chains, dim)))
    keys = jax.random.split(jax.random.PRNGKey(seed), chains)

    t0 = time.perf_counter()
    compiled = run.lower(keys, inits).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    z, steps, diverging = jax.block_until_ready(compiled(keys, inits))
    run_s = time.perf_counter() - t0

    # What MCMC.run users see: compilation included, every call.
    mcmc = MCMC(NUTS(potential_fn=potential), num_warmup=warmup, num_samples=draws,
                num_chains=chains, chain_method="vectorized", progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed + 1), init_params=inits)
    jax.block_until_ready(mcmc.get_samples())
    mcmc_run_s = time.perf_counter() - t0

    z = np.asarray(z, dtype=np.float64)
    z.tofile(f"{data_dir}/numpyro_{target}.f64")
    steps = np.asarray(steps)
    print(json.dumps({
        "target": target,
        "dim": dim,
        "seconds": run_s,
        "compile_seconds": compile_s,
        "mcmc_run_seconds": mcmc_run_s,
        "warmup_gradients": int(steps[:, :warmup].sum()),
        "sampling_gradients": int(steps[:, warmup:].sum()),
        "divergences": int(np.asarray(diverging)[:, warmup:].sum()),
    }))


if __name__ == "__main__":
    main()
